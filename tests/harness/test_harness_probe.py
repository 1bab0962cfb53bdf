"""The Probe (stage/step timing), sampled-timing projection, memory fields without CUDA, overhead."""

from __future__ import annotations

import math
import time

import pytest
import torch

from harness import overhead
from harness.nvml import NvmlSampler
from harness.probe import Probe, Recording, Span, StepTime
from harness.summary import Repeat, memory_fields, sampled_plan, timing_fields
from wan_runtime.errors import StageOutOfMemoryError
from wan_runtime.observer import Observer, StepInfo


def _step(index: int, expert: str) -> StepInfo:
    return StepInfo(index=index, total=4, timestep=900.0, expert=expert, stage=f"denoise_{expert}")


def test_probe_is_an_observer_timing_stages_and_steps():
    events = []
    probe = Probe("cpu", sink=events.append)
    assert isinstance(probe, Observer)
    with probe.stage("denoise_high"):
        for i in range(2):
            time.sleep(0.01)
            probe.on_step(_step(i, "high"))
    (span,) = probe.recording.spans
    assert span.stage == "denoise_high" and span.wall_ms >= 20.0 and span.gpu_ms is None
    assert [s.index for s in probe.recording.steps] == [0, 1]
    assert all(9.0 <= s.ms <= span.wall_ms for s in probe.recording.steps)
    assert [e["event"] for e in events] == ["stage", "step", "step"]


def test_probe_records_the_stage_a_failure_happened_in():
    probe = Probe("cpu")
    with pytest.raises(StageOutOfMemoryError):
        with probe.stage("vae_decode"):
            raise StageOutOfMemoryError("vae_decode", "out of memory")
    assert probe.failed_stage == "vae_decode"
    assert probe.recording.spans[0].failed


def _repeat(spans: list[tuple[str, float, float]], steps: list[tuple[int, str, float]], total_s: float) -> Repeat:
    rec = Recording(
        spans=[Span(name, a, b, None, None, None) for name, a, b in spans],
        steps=[StepTime(i, e, f"denoise_{e}", 0.0, ms, 0.0) for i, e, ms in steps],
    )
    return Repeat(rec, 0.0, total_s)


def test_full_timing_keeps_raw_repeats_and_reports_medians():
    reps = [
        _repeat([("denoise_high", 0.0, 0.100), ("denoise_low", 0.1, 0.2)], [(0, "high", 100.0), (1, "low", 100.0)], 0.3),
        _repeat([("denoise_high", 0.0, 0.300), ("denoise_low", 0.3, 0.4)], [(0, "high", 300.0), (1, "low", 100.0)], 0.5),
        _repeat([("denoise_high", 0.0, 0.200), ("denoise_low", 0.2, 0.3)], [(0, "high", 200.0), (1, "low", 100.0)], 0.4),
    ]
    f = timing_fields(reps, {"high": 1, "low": 1}, sampled_warmup_steps=None)
    assert f["repeats_ms.denoise_high"] == [100.0, 300.0, 200.0]
    assert f["stage_ms.denoise_high"] == pytest.approx(200.0)
    assert f["total_ms"] == pytest.approx(400.0)
    assert f["step_ms.high"] == pytest.approx(200.0) and f["steps_measured.high"] == 3
    assert f["stage_ms.vae_decode"] is None and f["projected"] is False


def test_sampled_timing_projects_skipped_steps_at_the_measured_rate():
    # 10 high steps of which 2 ran (1 warmup at 50 ms incl. an expert swap, 1 measured at 30 ms);
    # 30 low steps of which 2 ran (20 ms each). Stage walls include 1 ms outside the steps.
    rep = _repeat(
        [("denoise_high", 0.0, 0.081), ("denoise_low", 0.081, 0.122)],
        [(0, "high", 50.0), (1, "high", 30.0), (10, "low", 20.0), (11, "low", 20.0)],
        total_s=0.200,
    )
    f = timing_fields([rep], {"high": 10, "low": 30}, sampled_warmup_steps=1)
    assert f["projected"] is True
    assert f["stage_ms.denoise_high"] == pytest.approx(81.0 + 8 * 30.0)
    assert f["stage_ms.denoise_low"] == pytest.approx(41.0 + 28 * 20.0)
    assert f["total_ms"] == pytest.approx(200.0 + 8 * 30.0 + 28 * 20.0)
    assert f["step_ms.high"] == pytest.approx(30.0) and f["steps_measured.high"] == 1
    assert f["stage_gpu_ms.denoise_high"] is None  # CUDA events saw only the executed steps


def test_sampled_plan_takes_the_first_steps_of_each_experts_range():
    experts = ["high"] * 3 + ["low"] * 5
    assert sampled_plan(experts, warmup_steps=1, measured_steps=1) == {"high": [0, 1], "low": [3, 4]}
    assert sampled_plan(["low"] * 4, 1, 2) == {"high": [], "low": [0, 1, 2]}


def test_without_cuda_memory_fields_are_null_with_a_reason_never_zero():
    sampler = NvmlSampler(None)
    assert sampler.peaks(0.0) == (None, None, "no CUDA device: NVML memory is not measured")
    rep = _repeat([("vae_decode", 0.0, 0.1)], [], 0.1)
    f = memory_fields([rep], None, None, sampler, cuda=False)
    assert f["peak_nvml_mib"] is None and f["peak_allocated_mib"] is None
    assert f["stage_peak_allocated_mib.vae_decode"] is None
    assert "no CUDA device" in f["memory_note"]


def test_probe_overhead_is_measured_on_a_fixed_workload():
    result = overhead.measure("cpu", steps=10, trials=2)
    assert math.isfinite(result.per_step_ms) and result.workload_step_ms > 0
    assert "probed - bare" in result.method


@pytest.mark.gpu
def test_probe_overhead_is_under_one_percent_of_a_one_second_step_on_the_gpu():
    # A 480p/81-frame A14B step (two forwards) takes ~6.7 s on an H100 (FACTS.md); 1 s is a strict bound.
    result = overhead.measure(torch.device("cuda"), steps=20, trials=3)
    assert result.per_step_ms < 0.01 * 1000.0


@pytest.mark.gpu
def test_nvml_sampler_sees_this_process_allocate():
    sampler = NvmlSampler(torch.cuda.current_device()).start()
    t0 = time.perf_counter()
    block = torch.empty(512 * 2**20, dtype=torch.uint8, device="cuda")
    time.sleep(0.1)
    proc, device, reason = sampler.peaks(t0)
    sampler.stop()
    del block
    assert device is not None and device >= 512
    assert (proc is not None and proc >= 512) or "does not list this process" in reason
