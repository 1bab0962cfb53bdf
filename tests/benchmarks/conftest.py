"""Shared pieces of the micro-benchmarks: the device they run on and a synchronizing call wrapper.

These are pytest-benchmark benchmarks, outside the default test run (pyproject's addopts ignores
this folder); `make microbench` runs them, saves the results and compares with the last saved run.
On a GPU they use the A14B shapes in bf16; on a CPU, the tiny preset's widths at small token counts
(CPU numbers only catch gross regressions of the code path, not of the kernels the GPU runs).
"""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from wan_runtime.attention import available_backends
from wan_runtime.config import A14B, TINY, ModelConfig


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device the benchmarks run on: the first GPU when there is one, else the CPU."""
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


@pytest.fixture(scope="session")
def model_config(device: torch.device) -> ModelConfig:
    """A14B shapes on a GPU, the tiny preset on a CPU."""
    return A14B if device.type == "cuda" else TINY


@pytest.fixture(scope="session")
def dtype(device: torch.device) -> torch.dtype:
    """bf16 on a GPU (as benchmarked runs), fp32 on a CPU (its fast path)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def _synchronized(fn: Callable[[], object], device: torch.device) -> Callable[[], None]:
    def call() -> None:
        with torch.inference_mode():
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return call


MATH_LIMIT_BYTES = 8 * 2**30  # the math backend materializes the L x L scores of every head


def _skip_unless_runnable(backend: str, device: torch.device, heads: int, tokens: int) -> None:
    if backend not in available_backends(device):
        pytest.skip(f"attention backend {backend!r} is not available on {device.type}")
    scores = heads * tokens * tokens * 4  # fp32 softmax input
    if backend == "math" and scores > MATH_LIMIT_BYTES:
        pytest.skip(f"the math backend would materialize {scores / 2**30:.0f} GiB of attention scores")


@pytest.fixture(scope="session")
def skip_unless_runnable() -> Callable[[str, torch.device, int, int], None]:
    """skip_unless_runnable(backend, device, heads, tokens): skip a backend this machine lacks, or the math
    backend where its score matrix would not fit."""
    return _skip_unless_runnable


@pytest.fixture(scope="session")
def synchronized() -> Callable[[Callable[[], object], torch.device], Callable[[], None]]:
    """Wrap a call so it runs under inference_mode and ends with a device synchronize (the benchmark
    then times the kernels, not their launch)."""
    return _synchronized
