"""What the bench scripts measure the same way: a CUDA kernel's time, and an output's drift from a reference.

Imported by the scripts beside it (`python3 bench/NAME.py` puts this folder on sys.path).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch


def cuda_seconds(fn: Callable[[], Any], repeats: int = 5, warmup: int = 1) -> float:
    """Median CUDA-event time of one fn() call in seconds, over `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return sorted(times)[len(times) // 2]


def drift(output: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Relative L2, cosine and PSNR (peak = the reference's range; 100 dB when equal) of output against reference."""
    a, b = output.float().flatten(), reference.float().flatten()
    mse = torch.mean((a - b) ** 2).item()
    peak = (b.max() - b.min()).item()
    return {
        "rel_l2": ((a - b).norm() / b.norm()).item(),
        "cosine": torch.nn.functional.cosine_similarity(a, b, dim=0).item(),
        "psnr_db": 100.0 if mse == 0 else min(100.0, 10 * math.log10(peak * peak / mse)),
    }
