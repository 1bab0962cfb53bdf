"""ParallelPlan: how the ranks of one torchrun job share the work of one video.

Three independent factors multiply into the world size:

    ulysses_size        ranks that split the video tokens of every DiT forward (sequence parallel)
    cfg_parallel        x2: the conditional and unconditional forwards run on different ranks
    experts="split"     x2: a MemoryPlan value: the high-noise expert on one half of the ranks, the
                        low-noise one on the other (each resident on its own GPUs, no swap)

`experts="split"` is a value of MemoryPlan.experts, not a field here: it answers the question that
field answers (where does each expert live while the other runs: both here, one at a time here, or
each on GPUs of its own), it excludes `swap` by construction, and the one-vocabulary rule (suite keys
and result columns are field names, unique across value objects) leaves `experts` to MemoryPlan.

Ranks are laid out expert-major, then cfg, then ulysses (ulysses neighbours are adjacent ranks):
rank = (expert_index * cfg_factor + cfg_index) * ulysses_size + ulysses_index. `RankLayout` does the
arithmetic and lists the rank groups; it is pure Python, so its rules are unit-tested without processes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator

from wan_runtime.errors import ConfigError
from wan_runtime.fields import check_fields, parameter
from wan_runtime.memory import MemoryPlan


@dataclass(frozen=True)
class ParallelPlan:
    """A value object describing how many ranks do what; `wan_runtime.parallel.context` carries it out.

    ulysses_size splits the video tokens of every DiT forward over that many ranks; self-attention
    exchanges heads with an all-to-all, so it must divide the number of attention heads.
    cfg_parallel runs the conditional and unconditional forwards of each step on two rank groups,
    with one exchange of the prediction per step. dit_fsdp shards each expert over the ranks that run
    it, t5_fsdp the text encoder over all ranks (torch FSDP2 `fully_shard`). collective_timeout_s
    bounds how long a collective waits for the other ranks: a rank that died or stopped answering
    ends the run with an error instead of a hang.
    """

    ulysses_size: int = parameter(
        1, "sequence-parallel degree (official --ulysses_size): ranks that split the tokens of every DiT "
        "forward; must divide the attention heads", ge=1)
    cfg_parallel: bool = parameter(
        False, "the conditional and unconditional forwards of each step on two rank groups (twice the ranks)")
    dit_fsdp: bool = parameter(False, "shard each DiT expert over the ranks that run it (FSDP2, official --dit_fsdp)")
    t5_fsdp: bool = parameter(False, "shard the text encoder over all ranks (FSDP2, official --t5_fsdp)")
    collective_timeout_s: float = parameter(
        600.0, "seconds a collective waits for the other ranks before the run fails with an error", gt=0)

    def __post_init__(self) -> None:
        check_fields(self)

    def layout(self, memory: MemoryPlan) -> "RankLayout":
        """How the ranks are arranged for this plan and memory plan."""
        return RankLayout(experts=2 if memory.experts == "split" else 1,
                          cfg=2 if self.cfg_parallel else 1, ulysses=self.ulysses_size)

    def world_size(self, memory: MemoryPlan) -> int:
        """Number of ranks this plan runs on."""
        return self.layout(memory).world_size

    def to_dict(self) -> dict:
        """Plain dict of the plan's fields (for results and logs)."""
        return asdict(self)


@dataclass(frozen=True)
class RankCoords:
    """Where one rank sits: which expert group, which CFG branch, which token shard."""

    expert: int  # 0: high-noise group (or both experts when not split), 1: low-noise group
    cfg: int  # 0: conditional forward (or both when not cfg-parallel), 1: unconditional
    ulysses: int  # index of the token shard within its sequence-parallel group


