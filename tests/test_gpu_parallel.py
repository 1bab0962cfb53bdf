"""Parallel runs on GPUs (NCCL): a one-rank job makes the plain video; on 2 and 4 GPUs Ulysses, CFG parallel,
expert split and FSDP make the single-GPU video (the tiny cases of parallel_cases.py, fp32).

On GPUs the sharded matmuls may pick other kernels than the whole-sequence ones, so latents are
compared within 1e-4 (on the CPU they agree within 1e-5, tests/test_parallel_ranks.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel import ParallelPlan, shutdown

from parallel_cases import FP32, assert_same_video, generate, on_ranks, reference
from rank_pool import RankPool, free_port, rank_env

pytestmark = pytest.mark.gpu
GPU_TOL = 1e-4


def gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def test_a_one_rank_nccl_job_makes_the_plain_video(monkeypatch):
    for name, value in rank_env(0, 1, free_port()).items():
        monkeypatch.setenv(name, value)
    try:
        run = generate(0, ParallelPlan(), device="cuda")
    finally:
        shutdown()
    ref = reference(device="cuda")
    assert torch.equal(run.latent, ref.latent)
    np.testing.assert_array_equal(run.frames, ref.frames)


def nccl_pool(world: int):
    """A pool of `world` NCCL ranks, one GPU each (the test skips on a machine with fewer GPUs)."""
    if gpus() < world:
        pytest.skip(f"needs {world} GPUs")
    pool = RankPool(world, backend="nccl")
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def pool2():
    yield from nccl_pool(2)


@pytest.fixture(scope="module")
def pool4():
    yield from nccl_pool(4)


@pytest.mark.parametrize("parallel,memory", [
    (ParallelPlan(ulysses_size=2), FP32),
    (ParallelPlan(cfg_parallel=True), FP32),
    (ParallelPlan(), MemoryPlan(weight_dtype="fp32", experts="split")),
    (ParallelPlan(ulysses_size=2, dit_fsdp=True, t5_fsdp=True), FP32),
], ids=["ulysses", "cfg_parallel", "split", "fsdp"])
def test_two_gpus_make_the_single_gpu_video(pool2, parallel, memory):
    runs = on_ranks(pool2, parallel, memory, None, None, "cuda")
    assert_same_video(runs[0], reference(device="cuda"), latent_tol=GPU_TOL)


def test_cfg_parallel_times_ulysses_on_4_gpus_makes_the_single_gpu_video(pool4):
    runs = on_ranks(pool4, ParallelPlan(ulysses_size=2, cfg_parallel=True), FP32, None, None, "cuda")
    assert_same_video(runs[0], reference(device="cuda"), latent_tol=GPU_TOL)
