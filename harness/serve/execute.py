"""One job on the loaded pipeline: measured as a results row is, stoppable between steps, its video on disk.

- Measurement: the harness's Probe is the pipeline's observer (synchronized stage times, torch's
  memory peaks), an NVML sampler runs for the job only, and harness.summary turns both into the
  fields of a results row (`total_ms`, `stage_ms.<stage>`, `step_ms.<expert>`, `peak_nvml_mib`, ...).
- Progress and stopping: JobObserver passes each stage and step to the job record, and before each
  stage and after each step asks whether the job should stop (a client's DELETE, or a shutdown whose
  grace ran out); if so it raises JobStopped there, which ends `generate` between two steps.
- Failures end the job, not the service: an out-of-memory (measured, or refused in advance by the
  runtime's memory floor) is recorded with its stage and the runtime's advice, and the pipeline is
  brought back to rest (`WanI2V.rest`) with its memory released before the next job.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from harness.nvml import NvmlSampler
from harness.probe import Probe
from harness.serve.jobs import Job, State
from harness.summary import Repeat, memory_fields, timing_fields
from wan_runtime.errors import NonFiniteError, StageOutOfMemoryError, WanError, first_line
from wan_runtime.observer import StepInfo
from wan_runtime.request import GenerationRequest
from wan_runtime.video_io import write_mp4

log = logging.getLogger("wanbench.serve")

# Fields of timing_fields that describe several repeats or a projection: a job is one plain run.
_REPEAT_FIELDS = ("repeats_ms.", "steps_measured.", "projected")


class JobStopped(Exception):
    """Raised by the observer to end a generation between steps; `state` is cancelled or interrupted."""

    def __init__(self, state: State):
        super().__init__(f"job {state}")
        self.state = state


@dataclass
class Outcome:
    """How a job ended: its state, the error and stage when it did not finish, the measured fields."""

    state: State
    fields: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    failed_stage: str | None = None
    generated_at: float | None = None  # epoch seconds when generate() returned (done jobs)


class JobObserver:
    """The pipeline's observer for one job: the Probe measures, the job shows the stage and step, a stop raises."""

    def __init__(self, probe: Probe, job: Job, lock: threading.Lock, stop: Callable[[], State | None]):
        self.probe = probe
        self.job = job
        self.lock = lock
        self.stop = stop  # the state to stop in (cancelled, interrupted), or None to go on

    def _check(self) -> None:
        state = self.stop()
        if state is not None:
            raise JobStopped(state)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Stop before the stage if asked; else show it on the job and measure it."""
        self._check()
        with self.lock:
            self.job.stage = name
        with self.probe.stage(name):
            yield

    def on_step(self, info: StepInfo) -> None:
        """Measure the step, show it on the job, then stop if asked."""
        self.probe.on_step(info)
        with self.lock:
            self.job.step, self.job.steps_total = info.index + 1, info.total
        self._check()


def run_job(pipe, job: Job, request: GenerationRequest, video: Path, lock: threading.Lock,
            stop: Callable[[], State | None]) -> Outcome:
    """Generate `request` for `job`, write its video to `video`, and say how it ended (never raises for a job's
    failure; the pipeline is at rest afterwards)."""
    device = pipe.device
    cuda = device.type == "cuda"
    probe = Probe(device)
    sampler = NvmlSampler((device.index or 0) if cuda else None).start()  # one per job: its samples end with it
    observer = JobObserver(probe, job, lock, stop)
    probe.reset_peaks()
    recording = probe.new_recording()
    start = time.perf_counter()
    try:
        result = pipe.generate(request, observer=observer)
        if cuda:
            torch.cuda.synchronize(device)
        rep = Repeat(recording, start, time.perf_counter())
        generated_at = time.time()
        fields = _result_fields(result)
        fields.update({k: v for k, v in timing_fields([rep], {"high": result.steps_high, "low": result.steps_low},
                                                      None).items() if not k.startswith(_REPEAT_FIELDS)})
        fields.update(memory_fields([rep], *probe.peaks(), sampler, cuda))
        sampler.stop()
        write_mp4(result.frames, video, fps=pipe.cfg.fps)
        return Outcome("done", fields, generated_at=generated_at)
    except JobStopped as stopped:
        outcome = Outcome(stopped.state)  # the record keeps the stage and step it stopped at
    except Exception as exc:  # noqa: BLE001 - a job's failure is recorded; the service goes on
        stage, message = _failure(exc, probe)
        outcome = Outcome("failed", error=message, failed_stage=stage)
    finally:
        sampler.stop()
    rep = Repeat(recording, start, time.perf_counter())
    outcome.fields = memory_fields([rep], *probe.peaks(), sampler, cuda)  # what it reached before it ended
    _recover(pipe)
    return outcome


def _result_fields(result) -> dict[str, Any]:
    """What was produced, under the names of a results row."""
    frames = result.frames
    return {"out_width": int(frames.shape[2]), "out_height": int(frames.shape[1]), "out_frames": int(frames.shape[0]),
            "tokens": result.geometry.tokens, "seed_used": result.seed, "steps_high": result.steps_high,
            "steps_low": result.steps_low}


def _failure(exc: Exception, probe: Probe) -> tuple[str | None, str]:
    """(failed stage, one-line error) of a job's failure; an unexpected one is logged with its traceback."""
    stage = probe.failed_stage or probe.current_stage
    if isinstance(exc, StageOutOfMemoryError):  # the runtime's text names the stage and what would help
        return exc.stage, str(exc)
    if isinstance(exc, NonFiniteError):
        return f"denoise_{exc.expert}", str(exc)
    if isinstance(exc, torch.OutOfMemoryError):
        return stage, f"out of memory in stage {stage!r}: {first_line(exc)}"
    if isinstance(exc, WanError):
        return stage, str(exc)
    log.error("job failed unexpectedly:\n%s", "".join(traceback.format_exception(exc)))
    return stage, f"unexpected {type(exc).__name__}: {first_line(exc, 300)} (a bug: the service log holds the traceback)"


def _recover(pipe) -> None:
    """After a job that did not finish: the pipeline at rest, its garbage and cached device blocks released."""
    try:
        pipe.rest()
    except Exception:  # noqa: BLE001 - a failed park is logged; the next job's memory check still guards it
        log.exception("could not bring the pipeline back to rest after a failed job")
    gc.collect()
    if pipe.device.type == "cuda":
        torch.cuda.empty_cache()
