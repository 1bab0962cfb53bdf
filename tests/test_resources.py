"""Memory floors of a load and a request, checked against what the machine has before anything is allocated."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import wan_runtime.pipeline as pipeline
import wan_runtime.resources as resources
from wan_runtime.compute import ComputePlan
from wan_runtime.config import A14B, TINY
from wan_runtime.errors import InsufficientMemoryError, StageOutOfMemoryError
from wan_runtime.experts import load_expert
from wan_runtime.fp8 import fp8_matmul_unavailable_reason
from wan_runtime.memory import MemoryPlan
from wan_runtime.offload import tensor_bytes
from wan_runtime.pipeline import WanI2V
from wan_runtime.request import Limits
from wan_runtime.resources import GIB, Capacity, RequestShape, check_load, check_request, check_run

from helpers import tiny_request

CUDA = torch.device("cuda")  # the floors are arithmetic: a CUDA plan can be checked on any machine
BASELINES = Path(__file__).parents[1] / "baselines" / "h100-a14b"
BENCH_4090 = MemoryPlan(experts="swap", text_encoder="offload_after", vae_dtype="bf16", dit_blocks="stream")
CAP_24_GIB = 24 * GIB - 800 * 2**20  # a 24 GiB budget less the CUDA context (the H100 runs: 0.7-0.8 GiB)


@pytest.fixture(scope="module")
def pipe() -> WanI2V:
    return WanI2V.load("synthetic", "tiny", "cpu", MemoryPlan(weight_dtype="fp32"))


def measured_rows():
    for path in sorted(BASELINES.glob("*/results.jsonl")):
        for line in path.read_text().splitlines():
            yield path.parent.name, json.loads(line)


def plan_of(row: dict) -> MemoryPlan:
    fields = ("experts", "text_encoder", "vae_tiling", "weight_dtype", "vae_dtype", "dit_blocks",
              "prefetch_blocks", "host_memory")
    return MemoryPlan(**{k: row[k] for k in fields})


@pytest.mark.parametrize("weight_dtype", ["fp32", "bf16", "fp8"])
def test_expert_bytes_equal_those_of_the_built_expert(weight_dtype):
    expert = load_expert("synthetic", TINY, "high", MemoryPlan(weight_dtype=weight_dtype), "cpu")
    rest, block = resources.expert_bytes(TINY.dit, weight_dtype)
    assert rest + TINY.dit.num_layers * block == tensor_bytes(expert.model)
    assert block == tensor_bytes(expert.model.blocks[0])


@pytest.mark.skipif(fp8_matmul_unavailable_reason("cpu") is not None, reason="this torch has no CPU fp8 matmul")
def test_exact_last_blocks_count_as_bf16_in_the_expert_floor_as_they_are_built():
    compute = ComputePlan(matmul="fp8", exact_last_blocks=1)
    expert = load_expert("synthetic", TINY, "high", MemoryPlan(weight_dtype="fp8"), "cpu", compute=compute)
    assert resources._expert_total(TINY, "fp8", exact_blocks=1) == tensor_bytes(expert.model)
    assert resources._expert_total(TINY, "bf16", exact_blocks=1) == resources._expert_total(TINY, "bf16")


def test_each_exact_block_adds_a_bf16_blocks_difference_to_both_experts_at_rest():
    plan = MemoryPlan(weight_dtype="fp8")
    fp8_block, bf16_block = resources.expert_bytes(A14B.dit, "fp8")[1], resources.expert_bytes(A14B.dit, "bf16")[1]
    extra = (resources.resting_need(A14B, plan, CUDA, exact_blocks=12).device_bytes
             - resources.resting_need(A14B, plan, CUDA).device_bytes)
    assert extra == 2 * 12 * (bf16_block - fp8_block)  # ~0.33 GiB a block, both experts resident


def test_with_exact_blocks_no_streaming_plan_is_offered():
    plan = MemoryPlan(experts="swap", text_encoder="offload_after", weight_dtype="fp8")
    shape = RequestShape("1280*720", 81, 1280, 720)
    with pytest.raises(InsufficientMemoryError) as info:
        check_run(A14B, plan, CUDA, shape, have=Capacity(20 * GIB, 200 * GIB), exact_blocks=12)
    assert "dit_blocks=stream" not in str(info.value)


def test_the_pipeline_checks_its_load_with_the_exact_blocks_of_its_compute_plan(monkeypatch):
    seen = {}
    monkeypatch.setattr(pipeline, "check_load", lambda *a, **kw: seen.update(kw))
    WanI2V.load("synthetic", "tiny", "cpu", MemoryPlan(weight_dtype="fp8"),
                compute=ComputePlan(matmul="fp8", exact_last_blocks=1))
    assert seen["exact_blocks"] == 1


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_text_encoder_bytes_equal_those_of_the_built_encoder(dtype):
    from wan_runtime.modules.text_encoder import build_umt5
    from wan_runtime.weights import load_text_encoder

    built = load_text_encoder("synthetic", TINY, dtype, "cpu").model
    assert resources.text_encoder_bytes(TINY.t5, dtype) == tensor_bytes(built)
    with torch.device("meta"):
        a14b = build_umt5(A14B.t5)
    assert resources.text_encoder_bytes(A14B.t5, "fp32") == tensor_bytes(a14b)


def test_the_floor_stays_under_every_stage_peak_measured_on_the_h100():
    checked = 0
    for folder, row in measured_rows():
        plan = plan_of(row)
        w, h = (int(v) for v in row["size"].split("*"))
        rest = resources.resting_need(A14B, plan, CUDA)
        needs = [resources.load_need(A14B, plan, CUDA)]
        shape = RequestShape(row["size"], row["frames"], w, h)
        needs += [n.plus(rest) for n in resources.request_needs(A14B, plan, CUDA, shape)]
        for need in needs:
            measured = row.get(f"stage_peak_allocated_mib.{need.stage}")
            if measured is not None:
                assert need.device_bytes <= measured * 2**20, (folder, need.stage)
                checked += 1
    assert checked >= 100


def test_the_floor_is_within_10_percent_of_the_measured_denoise_peaks():
    for folder, row in measured_rows():
        plan = plan_of(row)
        w, h = (int(v) for v in row["size"].split("*"))
        needs = resources.request_needs(A14B, plan, CUDA, RequestShape(row["size"], row["frames"], w, h))
        denoise = next(n for n in needs if n.stage == "denoise_high").plus(resources.resting_need(A14B, plan, CUDA))
        assert denoise.device_bytes >= 0.9 * row["stage_peak_allocated_mib.denoise_high"] * 2**20, folder


@pytest.mark.parametrize("weight_dtype", ["bf16", "fp8"])
@pytest.mark.parametrize("size", ["832*480", "1280*720"])
def test_what_the_readme_shows_fitting_24_gib_is_not_refused(size, weight_dtype):
    w, h = (int(v) for v in size.split("*"))
    plan = replace(BENCH_4090, weight_dtype=weight_dtype)
    check_run(A14B, plan, CUDA, RequestShape(size, 81, w, h), have=Capacity(CAP_24_GIB, 200 * GIB))


def test_a14b_synthetic_bf16_on_a_small_host_is_refused_before_any_allocation(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a network was built before the memory check")

    monkeypatch.setattr(pipeline, "load_text_encoder", never)
    monkeypatch.setattr(pipeline, "load_expert", never)
    monkeypatch.setattr(resources, "host_available_bytes", lambda: 45 * GIB)
    with pytest.raises(InsufficientMemoryError) as info:
        WanI2V.load("synthetic", "a14b", "cpu", MemoryPlan(weight_dtype="bf16"))
    message = str(info.value)
    assert "needs at least 64.3 GiB of host memory" in message and "has 45.0 GiB available" in message
    assert "A memory plan that fits: weight_dtype=fp8." in message  # 2 x 13.5 GiB experts + 10.6 GiB umT5


def test_on_a_gpu_a_host_too_small_for_two_parked_experts_is_offered_a_lossless_plan():
    plan = MemoryPlan(experts="swap", text_encoder="offload_after")
    with pytest.raises(InsufficientMemoryError, match=r"2 DiT experts .* parked in pinned host memory") as info:
        check_load(A14B, plan, CUDA, have=Capacity(80 * GIB, 40 * GIB))
    assert info.value.side == "host" and info.value.stage == "load"
    assert str(info.value).endswith("A memory plan that fits: experts=resident.")  # 53 GiB fits the 80 GiB card


def test_a_gpu_too_small_for_a_swapped_bf16_expert_is_offered_streaming_before_fp8():
    plan = MemoryPlan(experts="swap", text_encoder="offload_after")
    with pytest.raises(InsufficientMemoryError, match="in stage 'denoise_high'") as info:
        check_run(A14B, plan, CUDA, RequestShape("1280*720", 81, 1280, 720), have=Capacity(CAP_24_GIB, 200 * GIB))
    assert str(info.value).endswith("A memory plan that fits: dit_blocks=stream.")


def test_100001_frames_are_refused_with_the_figures_before_any_stage(pipe, monkeypatch):
    monkeypatch.setattr(resources, "host_available_bytes", lambda: 8 * GIB)
    stages = []
    obs = type("Recorder", (), {"stage": lambda self, name: stages.append(name), "on_step": lambda self, i: None})()
    with pytest.raises(InsufficientMemoryError) as info:
        # Past the spec's ceiling (raised here), the memory check refuses it with the figures.
        pipe.generate(tiny_request(size="160*96", frames=100001, limits=Limits(max_frames=100001)), observer=obs)
    message = str(info.value)
    assert stages == []
    geo = RequestShape("160*96", 100001, 64, 48).geometries(TINY)[0]
    assert info.value.stage == "image_encode"
    assert info.value.need_bytes >= 3 * 100001 * geo.height * geo.width * 4  # the fp32 clip alone
    assert "(100001 frames at size 160*96) needs at least 14.0 GiB of host memory" in message
    assert "this machine has 8.0 GiB available" in message
    assert "What fits: at most" in message and "frames at this size" in message


def test_a_size_of_99984_squared_is_refused_naming_a_size_that_fits(pipe, monkeypatch):
    monkeypatch.setattr(resources, "host_available_bytes", lambda: 8 * GIB)
    with pytest.raises(InsufficientMemoryError, match=r"What fits: (.* or )?size 720p with 5 frames"):
        pipe.generate(tiny_request(size="99984*99984", limits=Limits(max_side=99984)))


def test_a_refusal_names_the_first_stage_that_cannot_fit_as_an_out_of_memory():
    # the tiny preset at 720p under 0.5 GiB: the 81-frame fp32 clip alone is 0.84 GiB
    shape = RequestShape("1280*720", 81, 1280, 720)
    with pytest.raises(StageOutOfMemoryError) as info:
        check_request(TINY, MemoryPlan(), CUDA, shape, have=Capacity(GIB // 2, 200 * GIB))
    assert info.value.stage == "image_encode" and "not enough GPU memory" in str(info.value)


def test_check_resources_false_leaves_the_request_to_the_real_allocator(pipe, monkeypatch):
    monkeypatch.setattr(resources, "host_available_bytes", lambda: 0)
    pipe.check_resources = False
    try:
        assert pipe.generate(tiny_request(steps=1)).frames.shape[0] == 5
    finally:
        pipe.check_resources = True
    with pytest.raises(InsufficientMemoryError):
        pipe.generate(tiny_request(steps=1))


def test_host_memory_is_the_smaller_of_memavailable_and_the_cgroup_room(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal: 99999999 kB\nMemAvailable: 8388608 kB\n")  # 8 GiB
    (tmp_path / "memory.max").write_text(f"{6 * GIB}\n")
    (tmp_path / "memory.current").write_text(f"{3 * GIB}\n")
    (tmp_path / "memory.stat").write_text(f"anon 1\ninactive_file {GIB}\n")  # page cache the kernel can drop
    monkeypatch.setattr(resources, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(resources, "CGROUP_FILES",
                        ((tmp_path / "memory.max", tmp_path / "memory.current", "inactive_file"),))
    assert resources.host_available_bytes() == 4 * GIB
    (tmp_path / "memory.max").write_text("max\n")
    assert resources.host_available_bytes() == 8 * GIB


@pytest.mark.gpu
def test_on_gpu_what_torch_holds_cached_counts_as_available():
    device = torch.device("cuda")
    before = resources.device_available_bytes(device)
    block = torch.empty(GIB, dtype=torch.uint8, device=device)
    held = resources.device_available_bytes(device)
    del block  # back in torch's cache: not free for other processes, but free for this one
    after = resources.device_available_bytes(device)
    assert abs((before - held) - GIB) < 64 * 2**20
    assert abs(after - before) < 64 * 2**20
    assert resources.device_available_bytes(device, cap_bytes=2 * GIB) <= 2 * GIB
