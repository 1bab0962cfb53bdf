"""A stand-in for WanI2V in runner tests: the same interface and stages, no networks, scripted failures.

The prompt scripts the behaviour, so a suite can sweep it:
- "oom": raise StageOutOfMemoryError in denoise_high;
- "fail": raise a RuntimeError (with a two-line message) in denoise_high;
- "die-if-exists:PATH": while PATH exists, kill this process with SIGKILL in denoise_high;
- "wait-while-exists:PATH": in denoise_high, write this process's pid to PATH.started (and create
  PATH.started.PID), then wait
  until PATH is gone (a test signals the processes meanwhile);
- "fill-disk-if-exists:PATH": while PATH exists, fill the file system holding PATH in denoise_high
  (a file PATH.filler grows until the disk is full);
- "rank-1-dies-if-exists:PATH": while PATH exists, rank 1 of several kills itself with SIGKILL in denoise_high
  (rank 0 waits for it at the stage's end, as the real ranks wait in a collective);
- "rendezvous:DIR": in denoise_high, write this process's pid into DIR, then wait until two processes
  have (a RuntimeError after 30 s: the two workers did not run at the same time);
- "nan-seed": a normal generation that reports a NaN seed (a non-finite figure in the row);
- anything else: a normal generation.
Frames depend on the seed, the step count and the size only, so equal requests give equal videos.
Loaded with a ParallelPlan under torchrun, every rank joins a gloo process group, the ranks wait for
each other at the end of every stage, and only rank 0 gets frames (as WanI2V's ranks do).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np

from wan_runtime.errors import StageOutOfMemoryError
from wan_runtime.experts import effective_placement
from wan_runtime.memory import MemoryPlan
from wan_runtime.observer import NullObserver, StepInfo
from wan_runtime.sizes import VideoGeometry, geometry


@dataclass
class FakeResult:
    """The fields of wan_runtime.pipeline.GenerationResult the harness reads."""

    frames: np.ndarray
    seed: int
    geometry: VideoGeometry
    valid_video: bool
    steps_high: int
    steps_low: int
    timesteps: list[float] = field(default_factory=list)
    experts: list[str] = field(default_factory=list)


class FakePipeline:
    """WanI2V's interface without networks (first half of the steps on the high-noise expert)."""

    def __init__(self, memory: MemoryPlan, device, ranks: int = 1):
        self.memory = memory
        self.device = device
        self.ranks = ranks

    @classmethod
    def load(cls, source, preset, device, memory, attention, observer, cross_attention=None, compute=None,
             parallel=None):
        """Report a `load` stage and return a pipeline (one rank of a torchrun job when WORLD_SIZE > 1)."""
        with observer.stage("load"):
            ranks = int(os.environ.get("WORLD_SIZE", 1)) if parallel is not None else 1
            if ranks > 1:
                import torch.distributed as dist

                dist.init_process_group("gloo", timeout=timedelta(seconds=parallel.collective_timeout_s))
        return cls(memory, device, ranks)

    def _sync(self) -> None:
        if self.ranks > 1:
            import torch.distributed as dist

            dist.barrier()

    @property
    def effective_placement(self) -> dict:
        """As WanI2V: where the plan really puts the networks on this device."""
        return effective_placement(self.memory, self.device)

    def generate(self, request, observer=None):
        """Run the stages, report the executed steps, return deterministic frames."""
        obs = observer or NullObserver()
        image_w, image_h = request.image.size
        geo = geometry(request.size, request.frames, image_w, image_h)
        for stage in ("text_encode", "image_encode"):
            with obs.stage(stage):
                self._sync()
        experts = ["high"] * (request.steps // 2) + ["low"] * (request.steps - request.steps // 2)
        for expert in ("high", "low"):
            name = f"denoise_{expert}"
            with obs.stage(name):
                self._scripted_failure(request.prompt, name)
                for i, e in enumerate(experts):
                    if e == expert and (request.execute_steps is None or i in request.execute_steps):
                        obs.on_step(StepInfo(index=i, total=request.steps, timestep=1000.0 - i, expert=e, stage=name))
                self._sync()
        with obs.stage("vae_decode"):
            rng = np.random.default_rng(request.seed)
            frames = rng.integers(0, 256, (geo.frames, geo.height, geo.width, 3), dtype=np.uint8)
            frames = (frames // request.steps * request.steps).astype(np.uint8)  # fewer steps: coarser
        with obs.stage("postprocess"):
            self._sync()
        if int(os.environ.get("RANK", 0)) != 0:
            frames = None
        seed = float("nan") if request.prompt == "nan-seed" else request.seed
        return FakeResult(frames, seed, geo, request.execute_steps is None,
                          experts.count("high"), experts.count("low"), [1000.0 - i for i in range(request.steps)],
                          experts)

    @staticmethod
    def _scripted_failure(prompt: str, stage: str) -> None:
        if prompt == "oom" and stage == "denoise_high":
            raise StageOutOfMemoryError(stage, f"out of GPU memory in stage {stage!r} (scripted)")
        if prompt == "fail" and stage == "denoise_high":
            raise RuntimeError("scripted failure\nsecond line of the message")
        if stage != "denoise_high" or ":" not in prompt:
            return
        script, path = prompt.split(":", 1)
        if script == "die-if-exists" and Path(path).exists():
            os.kill(os.getpid(), signal.SIGKILL)
        elif script == "rank-1-dies-if-exists" and Path(path).exists() and os.environ.get("RANK") == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        elif script == "wait-while-exists":
            Path(path + ".started").write_text(str(os.getpid()))
            Path(f"{path}.started.{os.getpid()}").touch()  # one per worker: workers sharing a gate both show
            while Path(path).exists():
                time.sleep(0.02)
        elif script == "fill-disk-if-exists" and Path(path).exists():
            _fill_disk(Path(path + ".filler"))
        elif script == "rendezvous":
            _rendezvous(Path(path), parties=2, timeout_s=30.0)


def _rendezvous(folder: Path, parties: int, timeout_s: float) -> None:
    """Wait until `parties` processes have written their pid into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    deadline = time.monotonic() + timeout_s
    while len(list(folder.iterdir())) < parties:
        if time.monotonic() > deadline:
            raise RuntimeError(f"rendezvous: {len(list(folder.iterdir()))} of {parties} workers arrived within "
                               f"{timeout_s:.0f} s (they did not run at the same time)")
        time.sleep(0.02)


def _fill_disk(filler: Path) -> None:
    """Grow `filler` until its file system is full."""
    block = b"\0" * 4096
    with open(filler, "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
