"""The runner: a suite's cases, grouped by what must be loaded, each group in its own worker process.

- Scale-out: a launcher (harness.launch) starts each group's worker: one at a time by default;
  side by side with `--gpus`, each pinned to its GPUs; as Ray tasks with `--executor ray`. `--shard
  i/N` runs one shard of the groups (harness.shards). Workers only report; this process alone
  writes the run folder's rows and timeline, whatever the launcher.

- Isolation: cases that differ in what is loaded (memory plan, attention backend; the model and
  device are fixed per suite) run in different processes, so peak memory cannot leak between them.
  The parent never creates a CUDA context (it only counts the devices, to refuse a CUDA suite on a
  machine without one before any worker starts).
- Failures: an oom/error inside a case becomes that case's row and the worker stops; a worker that
  dies (killed, segfault) loses only its current case, which gets a `status: error` row with the
  stage it died in and the memory it had reached. Either way a new worker carries on with the rest.
- Resume: every row is appended to results.jsonl the moment its case ends. Running the same
  command again skips cases whose latest row is `ok` or `oom`, and retries `error` ones.
- Output folder: one run at a time (harness.runlock: a second run into it is refused, naming the
  holder). `run.json` records the suite and a fingerprint of its expanded cases; a folder holding
  another suite's results (or the same suite under other settings) is refused. A torn last line of
  results.jsonl (or timeline.jsonl) is cut and kept aside in `<file>.torn` before the run appends.
  A damaged run.json is rebuilt when the folder holds no results yet, else refused (see
  prepare_out_dir).
- Stops: Ctrl-C or SIGTERM (raised as SignalInterrupt by the CLI) kill every worker and end the run
  with RunInterrupted; a full disk ends it with NoSpaceLeft. Rows written before are kept either way
  and the same command resumes.
- Quality: reference cases run first and keep their frames; each other case is compared with its
  reference as soon as it ends, or, if the reference ran later, in a pass at the end of the run.
"""

from __future__ import annotations

import errno
import itertools
import json
import queue
import signal
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from harness.atomic import write_atomic
from harness.jobs import DEFAULT_FACTORY, CaseJob, WorkerJob, failure_row, now_iso, slug
from harness.launch import Launcher, LocalLauncher, WorkerExit, WorkerHandle, WorkerSpec, parse_gpus
from harness.params import case_ranks
from harness.progress import Progress
from harness.results import (MANIFEST_FILE, RESULTS_FILE, TIMELINE_FILE, NoSpaceLeft, append_row, is_no_space,
                             latest_rows, read_manifest, read_rows, repair_tail, replace_rows, write_tables)
from harness.runlock import RunLock
from harness.shards import Shard
from harness.suite import Case, Suite
from wan_runtime.errors import ConfigError, first_line

FINISHED_STATUSES = ("ok", "oom")  # an `error` row is retried by the next run


@dataclass
class RunOutcome:
    """What a run did: cases run now, cases skipped as finished, and the status of every case."""

    out: Path
    ran: int
    skipped: int
    statuses: dict[str, int]
    tables: tuple[Path, Path] | None = None
    cases: int = 0  # cases of the suite (of its shard) this folder holds


class SignalInterrupt(KeyboardInterrupt):
    """A termination signal (SIGTERM) raised like Ctrl-C, so the run stops the same clean way."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_signal_interrupt(signum: int, frame: Any = None) -> None:
    """A signal handler (`signal.signal(SIGTERM, raise_signal_interrupt)`, main thread only)."""
    raise SignalInterrupt(signum)


class RunInterrupted(Exception):
    """A run stopped by a signal: its worker is stopped, finished rows are kept, the same command resumes."""

    def __init__(self, signum: int, kept: int | None):
        kept_text = f"{kept} finished cases kept" if kept is not None else "finished cases kept"
        super().__init__(f"interrupted; {kept_text}; rerun the same command to resume")
        self.signum = signum
        self.kept = kept


@dataclass
class _WorkerState:
    """What the parent learned from one worker's events."""

    finished: set[str] = field(default_factory=set)
    current: str | None = None
    current_started: str | None = None
    stage: str | None = None
    allocated_mib: float | None = None
    nvml_mib: float | None = None
    loaded: bool = False
    no_space: tuple[str | None, str] | None = None  # (path, message) when the worker hit a full disk


