"""The results store: rows appended as JSONL, read back as a DataFrame, written as CSV and parquet."""

from __future__ import annotations

import errno
import json
import os

import pandas as pd
import pytest

from harness.jobs import CaseJob, WorkerJob, failure_row, identity_fields
from harness.results import (
    SCHEMA, SCHEMA_VERSION, NoSpaceLeft, append_row, guard_row, latest_rows, metric_names, read_results, read_rows,
    repair_tail, replace_rows, undocumented_fields, write_tables,
)
from wan_runtime.errors import ConfigError


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


JOB = WorkerJob(suite="t", group="all", out="/tmp", preset="tiny", weights="synthetic", device="cpu",
                timing="full", repeats=1, warmup=0, sampled={"warmup_steps": 1, "measured_steps": 1},
                quality={"resize_filter": "bicubic", "antialias": True})
CASE = CaseJob("steps=2", {"steps": 2, "size": "160*96", "experts": "swap"}, None, False)


def test_failure_rows_are_fully_documented_by_the_schema():
    job, case = JOB, CASE
    row = failure_row(job, case, "oom", "out of memory", "denoise_high", {"peak_allocated_mib": 12.0})
    assert row["status"] == "oom" and row["failed_stage"] == "denoise_high"
    assert undocumented_fields(row) == []
    assert undocumented_fields({"stage_ms.denoise_middle": 1.0}) == ["stage_ms.denoise_middle"]


def test_metric_names_expand_stages_and_experts():
    names = metric_names()
    assert {"total_ms", "load_ms", "stage_ms.vae_decode", "step_ms.high", "peak_nvml_mib", "psnr_db"} <= set(names)
    assert "case_id" not in names
    assert len({d.name for d in SCHEMA}) == len(SCHEMA)  # each field documented once


# ---------------------------------------------------------------- torn tails
TORN = '{"suite": "t", "case_id": "b", "sta'


@pytest.mark.parametrize("ending", ["", "\n"], ids=["without-newline", "with-newline"])
def test_a_torn_tail_is_cut_and_kept_aside_before_the_next_append(tmp_path, ending):
    path = tmp_path / "results.jsonl"
    append_row(path, _row("a", 1.0))
    with open(path, "a") as fh:
        fh.write(TORN + ending)
    torn = append_row(path, _row("b", 2.0))  # the resumed run
    assert [r["case_id"] for r in read_rows(path)] == ["a", "b"]
    assert (tmp_path / "results.jsonl.torn").read_text() == TORN + "\n"
    assert torn.describe() == (f"{path}: line 2 was torn (a write cut by a crash or a copy; {len(TORN + ending)} "
                               f"bytes): cut, and kept in {tmp_path / 'results.jsonl.torn'}")


def test_a_complete_last_row_that_only_lacks_its_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_row("a", 1.0)))
    assert repair_tail(path) is None
    append_row(path, _row("b", 2.0))
    assert [r["case_id"] for r in read_rows(path)] == ["a", "b"]
    assert not (tmp_path / "results.jsonl.torn").exists()


def test_a_torn_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_row("a", 1.0)) + "\n" + TORN + "\n" + json.dumps(_row("b", 1.0)) + "\n")
    with pytest.raises(ConfigError, match=r"results.jsonl: line 2 is not valid JSON .*the results file is damaged"):
        read_rows(path)


# ---------------------------------------------------------------- what a row must be
def test_every_row_carries_the_schema_version():
    assert identity_fields(JOB, CASE)["schema_version"] == SCHEMA_VERSION == 1
    assert failure_row(JOB, CASE, "error", "x", None)["schema_version"] == SCHEMA_VERSION


def test_a_row_of_an_unknown_schema_version_is_refused_with_its_line(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, _row("a", 1.0))
    append_row(path, _row("b", 1.0, schema_version=2))
    with pytest.raises(ConfigError, match=r"line 2 has schema_version 2; this wanbench reads version\(s\) 1"):
        read_rows(path)


def test_a_row_written_before_schema_versions_is_read_as_version_1(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_row("a", 1.0)) + "\n")  # _row carries no schema_version
    assert [r["case_id"] for r in read_rows(path)] == ["a"]


@pytest.mark.parametrize("row, problem", [
    ({"suite": "t", "status": "ok"}, "has no case_id"),
    ({"suite": "t", "case_id": "a", "status": "done"}, "has status 'done'"),
    ({"case_id": "a", "status": "ok"}, "has no suite"),
    ([1, 2], "is a JSON list, not a result row"),
])
def test_a_malformed_row_is_refused_with_its_line(tmp_path, row, problem):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_row("a", 1.0)) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match=f"results.jsonl: line 2 {problem}"):
        read_rows(path)


# ---------------------------------------------------------------- non-finite figures
def test_a_nan_figure_turns_an_ok_row_into_an_error_naming_it():
    row = guard_row(_row("a", 12.5, psnr_db=float("nan"), psnr_frames=[30.0, float("inf")]))
    assert row["status"] == "error"
    assert row["error"] == ("non-finite values in the result (psnr_db=nan, psnr_frames[1]=inf); "
                            "the case is not trusted as measured")
    assert row["psnr_db"] is None and row["psnr_frames"] == [30.0, None] and row["total_ms"] == 12.5


def test_a_nan_in_a_failed_row_is_nulled_and_named_in_its_error():
    row = guard_row(_row("a", 1.0, status="oom", error="out of memory", guide_scale_high=float("-inf")))
    assert row["status"] == "oom" and row["guide_scale_high"] is None
    assert row["error"].startswith("out of memory; non-finite values in the result (guide_scale_high=-inf)")


def test_no_path_that_writes_rows_stores_a_non_finite_ok_row(tmp_path):
    path = tmp_path / "results.jsonl"
    append_row(path, _row("a", float("inf")))
    append_row(path, _row("b", 1.0))
    replace_rows(path, {"b": _row("b", 1.0, psnr_db=float("nan"))})
    assert [r["status"] for r in read_rows(path)] == ["error", "error"]

    def refuse(constant):
        raise AssertionError(f"{constant} stored in results.jsonl")

    for line in path.read_text().splitlines():
        json.loads(line, parse_constant=refuse)


# ---------------------------------------------------------------- a full disk
def test_a_write_that_fills_the_disk_leaves_no_half_row(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    append_row(path, _row("a", 1.0))
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 20:
            return real_write(fd, bytes(data[:20]))  # a partial write, as a filling disk gives
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(NoSpaceLeft, match=r"no space left writing .*results.jsonl; rows written before are kept"):
        append_row(path, _row("b", 2.0))
    monkeypatch.undo()
    assert path.read_bytes() == before