@dataclass(frozen=True)
class RankLayout:
    """The factors of the world size and the rank groups they imply."""

    experts: int
    cfg: int
    ulysses: int

    @property
    def world_size(self) -> int:
        return self.experts * self.cfg * self.ulysses

    def rank(self, coords: RankCoords) -> int:
        """Global rank of a position."""
        return (coords.expert * self.cfg + coords.cfg) * self.ulysses + coords.ulysses

    def coords(self, rank: int) -> RankCoords:
        """Position of a global rank."""
        expert, rest = divmod(rank, self.cfg * self.ulysses)
        cfg, ulysses = divmod(rest, self.ulysses)
        return RankCoords(expert, cfg, ulysses)

    def _all(self) -> Iterator[RankCoords]:
        for e in range(self.experts):
            for c in range(self.cfg):
                for u in range(self.ulysses):
                    yield RankCoords(e, c, u)

    def groups(self, family: str) -> list[list[int]]:
        """Every group of one family, each a sorted list of ranks; the same order on every rank.

        ulysses: ranks sharing the tokens of one forward; cfg: the cond/uncond pair of one token
        shard; experts: the high/low pair that hands the prediction over; shard: the ranks that run
        one expert (its FSDP group); world: every rank.
        """
        key = {
            "ulysses": lambda c: (c.expert, c.cfg),
            "cfg": lambda c: (c.expert, c.ulysses),
            "experts": lambda c: (c.cfg, c.ulysses),
            "shard": lambda c: (c.expert,),
            "world": lambda c: (),
        }[family]
        groups: dict[tuple, list[int]] = {}
        for coords in self._all():
            groups.setdefault(key(coords), []).append(self.rank(coords))
        return [sorted(ranks) for ranks in groups.values()]

    def describe(self) -> str:
        """The factors in words, e.g. 'ulysses_size 2 x 2 for cfg_parallel'."""
        parts = [f"ulysses_size {self.ulysses}"]
        if self.cfg > 1:
            parts.append("2 for cfg_parallel")
        if self.experts > 1:
            parts.append("2 for experts=split")
        return " x ".join(parts)


def divisors(n: int) -> list[int]:
    """The positive divisors of n, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def check_launch(plan: ParallelPlan, memory: MemoryPlan, num_heads: int, world_size: int,
                 local_world_size: int, gpus: int | None) -> None:
    """Raise ConfigError for a plan that cannot run as launched (gpus: CUDA devices seen, None on the CPU).

    Checked in the order a user fixes things: the model, the launch, the machine, the combinations.
    """
    if num_heads % plan.ulysses_size:
        raise ConfigError(
            f"ulysses_size {plan.ulysses_size} does not divide the model's {num_heads} attention heads "
            f"(each rank attends with a whole number of heads); use one of {divisors(num_heads)}"
        )
    layout = plan.layout(memory)
    if world_size != layout.world_size:
        started = "a single process" if world_size == 1 else f"{world_size} ranks"
        raise ConfigError(
            f"this plan runs on {layout.world_size} ranks ({layout.describe()}) but {started} started; "
            f"launch it with {torchrun_command(layout.world_size)}"
        )
    if gpus is not None and local_world_size > gpus:
        raise ConfigError(
            f"{local_world_size} ranks on this machine but {gpus} GPU(s) visible: each rank needs a GPU of its "
            f"own; use at most {gpus} ranks (a smaller plan) or make more GPUs visible"
        )
    if plan.dit_fsdp and layout.cfg * layout.ulysses == 1:
        raise ConfigError(
            "dit_fsdp shards each expert over the ranks that run it, and here each expert runs on one rank: "
            "nothing to shard; drop dit_fsdp or add ranks (ulysses_size, cfg_parallel)"
        )
    if plan.dit_fsdp and (memory.experts == "swap" or memory.dit_blocks == "stream"):
        raise ConfigError(
            "dit_fsdp shards resident expert weights over the ranks; it cannot be combined with "
            f"experts={memory.experts!r}, dit_blocks={memory.dit_blocks!r}: set experts='resident' "
            "(or 'split') and dit_blocks='resident' (--offload_model False), or drop dit_fsdp"
        )
    if plan.t5_fsdp and world_size == 1:
        raise ConfigError("t5_fsdp shards the text encoder over the ranks, and there is one: drop t5_fsdp "
                          "or run several ranks")
    if plan.t5_fsdp and memory.text_encoder != "gpu":
        raise ConfigError(
            f"t5_fsdp keeps the text encoder sharded on the GPUs, but text_encoder={memory.text_encoder!r}: "
            "set text_encoder='gpu' (no --t5_cpu, --offload_model False) or drop t5_fsdp"
        )


def check_guidance(plan: ParallelPlan, guide_scales: list[float]) -> None:
    """Refuse cfg_parallel when no guidance is applied (scale 1.0 needs no unconditional forward)."""
    if plan.cfg_parallel and all(g == 1.0 for g in guide_scales):
        raise ConfigError(
            "cfg_parallel splits the conditional and unconditional forwards between ranks, but the guidance "
            "scale is 1.0, which needs no unconditional forward: nothing to split; drop cfg_parallel or "
            "set a guidance scale other than 1.0"
        )


def torchrun_command(ranks: int) -> str:
    """The launch command to suggest for `ranks` ranks of wan-generate."""
    return f"torchrun --standalone --nproc-per-node {ranks} -m wan_runtime.cli <the same flags>"


__all__ = ["ParallelPlan", "RankCoords", "RankLayout", "check_guidance", "check_launch", "divisors", "torchrun_command"]
