"""Small helpers shared by several test modules (imported as `helpers`; tests/ is on sys.path)."""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from wan_runtime.request import GenerationRequest


def tiny_request(image=None, **overrides) -> GenerationRequest:
    """A small request for the tiny preset: 64x48, 5 frames, 4 steps, seed 1 (a seeded noise picture by default)."""
    if image is None:
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    base = dict(image=image, prompt="a cat", size="64*48", frames=5, steps=4, seed=1)
    base.update(overrides)
    return GenerationRequest(**base)


def cuda_timed(fn, repeats: int = 2) -> tuple[torch.Tensor, float]:
    """Run `fn` once to warm up, then `repeats` times; the last output and the mean synchronized seconds."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - start) / repeats
