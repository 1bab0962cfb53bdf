"""Block streaming on the CPU: the ring bookkeeping, flat layouts and weight groups, and streamed
experts that compute exactly what resident ones compute (same schedule as on CUDA, synchronous copies)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from wan_runtime.block_stream import BlockRing, BlockStreamer, StreamTrace
from wan_runtime.config import TINY
from wan_runtime.block_runner import StreamedBlocks
from wan_runtime.experts import block_template, load_expert
from wan_runtime.memory import MemoryPlan
from wan_runtime.offload import ALIGN_BYTES, TensorLayout, WeightGroup, module_tensors
from wan_runtime.pipeline import WanI2V

from helpers import tiny_request as request

# More blocks than ring slots, so the ring wraps within a forward and across forwards.
FIVE_BLOCKS = replace(TINY, dit=replace(TINY.dit, num_layers=5))
STREAM = MemoryPlan(experts="swap", dit_blocks="stream", weight_dtype="fp32")
RESIDENT = MemoryPlan(weight_dtype="fp32")


# ------------------------------------------------------------------ the ring (pure bookkeeping)
RING_CASES = [(blocks, ahead, extra) for blocks in (1, 2, 5) for ahead in (1, 2, 3) for extra in (0, 1)]


def simulate(ring: BlockRing, steps: int):
    """Run `steps` steps; yield (step, loads issued at it) while checking nothing is read before it lands."""
    landed: dict[int, int] = {}  # slot -> position whose block the slot holds
    computed: set[int] = set()
    for _ in range(steps):
        step = ring.next()
        for load in step.loads:
            assert load.waits_for is None or load.waits_for in computed  # never waits for a later compute
            assert landed.get(load.slot) == load.waits_for  # waits for exactly the slot's previous user
            landed[load.slot] = load.position
        assert landed[step.slot] == step.position  # the block computed is the one loaded for it
        computed.add(step.position)
        yield step


@pytest.mark.parametrize("blocks,ahead,extra", RING_CASES)
def test_ring_computes_every_block_from_the_slot_it_was_loaded_into(blocks, ahead, extra):
    ring = BlockRing(blocks, ahead, ahead + 1 + extra)
    steps = list(simulate(ring, 3 * blocks + 4))
    assert [s.block for s in steps] == [p % blocks for p in range(len(steps))]


@pytest.mark.parametrize("blocks,ahead,extra", RING_CASES)
def test_ring_keeps_exactly_ahead_blocks_in_flight_in_sequence_order(blocks, ahead, extra):
    ring = BlockRing(blocks, ahead, ahead + 1 + extra)
    issued = []
    for step in simulate(ring, 2 * blocks + 3):
        issued += step.loads
        assert issued[-1].position == step.position + ahead
    assert [load.position for load in issued] == list(range(len(issued)))
    assert [load.block for load in issued] == [q % blocks for q in range(len(issued))]


def test_ring_first_step_loads_the_block_and_the_ones_ahead_then_one_per_step():
    ring = BlockRing(num_blocks=40, ahead=2)
    first = ring.next()
    assert [(ld.block, ld.slot, ld.waits_for) for ld in first.loads] == [(0, 0, None), (1, 1, None), (2, 2, None)]
    second = ring.next()
    # Block 3 goes into slot 0 once block 0 (position 0) has been computed.
    assert [(ld.block, ld.slot, ld.waits_for) for ld in second.loads] == [(3, 0, 0)]
    assert (second.block, second.slot) == (1, 1)


def test_ring_prefetch_runs_on_into_the_next_forward():
    ring = BlockRing(num_blocks=4, ahead=2)
    last_of_first_pass = [ring.next() for _ in range(4)][-1]
    assert [ld.block for ld in last_of_first_pass.loads] == [1]  # block 1 of the next pass, position 5
    assert ring.slot_contents() == [3, 0, 1]  # block 3 computing, blocks 0 and 1 of the next pass arriving


def test_ring_reset_starts_over_with_unused_slots():
    ring = BlockRing(num_blocks=3, ahead=1)
    for _ in range(4):
        ring.next()
    ring.reset()
    assert ring.position == 0 and ring.slot_contents() == [None, None]
    assert [ld.waits_for for ld in ring.next().loads] == [None, None]


@pytest.mark.parametrize("args,match", [((0, 1), "num_blocks"), ((4, 0), "ahead"), ((4, 2, 2), "at least 3 slots")])
def test_ring_rejects_impossible_shapes(args, match):
    with pytest.raises(ValueError, match=match):
        BlockRing(*args)


# ------------------------------------------------------------------ layouts and weight groups
def test_layout_aligns_every_tensor_and_round_trips_mixed_dtypes():
    tensors = [("a", torch.randn(3, 5)), ("b", torch.arange(7, dtype=torch.int64)),
               ("c", torch.randn(4).to(torch.float8_e4m3fn)), ("d", torch.randn(2, 2).bfloat16())]
    layout = TensorLayout.of(tensors)
    assert all(e.offset % ALIGN_BYTES == 0 for e in layout.entries)
    buffer = torch.zeros(layout.nbytes, dtype=torch.uint8)
    views = layout.views(buffer)
    for name, tensor in tensors:
        views[name].copy_(tensor)
    again = layout.views(buffer.clone())
    for name, tensor in tensors:
        assert again[name].dtype == tensor.dtype and torch.equal(again[name].view(torch.uint8), tensor.view(torch.uint8))


def test_weight_group_parks_on_its_host_copy_and_moves_as_one_buffer():
    layer = nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4))
    expected = {n: t.clone() for n, t in module_tensors(layer)}
    weight = layer[0].weight
    group = WeightGroup(layer, pinned=False)
    assert layer[0].weight is weight  # parameters keep their identity
    assert layer[0].weight.untyped_storage().data_ptr() == group.host.untyped_storage().data_ptr()
    group.to_device(torch.device("cpu"))  # the CPU plays the device: a second, flat buffer
    moved = {t.untyped_storage().data_ptr() for _, t in module_tensors(layer)}
    assert len(moved) == 1 and moved != {group.host.untyped_storage().data_ptr()}
    group.to_host()
    assert all(torch.equal(t, expected[n]) for n, t in module_tensors(layer))


# ------------------------------------------------------------------ streamed experts
def expert_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 3, 4, 6, generator=g)
    y = torch.randn(1, 20, 3, 4, 6, generator=g)
    context = torch.randn(1, 7, TINY.dit.text_dim, generator=g)
    return x, torch.tensor([907.0]), context, y


@pytest.fixture(scope="module")
def experts():
    resident = load_expert("synthetic", FIVE_BLOCKS, "high", RESIDENT, "cpu").model
    streamed = load_expert("synthetic", FIVE_BLOCKS, "high", STREAM, "cpu")
    return resident, streamed


def test_streamed_expert_holds_the_same_distinct_weights_as_the_resident_one(experts):
    resident, streamed = experts
    ours, theirs = streamed.model.state_dict(), resident.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    q = [theirs[f"blocks.{i}.self_attn.q.weight"] for i in range(5)]
    assert all(not torch.equal(q[i], q[j]) for i in range(5) for j in range(i))


def test_streamed_expert_computes_exactly_what_the_resident_one_computes(experts):
    resident, streamed = experts
    streamed.activate()
    try:
        for seed in range(3):  # several forwards: the ring carries on across them
            inputs = expert_inputs(seed)
            assert torch.equal(streamed.model(*inputs), resident(*inputs))
    finally:
        streamed.park()


def test_streamed_blocks_are_called_through_the_runners_block_call(experts):
    resident, streamed = experts
    called: list[int] = []

    def counting_call(block, *args):
        called.append(1)
        return block(*args)

    runner = streamed.model.runner
    assert isinstance(runner, StreamedBlocks)
    streamed.model.runner = StreamedBlocks(runner.streamer, counting_call)
    streamed.activate()
    try:
        inputs = expert_inputs()
        assert torch.equal(streamed.model(*inputs), resident(*inputs))
    finally:
        streamed.park()
        streamed.model.runner = runner
    assert len(called) == 5


def test_each_forward_copies_every_block_once_and_prefetches_into_the_next(experts):
    _, streamed = experts
    trace = StreamTrace()
    streamer = streamed.streamer
    streamer.trace = trace
    streamed.activate()
    try:
        streamed.model(*expert_inputs())
        streamed.model(*expert_inputs())
    finally:
        streamed.park()
        streamer.trace = None
    copies = [i.block for i in trace.intervals() if i.kind == "copy"]
    computes = [i.block for i in trace.intervals() if i.kind == "compute"]
    assert computes == [0, 1, 2, 3, 4] * 2
    assert copies == [0, 1, 2, 3, 4] * 2 + [0, 1]  # two blocks ahead, into a forward not yet asked for


def test_a_forward_cut_short_leaves_the_ring_ready_for_the_next(experts):
    resident, streamed = experts
    def fail(*_):
        raise RuntimeError("out of memory, say")

    streamed.activate()
    try:
        hook = streamed.streamer._slots[1].shell.register_forward_pre_hook(fail)  # block 1 fails once
        with pytest.raises(RuntimeError, match="out of memory"):
            streamed.model(*expert_inputs())
        hook.remove()
        assert torch.equal(streamed.model(*expert_inputs()), resident(*expert_inputs()))
    finally:
        streamed.park()


def test_a_parked_streamed_expert_refuses_to_run(experts):
    _, streamed = experts
    with pytest.raises(RuntimeError, match="activate the expert first"):
        streamed.model(*expert_inputs())


def test_streamer_rejects_a_template_of_another_precision(experts):
    _, streamed = experts
    with pytest.raises(ValueError, match="template"):
        BlockStreamer(streamed.streamer.groups, block_template(FIVE_BLOCKS, fp8=True), ahead=1)


def test_streamed_fp8_expert_computes_exactly_what_the_resident_fp8_one_computes():
    fp8 = replace(RESIDENT, weight_dtype="fp8")
    resident = load_expert("synthetic", FIVE_BLOCKS, "low", fp8, "cpu").model
    streamed = load_expert("synthetic", FIVE_BLOCKS, "low", replace(STREAM, weight_dtype="fp8"), "cpu")
    streamed.activate()
    inputs = expert_inputs()
    assert torch.equal(streamed.model(*inputs), resident(*inputs))
    assert streamed.streamer.block_nbytes < 0.6 * WeightGroup(block_template_bf16(), pinned=False).nbytes


def block_template_bf16() -> nn.Module:
    """A real (CPU) tiny block in bf16, for its byte count."""
    return load_expert("synthetic", FIVE_BLOCKS, "low", MemoryPlan(), "cpu").model.blocks[0]


# ------------------------------------------------------------------ the pipeline

@pytest.mark.parametrize("ahead", [1, 3])
def test_pipeline_stream_gives_the_same_frames_as_resident(ahead):
    reference = WanI2V.load("synthetic", FIVE_BLOCKS, "cpu", RESIDENT).generate(request()).frames
    pipe = WanI2V.load("synthetic", FIVE_BLOCKS, "cpu", replace(STREAM, prefetch_blocks=ahead))
    calls = [0]
    pipe.experts["high"].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    result = pipe.generate(request())
    assert np.array_equal(result.frames, reference)
    assert calls[0] == 2 * result.steps_high  # CFG: two streamed forwards per step


def test_streamed_expert_host_copy_is_the_expert_plus_alignment_padding(experts):
    resident, streamed = experts
    expert_bytes = sum(t.numel() * t.element_size() for t in resident.state_dict().values())
    tensors = len(resident.state_dict())
    assert expert_bytes <= streamed.host_bytes() < expert_bytes + tensors * ALIGN_BYTES


def test_expert_from_a_checkpoint_streams_the_checkpoints_values(tmp_path, fixtures_dir):
    from safetensors.torch import load_file, save_file

    from wan_runtime.config import DiTConfig, ModelConfig
    from wan_runtime.weights import load_dit

    weights = load_file(fixtures_dir / "dit_tiny.safetensors")  # the official tiny DiT, 2 blocks
    for folder in ("high_noise_model", "low_noise_model"):
        (tmp_path / folder).mkdir()
        save_file(weights, str(tmp_path / folder / "diffusion_pytorch_model.safetensors"))
    dit = DiTConfig(dim=96, ffn_dim=192, num_layers=2, num_heads=2, freq_dim=32, text_dim=48, text_len=32)
    cfg = ModelConfig(name="fixture", dit=dit, t5=replace(TINY.t5, dim=48, dim_attn=48))
    reference = load_dit(tmp_path, cfg, "high", "fp32", "cpu")
    streamed = load_expert(tmp_path, cfg, "high", replace(STREAM, prefetch_blocks=1), "cpu")
    streamed.activate()
    x, t, _, y = expert_inputs()
    context = torch.randn(1, 7, 48, generator=torch.Generator().manual_seed(3))
    assert torch.equal(streamed.model(x, t, context, y), reference(x, t, context, y))
