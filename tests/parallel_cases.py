"""The tiny cases the parallel tests run on every rank and in one process, and how they are compared.

The tiny preset gets 4 attention heads (divisible by 2 and 4); a case is one `generate` whose latent
(what the VAE decodes, on rank 0) and frames are compared with the same request in one process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from wan_runtime.compute import ComputePlan
from wan_runtime.config import TINY
from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel import ParallelPlan
from wan_runtime.pipeline import WanI2V

from helpers import tiny_request
from rank_pool import RankFailure, RankPool

TINY4 = replace(TINY, dit=replace(TINY.dit, num_heads=4))
FP32 = MemoryPlan(weight_dtype="fp32")
UNEVEN = {"size": "48*48", "frames": 9}  # 3 x 3 x 3 = 27 tokens: shards of 14/13 and 7/7/7/6


@dataclass
class Run:
    """What one rank saw: the latent handed to the VAE (rank 0), the frames (rank 0) and the seed."""

    latent: torch.Tensor | None
    frames: np.ndarray | None
    seed: int


def generate(rank: int, parallel: ParallelPlan | None, memory: MemoryPlan = FP32, request: dict | None = None,
             observer=None, device: str = "cpu", compute: ComputePlan | None = None) -> Run:
    """Load the tiny pipeline on this rank and make one video (also the single-process reference)."""
    pipe = WanI2V.load("synthetic", TINY4, device, memory, parallel=parallel, compute=compute)
    latents = []
    decode = pipe.vae.decode
    pipe.vae.decode = lambda z, **kw: (latents.append(z.clone().cpu()), decode(z, **kw))[1]
    try:
        result = pipe.generate(tiny_request(**(request or {})), observer=observer)
    finally:
        pipe.close()
    return Run(latents[-1] if latents else None, result.frames, result.seed)


_references: dict = {}


def reference(memory: MemoryPlan = FP32, device: str = "cpu", **request) -> Run:
    """The single-process run of the same request (cached per memory plan, device and request)."""
    key = (memory, device, tuple(sorted(request.items())))
    if key not in _references:
        _references[key] = generate(0, None, memory, request, device=device)
    return _references[key]


def on_ranks(pool: RankPool, *args) -> list[Run]:
    """generate(*args) on every rank of the pool; a failure on any rank fails the test with its traceback."""
    runs = pool.run(generate, *args)
    failures = [r for r in runs if isinstance(r, RankFailure)]
    assert not failures, failures[0].traceback
    return runs


def assert_same_video(run: Run, ref: Run, latent_tol: float = 1e-5) -> None:
    """Latents within `latent_tol`, frames equal up to one rounding step."""
    assert (run.latent - ref.latent).abs().max().item() <= latent_tol
    assert np.abs(run.frames.astype(int) - ref.frames.astype(int)).max() <= 1
