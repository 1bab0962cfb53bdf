"""The environment of a row: the threads torch ran with, how busy the host was, how its GPUs are linked."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
import torch

from harness import environment
from harness.results import read_rows
from harness.runner import run_suite
from harness.suite import parse_suite

FAKE = f"{Path(__file__).with_name('fake_pipeline.py')}:FakePipeline.load"


def test_rows_record_the_load_average_and_cores():
    env = environment.collect(torch.device("cpu"))
    assert env["env.cpu_count"] >= 1 and env["env.cpu_usable"] >= 1
    assert env["env.load_avg_1m"] >= 0 and env["env.load_avg_15m"] >= 0
    assert isinstance(env["env.host_busy"], bool)


def test_a_host_loaded_beyond_its_cores_is_busy_and_warned_about(monkeypatch):
    monkeypatch.setattr(environment.os, "getloadavg", lambda: (9.0, 5.0, 3.0))
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 2)
    env = environment.host_load() | {"env.cpu_count": 2, "env.threads": 1}
    assert env["env.host_busy"] is True
    warning = environment.busy_warning(env)
    assert warning.startswith("warning: host busy: load average 9.0 over 2 cores")
    assert "\n" not in warning


def test_a_quiet_host_is_not_warned_about(monkeypatch):
    monkeypatch.setattr(environment.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert environment.busy_warning(environment.host_load() | {"env.cpu_count": 2}) is None


def test_the_interconnect_is_nvidia_smis_table_without_terminal_escapes(monkeypatch):
    # as nvidia-smi 580 prints it into a pipe on one H200 (header underlined with escapes)
    printed = "\x1b[4mGPU0\tCPU Affinity\tNUMA Affinity\x1b[0m\nGPU0\t X \t0-15\t0\n"
    monkeypatch.setattr(environment.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(environment.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=printed, stderr=""))
    assert environment.interconnect() == "GPU0\tCPU Affinity\tNUMA Affinity\nGPU0\t X \t0-15\t0"


def test_a_suites_threads_are_set_for_the_worker_and_recorded():
    before = torch.get_num_threads()
    try:
        assert environment.set_threads(1, torch.device("cpu"))["env.threads"] == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_every_row_records_the_threads_asked_for_and_in_effect(tmp_path):
    suite = parse_suite('name: t\nmodel: {preset: tiny}\nbase: {size: "64*48", frames: 5, steps: 2, threads: 1}\n'
                        "repeats: 1\nwarmup: 0\n", source="t.yaml")
    run_suite(suite, tmp_path / "out", factory=FAKE, stream=io.StringIO())
    row = read_rows(tmp_path / "out" / "results.jsonl")[-1]
    assert row["status"] == "ok"
    assert (row["threads"], row["env.threads"]) == (1, 1)
    assert row["size_rule"] == "exact" and isinstance(row["env.host_busy"], bool)
