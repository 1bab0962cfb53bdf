"""The schedulers reproduce the official Wan2.2 flow UniPC and DPM++ grids and trajectories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wan_runtime.errors import ConfigError
from wan_runtime.scheduler import (
    count_high_steps,
    expert_for_timestep,
    make_scheduler,
    official_sigmas,
    scheduler_step,
)

# fixture file prefix and json name per solver
SOLVER_FILES = {"unipc": ("unipc", "unipc_official.json"), "dpm++": ("dpmpp", "dpmpp_official.json")}
LATENT_TOLERANCE = 1e-5  # max abs error of the final latent, CPU fp32 (measured <= 8e-7)


def _configurations(fixtures_dir: Path, solver: str) -> list[tuple[str, int, float, dict]]:
    """(key, steps, shift, record) for every configuration stored in the solver's json fixture."""
    table = json.loads((fixtures_dir / SOLVER_FILES[solver][1]).read_text())
    out = []
    for key, record in table.items():
        steps_part, shift_part = key.split("_")  # e.g. "steps40", "shift5.0"
        out.append((key, int(steps_part.removeprefix("steps")), float(shift_part.removeprefix("shift")), record))
    return out


def _run_stand_in_model(solver: str, steps: int, shift: float) -> torch.Tensor:
    """The fixture's trajectory: seed-7 noise, model output sin(0.7 * latent + t / 1000)."""
    scheduler = make_scheduler(solver, steps, shift)
    latent = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    step_generator = torch.Generator().manual_seed(11)  # handed to every step, as in the official loop
    for t in scheduler.timesteps:
        model_output = torch.sin(0.7 * latent + t / 1000)
        latent = scheduler_step(scheduler, model_output, t, latent, generator=step_generator)
    return latent


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_timesteps_and_sigmas_equal_official(fixtures_dir, solver):
    for key, steps, shift, record in _configurations(fixtures_dir, solver):
        scheduler = make_scheduler(solver, steps, shift)
        assert scheduler.timesteps.dtype == torch.int64
        assert scheduler.timesteps.tolist() == record["timesteps"], key
        # exact: the fixture stores the official float32 sigmas
        np.testing.assert_array_equal(scheduler.sigmas.numpy(), np.asarray(record["sigmas"], np.float32), key)


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_high_noise_step_counts_equal_official(fixtures_dir, solver):
    for key, steps, shift, record in _configurations(fixtures_dir, solver):
        scheduler = make_scheduler(solver, steps, shift)
        assert count_high_steps(scheduler.timesteps) == record["high_noise_steps"], key


def test_documented_high_noise_step_counts():
    # FACTS.md: 40/5 -> 15, 40/3 -> 10, 50/5 -> 18; the 4-step fixture run -> 2
    for steps, shift, high in [(40, 5.0, 15), (40, 3.0, 10), (50, 5.0, 18), (4, 5.0, 2)]:
        assert count_high_steps(make_scheduler("unipc", steps, shift).timesteps) == high


@pytest.mark.parametrize("solver", ["unipc", "dpm++"])
def test_final_latent_matches_official_trajectory(fixtures_dir, solver):
    prefix = SOLVER_FILES[solver][0]
    for key, steps, shift, _ in _configurations(fixtures_dir, solver):
        expected = load_file(fixtures_dir / f"{prefix}_{key}.safetensors")["final"]
        final = _run_stand_in_model(solver, steps, shift)
        error = (final - expected).abs().max().item()
        assert error < LATENT_TOLERANCE, f"{solver} {key}: max abs error {error:.2e}"


def test_unshifted_grids_follow_official_formulas():
    np.testing.assert_array_equal(official_sigmas("dpm++", 4), [1.0, 0.75, 0.5, 0.25])
    unipc = official_sigmas("unipc", 4)
    assert unipc[0] == float(np.float32(0.999))  # read back from a float32 tensor by the official code
    np.testing.assert_allclose(unipc, np.linspace(0.999, 0, 5)[:-1], atol=1e-7)


def test_timesteps_are_placed_on_the_requested_device():
    scheduler = make_scheduler("dpm++", 3, 5.0, device="meta")
    assert scheduler.timesteps.device.type == "meta"
    assert scheduler.sigmas.device.type == "cpu"


def test_expert_switches_at_the_boundary():
    assert expert_for_timestep(900) == "high"
    assert expert_for_timestep(899.9) == "low"
    assert expert_for_timestep(torch.tensor(1000)) == "high"
    assert expert_for_timestep(500, boundary=0.5) == "high"
    assert expert_for_timestep(499, boundary=0.5) == "low"


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_step_count_below_one_or_fractional_is_rejected(steps):
    with pytest.raises(ConfigError, match="steps"):
        make_scheduler("unipc", steps, 5.0)


def test_unknown_solver_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"did you mean 'dpm\+\+'"):
        make_scheduler("dpmpp", 40, 5.0)
    with pytest.raises(ConfigError, match="choose one of"):
        official_sigmas("euler", 40)


def test_non_positive_shift_is_rejected():
    with pytest.raises(ConfigError, match="shift"):
        make_scheduler("unipc", 40, 0.0)
