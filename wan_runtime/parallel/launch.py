"""Launching: the torchrun environment and the default process group.

torchrun starts one process per rank and tells each who it is through RANK, WORLD_SIZE, LOCAL_RANK
and LOCAL_WORLD_SIZE (plus MASTER_ADDR/MASTER_PORT for the rendezvous). A process without them is
a single process: world size 1, no process group, no collectives. Reading the environment imports
no torch (wan-generate checks its arguments before torch loads).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from wan_runtime.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class LaunchEnv:
    """Who this process is among the ranks of its job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    torchrun: bool = False  # started by torchrun (even as its only rank): a process group is set up

    @classmethod
    def read(cls, environ: Mapping[str, str] | None = None) -> "LaunchEnv":
        """The ranks torchrun describes in the environment; a plain process is rank 0 of 1."""
        env = os.environ if environ is None else environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls(0, 1, 0, 1)
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
            local_rank = int(env.get("LOCAL_RANK", rank))
            local_world = int(env.get("LOCAL_WORLD_SIZE", world))
        except ValueError:
            raise ConfigError(
                "RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be integers (torchrun sets them); "
                "launch with torchrun --nproc-per-node N"
            ) from None
        if not 0 <= rank < world or not 0 <= local_rank < local_world:
            raise ConfigError(f"RANK {rank} / WORLD_SIZE {world} (LOCAL_RANK {local_rank} / LOCAL_WORLD_SIZE "
                              f"{local_world}) do not describe a rank of the job; launch with torchrun")
        return cls(rank, world, local_rank, local_world, torchrun=True)


def rank_device(device: torch.device, env: LaunchEnv) -> torch.device:
    """The device of this rank: its own GPU (cuda:LOCAL_RANK) under torchrun, else `device` as given."""
    import torch

    if device.type == "cuda" and env.torchrun:
        return torch.device("cuda", env.local_rank)
    return device


def ensure_process_group(env: LaunchEnv, device: torch.device, timeout_s: float) -> None:
    """Initialise the default process group from torchrun's environment unless one exists.

    NCCL for CUDA devices, gloo for the CPU; the timeout makes a collective fail instead of hanging.
    The group lives as long as the process (torchrun's store cannot host a second rendezvous), so
    pipelines loaded one after another share it; `shutdown()` ends it before the process exits.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() != env.world_size or dist.get_rank() != env.rank:
            raise ConfigError(
                f"the process group already set up is rank {dist.get_rank()} of {dist.get_world_size()}, "
                f"but the environment says rank {env.rank} of {env.world_size}"
            )
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    options: dict = {}
    if backend == "nccl":
        options["device_id"] = device  # bind the communicator to this rank's GPU up front
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size,
                            timeout=timedelta(seconds=timeout_s), **options)


def shutdown() -> None:
    """End the default process group (before a torchrun rank exits; NCCL warns otherwise)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


__all__ = ["LaunchEnv", "ensure_process_group", "rank_device", "shutdown"]
