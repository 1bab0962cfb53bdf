"""A GPU memory budget: make a large card behave like a smaller one (24 GiB for an RTX 4090).

Definition: a case *fits* a budget when its NVML process peak, CUDA context included, is within it.
That is what a real card of that size would allow, and it is what the harness measures.

Enforcement: torch's caching allocator is capped with `set_per_process_memory_fraction`, so an
allocation past the cap raises `torch.OutOfMemoryError` (which the pipeline reports as a
StageOutOfMemoryError, as on the real card). The cap is the budget *minus* the device memory that
torch's allocator does not own when the cap is set: this process's CUDA context and cuBLAS/cuDNN
handles (loaded first on purpose), read from NVML's per-process figure. Where NVML does not list the
process (a container PID namespace), the whole device's used memory stands in, which also counts
other processes on that GPU and so makes the cap stricter, never looser.

What the cap cannot see: device memory allocated outside torch's allocator after it is set, chiefly
kernels the CUDA driver loads lazily on first use. It grows NVML's figure past torch's reserved
bytes, so a case can stay under the cap yet exceed the budget by that growth; the harness's NVML
peak decides, and `VramBudget.outside_torch_bytes` records what was subtracted.

The cap is process-wide and stays until the process ends or a new budget is applied (the harness
runs every memory plan in a process of its own). On a CPU run a budget is refused: a cap that
cannot be enforced would make a result look like it fits when nothing was checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wan_runtime.errors import ConfigError
from wan_runtime.nvml import this_process_bytes

GIB = 2**30


@dataclass(frozen=True)
class VramBudget:
    """A budget and the allocator cap that enforces it on one device."""

    budget_bytes: int  # what the emulated card has
    total_bytes: int  # what this card has
    outside_torch_bytes: int  # device memory not owned by torch's allocator when the cap was set
    cap_bytes: int  # what torch's allocator may reserve: budget - outside

    @property
    def fraction(self) -> float:
        """The argument of torch.cuda.set_per_process_memory_fraction."""
        return self.cap_bytes / self.total_bytes

    def describe(self) -> str:
        """One line for logs."""
        return (f"GPU memory budget {self.budget_bytes / GIB:.2f} GiB: torch may reserve "
                f"{self.cap_bytes / GIB:.2f} GiB ({self.outside_torch_bytes / 2**20:.0f} MiB outside torch's "
                f"allocator), {self.fraction:.4f} of this card's {self.total_bytes / GIB:.2f} GiB")


def plan_budget(budget_gib: float, total_bytes: int, outside_torch_bytes: int) -> VramBudget:
    """The allocator cap for `budget_gib` on a card of `total_bytes` with `outside_torch_bytes` already used outside torch."""
    budget_bytes = int(budget_gib * GIB)
    if budget_gib <= 0:
        raise ConfigError(f"vram_budget_gib={budget_gib}: give the GPU memory to emulate in GiB, e.g. 24")
    if budget_bytes > total_bytes:
        raise ConfigError(
            f"vram_budget_gib={budget_gib}: this card has only {total_bytes / GIB:.2f} GiB, so a larger card "
            "cannot be emulated; give a budget up to the card's size, or none"
        )
    cap = budget_bytes - outside_torch_bytes
    if cap <= 0:
        raise ConfigError(
            f"vram_budget_gib={budget_gib}: {outside_torch_bytes / GIB:.2f} GiB of this GPU are already used "
            "outside torch (CUDA context, other processes), nothing would be left; raise the budget or free the GPU"
        )
    return VramBudget(budget_bytes, total_bytes, outside_torch_bytes, cap)


def _load_libraries(device: torch.device) -> None:
    """Create the cuBLAS and cuDNN handles now, so their memory counts as outside torch before the cap."""
    a = torch.ones(64, 64, device=device, dtype=torch.bfloat16)
    torch.addmm(a, a, a)  # cuBLAS / cuBLASLt
    torch.nn.functional.conv3d(torch.ones(1, 1, 2, 2, 2, device=device), torch.ones(1, 1, 1, 1, 1, device=device))
    torch.cuda.synchronize(device)


def apply_vram_budget(budget_gib: float, device: torch.device | str) -> VramBudget:
    """Cap this process's GPU memory on `device` to `budget_gib` GiB (CUDA context included); CUDA only."""
    device = torch.device(device)
    if device.type != "cuda":
        raise ConfigError(
            f"vram_budget_gib={budget_gib} caps GPU memory, but this run is on {device.type!r}, where it "
            "cannot be enforced; remove vram_budget_gib or run on a CUDA device"
        )
    index = device.index if device.index is not None else torch.cuda.current_device()
    device = torch.device("cuda", index)
    torch.cuda.set_per_process_memory_fraction(1.0, device)  # a previous budget must not shape this one
    _load_libraries(device)
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info(device)
    used = this_process_bytes(index)
    if used is None:
        used = total - free
    outside = max(0, used - torch.cuda.memory_reserved(device))
    budget = plan_budget(budget_gib, total, outside)
    torch.cuda.set_per_process_memory_fraction(budget.fraction, device)
    return budget


__all__ = ["GIB", "VramBudget", "plan_budget", "apply_vram_budget"]