# ---------------------------------------------------------------- before anything starts
def cuda_device_count() -> int:
    """CUDA devices this machine has (0 with a CPU build of torch); creates no CUDA context."""
    import torch

    return torch.cuda.device_count() if torch.backends.cuda.is_built() else 0


def check_runnable(suite: Suite) -> None:
    """Refuse, before any folder or worker is touched, a suite this machine cannot run (weights, device)."""
    weights = suite.spec.model.weights
    if weights != "synthetic" and not Path(weights).exists():
        raise ConfigError(f"model.weights {weights!r} is neither 'synthetic' nor an existing checkpoint folder")
    device = suite.spec.device
    if not device.startswith("cuda"):
        return
    count = cuda_device_count()
    if count == 0:
        import torch

        build = "a CPU build of torch" if not torch.backends.cuda.is_built() else "no device visible"
        raise ConfigError(f"suite {suite.name!r} runs on device {device!r}, but this machine has no CUDA device "
                          f"(torch {torch.__version__}: {build}); to run it here on the CPU at tiny scale: "
                          "--preset tiny --set device=cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(f"suite {suite.name!r} runs on device {device!r}, but this machine has {count} CUDA "
                          f"device(s) (cuda:0..cuda:{count - 1}); choose one with --set device=cuda:N")


def make_launcher(suite: Suite, gpus: str | None, executor: str, address: str | None) -> Launcher:
    """The launcher of a run: local processes (one at a time, or one per --gpus entry), or Ray tasks."""
    if executor == "ray":
        if gpus is not None:
            raise ConfigError("--gpus and --executor ray: Ray gives each task its GPUs (num_gpus); drop --gpus")
        from harness.ray_executor import RayLauncher

        return RayLauncher(suite.spec.device, address)
    if executor != "local":
        raise ConfigError(f"--executor {executor!r}: choose local or ray")
    if address is not None:
        raise ConfigError("--address names a Ray cluster: use it with --executor ray")
    device = suite.spec.device
    if gpus is None:
        return LocalLauncher(visible=cuda_device_count() if device.startswith("cuda") else None)
    if ":" in device:
        raise ConfigError(f"--gpus pins each worker to its GPUs, but suite {suite.name!r} names device {device!r}; "
                          "set --set device=cuda (each worker then uses the GPUs it is given) or drop --gpus")
    return LocalLauncher(parse_gpus(gpus, cuda_device_count() if device == "cuda" or gpus.strip() == "all" else None))


# ---------------------------------------------------------------- output folder
def prepare_out_dir(out: Path, suite: Suite, shard: Shard | None = None) -> str | None:
    """Create/check the output folder: writable, and holding nothing but this suite's results (of `shard`).

    A run.json that is torn, empty or not an object is rebuilt when the folder holds no result rows
    (nothing to mix up; the returned note says so); with rows it is an error, since nothing can tell
    which definition made them. Call it while holding the folder's RunLock.
    """
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output folder {out} is not writable ({exc.strerror or exc}); "
                          "choose another --out or fix its permissions") from None
    manifest = out / MANIFEST_FILE
    rows = read_rows(out / RESULTS_FILE)
    note = None
    if manifest.exists():
        data, damage = read_manifest(manifest)
        if data is not None:
            _check_manifest(out, data, suite, shard)
            return None
        if rows:
            raise ConfigError(
                f"{manifest} is damaged ({damage}), so nothing tells which suite definition made the {len(rows)} "
                f"rows of {RESULTS_FILE}; if they are {suite.name!r} run with these settings, delete run.json and "
                "rerun to adopt them, else use another --out"
            )
        note = f"{manifest} was damaged ({damage}); rebuilt (the folder held no results yet)"
    foreign = {row.get("suite") for row in rows} - {suite.name}
    if foreign:
        raise ConfigError(f"output folder {out} holds results of suite(s) {sorted(foreign)}; use another --out")
    text = json.dumps({
        "suite": suite.name,
        "fingerprint": suite.fingerprint(),
        "suite_file": str(suite.path) if suite.path else None,
        "overrides": list(suite.overrides),
        "created": now_iso(),
        "shard": str(shard) if shard else None,
        "cases": [c.case_id for _, cases in (shard.select(suite.groups()) if shard else suite.groups()) for c in cases],
    }, indent=1)
    write_atomic(manifest, text)  # a crash never leaves half a run.json
    return note


