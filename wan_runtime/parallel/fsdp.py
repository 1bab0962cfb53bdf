"""FSDP2 (`torch.distributed.fsdp.fully_shard`) of the DiT experts and the text encoder.

Each block is sharded on its own, so a forward gathers one block's parameters at a time and frees
them after it (the official --dit_fsdp / --t5_fsdp). A DiT expert keeps the rest whole on every rank
(embeddings, time MLPs, head: 0.46 GiB of A14B in bf16), because the pipeline also runs them outside
`forward` (the compile warm-up), where FSDP would not gather them; the text encoder, only ever called
through `forward`, shards its root too (its 2 GiB token embedding). The ranks of a shard group run
the same forwards in the same order, which every parallel layout here guarantees (cond and uncond
ranks call their forward in the same step, Ulysses ranks every forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import fully_shard

from wan_runtime.parallel.groups import RankGroup


@dataclass(frozen=True)
class Sharder:
    """Shards modules over the ranks of one group (`sharder(module)`: blocks first, the root last)."""

    mesh: DeviceMesh

    @classmethod
    def over(cls, group: RankGroup, device_type: str) -> "Sharder":
        """A sharder over the ranks of `group` (a process group of two or more ranks)."""
        return cls(DeviceMesh.from_group(group.group, device_type))

    def __call__(self, module: nn.Module) -> None:
        fully_shard(module, mesh=self.mesh)

    def shard_tree(self, blocks: Iterable[nn.Module], root: nn.Module) -> None:
        """Shard each of `blocks`, then `root` (which holds them)."""
        for block in blocks:
            self(block)
        self(root)


__all__ = ["Sharder"]
