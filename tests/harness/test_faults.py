"""Faults a run folder must survive: two runs at once, torn tails, a full disk, signals to the runner and to
its worker. After each, no finished row is lost or duplicated and the same command run again completes.

Cases run the stand-in pipeline (tests/harness/fake_pipeline.py: no model, so the faults are quick to
provoke) on the tiny preset at 80*48, 5 frames, 2 steps; its prompts script what happens mid-case.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.cli.main import main
from harness.jobs import RUNNER_PID_ENV, CaseJob, WorkerJob, identity_fields
from harness.launch import EventServer
from harness.results import append_row, read_rows
from harness.runner import FINISHED_STATUSES, RunOutcome, prepare_out_dir, run_suite
from harness.suite import Suite, load_suite
from harness.worker import RUNNER_GONE_EXIT

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FAKE = f"{Path(__file__).with_name('fake_pipeline.py')}:FakePipeline.load"
TIMEOUT_S = 180  # generous: a worker starts in seconds, but CI machines are shared


# ---------------------------------------------------------------- helpers
def _write_suite(folder: Path, prompts: list[str]) -> Path:
    path = folder / "fault.yaml"
    lines = ["name: fault", "model: {preset: tiny}", 'base: {size: "80*48", frames: 5, steps: 2}', "repeats: 1",
             "warmup: 0", "sweep:", "  prompt:"] + [f"    - '{p}'" for p in prompts]
    path.write_text("\n".join(lines) + "\n")
    return path


def _argv(suite: Path, out: Path) -> list[str]:
    return ["run", str(suite), "--out", str(out), "--factory", FAKE]


def _start(suite: Path, out: Path) -> subprocess.Popen:
    """`wanbench run` in a process group of its own (a terminal's Ctrl-C signals the whole group)."""
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.Popen([sys.executable, "-m", "harness.cli", *_argv(suite, out)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_started(gate: Path, proc: subprocess.Popen) -> int:
    """Wait until a `wait-while-exists:GATE` case is running; the pid of the worker running it."""
    started = Path(f"{gate}.started")
    deadline = time.monotonic() + TIMEOUT_S
    while not started.exists() or not started.read_text():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before its case started: {proc.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no worker started the case behind {gate}")
        time.sleep(0.05)
    pid = int(started.read_text())
    started.unlink()
    return pid


def _alive(pid: int) -> bool:
    """True while the process runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _rerun(suite_path: Path, out: Path) -> tuple[RunOutcome, str]:
    stream = io.StringIO()
    return run_suite(load_suite(suite_path), out, factory=FAKE, stream=stream), stream.getvalue()


def _assert_each_case_finished_once(out: Path, suite: Suite, rows_before: list[dict]) -> None:
    """Nothing finished before the fault is lost, and every case has exactly one finished row."""
    rows = read_rows(out / "results.jsonl")
    assert rows[: len(rows_before)] == rows_before
    for case in suite.cases:
        finished = [r for r in rows if r["case_id"] == case.case_id and r["status"] in FINISHED_STATUSES]
        assert len(finished) == 1, f"{case.case_id}: {len(finished)} finished rows"


@dataclass
class Fault:
    """What one provoked fault left: the interrupted run's exit status and output, and what came after."""

    suite: Suite
    out: Path
    returncode: int
    stderr: str
    worker_gone: bool
    rows_before: list[dict]
    rerun: RunOutcome
    rerun_log: str
    runner_pid: int = 0
    meanwhile: Any = None  # what `meanwhile` returned


def _signal_the_runner(tmp: Path, signum: int, whole_group: bool = False,
                       meanwhile: Callable[[Path, Path], Any] | None = None) -> Fault:
    """A run whose second case is mid-way when the runner (or its process group) gets `signum`; then the same
    command again. `meanwhile(suite_path, out)` runs while the case waits, before the signal."""
    gate = tmp / "gate"
    gate.touch()
    suite_path = _write_suite(tmp, ["first", f"wait-while-exists:{gate}"])
    out = tmp / "out"
    proc = _start(suite_path, out)
    worker = _wait_started(gate, proc)
    rows_before = read_rows(out / "results.jsonl")
    during = meanwhile(suite_path, out) if meanwhile else None
    if whole_group:
        os.killpg(proc.pid, signum)
    else:
        os.kill(proc.pid, signum)
    _, stderr = proc.communicate(timeout=TIMEOUT_S)
    gone = _gone_within(worker, 10)
    gate.unlink()
    rerun, log = _rerun(suite_path, out)
    return Fault(load_suite(suite_path), out, proc.returncode, stderr, gone, rows_before, rerun, log, proc.pid, during)


INTERRUPTED = "wanbench run: interrupted; 1 finished cases kept; rerun the same command to resume"


def _assert_the_rerun_completed(fault: Fault, ran: int, skipped: int) -> None:
    """The same command again ran what was left, skipped what had finished, and every case ended ok once."""
    assert (fault.rerun.ran, fault.rerun.skipped, fault.rerun.statuses) == (ran, skipped, {"ok": ran + skipped})
    _assert_each_case_finished_once(fault.out, fault.suite, fault.rows_before)


# ---------------------------------------------------------------- Ctrl-C or SIGTERM, and a second run meanwhile
def _second_run(suite_path: Path, out: Path) -> tuple[int, str, list[dict]]:
    """`wanbench run` of the same command into the busy folder: (exit status, stderr, rows after it)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(_argv(suite_path, out))
    return code, err.getvalue(), read_rows(out / "results.jsonl")


INTERRUPTS = {"ctrl-c": (signal.SIGINT, True, 130), "sigterm": (signal.SIGTERM, False, 143)}


@pytest.fixture(scope="module", params=sorted(INTERRUPTS))
def interrupted(request, tmp_path_factory):
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) or SIGTERM to the runner, mid-case, after
    a second run into the folder was tried; then the same command again."""
    signum, whole_group, _ = INTERRUPTS[request.param]
    fault = _signal_the_runner(tmp_path_factory.mktemp(request.param), signum, whole_group, meanwhile=_second_run)
    return request.param, fault


def test_a_second_run_into_a_busy_folder_is_refused_at_once_naming_the_holder(interrupted):
    _, fault = interrupted
    code, err, rows_after_it = fault.meanwhile
    assert code == 3
    assert err.startswith(f"wanbench run: run folder {fault.out} is in use by another run "
                          f"(pid {fault.runner_pid} on host ")
    assert f"wanbench run {fault.out.parent / 'fault.yaml'} --out {fault.out}" in err and err.count("\n") == 1
    assert rows_after_it == fault.rows_before  # it ran nothing


def test_an_interrupt_ends_the_run_in_one_line_with_its_exit_status(interrupted):
    name, fault = interrupted
    assert fault.returncode == INTERRUPTS[name][2]  # 130 for Ctrl-C, 143 for SIGTERM
    assert fault.stderr.splitlines()[-1] == INTERRUPTED and "Traceback" not in fault.stderr


def test_an_interrupt_stops_the_worker(interrupted):
    assert interrupted[1].worker_gone


def test_after_an_interrupt_the_same_command_completes_keeping_every_finished_row_once(interrupted):
    _assert_the_rerun_completed(interrupted[1], ran=1, skipped=1)


# ---------------------------------------------------------------- SIGKILL to the runner
@pytest.fixture(scope="module")
def runner_killed(tmp_path_factory):
    return _signal_the_runner(tmp_path_factory.mktemp("sigkill"), signal.SIGKILL)


def test_a_worker_dies_with_its_killed_runner(runner_killed):
    assert runner_killed.returncode == -signal.SIGKILL
    assert runner_killed.worker_gone


def test_after_a_killed_runner_the_next_run_takes_the_folder_over_and_completes(runner_killed):
    assert f"took over run folder {runner_killed.out}, left locked by a run that ended without releasing it (pid " \
        in runner_killed.rerun_log
    _assert_the_rerun_completed(runner_killed, ran=1, skipped=1)


# ---------------------------------------------------------------- signals to the worker
@pytest.fixture(scope="module")
def worker_signalled(tmp_path_factory):
    """Two waiting cases: the first worker gets SIGINT (ignored), then SIGTERM; the next one SIGKILL."""
    tmp = tmp_path_factory.mktemp("worker")
    gates = [tmp / "gate1", tmp / "gate2"]
    for gate in gates:
        gate.touch()
    suite_path = _write_suite(tmp, [f"wait-while-exists:{g}" for g in gates])
    out = tmp / "out"
    proc = _start(suite_path, out)
    first = _wait_started(gates[0], proc)
    os.kill(first, signal.SIGINT)
    time.sleep(1.0)
    survived_sigint = _alive(first)
    os.kill(first, signal.SIGTERM)
    second = _wait_started(gates[1], proc)
    os.kill(second, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=TIMEOUT_S)
    rows = read_rows(out / "results.jsonl")
    for gate in gates:
        gate.unlink()
    rerun, log = _rerun(suite_path, out)
    return Fault(load_suite(suite_path), out, proc.returncode, stderr, True, rows, rerun, log), survived_sigint


def test_sigint_to_the_worker_alone_is_left_to_the_runner(worker_signalled):
    assert worker_signalled[1]  # the terminal's Ctrl-C reaches the worker too: the runner decides


def test_a_worker_killed_by_sigterm_or_sigkill_loses_only_its_case_and_the_run_goes_on(worker_signalled):
    fault = worker_signalled[0]
    assert fault.returncode == 1  # a case ended in error
    assert [(r["status"], r["error"].split(" in stage")[0]) for r in fault.rows_before] == [
        ("error", "worker process died (killed by signal 15)"), ("error", "worker process died (killed by signal 9)")]


def test_after_killed_workers_the_same_command_completes_every_case_once(worker_signalled):
    _assert_the_rerun_completed(worker_signalled[0], ran=2, skipped=0)


# ---------------------------------------------------------------- torn tails
@pytest.mark.parametrize("ending", ["", "\n"], ids=["without-newline", "with-newline"])
def test_a_run_cuts_a_torn_tail_keeps_it_aside_and_completes(tmp_path, ending):
    suite_path = _write_suite(tmp_path, ["first", "second"])
    suite = load_suite(suite_path)
    out = tmp_path / "out"
    prepare_out_dir(out, suite)
    job = WorkerJob(suite="fault", group="all", out=str(out), preset="tiny", weights="synthetic", device="cpu",
                    timing="full", repeats=1, warmup=0, sampled={}, quality={})
    first = suite.cases[0]
    append_row(out / "results.jsonl", identity_fields(job, CaseJob(first.case_id, first.params, None, False))
               | {"status": "ok", "error": None})
    rows_before = read_rows(out / "results.jsonl")
    torn = '{"schema_version": 1, "suite": "fault", "case_id": "prompt=second", "sta'
    with open(out / "results.jsonl", "a") as fh:
        fh.write(torn + ending)
    outcome, log = _rerun(suite_path, out)
    assert f"{out / 'results.jsonl'}: line 2 was torn (a write cut by a crash or a copy; " in log
    assert (out / "results.jsonl.torn").read_text() == torn + "\n"
    assert (outcome.ran, outcome.skipped, outcome.statuses) == (1, 1, {"ok": 2})
    _assert_each_case_finished_once(out, suite, rows_before)


# ---------------------------------------------------------------- a full disk
def test_a_full_disk_ends_the_run_in_one_line_with_exit_4_and_the_rerun_completes(tmp_path, monkeypatch, capsys):
    """The disk fills while the second case's row is written (a patched write: works without a tmpfs)."""
    suite_path = _write_suite(tmp_path, ["first", "second", "third"])
    out = tmp_path / "out"
    real_write = os.write

    def full_for_the_second_row(fd, data):
        if b'"case_id": "prompt=second"' in bytes(data) and b'"status"' in bytes(data):  # its row, not its timeline
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_for_the_second_row)
    assert main(_argv(suite_path, out)) == 4
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (f"wanbench run: no space left writing {out / 'results.jsonl'}; 1 finished rows "
                                    "kept; free space and rerun")
    rows_before = read_rows(out / "results.jsonl")
    assert [r["case_id"] for r in rows_before] == ["prompt=first"]
    outcome, _ = _rerun(suite_path, out)
    assert (outcome.ran, outcome.skipped, outcome.statuses) == (2, 1, {"ok": 3})
    _assert_each_case_finished_once(out, load_suite(suite_path), rows_before)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (needs the right to mount; skipped otherwise)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_real_full_disk_keeps_finished_rows_and_the_rerun_completes(tmp_path, small_disk):
    marker = small_disk / "fill"
    marker.touch()
    suite_path = _write_suite(tmp_path, ["first", f"fill-disk-if-exists:{marker}", "last"])
    out = small_disk / "out"
    proc = _start(suite_path, out)
    _, stderr = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 4, stderr
    last = stderr.splitlines()[-1]
    assert last.startswith(f"wanbench run: no space left writing {out}") and last.endswith(
        "; 1 finished rows kept; free space and rerun"), stderr
    rows_before = read_rows(out / "results.jsonl")
    assert [r["case_id"] for r in rows_before] == ["prompt=first"]
    marker.unlink()
    Path(f"{marker}.filler").unlink()
    outcome, _ = _rerun(suite_path, out)
    assert (outcome.ran, outcome.skipped, outcome.statuses) == (2, 1, {"ok": 3})
    _assert_each_case_finished_once(out, load_suite(suite_path), rows_before)


# ---------------------------------------------------------------- a worker whose runner is gone
def _start_worker(tmp_path: Path, events: str, runner_pid: int | None) -> subprocess.CompletedProcess:
    suite = load_suite(_write_suite(tmp_path, ["first"]))
    case = suite.cases[0]
    job = WorkerJob(suite="fault", group="all", out=str(tmp_path), preset="tiny", weights="synthetic", device="cpu",
                    timing="full", repeats=1, warmup=0, sampled={"warmup_steps": 1, "measured_steps": 1},
                    quality={"resize_filter": "bicubic", "antialias": True}, factory=FAKE,
                    cases=[CaseJob(case.case_id, case.params, None, False)])
    job.write(tmp_path / "job.json")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop(RUNNER_PID_ENV, None)
    if runner_pid is not None:
        env[RUNNER_PID_ENV] = str(runner_pid)
    return subprocess.run([sys.executable, "-m", "harness.worker", str(tmp_path / "job.json"), events],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S)


def test_a_worker_whose_event_socket_is_gone_exits_quietly(tmp_path):
    server = EventServer()
    server.close()  # the runner is gone
    done = _start_worker(tmp_path, server.path, runner_pid=None)
    assert done.returncode == RUNNER_GONE_EXIT and "Traceback" not in done.stderr
    assert not (tmp_path / "results.jsonl").exists()


def test_a_worker_whose_runner_died_while_it_started_does_nothing(tmp_path):
    server = EventServer()
    try:
        done = _start_worker(tmp_path, server.path, runner_pid=os.getpid() + 1)  # not its parent: that one is gone
        assert server.accept(lambda: False) is None  # it never connected: not even loaded
    finally:
        server.close()
    assert done.returncode == RUNNER_GONE_EXIT
