"""An expert built and kept as the memory plan says: resident, swapped (pageable or pinned) or streamed.

Loading goes part by part, so the device never holds more of an expert than the plan allows, not
even while loading: the expert is built on the `meta` device, then each part (everything but the
blocks, then block 0, 1, ...) is made on the device (synthetic weights) or read from the checkpoint,
converted (fp8), and placed:

    mode       where the parts go                                   activate()             park()
    resident   stay on the device                                   -                      -
    pageable   .to("cpu") (the official --offload_model)            .to(device)            .to("cpu")
    pinned     one page-locked host copy per part                   one copy per part in   drop the device copies
    stream     everything but the blocks: as pinned; blocks: host   + ring of block slots  + free the ring

Synthetic weights are made on the run's device part by part under their full names, so they are the
values `load_dit` makes for the whole expert (the seed of a tensor depends on its name only).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from wan_runtime.block_runner import BlockCall, ResidentBlocks, StreamedBlocks
from wan_runtime.block_stream import BlockStreamer
from wan_runtime.compile import block_call
from wan_runtime.compute import ComputePlan
from wan_runtime.config import ModelConfig
from wan_runtime.errors import ConfigError
from wan_runtime.compute import Matmul
from wan_runtime.fp8 import quantize_linears
from wan_runtime.memory import MemoryPlan
from wan_runtime.observer import Expert
from wan_runtime.modules.dit import WanBlock, WanDiT
from wan_runtime.offload import WeightGroup, tensor_bytes
from wan_runtime.weights import (
    SEED_HIGH_NOISE, SEED_LOW_NOISE, load_dit, materialize_synthetic, resolve_device, resolve_dtype,
)
from wan_runtime.weights.loader import ensure_no_meta

if TYPE_CHECKING:
    from wan_runtime.parallel import ParallelContext

Mode = Literal["resident", "pageable", "pinned", "stream"]
CPU = torch.device("cpu")


def placement_mode(plan: MemoryPlan, device: torch.device) -> Mode:
    """How the plan keeps an expert on `device`; on the CPU, parking is moot (all memory is host memory)."""
    if plan.dit_blocks == "stream":
        return "stream"
    if plan.experts in ("resident", "split") or device.type == "cpu":
        return "resident"
    return "pinned" if plan.host_memory == "pinned" else "pageable"


def effective_placement(plan: MemoryPlan, device: torch.device) -> dict[str, str | None]:
    """Where the plan's placements really put the networks on `device`, in the plan's own words.

    On a CPU every network is in host memory: a `gpu` or `offload_after` text encoder runs as `cpu`,
    swapped experts stay `resident` (placement_mode), and a streamed expert's host copies are plain
    (`pageable`) memory. `host_memory` is None when no expert weights are held in host memory.
    """
    device = torch.device(device)
    mode = placement_mode(plan, device)
    if mode == "resident":
        host_memory = None
    elif mode == "pageable" or device.type != "cuda":  # pinning exists to feed a GPU (see load_expert)
        host_memory = "pageable"
    else:
        host_memory = "pinned"
    return {
        "experts": "split" if plan.experts == "split" else ("resident" if mode == "resident" else "swap"),
        "dit_blocks": "stream" if mode == "stream" else "resident",
        "host_memory": host_memory,
        "text_encoder": "cpu" if device.type == "cpu" else plan.text_encoder,
    }


class PlacedExpert:
    """One DiT expert and the way the plan keeps it: `activate()` before its stage, `park()` after."""

    def __init__(self, model: WanDiT, device: torch.device, mode: Mode, groups: list[WeightGroup],
                 streamer: BlockStreamer | None):
        self.model = model
        self.device = device
        self.mode = mode
        self.groups = groups  # pinned: every part; stream: everything but the blocks
        self.streamer = streamer
        # A pageable expert handed in on the device (WanI2V built by a caller) counts as active.
        on_device = next(model.parameters()).device.type == device.type
        self.active = mode == "resident" or (mode == "pageable" and on_device)

    def activate(self) -> None:
        """Make the expert computable on the device (a no-op when it already is)."""
        if self.active:
            return
        if self.mode == "pageable":
            self.model.to(self.device)
        for group in self.groups:
            group.to_device(self.device)
        if self.streamer is not None:
            self.streamer.start(self.device)
        self.active = True

    def park(self) -> None:
        """Free the expert's device memory (its weights stay in host memory); a resident expert stays where it is."""
        if not self.active or self.mode == "resident":
            return
        if self.streamer is not None:
            self.streamer.stop()
        for group in self.groups:
            group.to_host()
        if self.mode == "pageable":
            self.model.to(CPU)
        self.active = False

    def host_bytes(self) -> int:
        """Host memory held for this expert (pinned copies or parked pageable weights)."""
        if self.mode in ("pinned", "stream"):
            blocks = sum(g.nbytes for g in self.streamer.groups) if self.streamer else 0
            return sum(g.nbytes for g in self.groups) + blocks
        if self.mode == "pageable":
            return tensor_bytes(self.model) if not self.active else 0
        return 0


