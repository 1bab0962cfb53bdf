"""Non-finite latents: the step and expert where they first appear, and never an `ok` result."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness.results import read_rows
from harness.runner import run_suite
from harness.suite import parse_suite
from wan_runtime.errors import NonFiniteError
from wan_runtime.memory import MemoryPlan
from wan_runtime.pipeline import WanI2V, expert_schedule

from helpers import tiny_request
from nan_weights import poison

NAN_FACTORY = f"{Path(__file__).with_name('nan_weights.py')}:load"


def fresh() -> WanI2V:
    return WanI2V.load("synthetic", "tiny", "cpu", MemoryPlan(weight_dtype="fp32"))


def test_nan_weights_in_the_high_noise_expert_fail_at_the_first_step():
    with pytest.raises(NonFiniteError, match=r"at step 0 of 4 \(timestep \d+, high-noise expert") as info:
        poison(fresh(), "high").generate(tiny_request())
    assert (info.value.step, info.value.expert) == (0, "high")
    assert "NaN or inf in the high-noise expert's weights" in str(info.value)


def test_nan_weights_in_the_low_noise_expert_name_its_first_step():
    request = tiny_request()
    first_low = expert_schedule(request, fresh().cfg).index("low")
    with pytest.raises(NonFiniteError, match=f"at step {first_low} of 4 .*low-noise expert, stage denoise_low"):
        poison(fresh(), "low").generate(request)


@pytest.mark.slow  # a worker process: ~10-25 s on a loaded 2-core machine
def test_a_harness_case_with_nan_weights_ends_as_an_error_row(tmp_path):
    suite = parse_suite(
        "name: nan\nmodel: {preset: tiny}\ndevice: cpu\n"
        'base: {size: "64*48", frames: 5, steps: 2}\nrepeats: 1\nwarmup: 0\n',
        source="nan.yaml",
    )
    outcome = run_suite(suite, tmp_path / "out", factory=NAN_FACTORY, stream=io.StringIO())
    [row] = read_rows(tmp_path / "out" / "results.jsonl")
    assert row["status"] == "error" and outcome.statuses == {"error": 1}
    assert row["failed_stage"] == "denoise_low"
    assert row["error"].startswith("NonFiniteError: the latents became NaN or infinite at step 1 of 2")
