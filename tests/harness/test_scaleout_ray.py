"""`--executor ray` on a local Ray (`ray.init(num_cpus=2)`, one session for the module): the smoke suite gives the
plain run's rows, a killed Ray worker costs its case alone (an error row a rerun completes), no row is lost or
written twice, and without Ray the option is a one-line error."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.results import read_rows
from harness.runner import FINISHED_STATUSES, run_suite
from harness.suite import load_suite
from scaleout_runs import deterministic, folder_rows, smoke_cases, smoke_run

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")  # in the test extra: CI runs these

FAKE = f"{Path(__file__).with_name('fake_pipeline.py')}:FakePipeline.load"
TIMEOUT_S = 180


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (a 2-core CI machine: two CPUs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # before Ray starts its workers: they inherit it
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_ray_runs_the_smoke_suite_with_the_plain_runs_rows(tmp_path_factory):
    plain = smoke_run(tmp_path_factory, "plain")[0]
    out, outcome, log = smoke_run(tmp_path_factory, "ray", executor="ray")
    assert deterministic(folder_rows(out)) == deterministic(folder_rows(plain))
    assert outcome.statuses == {"ok": smoke_cases()} and len(folder_rows(out)) == smoke_cases()
    assert "ray task 1 on " in log and "ray task 2 on " in log  # a line per task in the progress view
    assert (out / "timeline.jsonl").read_text().count("\n") == smoke_cases()  # written by the driver from the streamed records


def test_a_killed_ray_worker_costs_its_case_alone_and_a_rerun_completes_it(tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    suite_path = tmp_path / "fake.yaml"
    suite_path.write_text("\n".join([
        "name: fake", "model: {preset: tiny}", 'base: {size: "64*48", frames: 5, steps: 2}', "repeats: 1",
        "warmup: 0", "sweep:", "  prompt:", "    - first", f"    - 'wait-while-exists:{gate}'", "    - last"]) + "\n")
    suite, out = load_suite(suite_path), tmp_path / "out"
    done: dict = {}
    runner = threading.Thread(target=lambda: done.update(outcome=run_suite(
        suite, out, factory=FAKE, stream=io.StringIO(), executor="ray")), daemon=True)  # a hang fails, not blocks
    runner.start()
    started = Path(f"{gate}.started")
    deadline = time.monotonic() + TIMEOUT_S
    while not (started.exists() and started.read_text()):
        assert runner.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    worker = int(started.read_text())
    ray_worker = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])  # its parent
    os.kill(ray_worker, signal.SIGKILL)
    runner.join(TIMEOUT_S)
    gate.unlink()
    rows = read_rows(out / "results.jsonl")
    assert done["outcome"].statuses == {"ok": 2, "error": 1}
    (dead,) = [r for r in rows if r["status"] == "error"]
    assert dead["prompt"].startswith("wait-while-exists:") and dead["failed_stage"] == "denoise_high"
    assert dead["error"].startswith("worker process died (its Ray task was lost: ")
    again = run_suite(suite, out, factory=FAKE, stream=io.StringIO(), executor="ray")
    assert (again.ran, again.skipped, again.statuses) == (1, 2, {"ok": 3})
    after = read_rows(out / "results.jsonl")
    assert after[: len(rows)] == rows
    for case in suite.cases:
        assert len([r for r in after if r["case_id"] == case.case_id and r["status"] in FINISHED_STATUSES]) == 1


def test_without_ray_the_ray_executor_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does without the package
    assert main(["run", "smoke", "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    assert capsys.readouterr().err == ("wanbench run: --executor ray needs Ray, which is not installed: pip install "
                                       "'wanbench[ray]' (or pip install 'ray>=2.9')\n")
    assert not (tmp_path / "out").exists()


def test_a_local_ray_that_cannot_start_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    def init(**_):  # what a Ray whose gcs_server lost its execute bit raises (seen on a GPU machine)
        raise PermissionError(13, "Permission denied", "/site/ray/core/src/ray/gcs/gcs_server")

    broken = types.SimpleNamespace(is_initialized=lambda: False, init=init)
    monkeypatch.setitem(sys.modules, "ray", broken)
    assert main(["run", "smoke", "--out", str(tmp_path / "out"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wanbench run: a local Ray did not start (PermissionError: ") and "gcs_server" in err
    assert "`ray start --head` says what is wrong" in err and "bug" not in err


def test_ray_with_gpus_is_refused(tmp_path, capsys):
    assert main(["run", "smoke", "--out", str(tmp_path / "out"), "--executor", "ray", "--gpus", "0"]) == 2
    assert "--gpus and --executor ray: Ray gives each task its GPUs (num_gpus); drop --gpus" in capsys.readouterr().err