def _check_manifest(out: Path, data: dict[str, Any], suite: Suite, shard: Shard | None) -> None:
    if data.get("suite") != suite.name:
        raise ConfigError(
            f"output folder {out} holds results of suite {data.get('suite')!r}, not {suite.name!r}; "
            "use another --out (each run folder holds one suite)"
        )
    if data.get("fingerprint") != suite.fingerprint():
        raise ConfigError(
            f"output folder {out} holds results of suite {suite.name!r} run with other settings "
            f"(cases, repeats, timing, model or overrides {list(data.get('overrides', []))} differ); "
            "results in one folder must come from one definition: use another --out"
        )
    if data.get("shard") != (str(shard) if shard else None):
        held = f"shard {data['shard']}" if data.get("shard") else "the whole suite"
        asked = f"shard {shard}" if shard else "the whole suite"
        raise ConfigError(f"output folder {out} holds {held} of suite {suite.name!r}, not {asked}; use another --out "
                          "(one folder per shard; `wanbench merge` joins them)")


def finished_cases(out: Path, suite: Suite) -> int | None:
    """How many cases of `suite` have a finished (ok/oom) latest row in `out` (None if unreadable)."""
    try:
        latest = {r["case_id"]: r for r in latest_rows(read_rows(out / RESULTS_FILE))}
    except (ConfigError, OSError):
        return None
    ids = {c.case_id for c in suite.cases}
    return sum(1 for case_id, row in latest.items() if case_id in ids and row["status"] in FINISHED_STATUSES)


# ---------------------------------------------------------------- the run
def run_suite(
    suite: Suite,
    out: str | Path,
    factory: str = DEFAULT_FACTORY,
    stream: TextIO | None = None,
    python: str = sys.executable,
    command: str = "",
    gpus: str | None = None,
    shard: Shard | None = None,
    executor: str = "local",
    address: str | None = None,
) -> RunOutcome:
    """Run every unfinished case of `suite` into `out`, holding the folder's lock; see the module docstring.

    `gpus` ("0,1,3" or "all") runs process groups side by side, each worker pinned to its GPUs; `shard`
    runs only that shard's groups; `executor` "ray" runs each group as a Ray task (`address`: the
    cluster, default a local Ray). Raises ConfigError (bad input, checked before anything starts),
    RunFolderBusy (another run holds `out`), NoSpaceLeft (the disk filled up) or RunInterrupted (Ctrl-C /
    SIGTERM); rows written before are kept in every case. `command` is recorded as the lock's holder
    (default: this process's argv).
    """
    out = Path(out).resolve()
    check_runnable(suite)
    launcher = make_launcher(suite, gpus, executor, address)
    try:
        return _run_holding(suite, out, factory, python, command, launcher, shard, stream)
    finally:
        launcher.close()


