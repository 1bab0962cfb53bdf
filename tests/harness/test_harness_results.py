"""The results store: rows appended as JSONL, read back as a DataFrame, written as CSV and parquet."""

from __future__ import annotations

import json

import pandas as pd

from harness.jobs import CaseJob, WorkerJob, failure_row
from harness.results import (
    SCHEMA, append_row, latest_rows, metric_names, read_results, read_rows, replace_rows, undocumented_fields,
    write_tables,
)


def _row(case_id: str, total_ms: float, **extra) -> dict:
    return {"suite": "t", "case_id": case_id, "status": "ok", "total_ms": total_ms,
            "repeats_ms.total": [total_ms, total_ms + 1.0], "psnr_db": None, "steps": 4, **extra}


def test_rows_round_trip_through_jsonl_dataframe_csv_and_parquet(tmp_path):
    append_row(tmp_path / "results.jsonl", _row("a", 10.5))
    append_row(tmp_path / "results.jsonl", _row("b", 20.25, psnr_db=31.5))
    df = read_results(tmp_path)
    assert list(df["case_id"]) == ["a", "b"]
    assert df.loc[1, "repeats_ms.total"] == [20.25, 21.25]
    csv_path, parquet_path = write_tables(tmp_path)
    from_csv = pd.read_csv(csv_path)
    assert list(from_csv["total_ms"]) == [10.5, 20.25]
    assert json.loads(from_csv.loc[0, "repeats_ms.total"]) == [10.5, 11.5]  # lists as JSON text in CSV
    from_parquet = pd.read_parquet(parquet_path)
    assert list(from_parquet.loc[1, "repeats_ms.total"]) == [20.25, 21.25]
    assert pd.isna(from_parquet.loc[0, "psnr_db"]) and from_parquet.loc[1, "psnr_db"] == 31.5


def test_the_latest_row_of_a_case_wins_when_reading_back(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, _row("a", 1.0, status="error"))
    append_row(path, _row("b", 2.0))
    append_row(path, _row("a", 3.0))
    assert [r["total_ms"] for r in latest_rows(read_rows(path))] == [3.0, 2.0]
    assert len(read_results(tmp_path, latest_only=False)) == 3


def test_a_torn_last_line_from_a_crash_is_skipped(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, _row("a", 1.0))
    with open(path, "a") as fh:
        fh.write('{"suite": "t", "case_id": "b", "sta')
    assert [r["case_id"] for r in read_rows(path)] == ["a"]


def test_a_row_appended_after_a_torn_line_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, _row("a", 1.0))
    with open(path, "a") as fh:
        fh.write('{"suite": "t", "case_id": "b", "sta')
    append_row(path, _row("b", 2.0))  # the resumed run
    assert [r["case_id"] for r in read_rows(path)] == ["a", "b"]


def test_replace_rows_rewrites_only_the_latest_row_of_a_case(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, _row("a", 1.0))
    append_row(path, _row("a", 2.0))
    replace_rows(path, {"a": _row("a", 2.0, psnr_db=40.0)})
    rows = read_rows(path)
    assert [r["psnr_db"] for r in rows] == [None, 40.0]


def test_failure_rows_are_fully_documented_by_the_schema():
    job = WorkerJob(suite="t", group="all", out="/tmp", preset="tiny", weights="synthetic", device="cpu",
                    timing="full", repeats=1, warmup=0, sampled={"warmup_steps": 1, "measured_steps": 1},
                    quality={"resize_filter": "bicubic", "antialias": True})
    case = CaseJob("steps=2", {"steps": 2, "size": "160*96", "experts": "swap"}, None, False)
    row = failure_row(job, case, "oom", "out of memory", "denoise_high", {"peak_allocated_mib": 12.0})
    assert row["status"] == "oom" and row["failed_stage"] == "denoise_high"
    assert undocumented_fields(row) == []
    assert undocumented_fields({"stage_ms.denoise_middle": 1.0}) == ["stage_ms.denoise_middle"]


def test_metric_names_expand_stages_and_experts():
    names = metric_names()
    assert {"total_ms", "load_ms", "stage_ms.vae_decode", "step_ms.high", "peak_nvml_mib", "psnr_db"} <= set(names)
    assert "case_id" not in names
    assert len({d.name for d in SCHEMA}) == len(SCHEMA)  # each field documented once
