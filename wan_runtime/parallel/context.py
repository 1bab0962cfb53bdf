"""ParallelContext: one rank's part of a ParallelPlan, and the exchanges the pipeline makes through it.

The pipeline asks it four things, and does everything else exactly as a single process would:

    which experts to load              experts            (both, or one under experts="split")
    how to run an expert's blocks      sequence_runner    (the Ulysses wrapper around the placed runner)
    the two CFG predictions of a step  cfg_branches       (both here, or one here and one from the pair rank)
    the velocity of a step             share_velocity     (from the rank group that holds the step's expert)

Every rank ends each step with the same velocity and steps its own scheduler with it, so latents,
scheduler state and generator stay identical everywhere without ever being sent; rank 0 decodes and
returns the frames. A context of one rank makes no collective.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from wan_runtime.block_runner import BlockRunner
from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel.fsdp import Sharder
from wan_runtime.parallel.groups import RankGroup, make_groups
from wan_runtime.parallel.launch import LaunchEnv, ensure_process_group, rank_device
from wan_runtime.parallel.plan import ParallelPlan, RankLayout, check_guidance, check_launch
from wan_runtime.parallel.ulysses import SequenceParallelBlocks

FAMILIES = ("ulysses", "cfg", "experts", "shard", "world")


class ParallelContext:
    """This rank's place in a ParallelPlan, its rank groups and its device."""

    def __init__(self, plan: ParallelPlan, layout: RankLayout, rank: int, device: torch.device,
                 groups: dict[str, RankGroup]):
        self.plan = plan
        self.layout = layout
        self.rank = rank
        self.coords = layout.coords(rank)
        self.device = device
        self.groups = groups

    @classmethod
    def start(cls, plan: ParallelPlan, memory: MemoryPlan, num_heads: int, device: torch.device,
              env: LaunchEnv | None = None) -> "ParallelContext":
        """Check the plan against the launch, join (or set up) the process group and make the rank groups.

        Every rank of the job must call this with the same plan, in the same order relative to other
        collectives. Raises ConfigError, naming the torchrun command, when the launch does not fit.
        """
        env = env or LaunchEnv.read()
        if dist.is_initialized() and not env.torchrun:  # a caller set the group up without torchrun's env
            env = LaunchEnv(dist.get_rank(), dist.get_world_size(), dist.get_rank(), dist.get_world_size(), True)
        device = rank_device(device, env)
        gpus = torch.cuda.device_count() if device.type == "cuda" else None
        check_launch(plan, memory, num_heads, env.world_size, env.local_world_size, gpus)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # calls without a device (empty_cache, FSDP, NCCL) mean this rank's GPU
        layout = plan.layout(memory)
        timeout = plan.collective_timeout_s
        # A torchrun job of one rank sets its process group up too (the launch path is the same);
        # its groups all have one rank, so it makes no collective. A plain process has none.
        if env.torchrun:
            ensure_process_group(env, device, timeout)
        # Process groups only for what the plan uses (NCCL sets a communicator up for each).
        families = {family: layout.groups(family) for family in FAMILIES if family != "shard" or plan.dit_fsdp}
        backend = "nccl" if device.type == "cuda" else "gloo"
        return cls(plan, layout, env.rank, device, make_groups(families, env.rank, timeout, backend))

    # ------------------------------------------------------------ what this rank holds
    @property
    def world_size(self) -> int:
        return self.layout.world_size

    @property
    def is_output_rank(self) -> bool:
        """Rank 0 decodes the video and returns the frames; the others return none."""
        return self.rank == 0

    @property
    def experts(self) -> tuple[str, ...]:
        """The experts this rank loads: both, or under experts="split" the one of its group."""
        if self.layout.experts == 1:
            return ("low", "high")
        return ("high",) if self.coords.expert == 0 else ("low",)

    def sequence_runner(self, inner: BlockRunner) -> BlockRunner:
        """`inner` wrapped for sequence parallelism (unchanged when ulysses_size is 1)."""
        group = self.groups["ulysses"]
        return inner if group.size == 1 else SequenceParallelBlocks(inner, group)

    def dit_sharder(self) -> Sharder | None:
        """FSDP over the ranks that run one expert, under dit_fsdp (None otherwise)."""
        return Sharder.over(self.groups["shard"], self.device.type) if self.plan.dit_fsdp else None

    def shard_text_encoder(self, model: nn.Module) -> None:
        """Under t5_fsdp, shard the umT5 encoder (each block, then the root) over every rank."""
        if self.plan.t5_fsdp:
            Sharder.over(self.groups["world"], self.device.type).shard_tree(model.encoder.block, model)

    # ------------------------------------------------------------ per generation
    def check_guidance(self, guide_scales: list[float]) -> None:
        """Raise ConfigError when cfg_parallel has nothing to split (every guidance scale 1.0)."""
        check_guidance(self.plan, guide_scales)

    def same_seed(self, seed: int) -> int:
        """Rank 0's seed on every rank (each rank may have drawn its own random one)."""
        world = self.groups["world"]
        if world.size == 1:
            return seed
        value = torch.tensor([seed], dtype=torch.int64, device=self.device)
        return int(world.broadcast(value, source=0).item())

    def cfg_branches(self, model: nn.Module, x: torch.Tensor, t: torch.Tensor,
                     contexts: tuple[torch.Tensor, torch.Tensor], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditional and unconditional predictions; under cfg_parallel each rank computes one and they swap."""
        pair = self.groups["cfg"]
        if pair.size == 1:
            return model(x, t, contexts[0], y), model(x, t, contexts[1], y)
        cond, uncond = pair.all_gather(model(x, t, contexts[pair.index], y))
        return cond, uncond

    def share_velocity(self, velocity: torch.Tensor | None, expert: str, like: torch.Tensor) -> torch.Tensor:
        """The step's velocity on every rank: sent by the rank of the pair that holds `expert` (experts="split")."""
        pair = self.groups["experts"]
        if pair.size == 1:
            return velocity
        if velocity is None:  # this rank's group does not hold the expert: receive
            velocity = torch.empty(like.shape, dtype=torch.float32, device=like.device)
        return pair.broadcast(velocity, source=0 if expert == "high" else 1)

    def close(self) -> None:
        """Release this context's rank groups; the default process group stays for the next load (see shutdown)."""
        for group in {id(g.group): g.group for g in self.groups.values() if g.group is not None}.values():
            dist.destroy_process_group(group)
        self.groups = {}


__all__ = ["ParallelContext"]