def _run_holding(suite: Suite, out: Path, factory: str, python: str, command: str, launcher: Launcher,
                 shard: Shard | None, stream: TextIO | None) -> RunOutcome:
    """run_suite once its launcher is ready: take the folder's lock and run."""
    progress = Progress(0, stream, workers=launcher.capacity)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = RunLock(out, command)
        lock.acquire()
    except OSError as exc:
        if is_no_space(exc):
            raise NoSpaceLeft(exc.filename or out, exc) from None
        raise ConfigError(f"output folder {out} is not writable ({exc.strerror or exc}); "
                          "choose another --out or fix its permissions") from None
    try:
        if lock.took_over:
            progress.note(lock.took_over)
        return _run_locked(suite, out, factory, python, progress, launcher, shard)
    except KeyboardInterrupt as exc:
        raise RunInterrupted(getattr(exc, "signum", signal.SIGINT), finished_cases(out, suite)) from None
    except NoSpaceLeft as exc:
        raise NoSpaceLeft(exc.path, exc.cause, finished_cases(out, suite)) from None
    except OSError as exc:
        if is_no_space(exc):
            raise NoSpaceLeft(exc.filename or out, exc, finished_cases(out, suite)) from None
        raise
    finally:
        lock.release()


def _run_locked(suite: Suite, out: Path, factory: str, python: str, progress: Progress, launcher: Launcher,
                shard: Shard | None) -> RunOutcome:
    note = prepare_out_dir(out, suite, shard)
    if note:
        progress.note(note)
    results = out / RESULTS_FILE
    for path in (results, out / TIMELINE_FILE):
        torn = repair_tail(path)
        if torn:
            progress.note(torn.describe())
    groups = shard.select(suite.groups()) if shard else suite.groups()
    mine = {c.case_id for _, cases in groups for c in cases}
    if shard is not None:
        progress.note(f"shard {shard}: {len(groups)} of {len(suite.groups())} process group(s), {len(mine)} of "
                      f"{len(suite.cases)} cases")
    finished = {r["case_id"] for r in latest_rows(read_rows(results)) if r.get("status") in FINISHED_STATUSES}
    references = {c.reference_id for c in suite.cases if c.reference_id and c.reference_id != c.case_id}
    todo = [(g, [c for c in cases if c.case_id not in finished]) for g, cases in groups]
    todo = [(g, cases) for g, cases in todo if cases]
    for group, cases in todo:
        launcher.check(group_ranks(cases), f"process group {group!r}")
    progress.total = sum(len(c) for _, c in todo)
    skipped = len([c for c in suite.cases if c.case_id in finished and c.case_id in mine])
    if skipped:
        progress.note(f"resuming {out}: {skipped} finished case(s) skipped")

    context = _RunContext(suite, out, factory, python, references, progress, launcher)
    context.run(todo)

    fill_pending_quality(suite, out)
    tables = None
    if results.exists():
        try:
            tables = write_tables(out)
        except ImportError as exc:  # results.jsonl is complete; the tables are a convenience
            progress.note(f"results.csv/.parquet not written ({exc}); results.jsonl is complete")
    latest = {r["case_id"]: r for r in latest_rows(read_rows(results))}
    statuses = Counter(latest[c.case_id]["status"] for c in suite.cases if c.case_id in latest and c.case_id in mine)
    return RunOutcome(out, ran=progress.total, skipped=skipped, statuses=dict(statuses), tables=tables,
                      cases=len(mine))


def group_ranks(cases: list[Case]) -> int:
    """Ranks (GPUs) a process group's worker runs on (its cases share the ParallelPlan: it is a load parameter)."""
    return case_ranks(cases[0].params)


def _append(results: Path, row: dict[str, Any], progress: Progress) -> None:
    """Append a row; say so when a torn tail had to be cut first."""
    torn = append_row(results, row)
    if torn:
        progress.note(torn.describe())


def _job(suite: Suite, group: str, cases: list[Case], references: set[str], out: Path, factory: str,
         host_workers: int = 1) -> WorkerJob:
    """The job file of a worker running `cases` of `group`."""
    spec = suite.spec
    return WorkerJob(
        suite=suite.name, group=group, out=str(out), preset=spec.model.preset, weights=spec.model.weights,
        device=spec.device, timing=spec.timing, repeats=spec.repeats, warmup=spec.warmup,
        sampled=spec.sampled.model_dump(), quality=spec.quality.model_dump(),
        cases=[CaseJob(c.case_id, c.params, c.reference_id, c.case_id in references) for c in cases],
        factory=factory, host_workers=host_workers, ranks=group_ranks(cases),
    )


