"""The worker process: loads the pipeline once for a group of cases, measures them, reports rows.

Started by a launcher (harness.launch) as `python -m harness.worker JOB.json EVENTS`, where EVENTS is
the path of the launcher's Unix socket; under torchrun every rank runs it, and only rank 0 connects
and reports. It writes JSON events, one per line, to that socket (stdout/stderr go to the group's
log file, so library prints cannot corrupt the protocol):
    {"event": "loaded", "load_ms": ...}
    {"event": "case_start", "case_id": ...}
    {"event": "phase", "phase": "warmup" | "repeat", "index": i, "of": n}
    {"event": "stage", "stage": ..., "allocated_mib": ..., "nvml_mib": ...}   (from the Probe)
    {"event": "step", "index": i, "total": n, "expert": ...}                   (from the Probe)
    {"event": "timeline", "record": {...}}   (one per measured repeat; the runner writes timeline.jsonl)
    {"event": "result", "row": {...}}
    {"event": "no_space", "path": ..., "message": ...}   (a full disk: the worker stops, the run ends)
    {"event": "done"}
After a case fails (oom/error) the worker stops, so the next case starts in a fresh process with
nothing left over from the failure; the runner starts it. Under several ranks every rank runs every
case in step; a rank whose case failed exits with CASE_FAILED_EXIT, so torchrun stops the others at
once instead of leaving them waiting in a collective.

The worker lives only as long as its launcher: on Linux the kernel kills it when its parent dies
(PR_SET_PDEATHSIG), it exits quietly when it cannot connect to the event socket or the socket
breaks. Ctrl-C is the runner's to handle (the worker ignores SIGINT; the runner stops it).
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import json
import math
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from harness import environment, overhead
from harness.inputs import prepare_image
from harness.jobs import RUNNER_PID_ENV, CaseJob, WorkerJob, failure_row, identity_fields, now_iso
from harness.nvml import NvmlSampler
from harness.params import build_compute_plan, build_memory_plan, build_parallel_plan, build_request
from harness.probe import Probe
from harness.quality import case_quality
from harness.results import guard_row, is_no_space
from harness.summary import NO_CUDA_NOTE, Repeat, load_fields, memory_fields, sampled_plan, timeline_record, timing_fields
from wan_runtime.compute import ComputePlan
from wan_runtime.config import get_preset
from wan_runtime.errors import StageOutOfMemoryError
from wan_runtime.memory import MemoryPlan
from wan_runtime.observer import Observer
from wan_runtime.parallel.launch import LaunchEnv
from wan_runtime.parallel.plan import ParallelPlan
from wan_runtime.request import GenerationRequest

def load_wan_pipeline(
    source: str, preset: str, device: torch.device, memory: MemoryPlan, attention: str, observer: Observer,
    cross_attention: str | None = None, compute: ComputePlan | None = None, parallel: ParallelPlan | None = None,
):
    """The default factory: `WanI2V.load` (its `load` stage is reported to the observer); under torchrun every
    rank calls it with the same arguments."""
    from wan_runtime.pipeline import WanI2V

    return WanI2V.load(source=source, preset=preset, device=device, memory=memory, attention=attention,
                       observer=observer, cross_attention=cross_attention, compute=compute, parallel=parallel)


def resolve_factory(spec: str) -> Callable:
    """`module:attr` or `path/to/file.py:attr` -> the callable (dotted attrs allowed, e.g. Class.load)."""
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        module_spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module  # dataclasses in the file look their module up here
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become None (a row never carries them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


class Worker:
    """Runs one job: load once, then each case (warmup, measured repeats, quality), one row per case."""

    def __init__(self, job: WorkerJob, emit: Callable[[dict], None], rank: LaunchEnv | None = None):
        self.job = job
        self.emit = emit
        self.rank = rank or LaunchEnv.read()
        self.device = torch.device(job.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda and self.rank.world_size > 1:  # each rank on its own GPU of those the job was given
            self.device = torch.device("cuda", self.rank.local_rank)
        elif self.cuda and self.device.index is None:  # "cuda" is the current device, index 0 in a fresh process
            self.device = torch.device("cuda", 0)
        self.config = get_preset(job.preset)
        self.out = Path(job.out)
        self._images: dict[tuple[str, str], Any] = {}

    # ------------------------------------------------------------ events
    def _probe_event(self, event: dict) -> None:
        if event["event"] == "stage":  # memory reached so far, in case the process dies in this stage
            if self.cuda:
                event["allocated_mib"] = torch.cuda.memory_allocated(self.device) / 2**20
            last = self.sampler.samples[-1] if self.sampler.samples else None
            event["nvml_mib"] = last.process_mib if last else None
        self.emit(event)

    # ------------------------------------------------------------ the job
    def run(self) -> bool:
        """Load the pipeline, run every case until one fails; report each row. False when a case failed."""
        threads = environment.set_threads(self.job.cases[0].params.get("threads"), self.device,
                                          self.job.host_workers * self.rank.local_world_size)  # before any work
        if self.cuda:
            torch.cuda.set_device(self.device)
        self.env = environment.collect(self.device) | threads
        if warning := environment.busy_warning(self.env):
            print(warning, file=sys.stderr, flush=True)  # the group's log
        cuda_index = (self.device.index or 0) if self.cuda else None
        self.sampler = NvmlSampler(cuda_index).start()
        self.probe = Probe(self.device, sink=self._probe_event)
        try:
            self.overhead = overhead.measure(self.device)
            if self.cuda:
                torch.cuda.empty_cache()
            if not self._load():
                return False
            for case in self.job.cases:
                self.emit({"event": "case_start", "case_id": case.case_id})
                row = self.run_case(case)
                self.emit({"event": "result", "row": _clean(guard_row(row))})
                if row["status"] != "ok":
                    return False  # a fresh process for the next case (see the module docstring)
            self.emit({"event": "done"})
            return True
        finally:
            self.sampler.stop()

    def _load(self) -> bool:
        first = self.job.cases[0].params
        self.probe.reset_peaks()
        recording = self.probe.new_recording()
        started = now_iso()
        try:
            factory = resolve_factory(self.job.factory)
            parallel = build_parallel_plan(first)
            options = {"parallel": parallel} if parallel != ParallelPlan() else {}  # a plain factory needs none
            self.pipe = factory(self.job.weights, self.job.preset, self.device, build_memory_plan(first),
                                first["attention"], self.probe, cross_attention=first.get("cross_attention"),
                                compute=build_compute_plan(first), **options)
        except Exception as exc:
            status, stage, message = self._classify(exc)
            trace = traceback.format_exc()
            print(trace, file=sys.stderr)
            memory = self._memory_reached(0.0)
            for case in self.job.cases:
                row = failure_row(self.job, case, status, f"loading the pipeline failed: {message}", stage or "load",
                                  memory, started, trace)
                self.emit({"event": "result", "row": _clean(guard_row(row | self.env))})
            return False
        # Fields every row of the group carries: the load, and where the plan really put the networks
        # (on a CPU a `gpu` text encoder runs on the CPU); a pipeline that does not say adds nothing.
        effective = getattr(self.pipe, "effective_placement", None) or {}
        self.load = load_fields(recording, self.sampler) | {f"effective.{k}": v for k, v in effective.items()}
        self.emit({"event": "loaded", "load_ms": self.load.get("load_ms")})
        return True

    def _classify(self, exc: BaseException) -> tuple[str, str | None, str]:
        """(status, stage, message) of a failure."""
        message = f"{type(exc).__name__}: {exc}"[:4000]
        if isinstance(exc, StageOutOfMemoryError):
            return "oom", exc.stage, message
        stage = self.probe.failed_stage or self.probe.current_stage
        if isinstance(exc, torch.OutOfMemoryError):
            return "oom", stage, message
        return "error", stage, message

    def _memory_reached(self, since_s: float) -> dict[str, Any]:
        allocated, reserved = self.probe.peaks()
        proc, device, reason = self.sampler.peaks(since_s)
        return {"peak_allocated_mib": allocated, "peak_reserved_mib": reserved, "peak_nvml_mib": proc,
                "peak_nvml_device_mib": device, "memory_note": reason if self.cuda else NO_CUDA_NOTE}

    # ------------------------------------------------------------ one case
    def run_case(self, case: CaseJob) -> dict[str, Any]:
        """Measure one case; failures become oom/error rows."""
        started = now_iso()
        self.probe.failed_stage = None
        self.probe.reset_peaks()
        t0 = time.perf_counter()
        try:
            row = self._measure(case)
        except Exception as exc:
            if is_no_space(exc):
                raise  # not the case's fault: the run stops (see main)
            status, stage, message = self._classify(exc)
            trace = traceback.format_exc()
            print(trace, file=sys.stderr)
            row = failure_row(self.job, case, status, message, stage, self._memory_reached(t0), started, trace)
            row.update(self.load)
            row.update(self.env)
            gc.collect()
            if self.cuda:
                torch.cuda.empty_cache()
            return row
        row["started_at"] = started
        row["finished_at"] = now_iso()
        return row

    def _image(self, params: dict[str, Any]):
        key = (params["image"], params["size"])
        if key not in self._images:
            self._images[key] = prepare_image(*key)
        return self._images[key]

    def _generate(self, request: GenerationRequest) -> tuple[Any, Repeat]:
        recording = self.probe.new_recording()
        if self.cuda:
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        result = self.pipe.generate(request, observer=self.probe)
        if self.cuda:
            torch.cuda.synchronize(self.device)
        return result, Repeat(recording, start, time.perf_counter())

    def _measure(self, case: CaseJob) -> dict[str, Any]:
        job, params = self.job, case.params
        image = self._image(params)
        sampled = job.timing == "sampled"
        experts = plan = None
        execute = None
        if sampled:
            from wan_runtime.pipeline import expert_schedule  # the schedulers load diffusers: only when needed

            experts = expert_schedule(build_request(params, image), self.config)
            plan = sampled_plan(experts, job.sampled["warmup_steps"], job.sampled["measured_steps"])
            execute = frozenset(i for indices in plan.values() for i in indices)
        request = build_request(params, image, execute)

        for i in range(job.warmup):
            self.emit({"event": "phase", "phase": "warmup", "index": i + 1, "of": job.warmup})
            self._generate(request)
        self.probe.reset_peaks()
        repeats: list[Repeat] = []
        result = None
        for i in range(job.repeats):
            self.emit({"event": "phase", "phase": "repeat", "index": i + 1, "of": job.repeats})
            result, rep = self._generate(request)
            repeats.append(rep)
        allocated, reserved = self.probe.peaks()
        devices = self._device_peaks(repeats)  # every rank takes part (a collective under several ranks)
        if self.rank.rank != 0:
            return {"status": "ok"}  # rank 0 reports the case; the others only computed their part
        for i, rep in enumerate(repeats):
            self.emit({"event": "timeline", "record": _clean(timeline_record(case.case_id, i, rep, self.sampler))})

        geo = result.geometry
        row = identity_fields(job, case)
        row.update({
            "status": "ok", "error": None, "traceback": None, "failed_stage": None,
            "out_width": int(result.frames.shape[2]), "out_height": int(result.frames.shape[1]),
            "out_frames": int(result.frames.shape[0]), "tokens": geo.tokens, "seed_used": result.seed,
            "steps_high": result.steps_high, "steps_low": result.steps_low, "valid_video": result.valid_video,
        })
        steps = {"high": result.steps_high, "low": result.steps_low}
        row.update(self.load)
        row.update(timing_fields(repeats, steps, job.sampled["warmup_steps"] if sampled else None))
        if plan is not None:
            row.update({f"sampled_steps.{e}": indices for e, indices in plan.items()})
        row.update(memory_fields(repeats, allocated, reserved, self.sampler, self.cuda))
        row.update(devices)
        row.update(self._overhead_fields(row))
        row.update(self._quality(case, result))
        row.update(self.env)
        return row

    def _device_peaks(self, repeats: list[Repeat]) -> dict[str, Any]:
        """NVML process peaks of every rank's device over the measured repeats (rank order), their max and sum."""
        own = self.sampler.peaks(repeats[0].start_s, repeats[-1].end_s)[0] if self.cuda and repeats else None
        peaks = [own]
        if self.rank.world_size > 1:
            import torch.distributed as dist

            peaks = [None] * self.rank.world_size
            dist.all_gather_object(peaks, own)
        known = [p for p in peaks if p is not None]
        whole = len(known) == len(peaks)
        return {"peak_nvml_mib_devices": peaks, "peak_nvml_mib_max": max(known) if whole else None,
                "peak_nvml_mib_sum": sum(known) if whole else None}

    def _overhead_fields(self, row: dict[str, Any]) -> dict[str, Any]:
        steps = [row[f"step_ms.{e}"] for e in ("high", "low") if row.get(f"step_ms.{e}")]
        mean_step = sum(steps) / len(steps) if steps else None
        return {
            "probe_overhead_ms": self.overhead.per_step_ms,
            "probe_overhead_pct": 100.0 * self.overhead.per_step_ms / mean_step if mean_step else None,
            "probe_overhead_method": f"{self.overhead.method} (workload step {self.overhead.workload_step_ms:.3f} ms)",
        }

    def _quality(self, case: CaseJob, result) -> dict[str, Any]:
        return case_quality(self.job.out, case.case_id, case.reference_id, result.frames,
                            valid_video=result.valid_video, keep_frames=case.save_frames, quality=self.job.quality,
                            device=self.device, synthetic=self.job.weights == "synthetic")


