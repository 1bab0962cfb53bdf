"""The report's tables and plots on hand-made GPU-like runs: budgets, fits, NVML timelines, merged runs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from harness import compare
from harness.report import build_report, tables
from harness.report.data import load_report_data
from harness.report.plots import missing_samples_note
from harness.report.tables import (SPREAD_LABEL, cost_table, fmt_number, memory_latency_table, pareto_front,
                                   probe_overhead_text, quality_table, stages_table)
from harness.results import GENERATE_STAGES
from wan_runtime.errors import ConfigError

GIB = 1024.0


def _gpu_row(case_id: str, **fields) -> dict:
    """An ok A14B-like row measured on an H100 (values made up; the fields are the real ones)."""
    row = {"suite": "hand", "case_id": case_id, "status": "ok", "preset": "a14b", "device": "cuda",
           "timing": "full", "repeats": 1, "warmup": 0, "weights": "synthetic", "weights_synthetic": True,
           "size": "832*480", "frames": 81, "steps": 40, "experts": "resident", "tokens": 32760,
           "total_ms": 300_000.0, "step_ms.high": 6700.0, "step_ms.low": 6700.0, "load_ms": 20_000.0,
           "peak_nvml_mib": 60 * GIB, "peak_allocated_mib": 57 * GIB, "projected": False,
           "env.gpu": "NVIDIA H100 80GB HBM3", "env.gpu_memory_mib": 81_559, "env.driver": "550.54",
           "env.torch": "2.11.0", "env.hostname": "gpu-host"}
    row.update({f"stage_ms.{s}": 1000.0 for s in ("text_encode", "image_encode", "vae_decode", "postprocess")})
    row.update({"stage_ms.denoise_high": 100_000.0, "stage_ms.denoise_low": 190_000.0})
    row.update(fields)
    return row


def _write_run(folder: Path, rows: list[dict], timeline: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if timeline is not None:
        (folder / "timeline.jsonl").write_text("".join(json.dumps(t) + "\n" for t in timeline), encoding="utf-8")
    return folder


def _fits(rows: list[dict], tmp_path: Path) -> dict[str, str]:
    table = memory_latency_table(load_report_data([_write_run(tmp_path / "run", rows)]))
    return {r["case"]: r["fits"] for r in table.records}


def test_fits_compares_the_nvml_peak_with_the_plan_budget_or_else_the_card(tmp_path):
    rows = [
        _gpu_row("under-budget", vram_budget_gib=24, peak_nvml_mib=20 * GIB),
        _gpu_row("over-budget", vram_budget_gib=24, peak_nvml_mib=25 * GIB, experts="swap"),
        _gpu_row("oom", vram_budget_gib=24, status="oom", total_ms=None, experts="swap", steps=2),
        _gpu_row("card", peak_nvml_mib=70 * GIB, steps=3),
        _gpu_row("hidden-process", peak_nvml_mib=None, peak_nvml_device_mib=90 * GIB, steps=5),
    ]
    assert _fits(rows, tmp_path) == {"under-budget": "yes", "over-budget": "no", "oom": "no (oom)", "card": "yes",
                                     "hidden-process": "no (device peak)"}


def test_cost_table_recovers_a_planted_power_law_and_memory_line(tmp_path):
    rows = []
    for i, tokens in enumerate((4_770, 10_800, 32_760, 75_600)):
        rows.append(_gpu_row(f"t{i}", size=f"{832 + 16 * i}*480", tokens=tokens, total_ms=0.05 * tokens**1.6,
                             **{"step_ms.high": 0.001 * tokens**1.9, "step_ms.low": 0.001 * tokens**1.9},
                             peak_nvml_mib=30_000.0 + 0.25 * tokens))
    record = cost_table(load_report_data([_write_run(tmp_path / "run", rows)])).records[0]
    assert record["points"] == 4 and record["tokens_min"] == 4_770 and record["tokens_max"] == 75_600
    assert record["total_exponent"] == pytest.approx(1.6) and record["step_exponent"] == pytest.approx(1.9)
    assert record["memory_base_mib"] == pytest.approx(30_000.0)
    assert record["memory_mib_per_1k_tokens"] == pytest.approx(250.0)
    assert record["total_r2"] == pytest.approx(1.0)


def test_memory_plot_uses_the_nvml_samples_when_the_run_has_them(tmp_path):
    timeline = [{"case_id": "a", "repeat": 0, "spans": [
        {"stage": "text_encode", "start_s": 0.0, "end_s": 1.0}, {"stage": "denoise_high", "start_s": 1.0, "end_s": 5.0},
        {"stage": "vae_decode", "start_s": 5.0, "end_s": 6.0}],
        "samples": [[0.0, 1000.0, 1500.0], [2.0, 50_000.0, 50_500.0], [5.5, 60_000.0, 60_500.0]],
        "samples_note": None}]
    run = _write_run(tmp_path / "run", [_gpu_row("a")], timeline)
    data = load_report_data([run])
    assert missing_samples_note(data, data.cases[0]) is None
    files = build_report([run], tmp_path / "report")
    assert (tmp_path / "report" / "memory_timeline.png").stat().st_size > 10_000
    assert "no NVML samples" not in files.markdown.read_text()
    assert "NVIDIA H100 80GB HBM3 (79.6 GiB)" in files.markdown.read_text()


def test_two_runs_merge_and_their_cases_are_labelled_by_what_varies(tmp_path):
    # One GPU call per resolution: the same case_id in both folders.
    low = _write_run(tmp_path / "480p", [_gpu_row("experts=resident"), _gpu_row("experts=swap", experts="swap")])
    high = _write_run(tmp_path / "720p", [_gpu_row("experts=resident", size="1280*720", tokens=75_600),
                                          _gpu_row("experts=swap", size="1280*720", tokens=75_600, experts="swap")])
    data = load_report_data([low, high])
    assert [c.label for c in data.cases] == ["size=832*480,experts=resident", "size=832*480,experts=swap",
                                             "size=1280*720,experts=resident", "size=1280*720,experts=swap"]
    table = memory_latency_table(data)
    assert [r["plan"] for r in table.records] == ["experts=resident", "experts=swap"] * 2
    assert [r["resolution"] for r in table.records][::2] == ["832*480, 81 frames", "1280*720, 81 frames"]
    with pytest.raises(ConfigError, match="given twice"):
        load_report_data([low, low])


def test_projected_synthetic_failed_and_mixed_machine_cases_get_banners(tmp_path):
    rows = [_gpu_row("a", projected=True, timing="sampled"),
            _gpu_row("b", status="oom", failed_stage="denoise_high", total_ms=None, experts="swap",
                     **{"env.hostname": "other-host"})]
    text = build_report([_write_run(tmp_path / "run", rows)], tmp_path / "report").markdown.read_text()
    assert "> **Note:** Synthetic weights (2 of 2 cases)" in text
    assert "> **Note:** Projected figures (1 of 2 cases" in text
    assert "> **Note:** 1 case(s) did not finish (b: oom in denoise_high)" in text
    assert ("> **Note:** The cases were measured on 2 machines (gpu-host: NVIDIA H100 80GB HBM3; other-host: "
            "NVIDIA H100 80GB HBM3)") in text


def test_an_unknown_memory_case_names_the_known_ones(tmp_path):
    run = _write_run(tmp_path / "run", [_gpu_row("a")])
    with pytest.raises(ConfigError, match="no case 'zzz' in this report; cases:\n  a"):
        build_report([run], tmp_path / "report", memory_case="zzz")


def test_pareto_front_keeps_only_points_nothing_beats():
    # (time, PSNR): the second is slower and worse than the first; equal points both stay.
    points = [(1.0, 30.0), (2.0, 29.0), (3.0, 40.0), (0.5, 20.0), (3.0, 40.0)]
    assert pareto_front(points) == [True, False, True, True, True]


@pytest.mark.parametrize("value, text", [(327.84, "327.8"), (1055.9, "1056"), (4.59491, "4.595"),
                                         (0.27403, "0.2740"), (123456.7, "123457"), (None, "-"), (0, "0")])
def test_numbers_keep_four_significant_digits_and_no_exponent(value, text):
    assert fmt_number(value) == text


# ---------------------------------------------------------------- noise, significance, placement, empty sections
def _timed(case_id: str, repeats: list[float], **fields) -> dict:
    """A GPU row whose total is the median of `repeats` (kept as the raw repeats)."""
    return _gpu_row(case_id, total_ms=statistics.median(repeats), **{"repeats_ms.total": repeats}, **fields)


def _quality_cells(rows: list[dict], tmp_path: Path) -> dict[str, dict]:
    """Per case: the quality table's raw record and its displayed cells by heading."""
    table = quality_table(load_report_data([_write_run(tmp_path / "run", rows)]))
    headings, cells = table.display()
    return {r["case"]: r | {"shown": dict(zip(headings, row))} for r, row in zip(table.records, cells)}


