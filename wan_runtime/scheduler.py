"""Flow-matching UniPC and DPM++ schedulers from diffusers, set to the official Wan2.2 sigma grids.

The official runtime builds its own copies of these solvers (`FlowUniPCMultistepScheduler`,
`FlowDPMSolverMultistepScheduler`). diffusers ships the same algorithms; what differs is the grid:
diffusers' default flow grid starts at t=999 (UniPC: timesteps off by up to 4, latents ~1e-3 away)
or t=999 instead of 1000 (DPM++: ~2e-4 away). Here both are handed the official grids, which makes
timesteps and sigmas identical to the official ones and the final latents equal to ~1e-6.

Grids (unshifted, then `sigma' = shift * sigma / (1 + (shift - 1) * sigma)`, `t = int(sigma' * 1000)`):
- unipc: `linspace(sigma_max, 0, steps + 1)[:-1]`, where the official `sigma_max` is 0.999 rounded to
  float32 (0.99900001...), because it is read back from a float32 tensor of training sigmas;
- dpm++: `linspace(1, 0, steps + 1)[:steps]`.
Both append a final sigma of 0 ("zero") and use order 2 with lower-order final steps.
"""

from __future__ import annotations

import difflib
from typing import get_args

import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

from wan_runtime.errors import ConfigError
from wan_runtime.observer import Expert
from wan_runtime.request import Solver

SOLVERS: tuple[str, ...] = get_args(Solver)

# The official UniPC grid starts at the largest training sigma, 1 - 1/1000, stored as float32.
UNIPC_SIGMA_MAX = float(np.float32(1.0 - 1.0 / 1000))


def _check(solver: str, steps: int) -> None:
    """Raise ConfigError for an unknown solver or a step count below 1."""
    if solver not in SOLVERS:
        close = difflib.get_close_matches(str(solver).lower(), SOLVERS, n=1, cutoff=0.4)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown sample solver {solver!r}{hint}; choose one of {list(SOLVERS)}")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"sample steps must be an integer >= 1, got {steps!r}")


def official_sigmas(solver: str, steps: int) -> np.ndarray:
    """The official unshifted sigma grid of `solver` for `steps` steps (float64, length `steps`)."""
    _check(solver, steps)
    if solver == "unipc":
        return np.linspace(UNIPC_SIGMA_MAX, 0.0, steps + 1)[:-1]
    return np.linspace(1.0, 0.0, steps + 1)[:steps]


def shift_sigmas(sigmas: np.ndarray, shift: float) -> np.ndarray:
    """Apply the flow-matching time shift `shift * s / (1 + (shift - 1) * s)` (float64)."""
    sigmas = np.asarray(sigmas, dtype=np.float64)
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


def make_scheduler(
    solver: str,
    steps: int,
    shift: float,
    num_train_timesteps: int = 1000,
    device: str | torch.device | None = None,
) -> UniPCMultistepScheduler | DPMSolverMultistepScheduler:
    """A diffusers scheduler whose `timesteps` and `sigmas` equal the official ones, ready to step.

    `timesteps` (int64, length `steps`) live on `device`; `sigmas` (float32, length `steps + 1`,
    ending in 0) stay on the CPU as in diffusers. Build a new one per generation: its multistep
    state is consumed by stepping, and calling its own `set_timesteps` would drop the official grid.
    """
    _check(solver, steps)
    if not shift > 0:
        raise ConfigError(f"sample shift must be > 0, got {shift!r} (the official default is 5.0)")
    # Settings shared with the official solvers: order 2, flow prediction, final sigma 0, and a
    # first-order last step.
    common = dict(
        num_train_timesteps=num_train_timesteps,
        solver_order=2,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    if solver == "unipc":
        scheduler = UniPCMultistepScheduler(
            predict_x0=True, solver_type="bh2", disable_corrector=[], **common
        )
        # diffusers applies `flow_shift` itself, so it gets the unshifted grid.
        scheduler.set_timesteps(sigmas=official_sigmas(solver, steps), device=device)
        return scheduler

    scheduler = DPMSolverMultistepScheduler(
        algorithm_type="dpmsolver++", solver_type="midpoint", euler_at_final=False, **common
    )
    # This `set_timesteps` takes no custom sigmas: let it reset the multistep state, then replace
    # its grid (which would start at t=999) with the official one, computed as the official code does.
    scheduler.set_timesteps(num_inference_steps=steps, device=device)
    shifted = shift_sigmas(official_sigmas(solver, steps), shift)
    scheduler.timesteps = torch.from_numpy(shifted * num_train_timesteps).to(device=device, dtype=torch.int64)
    scheduler.sigmas = torch.from_numpy(np.concatenate([shifted, [0.0]]).astype(np.float32))
    return scheduler


def scheduler_step(
    scheduler: UniPCMultistepScheduler | DPMSolverMultistepScheduler,
    model_output: torch.Tensor,
    timestep: torch.Tensor,
    sample: torch.Tensor,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One solver step; the generator goes to DPM++ (as in the official loop), UniPC takes none."""
    if isinstance(scheduler, DPMSolverMultistepScheduler):
        return scheduler.step(model_output, timestep, sample, generator=generator, return_dict=False)[0]
    return scheduler.step(model_output, timestep, sample, return_dict=False)[0]


def expert_for_timestep(
    t: float | int | torch.Tensor, boundary: float = 0.9, num_train_timesteps: int = 1000
) -> Expert:
    """Which expert denoises at timestep `t`: "high" while t >= boundary * num_train_timesteps."""
    return "high" if float(t) >= boundary * num_train_timesteps else "low"


def count_high_steps(
    timesteps: torch.Tensor | np.ndarray | list[float],
    boundary: float = 0.9,
    num_train_timesteps: int = 1000,
) -> int:
    """How many of `timesteps` fall on the high-noise expert (they come first: t decreases)."""
    return sum(expert_for_timestep(t, boundary, num_train_timesteps) == "high" for t in timesteps)


__all__ = [
    "SOLVERS", "Solver", "UNIPC_SIGMA_MAX", "official_sigmas", "shift_sigmas", "make_scheduler",
    "scheduler_step", "expert_for_timestep", "count_high_steps",
]
