"""Ulysses sequence parallelism as a block-runner wrapper.

    full tokens x [B, L, C] (every rank)  --shard-->  x[:, rows of this rank]  (and the same rows of rope)
    inner runner (resident, streamed or compiled blocks) on the shard; inside each block:
        self-attention   q, k, v [B, L_r, H, D] --all-to-all--> [B, L, H/P, D]   (all tokens, H/P heads)
                         attention (any registered backend, unmodified)
                         out [B, L, H/P, D]     --all-to-all--> [B, L_r, H, D]
        cross-attention  the shard's queries over the (replicated) text: no exchange
        norms, modulation, FFN: per token, no exchange
    --gather--> full tokens [B, L, C] on every rank (the head and the scheduler then run everywhere)

Tokens that do not divide by P are split unevenly (the first L % P ranks take one more): the
all-to-alls take per-rank row counts, so attention always sees exactly the L real tokens, with no
padding and no key mask. That keeps every attention backend usable as it is (flash-attn and
SageAttention take no mask) and costs nothing when L divides, as it does at 480p and 720p (32,760
and 75,600 tokens divide by every degree that divides the 40 heads), but not under the official
size rule's 464x832 (31,668 tokens). Only the final gather pads each shard to the longest one (one
token at most) because all-gather needs equal sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from wan_runtime.attention import AttentionFn, AttentionOps
from wan_runtime.block_runner import BlockRunner
from wan_runtime.errors import ConfigError
from wan_runtime.parallel.groups import RankGroup


def shard_sizes(tokens: int, ranks: int) -> list[int]:
    """Tokens per rank, in rank order: as equal as possible, the first `tokens % ranks` ranks one more."""
    base, extra = divmod(tokens, ranks)
    return [base + 1 if i < extra else base for i in range(ranks)]


def ulysses_attention(attn: AttentionFn, group: RankGroup, sizes: list[int]) -> AttentionFn:
    """Self-attention over the whole sequence for token shards: heads are exchanged before and after `attn`."""
    parts, mine = group.size, sizes[group.index]

    def to_heads(u: torch.Tensor) -> torch.Tensor:
        """[B, L_r, H, D] this rank's tokens, all heads -> [B, L, H/P, D] all tokens, this rank's heads."""
        b, rows, h, d = u.shape
        # Row block j (my tokens, head group j) goes to member j; member i's rows arrive in token order.
        send = u.reshape(b, rows, parts, h // parts, d).permute(2, 1, 0, 3, 4).reshape(parts * rows, b, h // parts, d)
        got = group.all_to_all(send, output_rows=sizes, input_rows=[rows] * parts)  # [L, B, H/P, D]
        return got.permute(1, 0, 2, 3).contiguous()

    def to_tokens(o: torch.Tensor) -> torch.Tensor:
        """[B, L, H/P, D] -> [B, L_r, H, D]: every member's head group for this rank's tokens."""
        b, _, heads, d = o.shape
        got = group.all_to_all(o.permute(1, 0, 2, 3), output_rows=[mine] * parts, input_rows=sizes)
        return got.view(parts, mine, b, heads, d).permute(2, 1, 0, 3, 4).reshape(b, mine, parts * heads, d)

    def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return to_tokens(attn(to_heads(q), to_heads(k), to_heads(v)))

    return attention


def gather_tokens(x: torch.Tensor, sizes: list[int], group: RankGroup) -> torch.Tensor:
    """Every rank's shard [B, L_r, C] -> the whole sequence [B, L, C] on every rank."""
    longest = sizes[0]
    padded = F.pad(x, (0, 0, 0, longest - x.shape[1]))  # all-gather needs equal shapes
    parts = group.all_gather(padded)
    return torch.cat([part[:, :n] for part, n in zip(parts, sizes)], dim=1)


@dataclass
class SequenceParallelBlocks:
    """Runs `inner` on this rank's share of the tokens; self-attention sees all of them through the exchange."""

    inner: BlockRunner
    group: RankGroup
    # The wrapped attention per (attention functions, token count), so every forward of one video
    # hands the blocks the same function objects (a compiled block call is not re-specialized).
    _ops: dict[tuple[AttentionOps, int], AttentionOps] = field(default_factory=dict, repr=False)

    def __call__(self, model, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                 rope: torch.Tensor, ops: AttentionOps) -> torch.Tensor:
        sizes, x, rope, ops = self._shard(x, rope, ops)
        return gather_tokens(self.inner(model, x, e0, context, rope, ops), sizes, self.group)

    def warm_up(self, model, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor,
                rope: torch.Tensor, ops: AttentionOps) -> None:
        """The inner runner's warm-up (one block, e.g. to compile it) on this rank's shard, as `__call__` runs it."""
        _, x, rope, ops = self._shard(x, rope, ops)
        self.inner.warm_up(model, x, e0, context, rope, ops)

    def _shard(self, x: torch.Tensor, rope: torch.Tensor,
               ops: AttentionOps) -> tuple[list[int], torch.Tensor, torch.Tensor, AttentionOps]:
        """(tokens per rank, this rank's tokens, their rope rows, the attention with the head exchange)."""
        tokens, ranks = x.shape[1], self.group.size
        if tokens < ranks:
            raise ConfigError(
                f"the video has {tokens} tokens, fewer than ulysses_size {ranks}: choose a larger size or "
                "more frames, or a smaller ulysses_size"
            )
        sizes = shard_sizes(tokens, ranks)
        start = sum(sizes[: self.group.index])
        stop = start + sizes[self.group.index]
        key = (ops, tokens)
        if key not in self._ops:
            self._ops[key] = AttentionOps(ulysses_attention(ops.self_attn, self.group, sizes), ops.cross_attn)
        return sizes, x[:, start:stop].contiguous(), rope[start:stop], self._ops[key]


__all__ = ["SequenceParallelBlocks", "gather_tokens", "shard_sizes", "ulysses_attention"]
