"""`wanbench report` on the smoke suite's real output: the files, and numbers equal to results.jsonl.

The run is shared with the other report/compare tests (report_smoke_run.py).
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.main import main
from harness.report import build_report
from harness.report.tables import SPREAD_LABEL, format_cell, format_spread, time_unit
from harness.results import GENERATE_STAGES, latest_rows, read_rows
from harness.stats import shift_test
from report_smoke_run import smoke_run_folder


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke suite's run folder (5 repeats after 1 warmup)."""
    return smoke_run_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def report(smoke_run, tmp_path_factory):
    """The report of the smoke run, and the run's rows by case_id."""
    files = build_report([smoke_run], tmp_path_factory.mktemp("smoke-report"))
    rows = {r["case_id"]: r for r in latest_rows(read_rows(smoke_run / "results.jsonl"))}
    return files, rows


def _markdown_table(text: str, heading: str, first: str = "case") -> tuple[list[str], list[list[str]]]:
    """(headings, rows) of the table whose first heading is `first` in the `## heading` section of report.md,
    markdown escapes removed."""
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    start = section.index(f"| {first} |")
    lines = section[start:].splitlines()
    table = lines[: next(i for i, line in enumerate(lines) if not line.startswith("|"))]
    cells = [[c.strip().replace("\\", "") for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in table]
    return cells[0], cells[2:]


def _total_cell(row: dict, divisor: float) -> str:
    """How report.md shows a case's total: the median and the range of its repeats."""
    repeats = row["repeats_ms.total"]
    return format_spread(row["total_ms"], min(repeats), max(repeats), "time", divisor)


def test_report_writes_both_documents_the_plots_and_every_table_as_csv(report):
    files, _ = report
    names = sorted(p.name for p in files.out.iterdir())
    assert names == sorted(["report.md", "report.html", "environment.csv", "summary.csv", "memory_latency.csv",
                            "stages.csv", "quality.csv", "cost_vs_tokens.csv", "stages.png", "quality_vs_speed.png",
                            "psnr_per_frame.png", "cost_vs_tokens.png"])  # a CPU run: no memory timeline
    for png in files.pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = files.markdown.read_text()
    for png in files.pngs:
        assert f"]({png.name})" in text
    for csv in files.csvs:
        assert f"]({csv.name})" in text
    assert "(no rows)" not in text


def test_summary_table_puts_each_plan_on_a_row_and_each_resolution_in_columns_with_its_spread(report):
    files, rows = report
    headings, body = _markdown_table(files.markdown.read_text(), "Memory and latency per resolution x plan", "plan")
    units = {size: time_unit([r["total_ms"] for r in rows.values() if r["size"] == size]) for size in ("48*48", "96*64")}
    assert headings == ["plan", "variant", f"48*48, 5 frames: total ({units['48*48'][0]}), {SPREAD_LABEL}",
                        f"96*64, 5 frames: total ({units['96*64'][0]}), {SPREAD_LABEL}"]  # no GPU memory columns
    assert len(body) == 3  # gpu x 2 step counts, offload_after x 4 steps
    for plan, variant, total_small, total_wide in body:
        for size, total in (("48*48", total_small), ("96*64", total_wide)):
            placement = plan.split("=")[1].split(" ")[0]
            row = rows[f"size={size},{variant.replace(' ', '')},text_encoder={placement}"]
            assert total == _total_cell(row, units[size][1])


def test_main_table_csv_equals_the_results_file_with_the_range_of_the_repeats(report):
    files, rows = report
    table = pd.read_csv(files.out / "memory_latency.csv").set_index("case")
    assert sorted(table.index) == sorted(rows)
    for case_id, row in rows.items():
        for field in ("total_ms", "step_ms.high", "step_ms.low"):
            assert table.loc[case_id, field] == pytest.approx(row[field], rel=1e-12), (case_id, field)
            assert table.loc[case_id, f"{field}.min"] <= row[field] <= table.loc[case_id, f"{field}.max"]
        assert table.loc[case_id, "total_ms.min"] == pytest.approx(min(row["repeats_ms.total"]))
        assert table.loc[case_id, "total_ms.max"] == pytest.approx(max(row["repeats_ms.total"]))
        assert table.loc[case_id, "tokens"] == row["tokens"] and table.loc[case_id, "status"] == row["status"]
        assert math.isnan(table.loc[case_id, "peak_nvml_mib"])  # a CPU run: not measured, never zero
        assert math.isnan(table.loc[case_id, "fits"])


def test_main_table_in_markdown_shows_the_median_its_range_and_the_effective_placement(report):
    files, rows = report
    headings, body = _markdown_table(files.markdown.read_text(), "Memory and latency per resolution x plan")
    unit, divisor = time_unit([r["total_ms"] for r in rows.values()])
    assert f"total ({unit}), {SPREAD_LABEL}" in headings
    col = {h.split(" (")[0]: i for i, h in enumerate(headings)}
    assert len(body) == len(rows)
    _, step_div = time_unit([r["step_ms.high"] for r in rows.values()])
    for cells in body:
        row = rows[cells[col["case"]]]
        assert cells[col["total"]] == _total_cell(row, divisor)
        step = cells[col["per step, high-noise expert"]]
        assert re.fullmatch(re.escape(format_cell(row["step_ms.high"], "time", step_div)) + r" \[[0-9.]+, [0-9.]+\]", step)
        assert cells[col["plan"]] == f"text_encoder={row['text_encoder']} (effective: cpu)"
        assert cells[col["variant"]] == f"steps={row['steps']}"


def test_stage_table_equals_the_results_and_unaccounted_is_the_median_per_repeat_remainder(report):
    files, rows = report
    table = pd.read_csv(files.out / "stages.csv").set_index("case")
    for case_id, row in rows.items():
        timed = [s for s in GENERATE_STAGES if row.get(f"repeats_ms.{s}")]  # every stage a generation runs
        assert "compile" not in timed and row["stage_ms.compile"] is None  # compile: compiled blocks only
        for stage in timed:
            assert table.loc[case_id, f"stage_ms.{stage}"] == pytest.approx(row[f"stage_ms.{stage}"], rel=1e-12)
            assert table.loc[case_id, f"stage_ms.{stage}.max"] == pytest.approx(max(row[f"repeats_ms.{stage}"]))
        assert table.loc[case_id, "load_ms"] == pytest.approx(row["load_ms"], rel=1e-12)
        rest = [total - sum(row[f"repeats_ms.{s}"][i] for s in timed) for i, total in enumerate(row["repeats_ms.total"])]
        assert table.loc[case_id, "unaccounted_ms"] == pytest.approx(statistics.median(rest), abs=1e-3)
        assert table.loc[case_id, "unaccounted_ms.min"] >= 0  # stages run one after another


def test_quality_table_shows_a_speedup_only_where_the_compare_test_finds_it(report):
    files, rows = report
    table = pd.read_csv(files.out / "quality.csv").set_index("case")
    _, body = _markdown_table(files.markdown.read_text(), "Quality vs speed", "#")
    shown = {cells[1]: cells[5] for cells in body}
    assert sorted(table.index) == sorted(rows)  # every case has a reference in the smoke suite
    for case_id, row in rows.items():
        if row["is_reference"]:
            assert table.loc[case_id, "role"] == "reference" and math.isnan(table.loc[case_id, "psnr_db"])
            assert shown[case_id] == "-"
            continue
        reference = rows[row["reference_case"]]
        ratio = reference["total_ms"] / row["total_ms"]
        test = shift_test(row["repeats_ms.total"], reference["repeats_ms.total"])
        assert table.loc[case_id, "speedup"] == pytest.approx(ratio, rel=1e-12)
        assert bool(table.loc[case_id, "speedup_significant"]) is test.significant
        if test.significant:
            assert shown[case_id].startswith(f"{ratio:.2f} (p=")
        else:
            assert shown[case_id].startswith("not significant")
        if row["text_encoder"] != reference["text_encoder"]:  # another process, the same thing on a CPU
            assert not test.significant or "other process, same effective plan" in shown[case_id]
        assert table.loc[case_id, "psnr_db"] == pytest.approx(row["psnr_db"], rel=1e-12)
        assert table.loc[case_id, "psnr_min_frame_db"] == pytest.approx(min(row["psnr_frames"]))


def test_pareto_front_is_recomputed_from_the_median_times(report):
    files, rows = report
    table = pd.read_csv(files.out / "quality.csv").set_index("case")
    for case_id, row in rows.items():
        # On the front unless another case of the same reference is as fast or faster AND at least as good.
        quality = 100.0 if row["is_reference"] else row["psnr_db"]
        beaten = any(
            o["total_ms"] <= row["total_ms"] and (100.0 if o["is_reference"] else o["psnr_db"]) >= quality
            and (o["total_ms"] < row["total_ms"] or (100.0 if o["is_reference"] else o["psnr_db"]) > quality)
            for other_id, o in rows.items() if other_id != case_id and o["reference_case"] == row["reference_case"])
        assert bool(table.loc[case_id, "pareto"]) is not beaten, case_id


def test_environment_header_names_the_machine_and_a_banner_flags_synthetic_weights(report):
    files, rows = report
    text = files.markdown.read_text()
    first = next(iter(rows.values()))
    assert f"| card | none: CPU run ({first['env.cpu']}, {first['env.cpu_count']} cores) |" in text
    assert f"| torch | {first['env.torch']} |" in text
    assert "| weights source | synthetic (seeded random values at the real shapes) |" in text
    assert "> **Note:** Synthetic weights (6 of 6 cases)" in text
    assert "host_memory=pinned (effective: not used)" in text  # nothing is parked in host memory on a CPU
    assert "Projected figures" not in text  # full timing: nothing projected


def test_a_cpu_run_says_in_one_sentence_why_there_is_no_memory_timeline(report):
    files, _ = report
    section = files.markdown.read_text().split("## Memory over time\n", 1)[1].split("\n## ", 1)[0]
    assert section.strip() == "No GPU memory over time (no CUDA device: NVML memory is not measured)."


def test_the_smoke_run_fills_the_cost_section_with_a_fit_per_group(report):
    files, _ = report
    table = pd.read_csv(files.out / "cost_vs_tokens.csv")
    assert len(table) == 3 and set(table["tokens_min"]) == {18} and set(table["tokens_max"]) == {48}
    assert table["total_exponent"].notna().all()


def test_html_carries_every_markdown_table_cell(report):
    files, _ = report
    html = files.html.read_text()
    for heading, first in (("Memory and latency per resolution x plan", "plan"),
                           ("Memory and latency per resolution x plan", "case"),
                           ("Stage breakdown", "case"), ("Quality vs speed", "#")):
        _, body = _markdown_table(files.markdown.read_text(), heading, first)
        for cells in body:
            for cell in cells:
                assert re.search(f">{re.escape(cell)}</td>", html), (heading, cell)
    assert html.count('<img src="data:image/png;base64,') == len(files.pngs)


def test_report_cli_prints_the_summary_table_and_the_report_path(smoke_run, tmp_path, capsys):
    assert main(["report", str(smoke_run), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("plan ") and f"48*48, 5 frames: total" in out.splitlines()[0]
    assert f"report: {tmp_path / 'r' / 'report.md'}" in out


def test_report_cli_exits_2_on_an_unknown_memory_case(smoke_run, tmp_path, capsys):
    assert main(["report", str(smoke_run), "--out", str(tmp_path / "r2"), "--memory-case", "nope"]) == 2
    assert "no case 'nope' in this report" in capsys.readouterr().err
