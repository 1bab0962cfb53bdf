"""The Probe: the harness's Observer. It times every stage and step and records torch memory peaks.

Per stage it keeps
- the synchronized wall clock: `torch.cuda.synchronize()` then `perf_counter()` at both ends, so the
  span covers all device work the stage issued, on every stream (offload copies included);
- CUDA-event time (start/end events on the current stream), which only sees that stream's work;
- torch's allocated/reserved peaks within the stage.
Per denoising step it keeps the synchronized time since the previous step (or the stage start), so a
step's time includes everything between two steps (both CFG forwards, the solver, an expert swap
before the first step of a stage).

On a CPU device there is nothing to synchronize and no CUDA event: GPU fields stay None.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from wan_runtime.observer import StepInfo

MIB = 1024 * 1024

EventSink = Callable[[dict], None]


@dataclass
class Span:
    """One stage as it happened: times in seconds on the perf_counter clock."""

    stage: str
    start_s: float
    end_s: float
    gpu_ms: float | None
    peak_allocated_mib: float | None
    peak_reserved_mib: float | None
    failed: bool = False

    @property
    def wall_ms(self) -> float:
        """Synchronized wall-clock duration."""
        return (self.end_s - self.start_s) * 1000.0


@dataclass
class StepTime:
    """One denoising step's synchronized time."""

    index: int
    expert: str
    stage: str
    timestep: float
    ms: float
    end_s: float


@dataclass
class Recording:
    """What the probe saw during one generation (or one load)."""

    spans: list[Span] = field(default_factory=list)
    steps: list[StepTime] = field(default_factory=list)


class Probe:
    """Observer measuring stage and step times and torch memory peaks; see the module docstring."""

    def __init__(self, device: torch.device | str, sink: EventSink | None = None):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.sink = sink
        self.recording = Recording()
        self.current_stage: str | None = None
        self.failed_stage: str | None = None
        self._last_step_s = 0.0
        self._peak_allocated = 0.0
        self._peak_reserved = 0.0

    # ------------------------------------------------------------ control by the worker
    def new_recording(self) -> Recording:
        """Start a fresh recording (one per generation) and return it."""
        self.recording = Recording()
        return self.recording

    def reset_peaks(self) -> None:
        """Start a new memory-peak window (torch statistics and the probe's running maxima)."""
        self._peak_allocated = self._peak_reserved = 0.0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peaks(self) -> tuple[float | None, float | None]:
        """(allocated, reserved) peaks in MiB since `reset_peaks`; (None, None) without CUDA."""
        if not self.cuda:
            return None, None
        self._fold_peaks()
        return self._peak_allocated, self._peak_reserved

    def _fold_peaks(self) -> None:
        # torch's peak counters are reset at every stage start, so the window's peak is the max of
        # what each reset interval reached.
        self._peak_allocated = max(self._peak_allocated, torch.cuda.max_memory_allocated(self.device) / MIB)
        self._peak_reserved = max(self._peak_reserved, torch.cuda.max_memory_reserved(self.device) / MIB)

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def _emit(self, event: dict) -> None:
        if self.sink is not None:
            self.sink(event)

    # ------------------------------------------------------------ the Observer protocol
    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage (synchronized wall clock + CUDA events) and record its memory peaks."""
        start_event = end_event = None
        if self.cuda:
            self._fold_peaks()
            torch.cuda.reset_peak_memory_stats(self.device)
            start_event = torch.cuda.Event(enable_timing=True)
            end_event = torch.cuda.Event(enable_timing=True)
        self._sync()
        self.current_stage = name
        self._emit({"event": "stage", "stage": name})
        start = time.perf_counter()
        self._last_step_s = start
        if start_event is not None:
            start_event.record()
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            self.failed_stage = self.failed_stage or name
            raise
        finally:
            gpu_ms = peak_alloc = peak_res = None
            try:
                if end_event is not None:
                    end_event.record()
                self._sync()
                if self.cuda:
                    gpu_ms = None if failed else start_event.elapsed_time(end_event)
                    peak_alloc = torch.cuda.max_memory_allocated(self.device) / MIB
                    peak_res = torch.cuda.max_memory_reserved(self.device) / MIB
                    self._fold_peaks()
            except Exception:  # a failed stage may leave the device unable to sync; keep the error
                if not failed:
                    raise
            end = time.perf_counter()
            self.recording.spans.append(Span(name, start, end, gpu_ms, peak_alloc, peak_res, failed))
            self.current_stage = None

    def on_step(self, info: StepInfo) -> None:
        """Record the synchronized time since the previous step (or the stage start)."""
        self._sync()
        now = time.perf_counter()
        ms = (now - self._last_step_s) * 1000.0
        self._last_step_s = now
        self.recording.steps.append(StepTime(info.index, info.expert, info.stage, info.timestep, ms, now))
        self._emit({"event": "step", "index": info.index, "total": info.total, "expert": info.expert})
