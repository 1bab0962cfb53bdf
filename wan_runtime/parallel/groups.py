"""RankGroup: one process group and the few collectives the runtime uses on it.

Every collective goes through here, so a failure (another rank died, or stopped answering within the
timeout) surfaces as one ParallelError naming this rank and the operation, never as a hang or a
backend traceback. A group of one rank has no process group at all: its collectives are identities,
which keeps a world of one rank free of communication.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from wan_runtime.errors import ParallelError, first_line


@dataclass(frozen=True)
class RankGroup:
    """The ranks of one group (global ranks, sorted), this rank's index among them and the process group."""

    ranks: tuple[int, ...]
    index: int  # this rank's position in `ranks`
    group: "dist.ProcessGroup | None"  # None for a group of one rank
    timeout_s: float

    @property
    def size(self) -> int:
        return len(self.ranks)

    @contextmanager
    def _failures(self, what: str) -> Iterator[None]:
        try:
            yield
        except torch.OutOfMemoryError:
            raise  # the stage reports it, with its advice
        except RuntimeError as exc:  # DistBackendError, gloo's "connection closed by peer", timeouts
            first = first_line(exc) or type(exc).__name__
            raise ParallelError(
                f"rank {self.ranks[self.index]}: {what} with ranks {list(self.ranks)} failed ({first}); another "
                f"rank died or did not answer within collective_timeout_s={self.timeout_s:g}: see its log"
            ) from exc

    def all_to_all(self, x: torch.Tensor, output_rows: Sequence[int], input_rows: Sequence[int]) -> torch.Tensor:
        """Send rows input_rows[j] of x (dim 0, in order) to member j; returns the rows received, in member order."""
        if self.group is None:
            return x
        out = x.new_empty((sum(output_rows), *x.shape[1:]))
        with self._failures("an all-to-all"):
            dist.all_to_all_single(out, x.contiguous(), list(output_rows), list(input_rows), group=self.group)
        return out

    def all_gather(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every member's x (same shape everywhere), in member order."""
        if self.group is None:
            return [x]
        parts = [torch.empty_like(x) for _ in self.ranks]
        with self._failures("an all-gather"):
            dist.all_gather(parts, x.contiguous(), group=self.group)
        return parts

    def broadcast(self, x: torch.Tensor, source: int) -> torch.Tensor:
        """Member `source`'s x on every member (x is filled in place on the others)."""
        if self.group is None:
            return x
        with self._failures("a broadcast"):
            dist.broadcast(x, src=self.ranks[source], group=self.group)
        return x


def make_groups(families: dict[str, list[list[int]]], rank: int, timeout_s: float,
                backend: str) -> dict[str, RankGroup]:
    """This rank's group of each family; every rank must call this with the same families, in the same order.

    Groups of more than one rank become process groups (torch requires every rank to take part in
    creating every group, members or not); groups of one rank stay local.
    """
    from datetime import timedelta

    mine: dict[str, RankGroup] = {}
    for family, groups in families.items():
        for ranks in groups:
            group = None
            if len(ranks) > 1:
                group = dist.new_group(ranks, timeout=timedelta(seconds=timeout_s), backend=backend)
            if rank in ranks:
                mine[family] = RankGroup(tuple(ranks), ranks.index(rank), group, timeout_s)
    return mine


__all__ = ["RankGroup", "make_groups"]