@dataclass
class _Attempt:
    """One worker running (some of) one group's cases."""

    group: str
    cases: list[Case]
    handle: WorkerHandle
    state: _WorkerState
    thread: threading.Thread | None = None


class _RunContext:
    """Runs process groups through the launcher, as many at once as it places, and keeps every row.

    Workers' events arrive on one queue (a thread per worker reads them); this thread alone handles
    them, so rows, timeline records and the progress view have one writer. A worker that stopped
    after a failed case, or died, leaves the rest of its group to a fresh worker (see the module
    docstring); Ctrl-C, SIGTERM or any failure of the run stops every worker.
    """

    def __init__(self, suite: Suite, out: Path, factory: str, python: str, references: set[str],
                 progress: Progress, launcher: Launcher):
        self.suite, self.out, self.factory, self.python = suite, out, factory, python
        self.references, self.progress, self.launcher = references, progress, launcher
        self.results = out / RESULTS_FILE
        self.queue: queue.Queue = queue.Queue()
        self.running: dict[int, _Attempt] = {}
        self._ids = itertools.count()

    def run(self, todo: list[tuple[str, list[Case]]]) -> None:
        """Run every group of `todo` to its end (each case gets a row)."""
        pending = list(todo)
        try:
            while pending or self.running:
                for item in list(pending):
                    if self.launcher.can_start(group_ranks(item[1])):
                        pending.remove(item)
                        self._start(*item)
                kind, attempt_id, payload = self._next()
                attempt = self.running[attempt_id]
                if kind == "event":
                    self._handle(attempt, payload)
                    continue
                del self.running[attempt_id]
                self.launcher.release(attempt.handle.spec)
                self.progress.worker_ended(attempt.handle.label)
                rest = self._after_exit(attempt, payload)
                if rest:
                    pending.insert(0, (attempt.group, rest))
        finally:
            for attempt in self.running.values():
                attempt.handle.kill()
            for attempt in self.running.values():
                attempt.thread.join(10)

    def _next(self) -> tuple[str, int, Any]:
        while True:  # a timeout keeps the wait interruptible by Ctrl-C on every platform
            try:
                return self.queue.get(timeout=0.5)
            except queue.Empty:
                continue

    def _start(self, group: str, cases: list[Case]) -> None:
        logs = self.out / "logs"
        logs.mkdir(exist_ok=True)
        job_path, log_path = logs / f"{slug(group)}.job.json", logs / f"{slug(group)}.log"
        _job(self.suite, group, cases, self.references, self.out, self.factory,
             self.launcher.capacity).write(job_path)
        handle = self.launcher.start(WorkerSpec(job_path, log_path, self.python, ranks=group_ranks(cases)))
        attempt_id = next(self._ids)
        attempt = _Attempt(group, list(cases), handle, _WorkerState())
        attempt.thread = threading.Thread(target=_pump, args=(attempt_id, handle, self.queue),
                                          name=f"events-{attempt_id}", daemon=True)
        self.running[attempt_id] = attempt
        attempt.thread.start()

    def _handle(self, attempt: _Attempt, event: dict) -> None:
        _handle(event, attempt.state, self.out, self.progress, attempt.handle.label)

    def _after_exit(self, attempt: _Attempt, exit: WorkerExit) -> list[Case]:
        """Rows for what the worker's end cost; the cases a fresh worker must still run."""
        state = attempt.state
        if state.no_space is not None:
            path, message = state.no_space
            raise NoSpaceLeft(path, OSError(errno.ENOSPC, message))
        remaining = [c for c in attempt.cases if c.case_id not in state.finished]
        if not remaining:
            return []
        log = attempt.handle.spec.log
        if state.current is not None:  # died mid-case: that case alone is lost
            dead = next(c for c in remaining if c.case_id == state.current)
            self._dead(attempt, dead, exit, log)
            remaining.remove(dead)
            return remaining
        if not state.finished:  # died before any case (while loading): the group cannot run
            for case in remaining:
                self._dead(attempt, case, exit, log)
            return []
        return remaining  # the worker stopped after a failed case; a fresh one takes the rest

    def _dead(self, attempt: _Attempt, case: Case, exit: WorkerExit, log: Path) -> None:
        row = _dead_worker_row(self.suite, attempt.group, case, self.references, self.out, self.factory,
                               attempt.state, exit, log)
        _append(self.results, row, self.progress)
        self.progress.case_finished(case.case_id, "error", first_line(row["error"]), attempt.handle.label)