def _pair(reference: list[float], case: list[float]) -> list[dict]:
    """A reference case and a compared one of the same process group."""
    common = {"reference_case": "ref", "group": "all"}
    return [_timed("ref", reference, is_reference=True, **common),
            _timed("fast", case, steps=20, psnr_db=30.0, ssim=0.9, psnr_frames=[30.0], **common)]


def test_overlapping_repeats_show_no_speedup(tmp_path):
    record = _quality_cells(_pair([10.0, 14.0, 12.5, 18.0, 11.0], [12.0, 9.0, 15.0, 11.0, 13.0]), tmp_path)["fast"]
    assert record["speedup"] == pytest.approx(12.5 / 12.0) and record["speedup_significant"] is False
    assert record["shown"]["speed-up vs reference (x)"].startswith("not significant (p=")


def test_clearly_separated_repeats_show_the_speedup_the_compare_rule_finds(tmp_path):
    assert tables.shift_test is compare.shift_test  # one significance rule for the report and the gates
    record = _quality_cells(_pair([10.0, 10.2, 10.1, 10.4, 9.9], [5.0, 5.1, 4.9, 5.2, 5.05]), tmp_path)["fast"]
    assert record["speedup_significant"] is True and record["speedup_p"] == pytest.approx(1 / 252)
    assert record["shown"]["speed-up vs reference (x)"] == "2.00 (p=0.004)"