RUNNER_GONE_EXIT = 3  # exit status of a worker that stopped because its runner was gone
CASE_FAILED_EXIT = 4  # exit status of a rank of several whose case failed (torchrun then stops the others)


def _die_with_runner() -> None:
    """Ask the kernel to kill this process when its parent (its launcher) dies; exit if it already has."""
    from harness.launch import die_with_parent

    die_with_parent()
    runner = os.environ.get(RUNNER_PID_ENV)
    if runner and os.getppid() != int(runner):  # it died while this process was starting
        os._exit(RUNNER_GONE_EXIT)


def connect_events(path: str) -> Callable[[dict], None]:
    """`emit(event)` writing to the launcher's socket at `path`; exits quietly once nobody listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:  # no socket, or nobody accepts: the launcher is gone
        os._exit(RUNNER_GONE_EXIT)
    stream = sock.makefile("w", encoding="utf-8")

    def emit(event: dict) -> None:
        try:
            stream.write(json.dumps(event, allow_nan=False) + "\n")
            stream.flush()  # each event at once: a worker killed next loses nothing it reported
        except OSError:  # the runner is gone: nobody is left to report to
            os._exit(RUNNER_GONE_EXIT)

    return emit


def _ignore(event: dict) -> None:
    """The events of a rank other than 0: nobody reads them."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m harness.worker JOB.json EVENTS_SOCKET`."""
    _die_with_runner()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the runner decides
    job_path, events = argv if argv is not None else sys.argv[1:]
    job = WorkerJob.read(Path(job_path))
    rank = LaunchEnv.read()
    emit = connect_events(events) if rank.rank == 0 else _ignore  # rank 0 reports; the others only compute
    try:
        finished = Worker(job, emit, rank).run()
    except OSError as exc:
        if not is_no_space(exc):
            raise
        traceback.print_exc()
        emit({"event": "no_space", "path": exc.filename or job.out, "message": f"{exc.strerror or exc}"})
        return 1
    if rank.world_size == 1:
        return 0
    if not finished:
        os._exit(CASE_FAILED_EXIT)  # at once: a clean exit would wait for collectives the others never join
    from wan_runtime.parallel import shutdown

    shutdown()  # the process group ends before the rank does
    return 0


if __name__ == "__main__":
    sys.exit(main())
