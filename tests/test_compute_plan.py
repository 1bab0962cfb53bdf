"""ComputePlan: the speed options' values, the combinations that cannot run and their one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wan_runtime.compute import ComputePlan
from wan_runtime.errors import BackendUnavailableError, ConfigError
from wan_runtime.experts import load_expert
from wan_runtime.config import TINY
from wan_runtime.fp8 import FP8Linear, fp8_matmul_unavailable_reason
from wan_runtime.memory import MemoryPlan
from wan_runtime.pipeline import WanI2V

from helpers import psnr_db, tiny_request

FP8_COMPUTE = ComputePlan(matmul="fp8")


def test_the_default_plan_is_eager_with_native_matmuls():
    assert ComputePlan().to_dict() == {"compile": "none", "compile_backend": "inductor", "matmul": "native",
                                       "exact_last_blocks": 0}


def test_unknown_matmul_is_refused_with_the_choices():
    with pytest.raises(ConfigError, match=r"matmul='int8': not a known value.*allowed: one of 'native', 'fp8'"):
        ComputePlan(matmul="int8")


def test_fp8_compute_without_fp8_storage_names_the_fix():
    with pytest.raises(ConfigError, match="needs weight_dtype='fp8' \\(got 'bf16'\\); set weight_dtype=fp8"):
        FP8_COMPUTE.check(MemoryPlan(), "cpu")
    with pytest.raises(ConfigError, match="set weight_dtype=fp8"):
        load_expert("synthetic", TINY, "high", MemoryPlan(), "cpu", compute=FP8_COMPUTE)


def test_fp8_compute_on_a_gpu_without_fp8_tensor_cores_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))  # an RTX 3090
    reason = fp8_matmul_unavailable_reason("cuda")
    assert reason.startswith("this GPU (compute capability 8.6) has no fp8 tensor cores")
    with pytest.raises(BackendUnavailableError, match="has no fp8 tensor cores.*use matmul='native'"):
        FP8_COMPUTE.check(MemoryPlan(weight_dtype="fp8"), "cuda")


def test_fp8_compute_reports_a_torch_build_without_the_row_wise_kernel(monkeypatch):
    def missing(*args, **kwargs):
        raise RuntimeError("Rowwise scaling is not currently supported on your device\nmore lines")

    monkeypatch.setattr(torch, "_scaled_mm", missing)
    reason = fp8_matmul_unavailable_reason("cpu")
    assert reason.endswith("(Rowwise scaling is not currently supported on your device)")


@pytest.mark.skipif(fp8_matmul_unavailable_reason("cpu") is not None, reason="this torch has no CPU fp8 matmul")
def test_tiny_pipeline_with_fp8_compute_runs_on_the_cpu_and_reports_its_drift():
    memory = MemoryPlan(weight_dtype="fp8")
    storage = WanI2V.load("synthetic", "tiny", "cpu", memory)
    compute = WanI2V.load("synthetic", "tiny", "cpu", memory, compute=FP8_COMPUTE)
    layers = [m for m in compute.experts["high"].modules() if isinstance(m, FP8Linear)]
    assert layers and all(m.matmul == "fp8" for m in layers)
    quality = psnr_db(compute.generate(tiny_request()).frames, storage.generate(tiny_request()).frames)
    assert 35.0 < quality < 100.0  # lossy, but close: measured 42.5 dB against fp8 storage (bf16 compute)


def test_exact_last_blocks_without_fp8_compute_names_the_fix():
    with pytest.raises(ConfigError, match="exact_last_blocks=4 .* needs matmul='fp8' \\(got 'native'\\)"):
        ComputePlan(exact_last_blocks=4).check_memory(MemoryPlan(weight_dtype="fp8"))


def test_exact_last_blocks_cannot_stream_one_block_layout():
    plan = ComputePlan(matmul="fp8", exact_last_blocks=2)
    with pytest.raises(ConfigError, match="dit_blocks='stream' copies every block into buffers of one layout"):
        plan.check_memory(MemoryPlan(weight_dtype="fp8", experts="swap", dit_blocks="stream"))


def test_a_negative_exact_last_blocks_is_refused():
    with pytest.raises(ConfigError, match="exact_last_blocks"):
        ComputePlan(matmul="fp8", exact_last_blocks=-1)


def test_only_the_blocks_before_the_exact_ones_compute_in_fp8():
    plan = ComputePlan(matmul="fp8", exact_last_blocks=12)
    assert [plan.fp8_block(i, 40) for i in (0, 27, 28, 39)] == [True, True, False, False]
    assert not ComputePlan().fp8_block(0, 40)


@pytest.mark.skipif(fp8_matmul_unavailable_reason("cpu") is not None, reason="this torch has no CPU fp8 matmul")
def test_the_last_blocks_keep_their_bf16_weights_and_the_expert_runs():
    memory = MemoryPlan(weight_dtype="fp8")
    mixed = load_expert("synthetic", TINY, "high", memory, "cpu",
                        compute=ComputePlan(matmul="fp8", exact_last_blocks=1)).model
    everything = load_expert("synthetic", TINY, "high", memory, "cpu", compute=FP8_COMPUTE).model
    first, last = mixed.blocks[0], mixed.blocks[-1]
    assert any(isinstance(m, FP8Linear) and m.matmul == "fp8" for m in first.modules())
    assert not any(isinstance(m, FP8Linear) for m in last.modules())
    assert torch.equal(first.ffn[0].weight, everything.blocks[0].ffn[0].weight)  # the same fp8 values
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(1, 16, 2, 8, 8, generator=gen), torch.randn(1, 20, 2, 8, 8, generator=gen)
    context = torch.randn(1, TINY.dit.text_len, TINY.dit.text_dim, generator=gen)
    with torch.inference_mode():
        out, fp8_out = mixed(x, torch.tensor([900.0]), context, y), everything(x, torch.tensor([900.0]), context, y)
    assert torch.isfinite(out).all() and not torch.equal(out, fp8_out)


@pytest.mark.skipif(fp8_matmul_unavailable_reason("cpu") is not None, reason="this torch has no CPU fp8 matmul")
def test_the_warm_up_calls_one_block_of_each_layout():
    from wan_runtime.block_runner import ResidentBlocks

    memory = MemoryPlan(weight_dtype="fp8")
    mixed = load_expert("synthetic", TINY, "high", memory, "cpu", compute=ComputePlan(matmul="fp8", exact_last_blocks=1))
    uniform = load_expert("synthetic", TINY, "high", memory, "cpu", compute=FP8_COMPUTE)
    for expert, expected in ((mixed, [0, 1]), (uniform, [0])):
        called: list[int] = []
        runner = ResidentBlocks(lambda block, *args: called.append(list(expert.model.blocks).index(block)))
        runner.warm_up(expert.model, None, None, None, None, None)
        assert called == expected