def _pump(attempt_id: int, handle: WorkerHandle, events: queue.Queue) -> None:
    """A worker's events onto the run's queue, then its exit (a thread per worker)."""
    try:
        for event in handle.events():
            events.put(("event", attempt_id, event))
        exit = handle.wait()
    except Exception as exc:  # the channel itself failed: the worker is stopped and counts as dead
        handle.kill()
        exit = WorkerExit(None, f"its launcher failed: {type(exc).__name__}: {first_line(str(exc))}")
    events.put(("exit", attempt_id, exit))


def _handle(event: dict, state: _WorkerState, out: Path, progress: Progress, worker: str = "") -> None:
    kind = event.get("event")
    if kind == "loaded":
        state.loaded = True
    elif kind == "case_start":
        state.current, state.current_started = event["case_id"], now_iso()
        state.stage = state.allocated_mib = state.nvml_mib = None
        progress.case_started(event["case_id"], worker)
    elif kind == "timeline":
        _append(out / TIMELINE_FILE, event["record"], progress)
    elif kind == "result":
        row = event["row"]
        _append(out / RESULTS_FILE, row, progress)
        state.finished.add(row["case_id"])
        state.current = None
        progress.case_finished(row["case_id"], row["status"], first_line(row.get("error")), worker)
    elif kind == "no_space":
        state.no_space = (event.get("path"), event.get("message") or "No space left on device")
    else:
        if kind == "stage":
            state.stage = event["stage"]
            for key in ("allocated_mib", "nvml_mib"):
                if event.get(key) is not None:
                    setattr(state, key, max(getattr(state, key) or 0.0, event[key]))
        progress.event(event, worker)


def _dead_worker_row(
    suite: Suite, group: str, case: Case, references: set[str], out: Path, factory: str,
    state: _WorkerState, exit: WorkerExit, log: Path,
) -> dict:
    """The row of a case whose worker process died: how it died, where, and the memory it had reached."""
    how = exit.how
    stage = state.stage if state.loaded else (state.stage or "load")
    tail = _tail(log, 6)
    message = f"worker process died ({how}) in stage {stage!r}" + (f"; last log lines:\n{tail}" if tail else "")
    job = _job(suite, group, [case], references, out, factory)
    reported = state.allocated_mib is not None or state.nvml_mib is not None
    memory = {"peak_allocated_mib": state.allocated_mib, "peak_nvml_mib": state.nvml_mib,
              "memory_note": "worker died: memory reached as last reported at a stage start" if reported
              else "worker died before reporting any memory figure (no CUDA device, or before a stage began)"}
    return failure_row(job, job.cases[0], "error", message, stage, memory, state.current_started)


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def fill_pending_quality(suite: Suite, out: Path) -> None:
    """Metrics of cases whose reference finished after them (their frames were kept for this)."""
    from harness.quality import pending_quality

    results = out / RESULTS_FILE
    latest = {r["case_id"]: r for r in latest_rows(read_rows(results))}
    updated = {}
    for case in suite.cases:
        row = latest.get(case.case_id)
        if (row is None or row.get("status") != "ok" or not row.get("valid_video") or row.get("psnr_db") is not None
                or case.reference_id in (None, case.case_id)):
            continue
        ref_row = latest.get(case.reference_id)
        fields = pending_quality(out, case.case_id, case.reference_id, ref_row.get("status") if ref_row else None,
                                 suite.spec.quality.model_dump(), bool(row.get("weights_synthetic")))
        if any(row.get(name) != value for name, value in fields.items()):
            updated[case.case_id] = row | fields
    if updated:
        replace_rows(results, updated)
