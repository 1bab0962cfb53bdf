"""Memory strategies on the GPU: streamed and swapped experts are lossless, block copies overlap the
compute, fp8's drift against bf16, and the memory budget.

Prints the figures for the issue notes (run with -s); set WANBENCH_GPU_REPORT to a folder to also get
them as gpu_memory.json. Assertions are about agreement and ordering, never about speed, except
that copies must overlap compute at all (the point of streaming).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from wan_runtime.block_stream import StreamTrace
from wan_runtime.config import A14B, TINY
from wan_runtime.experts import load_expert
from wan_runtime.memory import MemoryPlan
from wan_runtime.pipeline import WanI2V

from helpers import cuda_timed as timed, psnr_db, tiny_request as request

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
SIX_BLOCKS = replace(TINY, dit=replace(TINY.dit, num_layers=6))  # more blocks than ring slots
A14B_SLICE = replace(A14B, dit=replace(A14B.dit, num_layers=4))  # real block shapes, 4 of them
STREAM = MemoryPlan(experts="swap", dit_blocks="stream")
FIGURES: dict[str, object] = {}


def report(name: str, value: object) -> None:
    """Print a figure and keep it for gpu_memory.json."""
    FIGURES[name] = value
    print(name, value)
    if os.environ.get("WANBENCH_GPU_REPORT"):
        figures = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, **FIGURES}
        (Path(os.environ["WANBENCH_GPU_REPORT"]) / "gpu_memory.json").write_text(json.dumps(figures, indent=1))



@pytest.fixture(scope="module")
def resident_frames() -> dict[str, np.ndarray]:
    return {
        dtype: WanI2V.load("synthetic", SIX_BLOCKS, CUDA, MemoryPlan(weight_dtype=dtype)).generate(request()).frames
        for dtype in ("bf16", "fp8")
    }


# ------------------------------------------------------------------ lossless plans, tiny preset
@pytest.mark.parametrize("plan", [
    STREAM, replace(STREAM, prefetch_blocks=1), replace(STREAM, prefetch_blocks=4),
    MemoryPlan(experts="swap"), MemoryPlan(experts="swap", host_memory="pageable"),
], ids=["stream2", "stream1", "stream4", "swap_pinned", "swap_pageable"])
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_on_gpu_offloaded_plans_give_the_same_frames_as_resident(resident_frames, plan, dtype):
    pipe = WanI2V.load("synthetic", SIX_BLOCKS, CUDA, replace(plan, weight_dtype=dtype))
    frames = pipe.generate(request()).frames
    assert np.array_equal(frames, resident_frames[dtype])
    for name in ("high", "low"):  # after the last stage no expert holds device memory
        assert not pipe.placed[name].active
        assert all(p.device.type == "cpu" for p in pipe.experts[name].parameters())


def test_on_gpu_host_copies_are_pinned_and_blocks_distinct_per_block_and_expert():
    pipe = WanI2V.load("synthetic", SIX_BLOCKS, CUDA, STREAM)
    hosts = {name: [g.host for g in pipe.placed[name].streamer.groups] for name in ("high", "low")}
    assert all(h.is_pinned() for blocks in hosts.values() for h in blocks)
    assert all(g.host.is_pinned() for name in ("high", "low") for g in pipe.placed[name].groups)
    flat = hosts["high"] + hosts["low"]
    assert all(not torch.equal(flat[i], flat[j]) for i in range(len(flat)) for j in range(i))


def test_on_gpu_fp8_drift_against_bf16_is_reported(resident_frames):
    quality = psnr_db(resident_frames["fp8"], resident_frames["bf16"])
    report("tiny_fp8_vs_bf16_psnr_db", round(quality, 2))
    assert 30.0 < quality < 100.0  # CPU measured 42.0 dB for the 2-block tiny preset


# ------------------------------------------------------------------ A14B blocks
@pytest.fixture(scope="module")
def slice_inputs():
    """480p / 81 frames: latent 21 x 60 x 104 (32,760 tokens), 512 text tokens, bf16."""
    gen = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(1, 16, 21, 60, 104, device=CUDA, generator=gen, dtype=torch.bfloat16)
    y = torch.randn(1, 20, 21, 60, 104, device=CUDA, generator=gen, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, A14B.dit.text_dim, device=CUDA, generator=gen, dtype=torch.bfloat16)
    return x, torch.tensor([950.0], device=CUDA), ctx, y



def test_on_gpu_a14b_blocks_stream_losslessly_with_copies_overlapping_compute(slice_inputs):
    with torch.no_grad():
        resident = load_expert("synthetic", A14B_SLICE, "high", MemoryPlan(), CUDA).model
        reference, resident_s = timed(lambda: resident(*slice_inputs))
        del resident
        torch.cuda.empty_cache()
        streamed = load_expert("synthetic", A14B_SLICE, "high", STREAM, CUDA)
        streamed.activate()
        out, stream_s = timed(lambda: streamed.model(*slice_inputs))
        streamed.park()
        trace = StreamTrace()  # two forwards from a fresh activation, every copy and compute marked
        streamed.streamer.trace = trace
        streamed.activate()
        streamed.model(*slice_inputs)
        streamed.model(*slice_inputs)
        summary = trace.summary()
        streamed.park()
    report("a14b_4_blocks_480p81f", {
        "resident_s_per_forward": round(resident_s, 4), "stream_s_per_forward": round(stream_s, 4),
        "block_mib": streamed.streamer.block_nbytes / 2**20, **{k: round(v, 3) for k, v in summary.items()},
    })
    for span in trace.intervals():
        print(f"  {span.kind:8s} pos {span.position:2d} block {span.block} {span.start_ms:9.2f} -> {span.end_ms:9.2f} ms")
    assert torch.equal(out, reference)
    assert summary["copies"] == 2 * 4 + 2 and summary["computes"] == 2 * 4
    # Only the very first copy has nothing to hide behind; the others run while a block computes.
    assert summary["copy_overlapped_fraction"] > 0.5


def test_on_gpu_a14b_blocks_in_fp8_drift_from_bf16_is_reported(slice_inputs):
    outputs = {}
    with torch.no_grad():
        for dtype in ("bf16", "fp8"):
            model = load_expert("synthetic", A14B_SLICE, "low", MemoryPlan(weight_dtype=dtype), CUDA).model
            outputs[dtype], seconds = timed(lambda: model(*slice_inputs))
            report(f"a14b_4_blocks_480p81f_{dtype}_s_per_forward", round(seconds, 4))
            del model
            torch.cuda.empty_cache()
    a, b = outputs["fp8"], outputs["bf16"]
    rel_l2 = ((a - b).norm() / b.norm()).item()
    report("a14b_4_blocks_fp8_vs_bf16_rel_l2", rel_l2)
    assert torch.isfinite(a).all()
    assert rel_l2 < 0.1


# ------------------------------------------------------------------ the budget (own processes: the cap is process-wide)
def run_script(code: str) -> dict:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_on_gpu_budget_turns_allocations_past_it_into_out_of_memory():
    out = run_script("""
        import json, torch
        from wan_runtime.budget import apply_vram_budget
        budget = apply_vram_budget(2.5, "cuda")
        first = torch.empty(2**30, dtype=torch.uint8, device="cuda")
        try:
            second = torch.empty(3 * 2**29, dtype=torch.uint8, device="cuda")
            status = "allocated"
        except torch.OutOfMemoryError:
            status = "oom"
        print(json.dumps({"second": status, "outside_mib": budget.outside_torch_bytes / 2**20,
                          "cap_gib": budget.cap_bytes / 2**30}))
    """)
    report("budget_2.5gib", out)
    assert out["second"] == "oom"  # 2.5 GiB cannot hold 1 GiB + 1.5 GiB beside the CUDA context
    assert 0 < out["outside_mib"] < 2048


def test_on_gpu_a_run_within_its_budget_stays_within_it_in_nvml():
    out = run_script("""
        import json, os, numpy as np, pynvml, torch
        from PIL import Image
        from wan_runtime.memory import MemoryPlan
        from wan_runtime.pipeline import WanI2V
        from wan_runtime.request import GenerationRequest
        pipe = WanI2V.load("synthetic", "tiny", "cuda", MemoryPlan(experts="swap", dit_blocks="stream",
                                                                    vram_budget_gib=4.0))
        image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
        pipe.generate(GenerationRequest(image=image, prompt="a cat", size="64*48", frames=5, steps=4, seed=1))
        torch.cuda.synchronize()
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        used = [p.usedGpuMemory for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid == os.getpid()]
        print(json.dumps({"nvml_mib": used[0] / 2**20 if used and used[0] else None,
                          "reserved_peak_mib": torch.cuda.max_memory_reserved() / 2**20,
                          "outside_at_cap_mib": pipe.vram_budget.outside_torch_bytes / 2**20,
                          "cap_mib": pipe.vram_budget.cap_bytes / 2**20}))
    """)
    report("tiny_stream_budget_4gib", out)
    assert out["reserved_peak_mib"] <= out["cap_mib"]
    if out["nvml_mib"] is not None:  # some containers hide per-process figures
        assert out["nvml_mib"] <= 4 * 1024


def test_on_gpu_exceeding_the_budget_is_a_stage_out_of_memory():
    out = run_script("""
        import json, numpy as np, torch
        from PIL import Image
        from wan_runtime.budget import GIB, apply_vram_budget
        from wan_runtime.errors import StageOutOfMemoryError
        from wan_runtime.memory import MemoryPlan
        from wan_runtime.pipeline import WanI2V
        from wan_runtime.request import GenerationRequest
        # Learn what the CUDA context takes, then leave torch 512 MiB beyond it.
        outside = apply_vram_budget(0.9 * torch.cuda.mem_get_info()[1] / GIB, "cuda").outside_torch_bytes
        # check_resources=False: this test is about the real allocator hitting the cap, not the up-front refusal
        pipe = WanI2V.load("synthetic", "tiny", "cuda", MemoryPlan(vram_budget_gib=outside / GIB + 0.5),
                           check_resources=False)
        image = Image.fromarray(np.zeros((720, 1280, 3), dtype=np.uint8))
        try:  # the 720p / 81-frame fp32 clip alone is 0.84 GiB
            pipe.generate(GenerationRequest(image=image, prompt="a cat", size="1280*720", frames=81, steps=2))
            print(json.dumps({"stage": None}))
        except StageOutOfMemoryError as exc:
            print(json.dumps({"stage": exc.stage, "message": str(exc)[:300]}))
    """)
    report("tiny_720p_budget_context_plus_512mib", out)
    assert out["stage"] == "image_encode"
