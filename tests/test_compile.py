"""Regional compilation: one torch.compile of the block call, shared by every block of both experts.

These tests check the plumbing with the `aot_eager` backend (it traces exactly as inductor does, then
runs the traced graph with eager kernels): inductor's C++ code generation takes ~50 s for the tiny
model on a 2-core CPU, too slow for CI. tests/test_gpu_speed.py runs inductor on the GPU.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wan_runtime.block_runner import ResidentBlocks, StreamedBlocks, eager_call
from wan_runtime.compile import block_call, compile_counts, compiled_block_call
from wan_runtime.compute import ComputePlan
from wan_runtime.config import TINY
from wan_runtime.errors import ConfigError
from wan_runtime.experts import load_expert
from wan_runtime.memory import MemoryPlan

THREE_BLOCKS = dataclasses.replace(TINY, dit=dataclasses.replace(TINY.dit, num_layers=3))
COMPILED = ComputePlan(compile="blocks", compile_backend="aot_eager")
FP32 = MemoryPlan(weight_dtype="fp32")
STREAM_FP8 = MemoryPlan(experts="swap", dit_blocks="stream", weight_dtype="fp8")


def inputs(frames: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, frames, 4, 6, generator=g)
    y = torch.randn(1, 20, frames, 4, 6, generator=g)
    context = torch.randn(1, 7, TINY.dit.text_dim, generator=g)
    return x, torch.tensor([907.0]), context, y


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test starts with empty compile caches and counters."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _experts(plan: MemoryPlan, compute: ComputePlan = COMPILED):
    call = block_call(compute)
    return [load_expert("synthetic", THREE_BLOCKS, name, plan, "cpu", compute=compute, call=call)
            for name in ("high", "low")]


def test_one_compile_serves_every_block_of_both_experts():
    high, low = _experts(FP32)
    before = compile_counts()
    with torch.no_grad():
        high.model(*inputs())
        low.model(*inputs())
    after = compile_counts()
    # one frame compiled into one graph: blocks 2..3 and the other expert hit the first compile
    assert after["frames"] - before["frames"] == 1
    assert after["graphs"] - before["graphs"] == 1


def test_compiled_blocks_compute_what_eager_blocks_compute():
    high, _ = _experts(FP32)
    eager = load_expert("synthetic", THREE_BLOCKS, "high", FP32, "cpu").model
    with torch.no_grad():
        for seed in range(2):
            torch.testing.assert_close(high.model(*inputs(seed=seed)), eager(*inputs(seed=seed)),
                                       rtol=1e-5, atol=1e-5)


def test_compiled_streamed_fp8_blocks_compute_what_eager_resident_fp8_blocks_compute():
    high, low = _experts(STREAM_FP8)
    assert isinstance(high.model.runner, StreamedBlocks)
    eager = load_expert("synthetic", THREE_BLOCKS, "high", MemoryPlan(weight_dtype="fp8"), "cpu").model
    before = compile_counts()
    with torch.no_grad():
        for placed in (high, low):
            placed.activate()
            try:
                out = placed.model(*inputs())
            finally:
                placed.park()
            if placed is high:
                torch.testing.assert_close(out, eager(*inputs()), rtol=1e-5, atol=1e-5)
    assert compile_counts()["frames"] - before["frames"] == 1


def test_a_new_input_shape_compiles_once_more_and_then_reuses_it():
    high, _ = _experts(FP32)
    with torch.no_grad():
        high.model(*inputs(frames=2))
        before = compile_counts()
        high.model(*inputs(frames=3))
        high.model(*inputs(frames=3))
    assert compile_counts()["frames"] - before["frames"] == 1


def test_warm_up_compiles_for_the_inputs_without_running_the_stack():
    high, _ = _experts(FP32)
    called: list[int] = []
    compiled = high.model.runner.call

    def counting(*args):
        called.append(1)
        return compiled(*args)

    high.model.runner = ResidentBlocks(counting)
    with torch.no_grad():
        high.model.warm_up(*inputs())
        assert called == [1]  # one block, not three
        before = compile_counts()
        high.model(*inputs())
    assert compile_counts()["frames"] == before["frames"]  # the forward found the warm-up's compile


def test_warm_up_of_a_streamed_expert_leaves_its_ring_ready():
    high, _ = _experts(STREAM_FP8)
    eager = load_expert("synthetic", THREE_BLOCKS, "high", MemoryPlan(weight_dtype="fp8"), "cpu").model
    high.activate()
    try:
        with torch.no_grad():
            high.model.warm_up(*inputs())
            torch.testing.assert_close(high.model(*inputs()), eager(*inputs()), rtol=1e-5, atol=1e-5)
    finally:
        high.park()


def test_compile_none_keeps_the_eager_call():
    assert block_call(ComputePlan()) is eager_call
    assert block_call(COMPILED) is not eager_call


def test_compile_options_are_checked_with_the_allowed_values():
    with pytest.raises(ConfigError, match=r"compile='block': not a known value \(did you mean 'blocks'\?\)"):
        ComputePlan(compile="block")
    with pytest.raises(ConfigError, match="compile_backend='tensorrt': not a known value.*'inductor', 'aot_eager'"):
        ComputePlan(compile="blocks", compile_backend="tensorrt")


def test_a_compiled_call_is_the_eager_call_under_torch_compile():
    call = compiled_block_call("eager")
    assert getattr(call, "_torchdynamo_orig_callable", None) is eager_call
