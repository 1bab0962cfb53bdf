"""Block runners: how a DiT expert runs its stack of blocks, chosen when the expert is placed.

`WanDiT.forward` embeds the inputs, hands the residual stream to its runner, and applies the head
to what comes back. A runner decides two things, independently:

    where the blocks come from   ResidentBlocks (model.blocks on the device)
                                 StreamedBlocks (host copies through a ring of device buffers)
    how one block is called      `call`: eager (`block(...)`) or a compiled function of the same
                                 signature, shared by every block (regional compilation)

and wrappers add what surrounds the stack (e.g. sequence parallelism shards the tokens before the
blocks, exchanges heads inside self-attention and gathers after). So memory placement, compilation
and parallelism combine instead of overwriting each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import torch
from torch import nn

from wan_runtime.attention import AttentionOps

if TYPE_CHECKING:
    from wan_runtime.block_stream import BlockStreamer
    from wan_runtime.modules.dit import WanDiT

# (block, x [B, L, C] fp32, e0 [B, 6, C] fp32, context [B, T, C], rope [L, 1, D/2], ops) -> x
BlockCall = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, AttentionOps],
                     torch.Tensor]


def eager_call(block: nn.Module, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
               rope: torch.Tensor, ops: AttentionOps) -> torch.Tensor:
    """Call one block as it is."""
    return block(x, e0, context, rope, ops)


class BlockRunner(Protocol):
    """Runs every block of `model` once, in order, on the residual stream x."""

    def __call__(self, model: "WanDiT", x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                 rope: torch.Tensor, ops: AttentionOps) -> torch.Tensor: ...

    def warm_up(self, model: "WanDiT", x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                rope: torch.Tensor, ops: AttentionOps) -> None:
        """Call one block as `__call__` would (so a compiled call compiles for these shapes); no result."""
        ...


@dataclass
class ResidentBlocks:
    """The blocks are `model.blocks`, on the device."""

    call: BlockCall = eager_call

    def __call__(self, model: "WanDiT", x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                 rope: torch.Tensor, ops: AttentionOps) -> torch.Tensor:
        for block in model.blocks:
            x = self.call(block, x, e0, context, rope, ops)
        return x

    def warm_up(self, model: "WanDiT", x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                rope: torch.Tensor, ops: AttentionOps) -> None:
        """Call the first block of each layout once (fp8 blocks and the bf16 ones of exact_last_blocks
        compile apart: a compiled call must not meet its second layout during a timed step)."""
        layouts = set()
        for block in model.blocks:
            layout = tuple(type(m) for m in block.modules())
            if layout not in layouts:
                layouts.add(layout)
                self.call(block, x, e0, context, rope, ops)


@dataclass
class StreamedBlocks:
    """The blocks live in host memory and pass through the streamer's ring of device buffers."""

    streamer: "BlockStreamer"
    call: BlockCall = eager_call

    def __call__(self, model: "WanDiT", x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                 rope: torch.Tensor, ops: AttentionOps) -> torch.Tensor:
        return self.streamer.run(x, (e0, context, rope, ops), self.call)

    def warm_up(self, model: "WanDiT", x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                rope: torch.Tensor, ops: AttentionOps) -> None:
        """Call the first block once, through a ring slot."""
        self.streamer.call_first(x, (e0, context, rope, ops), self.call)


__all__ = ["BlockCall", "BlockRunner", "ResidentBlocks", "StreamedBlocks", "eager_call"]
