"""The harness's own cost: what the Probe adds to each denoising step.

Method: a fixed workload shaped like a denoising loop (per "step", a chain of matmuls sized for the
device) runs `steps` times, once bare (no observer: kernels queue back to back, one synchronize at
the end, as a run without the harness) and once inside a Probe stage with `on_step` after every
step (the probe synchronizes and reads the clock each step, and sends a progress event). The
difference of the two wall times divided by `steps` is the probe's cost per step: it includes the
synchronization bubble (the device idles while the host issues the next step's first kernel), not
only the Python calls. Trials alternate bare/probed and the medians are compared. The result is
reported per case as a percentage of that case's measured step time.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass

import torch

from harness.probe import Probe
from wan_runtime.observer import StepInfo

METHOD = (
    "median over alternating trials of (probed - bare) wall time of a fixed matmul loop, divided by its "
    "step count; probed = Probe stage + synchronized on_step + progress event per step"
)


@dataclass(frozen=True)
class Overhead:
    """The probe's measured cost per step, and the workload it was measured on."""

    per_step_ms: float
    workload_step_ms: float
    method: str


def _workload(device: torch.device):
    """A step-like workload: ~1-2 ms of matmuls on a GPU, well under a millisecond on a CPU."""
    if device.type == "cuda":
        a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
        chain = 8
    else:
        a = torch.randn(96, 96, device=device)
        chain = 4

    def step() -> None:
        x = a
        for _ in range(chain):
            x = x @ a
            x = x * 0.01  # keeps values finite without a norm kernel

    return step


def measure(device: torch.device | str, steps: int = 20, trials: int = 3) -> Overhead:
    """Measure the probe's per-step cost on `device` (see the module docstring)."""
    device = torch.device(device)
    step = _workload(device)
    devnull = open(os.devnull, "w")  # progress events cost a JSON encode and a write, as in a run

    def sink(event: dict) -> None:
        devnull.write(json.dumps(event) + "\n")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def bare() -> float:
        sync()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        return time.perf_counter() - start

    def probed() -> float:
        probe = Probe(device, sink=sink)
        sync()
        start = time.perf_counter()
        with probe.stage("denoise_high"):
            for i in range(steps):
                step()
                probe.on_step(StepInfo(index=i, total=steps, timestep=999.0, expert="high", stage="denoise_high"))
        return time.perf_counter() - start

    try:
        bare()  # warm up kernels and allocator
        probed()
        bare_s, probed_s = [], []
        for _ in range(trials):
            bare_s.append(bare())
            probed_s.append(probed())
    finally:
        devnull.close()
    base = statistics.median(bare_s)
    return Overhead(
        per_step_ms=(statistics.median(probed_s) - base) / steps * 1000.0,
        workload_step_ms=base / steps * 1000.0,
        method=METHOD,
    )
