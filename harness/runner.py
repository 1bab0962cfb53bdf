"""The runner: a suite's cases, grouped by what must be loaded, each group in its own worker process.

- Isolation: cases that differ in what is loaded (memory plan, attention backend; the model and
  device are fixed per suite) run in different processes, so peak memory cannot leak between them.
  The parent never initialises CUDA.
- Failures: an oom/error inside a case becomes that case's row and the worker stops; a worker that
  dies (killed, segfault) loses only its current case, which gets a `status: error` row with the
  stage it died in and the memory it had reached. Either way a new worker carries on with the rest.
- Resume: every row is appended to results.jsonl the moment its case ends. Running the same
  command again skips cases whose latest row is `ok` or `oom`, and retries `error` ones.
- Output folder: `run.json` records the suite and a fingerprint of its expanded cases; a folder
  holding another suite's results (or the same suite under other settings) is refused.
- Quality: reference cases run first and keep their frames; each other case is compared with its
  reference as soon as it ends, or, if the reference ran later, in a pass at the end of the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from harness.jobs import DEFAULT_FACTORY, CaseJob, WorkerJob, failure_row, frames_path, now_iso, slug
from harness.progress import Progress
from harness.results import MANIFEST_FILE, RESULTS_FILE, append_row, latest_rows, read_rows, replace_rows, write_tables
from harness.suite import Case, Suite
from wan_runtime.errors import ConfigError

FINISHED_STATUSES = ("ok", "oom")  # an `error` row is retried by the next run
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class RunOutcome:
    """What a run did: cases run now, cases skipped as finished, and the status of every case."""

    out: Path
    ran: int
    skipped: int
    statuses: dict[str, int]
    tables: tuple[Path, Path] | None = None


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


# ---------------------------------------------------------------- output folder
def prepare_out_dir(out: Path, suite: Suite) -> None:
    """Create/check the output folder: writable, and holding nothing but this suite's results."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"output folder {out} is not writable ({exc.strerror or exc}); "
                          "choose another --out or fix its permissions") from None
    manifest = out / MANIFEST_FILE
    if manifest.exists():
        data = json.loads(manifest.read_text(encoding="utf-8"))
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
        return
    foreign = {row.get("suite") for row in read_rows(out / RESULTS_FILE)} - {suite.name}
    if foreign:
        raise ConfigError(f"output folder {out} holds results of suite(s) {sorted(foreign)}; use another --out")
    manifest.write_text(json.dumps({
        "suite": suite.name,
        "fingerprint": suite.fingerprint(),
        "suite_file": str(suite.path) if suite.path else None,
        "overrides": list(suite.overrides),
        "created": now_iso(),
        "cases": [c.case_id for c in suite.cases],
    }, indent=1), encoding="utf-8")


# ---------------------------------------------------------------- the run
def run_suite(
    suite: Suite,
    out: str | Path,
    factory: str = DEFAULT_FACTORY,
    stream: TextIO | None = None,
    python: str = sys.executable,
) -> RunOutcome:
    """Run every unfinished case of `suite` into `out`; see the module docstring."""
    out = Path(out).resolve()
    prepare_out_dir(out, suite)
    weights = suite.spec.model.weights
    if weights != "synthetic" and not Path(weights).exists():
        raise ConfigError(f"model.weights {weights!r} is neither 'synthetic' nor an existing checkpoint folder")
    results = out / RESULTS_FILE
    finished = {r["case_id"] for r in latest_rows(read_rows(results)) if r.get("status") in FINISHED_STATUSES}
    references = {c.reference_id for c in suite.cases if c.reference_id and c.reference_id != c.case_id}
    todo = [(g, [c for c in cases if c.case_id not in finished]) for g, cases in suite.groups()]
    todo = [(g, cases) for g, cases in todo if cases]
    progress = Progress(sum(len(c) for _, c in todo), stream)
    skipped = len([c for c in suite.cases if c.case_id in finished])
    if skipped:
        progress.note(f"resuming {out}: {skipped} finished case(s) skipped")

    for group, cases in todo:
        remaining = list(cases)
        while remaining:
            state, code, log = _run_worker(suite, group, remaining, references, out, factory, python, progress)
            remaining = [c for c in remaining if c.case_id not in state.finished]
            if not remaining:
                break
            if state.current is not None:  # died mid-case: that case alone is lost
                dead = next(c for c in remaining if c.case_id == state.current)
                row = _dead_worker_row(suite, group, dead, references, out, factory, state, code, log)
                append_row(results, row)
                progress.case_finished(dead.case_id, "error", row["error"])
                remaining.remove(dead)
            elif not state.finished:  # died before any case (while loading): the group cannot run
                for case in remaining:
                    row = _dead_worker_row(suite, group, case, references, out, factory, state, code, log)
                    append_row(results, row)
                    progress.case_finished(case.case_id, "error", row["error"])
                break
            # otherwise the worker stopped after a failed case; a fresh one takes the rest

    _pending_quality(suite, out)
    tables = None
    if results.exists():
        try:
            tables = write_tables(out)
        except ImportError as exc:  # results.jsonl is complete; the tables are a convenience
            progress.note(f"results.csv/.parquet not written ({exc}); results.jsonl is complete")
    latest = {r["case_id"]: r for r in latest_rows(read_rows(results))}
    statuses = Counter(latest[c.case_id]["status"] for c in suite.cases if c.case_id in latest)
    return RunOutcome(out, ran=sum(len(c) for _, c in todo), skipped=skipped, statuses=dict(statuses), tables=tables)