def _part(model: WanDiT, index: int | None) -> nn.Module:
    """A module exposing one part of `model` under its full names: block `index`, or (None) all but the blocks."""
    holder = nn.Module()
    if index is None:
        for name, child in model.named_children():
            if name != "blocks":
                holder.add_module(name, child)
    else:
        blocks = nn.Module()
        blocks.add_module(str(index), model.blocks[index])
        holder.add_module("blocks", blocks)
    return holder


def block_template(cfg: ModelConfig, fp8: bool, matmul: Matmul = "native") -> nn.Module:
    """A block with the structure of the expert's blocks (fp8 layers included) on the meta device."""
    with torch.device("meta"):
        block = WanBlock(cfg.dit)
    if fp8:
        quantize_linears(block, matmul=matmul)
    return block.eval().requires_grad_(False)


def load_expert(source: str | Path, cfg: ModelConfig, expert: Expert, plan: MemoryPlan,
                device: str | torch.device, attention: str = "auto",
                cross_attention: str | None = None, compute: ComputePlan | None = None,
                call: BlockCall | None = None, parallel: "ParallelContext | None" = None) -> PlacedExpert:
    """Build expert `expert` ("high" | "low") from `source` and place it as `plan` says (parked unless resident).

    `attention` / `cross_attention` are the self- and cross-attention backends (cross None: the same).
    `compute` says how the blocks compute; `call` is the block call to use (a pipeline hands both
    experts the same compiled call; None: the one `compute` asks for, made here).
    `parallel` (a rank of a multi-GPU run) shards the resident blocks as they are placed (dit_fsdp), so
    the device holds one whole block at most beyond its shards, and wraps the block runner for
    sequence parallelism. The rest of the expert (embeddings, time MLPs, head: 0.46 GiB of A14B in
    bf16) stays whole on every rank: code outside the forward (the compile warm-up) reads it.
    """
    if expert not in ("high", "low"):
        raise ConfigError(f"expert must be 'high' (high-noise) or 'low' (low-noise), not {expert!r}")
    compute = compute or ComputePlan()
    device = resolve_device(device)
    compute.check(plan, device)
    call = call or block_call(compute)
    mode = placement_mode(plan, device)
    fp8 = plan.weight_dtype == "fp8"
    pinned = device.type == "cuda"  # host copies exist to feed a GPU; on the CPU they are plain memory
    synthetic = isinstance(source, str) and source == "synthetic"
    shard = parallel.dit_sharder() if parallel is not None else None
    if synthetic:
        dtype = resolve_dtype(plan.load_dtype, device)
        with torch.device("meta"):
            model = WanDiT(cfg.dit, attention=attention)
        seed = SEED_HIGH_NOISE if expert == "high" else SEED_LOW_NOISE
    else:
        # Straight to the device when nothing is converted or parked; else via host memory, part by part.
        staging = device if mode == "resident" and not fp8 else CPU
        model = load_dit(source, cfg, expert, plan.load_dtype, staging, attention)
    model.eval().requires_grad_(False)

    groups: list[WeightGroup] = []
    block_groups: list[WeightGroup] = []
    for index in (None, *range(len(model.blocks))):
        part = _part(model, index)
        if synthetic:
            materialize_synthetic(part, seed, dtype, device)
        if fp8 and index is not None and (compute.matmul != "fp8" or compute.fp8_block(index, len(model.blocks))):
            part.to(device)  # quantize where the arithmetic is fast
            quantize_linears(part, matmul=compute.matmul)
        if mode == "resident":
            part.to(device)
            if shard is not None and index is not None:
                shard(model.blocks[index])
        elif mode == "pageable":
            part.to(CPU)
        elif mode == "pinned" or index is None:
            groups.append(WeightGroup(part, pinned))
        else:  # a streamed block: host memory only, laid out relative to the block so every block matches
            block_groups.append(WeightGroup(model.blocks[index], pinned))
    ensure_no_meta(model, f"{expert}-noise DiT expert")

    streamer = None
    if mode == "stream":
        streamer = BlockStreamer(block_groups, block_template(cfg, fp8, compute.matmul), plan.prefetch_blocks)
        model.runner = StreamedBlocks(streamer, call)  # the blocks come through the ring, not model.blocks
    else:
        model.runner = ResidentBlocks(call)
    if parallel is not None:
        model.runner = parallel.sequence_runner(model.runner)
    model.set_attention(attention, cross_attention)
    model.attention_ops(device)  # resolve the backends now: one that cannot run here fails the load
    return PlacedExpert(model, device, mode, groups, streamer)


__all__ = ["Mode", "placement_mode", "effective_placement", "PlacedExpert", "load_expert", "block_template"]