def test_a_speedup_measured_on_too_few_repeats_is_untested(tmp_path):
    record = _quality_cells(_pair([10.0], [5.0]), tmp_path)["fast"]
    assert record["speedup"] == pytest.approx(2.0) and record["speedup_significant"] is False
    assert record["shown"]["speed-up vs reference (x)"] == "untested: 1 vs 1 repeats"


def test_a_speedup_across_processes_with_the_same_effective_plan_says_so(tmp_path):
    rows = [_timed("ref", [10.0, 10.2, 10.1, 10.4, 9.9], is_reference=True, reference_case="ref",
                   group="text_encoder=gpu", text_encoder="gpu", **{"effective.text_encoder": "cpu"}),
            _timed("other", [5.0, 5.1, 4.9, 5.2, 5.05], reference_case="ref", psnr_db=100.0, psnr_frames=[100.0],
                   group="text_encoder=offload_after", text_encoder="offload_after",
                   **{"effective.text_encoder": "cpu"})]
    shown = _quality_cells(rows, tmp_path)["other"]["shown"]["speed-up vs reference (x)"]
    assert shown == "2.00 (p=0.004, other process, same effective plan)"


def test_every_median_time_of_the_main_table_shows_the_range_of_its_repeats(tmp_path):
    table = memory_latency_table(load_report_data([_write_run(tmp_path / "run", [_timed("a", [4000.0, 3000.0, 3500.0])])]))
    headings, (cells,) = table.display()
    assert cells[headings.index(f"total (s), {SPREAD_LABEL}")] == "3.500 [3.000, 4.000]"
    assert list(table.frame()[["total_ms", "total_ms.min", "total_ms.max"]].iloc[0]) == [3500.0, 3000.0, 4000.0]


def test_gpu_memory_columns_are_hidden_when_nothing_measured_them(tmp_path):
    row = _gpu_row("a", peak_nvml_mib=None, peak_allocated_mib=None, **{"env.gpu_memory_mib": None},
                   memory_note="no CUDA device")
    table = memory_latency_table(load_report_data([_write_run(tmp_path / "run", [row])]))
    headings, _ = table.display()
    assert not any("peak" in h or "budget" in h for h in headings)
    assert "GPU memory: no CUDA device." in table.note and "peak_nvml_mib" in table.frame().columns


