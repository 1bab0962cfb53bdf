"""The smoke runs the scale-out tests compare (test_scaleout.py, test_scaleout_ray.py).

Every module asks for its runs by name in the session's temporary folder, and the runner resumes, so
the plain run they all compare with is measured once per session. One repeat, no warmup, one frame:
the tests compare which rows a run gives, not its times. The workers run with one OpenMP thread (two
workers side by side on a 2-core machine must not fight for the cores).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from harness.results import deterministic_fields, latest_rows, read_rows
from harness.runner import RunOutcome, run_suite
from harness.suite import load_suite

SMOKE_OVERRIDES = ("repeats=1", "warmup=0", "frames=1")


def smoke_suite():
    """The smoke suite as these tests run it."""
    return load_suite("smoke", overrides=list(SMOKE_OVERRIDES))


def smoke_cases() -> int:
    """How many cases the smoke suite has."""
    return len(smoke_suite().cases)


def smoke_run(tmp_path_factory: pytest.TempPathFactory, name: str, **how: Any) -> tuple[Path, RunOutcome, str]:
    """The session's smoke run `name` (run on first use; `how`: run_suite's keywords): folder, outcome, log."""
    out = tmp_path_factory.getbasetemp() / f"scaleout-{name}"
    log = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # inherited by the worker processes
        outcome = run_suite(smoke_suite(), out, stream=log, **how)
    return out, outcome, log.getvalue()


def deterministic(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each case's latest row without its measured fields, by case id."""
    return {row["case_id"]: deterministic_fields(row) for row in latest_rows(rows)}


def folder_rows(folder: Path) -> list[dict[str, Any]]:
    """Every row of a run folder, in order."""
    return read_rows(folder / "results.jsonl")
