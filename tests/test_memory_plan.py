"""MemoryPlan validation, how a plan places an expert, and the GPU-budget arithmetic (all on the CPU)."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import torch
from PIL import Image

from wan_runtime.budget import GIB, apply_vram_budget, plan_budget
from wan_runtime.errors import ConfigError
from wan_runtime.experts import placement_mode
from wan_runtime.memory import MemoryPlan
from wan_runtime.pipeline import WanI2V
from wan_runtime.request import GenerationRequest

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_existing_defaults_are_kept():
    plan = MemoryPlan()
    assert (plan.experts, plan.text_encoder, plan.vae_tiling, plan.weight_dtype, plan.vae_dtype) == (
        "resident", "gpu", None, "bf16", "fp32")


def test_new_fields_default_to_resident_blocks_two_ahead_pinned_and_no_budget():
    plan = MemoryPlan()
    assert (plan.dit_blocks, plan.prefetch_blocks, plan.host_memory, plan.vram_budget_gib) == (
        "resident", 2, "pinned", None)


def test_stream_with_resident_experts_is_refused_and_says_it_implies_swap():
    with pytest.raises(ConfigError, match="implies experts='swap'"):
        MemoryPlan(dit_blocks="stream")


def test_stream_with_swap_is_accepted():
    assert MemoryPlan(experts="swap", dit_blocks="stream", prefetch_blocks=3).prefetch_blocks == 3


def test_stream_from_pageable_host_memory_is_refused():
    with pytest.raises(ConfigError, match="host_memory='pinned'"):
        MemoryPlan(experts="swap", dit_blocks="stream", host_memory="pageable")


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_prefetch_blocks_must_be_an_integer_of_at_least_one(value):
    with pytest.raises(ConfigError, match="prefetch_blocks"):
        MemoryPlan(experts="swap", dit_blocks="stream", prefetch_blocks=value)


def test_fp8_weights_compute_and_load_in_bf16():
    plan = MemoryPlan(weight_dtype="fp8")
    assert plan.torch_dtype == torch.bfloat16
    assert plan.load_dtype == "bf16"


def test_fp8_is_not_a_vae_dtype():
    with pytest.raises(ConfigError, match="vae_dtype"):
        MemoryPlan(vae_dtype="fp8")


@pytest.mark.parametrize("value", [0, -24, math.nan, math.inf, True, "24"])
def test_budget_must_be_a_positive_number_of_gib(value):
    with pytest.raises(ConfigError, match="vram_budget_gib"):
        MemoryPlan(vram_budget_gib=value)


def test_plan_fields_are_typed_for_the_harness_sweeps():
    hints = typing.get_type_hints(MemoryPlan)
    assert "fp8" in typing.get_args(hints["weight_dtype"])
    assert "fp8" not in typing.get_args(hints["vae_dtype"])
    assert typing.get_args(hints["dit_blocks"]) == ("resident", "stream")
    names = [f.name for f in dataclasses.fields(MemoryPlan)]
    assert {"dit_blocks", "prefetch_blocks", "host_memory", "vram_budget_gib"} <= set(names)


@pytest.mark.parametrize("plan,device,mode", [
    (MemoryPlan(), CUDA, "resident"),
    (MemoryPlan(experts="swap"), CUDA, "pinned"),
    (MemoryPlan(experts="swap", host_memory="pageable"), CUDA, "pageable"),
    (MemoryPlan(experts="swap", dit_blocks="stream"), CUDA, "stream"),
    (MemoryPlan(experts="swap"), CPU, "resident"),  # on the CPU everything is host memory already
    (MemoryPlan(experts="swap", dit_blocks="stream"), CPU, "stream"),  # streamed with synchronous copies
])
def test_placement_mode_follows_the_plan_and_the_device(plan, device, mode):
    assert placement_mode(plan, device) == mode


# ------------------------------------------------------------------ budget arithmetic
def test_budget_cap_is_the_budget_minus_memory_outside_torch():
    budget = plan_budget(24, total_bytes=80 * GIB, outside_torch_bytes=512 * 2**20)
    assert budget.cap_bytes == 24 * GIB - 512 * 2**20
    assert budget.fraction == pytest.approx((24 - 0.5) / 80)
    assert int(budget.fraction * budget.total_bytes) == pytest.approx(budget.cap_bytes, abs=1)


def test_budget_larger_than_the_card_is_refused():
    with pytest.raises(ConfigError, match="cannot be emulated"):
        plan_budget(100, total_bytes=80 * GIB, outside_torch_bytes=0)


def test_budget_already_used_outside_torch_is_refused():
    with pytest.raises(ConfigError, match="nothing would be left"):
        plan_budget(1, total_bytes=80 * GIB, outside_torch_bytes=2 * GIB)


def test_budget_on_the_cpu_is_refused_rather_than_ignored():
    with pytest.raises(ConfigError, match="cannot be enforced"):
        apply_vram_budget(24, "cpu")


def test_pipeline_with_a_budget_on_the_cpu_fails_at_load():
    with pytest.raises(ConfigError, match="remove vram_budget_gib or run on a CUDA device"):
        WanI2V.load("synthetic", "tiny", "cpu", MemoryPlan(vram_budget_gib=24, weight_dtype="fp32"))


def test_swap_parks_both_experts_after_the_last_denoise_stage_even_on_the_cpu():
    pipe = WanI2V.load("synthetic", "tiny", "cpu",
                       MemoryPlan(experts="swap", dit_blocks="stream", weight_dtype="fp32"))
    request = GenerationRequest(image=Image.new("RGB", (32, 32), (90, 20, 200)), prompt="x", size="32*32",
                                frames=1, steps=2, seed=0)
    pipe.generate(request)
    assert not pipe.placed["high"].active and not pipe.placed["low"].active


# ------------------------------------------------------------------ wan-generate flags
def parse(*flags: str):
    from wan_runtime.cli import build_parser, resolve

    args = ["--image", "in.png", "--prompt", "p", "--weights", "synthetic", "--device", "cpu", *flags]
    return resolve(build_parser().parse_args(args)).memory


def test_cli_flags_map_onto_streaming_fp8_and_a_budget():
    plan = parse("--dit_blocks", "stream", "--prefetch_blocks", "3", "--fp8", "--vram_budget_gib", "24")
    assert (plan.experts, plan.dit_blocks, plan.prefetch_blocks, plan.weight_dtype, plan.vram_budget_gib) == (
        "swap", "stream", 3, "fp8", 24.0)


def test_cli_stream_without_offload_is_the_plans_error():
    with pytest.raises(ConfigError, match="implies experts='swap'"):
        parse("--dit_blocks", "stream", "--offload_model", "False")


def test_cli_pageable_host_memory_gives_the_upstream_swap():
    plan = parse("--offload_model", "True", "--host_memory", "pageable")
    assert (plan.experts, plan.host_memory) == ("swap", "pageable")