@pytest.mark.parametrize("percents, text", [
    ([-0.18, -0.02, 0.05], "< resolution: the probed loop was not measurably slower than the bare one"),
    ([0.0], "< resolution"),
    ([0.12, 0.16, 0.22], "median 0.16% of a step (0.12% to 0.22% over the cases)"),
    ([-1.37, 0.12, 0.17], "median 0.12% of a step, at most 0.17%; below resolution (<= 0) in 1 of 3 cases"),
])
def test_a_probe_overhead_at_or_below_zero_reads_as_below_resolution(percents, text):
    assert probe_overhead_text(percents).startswith(text)


def test_unaccounted_time_is_per_repeat_and_rounding_below_zero_is_floored(tmp_path):
    stages = {f"repeats_ms.{s}": [100.0, 100.0] for s in GENERATE_STAGES}
    total = 100.0 * len(GENERATE_STAGES)
    row = _gpu_row("a", **stages, **{"repeats_ms.total": [total + 5.0, total - 0.0002]})
    (record,) = stages_table(load_report_data([_write_run(tmp_path / "run", [row])])).records
    assert record["unaccounted_ms.min"] == 0.0 and record["unaccounted_ms.max"] == pytest.approx(5.0)
    assert record["unaccounted_ms"] == pytest.approx(2.5)


def test_a_negative_unaccounted_time_is_explained_as_overlapping_stages(tmp_path):
    stages = {f"repeats_ms.{s}": [100.0] for s in GENERATE_STAGES}
    row = _gpu_row("a", **stages, **{"repeats_ms.total": [100.0 * len(GENERATE_STAGES) - 50.0]})
    table = stages_table(load_report_data([_write_run(tmp_path / "run", [row])]))
    assert table.records[0]["unaccounted_ms"] == pytest.approx(-50.0)
    assert "stages overlapped in time" in table.note


def test_the_plan_shows_the_effective_placement_only_where_it_differs(tmp_path):
    rows = [_gpu_row("a", text_encoder="gpu", **{"effective.text_encoder": "cpu"}),
            _gpu_row("b", text_encoder="offload_after", **{"effective.text_encoder": "offload_after"})]
    table = memory_latency_table(load_report_data([_write_run(tmp_path / "run", rows)]))
    assert [r["plan"] for r in table.records] == ["text_encoder=gpu (effective: cpu)", "text_encoder=offload_after"]


def test_sections_with_nothing_to_show_are_one_sentence_instead_of_an_empty_table(tmp_path):
    row = _gpu_row("a", memory_note="no CUDA device")  # no reference, one token count, no timeline
    files = build_report([_write_run(tmp_path / "run", [row])], tmp_path / "report")
    text = files.markdown.read_text()
    assert "(no rows)" not in text
    assert "No case has quality metrics (the suite names no reference)." in text
    assert "No group of cases differing only in size or frames has two token counts" in text
    assert "No GPU memory over time (no timeline was recorded" in text
    assert [p.name for p in files.pngs] == ["stages.png"]
    assert (tmp_path / "report" / "cost_vs_tokens.csv").exists()  # the CSVs are still written


def test_the_environment_names_the_threads_and_the_host_load_the_workers_recorded(tmp_path):
    rows = [_gpu_row("a", **{"env.threads": 1, "env.load_avg_1m": 0.5}),
            _gpu_row("b", steps=2, **{"env.threads": 1, "env.load_avg_1m": 4.25})]
    text = build_report([_write_run(tmp_path / "run", rows)], tmp_path / "report").markdown.read_text()
    assert "| CPU threads (torch) | 1 |" in text
    assert "| host load average (1 min) as the workers started | 0.50 to 4.25 |" in text


def test_a_stage_no_case_timed_is_not_a_column(tmp_path):
    row = _gpu_row("a", **{"stage_ms.postprocess": None})
    headings, _ = stages_table(load_report_data([_write_run(tmp_path / "run", [row])])).display()
    assert not any(h.startswith("postprocess") for h in headings) and any(h.startswith("vae_decode") for h in headings)
