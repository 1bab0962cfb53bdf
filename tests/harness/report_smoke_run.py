"""The smoke run that the report and compare tests read (test_report_smoke, test_compare_smoke, test_report_html).

One run per test session: every module asks for the same folder with the same overrides, and the
runner resumes, so only the first one measures. 5 repeats (the significance test needs 5 a side)
after 1 warmup (the first generation of a process is slower and would be an outlier repeat).

The workers inherit the tests' pinned thread count (tests/conftest.py): on a shared 2-core machine,
torch's default two threads spin-wait whenever another job holds a core, and single repeats then
take 10-20x longer; one thread keeps repeats within ~20% of each other under load.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness.runner import run_suite
from harness.suite import load_suite

SMOKE_OVERRIDES = ("repeats=5", "warmup=1")


def smoke_run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's smoke run folder, measured on first use."""
    out = tmp_path_factory.getbasetemp() / "smoke-for-reports"
    run_suite(load_suite("smoke", overrides=list(SMOKE_OVERRIDES)), out, stream=io.StringIO())
    return out
