"""The NVML sampler's cost: one reading, and a GPU workload with and without the sampling thread.

The sampler reads this process's and the device's memory every ~10 ms on a thread (harness/nvml.py).
`test_nvml_read` times one reading; the two `test_workload_*` benchmarks run the same matmul loop
with the thread off and on, so their difference is what sampling costs a measured run. GPU only:
without CUDA there is nothing to sample.
"""

from __future__ import annotations

import pytest
import torch

from harness.nvml import NvmlSampler

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def sampler_and_workload():
    """A sampler on GPU 0 (not started) and a ~10 ms bf16 matmul workload."""
    sampler = NvmlSampler(0)
    if not sampler.available:
        pytest.skip(f"NVML is not available: {sampler.reason}")
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)

    def workload() -> None:
        x = a
        for _ in range(8):
            x = (x @ a) * 0.01

    return sampler, workload


def test_nvml_read(benchmark, sampler_and_workload):
    sampler, _ = sampler_and_workload
    benchmark(sampler.read)


def test_workload_without_sampler(benchmark, synchronized, sampler_and_workload):
    _, workload = sampler_and_workload
    benchmark.pedantic(synchronized(workload, torch.device("cuda", 0)), rounds=20, warmup_rounds=2)


def test_workload_with_sampler(benchmark, synchronized, sampler_and_workload):
    sampler, workload = sampler_and_workload
    sampler.start()
    try:
        benchmark.pedantic(synchronized(workload, torch.device("cuda", 0)), rounds=20, warmup_rounds=2)
    finally:
        sampler.stop()
    assert sampler.samples, "the sampler thread took no reading while the workload ran"
