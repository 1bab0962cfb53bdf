"""`wanbench report` on the smoke suite's real output: the files, and numbers equal to results.jsonl.

The run is shared with the other report/compare tests (report_smoke_run.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd
import pytest

from harness.cli.main import main
from harness.report import build_report
from harness.report.tables import format_cell, time_unit
from harness.results import GENERATE_STAGES, latest_rows, read_rows
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


def test_report_writes_both_documents_the_plots_and_every_table_as_csv(report):
    files, _ = report
    names = sorted(p.name for p in files.out.iterdir())
    assert names == sorted(["report.md", "report.html", "environment.csv", "summary.csv", "memory_latency.csv",
                            "stages.csv",
                            "quality.csv", "cost_vs_tokens.csv", "stages.png", "quality_vs_speed.png",
                            "psnr_per_frame.png", "memory_timeline.png", "cost_vs_tokens.png"])
    for png in files.pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    text = files.markdown.read_text()
    for png in files.pngs:
        assert f"]({png.name})" in text
    for csv in files.csvs:
        assert f"]({csv.name})" in text


def test_summary_table_puts_each_plan_on_a_row_and_each_resolution_in_columns(report):
    files, rows = report
    headings, body = _markdown_table(files.markdown.read_text(), "Memory and latency per resolution x plan", "plan")
    unit, divisor = time_unit([r["total_ms"] for r in rows.values()])
    assert headings == ["plan", "variant", f"160*96, 5 frames: total ({unit})", "160*96, 5 frames: NVML peak (MiB)",
                        f"96*160, 5 frames: total ({unit})", "96*160, 5 frames: NVML peak (MiB)"]
    assert len(body) == 4  # 2 text-encoder placements x 2 step counts
    for plan, variant, total_a, peak_a, total_b, peak_b in body:
        for size, total in (("160*96", total_a), ("96*160", total_b)):
            row = rows[f"size={size},{variant.replace(' ', '')},{plan}"]
            assert total == format_cell(row["total_ms"], "time", divisor)
        assert peak_a == peak_b == "-"  # a CPU run


def test_main_table_csv_equals_the_results_file(report):
    files, rows = report
    table = pd.read_csv(files.out / "memory_latency.csv").set_index("case")
    assert sorted(table.index) == sorted(rows)
    for case_id, row in rows.items():
        for field in ("total_ms", "step_ms.high", "step_ms.low"):
            assert table.loc[case_id, field] == pytest.approx(row[field], rel=1e-12), (case_id, field)
        assert table.loc[case_id, "tokens"] == row["tokens"] and table.loc[case_id, "status"] == row["status"]
        assert math.isnan(table.loc[case_id, "peak_nvml_mib"])  # a CPU run: not measured, never zero
        assert table.loc[case_id, "fits"] == "n/a (not measured)"


def test_main_table_in_markdown_shows_the_results_numbers(report):
    files, rows = report
    headings, body = _markdown_table(files.markdown.read_text(), "Memory and latency per resolution x plan")
    unit, divisor = time_unit([r["total_ms"] for r in rows.values()])
    assert f"total ({unit})" in headings
    col = {h.split(" (")[0]: i for i, h in enumerate(headings)}
    assert len(body) == len(rows)
    for cells in body:
        row = rows[cells[col["case"]]]
        assert cells[col["total"]] == format_cell(row["total_ms"], "time", divisor)
        _, step_div = time_unit([r["step_ms.high"] for r in rows.values()])
        assert cells[col["per step, high-noise expert"]] == format_cell(row["step_ms.high"], "time", step_div)
        assert cells[col["plan"]] == f"text_encoder={row['text_encoder']}"
        assert cells[col["variant"]] == f"steps={row['steps']}"


def test_stage_table_equals_the_results_and_accounts_for_the_rest_of_the_total(report):
    files, rows = report
    table = pd.read_csv(files.out / "stages.csv").set_index("case")
    for case_id, row in rows.items():
        stages = [row[f"stage_ms.{s}"] for s in GENERATE_STAGES if s != "compile"]  # compile: compiled blocks only
        assert pd.isna(table.loc[case_id, "stage_ms.compile"]) and row["stage_ms.compile"] is None
        for stage, value in zip([s for s in GENERATE_STAGES if s != "compile"], stages):
            assert table.loc[case_id, f"stage_ms.{stage}"] == pytest.approx(value, rel=1e-12)
        assert table.loc[case_id, "load_ms"] == pytest.approx(row["load_ms"], rel=1e-12)
        assert table.loc[case_id, "unaccounted_ms"] == pytest.approx(row["total_ms"] - sum(stages), rel=1e-9)


def test_quality_table_recomputes_speedup_and_the_pareto_front(report):
    files, rows = report
    table = pd.read_csv(files.out / "quality.csv").set_index("case")
    assert sorted(table.index) == sorted(rows)  # every case has a reference in the smoke suite
    for case_id, row in rows.items():
        reference = rows[row["reference_case"]]
        assert table.loc[case_id, "speedup"] == pytest.approx(reference["total_ms"] / row["total_ms"], rel=1e-12)
        if row["is_reference"]:
            assert table.loc[case_id, "role"] == "reference" and math.isnan(table.loc[case_id, "psnr_db"])
        else:
            assert table.loc[case_id, "psnr_db"] == pytest.approx(row["psnr_db"], rel=1e-12)
            assert table.loc[case_id, "ssim"] == pytest.approx(row["ssim"], rel=1e-12)
            assert table.loc[case_id, "psnr_min_frame_db"] == pytest.approx(min(row["psnr_frames"]))
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
    assert "> **Note:** Synthetic weights (8 of 8 cases)" in text
    assert "Projected figures" not in text  # full timing: nothing projected


def test_memory_plot_of_a_cpu_run_says_nvml_took_no_samples(report):
    files, _ = report
    assert "no NVML samples: no CUDA device" in files.markdown.read_text()


def test_html_carries_every_markdown_table_cell(report):
    files, _ = report
    html = files.html.read_text()
    for heading, first in (("Memory and latency per resolution x plan", "plan"),
                           ("Memory and latency per resolution x plan", "case"),
                           ("Stage breakdown", "case"), ("Quality vs speed", "#")):
        _, body = _markdown_table(files.markdown.read_text(), heading, first)
        for cells in body:
            for cell in cells:
                assert f">{cell}</td>" in html, (heading, cell)
    assert html.count('<img src="data:image/png;base64,') == len(files.pngs)


def test_report_cli_prints_the_files_and_an_unknown_case_exits_2(smoke_run, tmp_path, capsys):
    assert main(["report", str(smoke_run), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'r' / 'report.md'}" in out and "memory_timeline.png" in out
    assert main(["report", str(smoke_run), "--out", str(tmp_path / "r2"), "--memory-case", "nope"]) == 2
    assert "no case 'nope' in this report" in capsys.readouterr().err