def _job(suite: Suite, group: str, cases: list[Case], references: set[str], out: Path, factory: str) -> WorkerJob:
    spec = suite.spec
    return WorkerJob(
        suite=suite.name, group=group, out=str(out), preset=spec.model.preset, weights=spec.model.weights,
        device=spec.device, timing=spec.timing, repeats=spec.repeats, warmup=spec.warmup,
        sampled=spec.sampled.model_dump(), quality=spec.quality.model_dump(),
        cases=[CaseJob(c.case_id, c.params, c.reference_id, c.case_id in references) for c in cases],
        factory=factory,
    )


def _run_worker(
    suite: Suite,
    group: str,
    cases: list[Case],
    references: set[str],
    out: Path,
    factory: str,
    python: str,
    progress: Progress,
) -> tuple[_WorkerState, int, Path]:
    """Start one worker for `cases`, follow its events until it exits; (state, exit code, log file)."""
    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    job_path, log_path = logs / f"{slug(group)}.job.json", logs / f"{slug(group)}.log"
    _job(suite, group, cases, references, out, factory).write(job_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    read_fd, write_fd = os.pipe()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [python, "-m", "harness.worker", str(job_path), str(write_fd)],
            pass_fds=(write_fd,), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )
    os.close(write_fd)
    state = _WorkerState()
    results = out / RESULTS_FILE
    try:
        with os.fdopen(read_fd, encoding="utf-8") as events:
            for line in events:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by the worker's death
                _handle(event, state, results, progress)
    except BaseException:
        proc.kill()  # Ctrl-C or a parent failure: do not leave the worker running
        proc.wait()
        raise
    return state, proc.wait(), log_path


def _handle(event: dict, state: _WorkerState, results: Path, progress: Progress) -> None:
    kind = event.get("event")
    if kind == "loaded":
        state.loaded = True
    elif kind == "case_start":
        state.current, state.current_started = event["case_id"], now_iso()
        state.stage = state.allocated_mib = state.nvml_mib = None
        progress.case_started(event["case_id"])
    elif kind == "result":
        row = event["row"]
        append_row(results, row)
        state.finished.add(row["case_id"])
        state.current = None
        progress.case_finished(row["case_id"], row["status"], row.get("error") or "")
    else:
        if kind == "stage":
            state.stage = event["stage"]
            for key in ("allocated_mib", "nvml_mib"):
                if event.get(key) is not None:
                    setattr(state, key, max(getattr(state, key) or 0.0, event[key]))
        progress.event(event)


def _dead_worker_row(
    suite: Suite, group: str, case: Case, references: set[str], out: Path, factory: str,
    state: _WorkerState, code: int, log: Path,
) -> dict:
    """The row of a case whose worker process died: how it died, where, and the memory it had reached."""
    how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
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


def _pending_quality(suite: Suite, out: Path) -> None:
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
