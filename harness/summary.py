"""From probe recordings to result fields: medians, raw repeats, per-expert steps, sampled projections.

Sampled timing (DESIGN.md): the real schedule is kept and only a few steps of each expert's range
are executed, at their real positions (the first ones of the range: `warmup_steps` whose times are
discarded, then `measured_steps`). A skipped step costs nothing, so each expert's stage is projected
to the full schedule as

    projected stage = measured stage wall clock + (steps of that expert - executed steps) x mean measured step

which keeps what the stage really spent outside its steps (an expert swap, the first step's
warm-up) and fills in the skipped steps at the measured rate; the total is projected the same way.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from harness.nvml import NvmlSampler
from harness.probe import Recording
from harness.results import EXPERTS, GENERATE_STAGES
from wan_runtime.observer import STAGES

NO_CUDA_NOTE = "no CUDA device: GPU memory is not measured (torch peaks and NVML are null)"


@dataclass
class Repeat:
    """One measured generation: what the probe recorded and its synchronized wall time."""

    recording: Recording
    start_s: float
    end_s: float

    @property
    def total_ms(self) -> float:
        """Wall time of the whole generate() call."""
        return (self.end_s - self.start_s) * 1000.0


def sampled_plan(experts: list[str], warmup_steps: int, measured_steps: int) -> dict[str, list[int]]:
    """Schedule indices to execute per expert: the first warmup+measured steps of each expert's range."""
    plan: dict[str, list[int]] = {}
    for expert in EXPERTS:
        indices = [i for i, e in enumerate(experts) if e == expert]
        plan[expert] = indices[: warmup_steps + measured_steps]
    return plan


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _stage_sums(recording: Recording, attr: str) -> dict[str, float | None]:
    """Per stage name, the sum over its spans (a stage may run twice, e.g. in refine mode)."""
    sums: dict[str, float | None] = {}
    for span in recording.spans:
        value = span.wall_ms if attr == "wall" else getattr(span, attr)
        if span.stage in sums and (sums[span.stage] is None or value is None):
            sums[span.stage] = None
        else:
            sums[span.stage] = sums.get(span.stage, 0.0) + value if value is not None else None
    return sums


def timing_fields(
    repeats: list[Repeat],
    steps_per_expert: dict[str, int],
    sampled_warmup_steps: int | None,
) -> dict[str, Any]:
    """stage_ms/repeats_ms/stage_gpu_ms/step_ms/total_ms (+ projections when sampled_warmup_steps is set)."""
    sampled = sampled_warmup_steps is not None
    per_stage: dict[str, list[float]] = {s: [] for s in GENERATE_STAGES}
    per_stage_gpu: dict[str, list[float | None]] = {s: [] for s in GENERATE_STAGES}
    totals: list[float] = []
    step_times: dict[str, list[float]] = {e: [] for e in EXPERTS}
    for rep in repeats:
        walls = _stage_sums(rep.recording, "wall")
        gpus = _stage_sums(rep.recording, "gpu_ms")
        total = rep.total_ms
        for expert in EXPERTS:
            executed = [s.ms for s in rep.recording.steps if s.expert == expert]
            measured = executed[sampled_warmup_steps:] if sampled else executed
            step_times[expert] += measured
            stage = f"denoise_{expert}"
            if sampled and stage in walls:
                skipped = steps_per_expert[expert] - len(executed)
                fill = skipped * statistics.fmean(measured) if measured else 0.0
                walls[stage] += fill
                total += fill
                gpus[stage] = None  # events saw only the executed steps
        for stage in GENERATE_STAGES:
            if stage in walls:
                per_stage[stage].append(walls[stage])
                per_stage_gpu[stage].append(gpus.get(stage))
        totals.append(total)

    fields: dict[str, Any] = {}
    for stage in GENERATE_STAGES:
        values = per_stage[stage]
        fields[f"stage_ms.{stage}"] = _median(values)
        fields[f"repeats_ms.{stage}"] = [round(v, 4) for v in values] if values else None
        gpu = per_stage_gpu[stage]
        fields[f"stage_gpu_ms.{stage}"] = _median(gpu) if gpu and all(v is not None for v in gpu) else None
    fields["repeats_ms.total"] = [round(v, 4) for v in totals]
    fields["total_ms"] = _median(totals)
    for expert in EXPERTS:
        fields[f"step_ms.{expert}"] = _median(step_times[expert])
        fields[f"steps_measured.{expert}"] = len(step_times[expert])
    fields["projected"] = sampled
    return fields


def memory_fields(
    repeats: list[Repeat],
    peak_allocated: float | None,
    peak_reserved: float | None,
    sampler: NvmlSampler,
    cuda: bool,
) -> dict[str, Any]:
    """Case and per-stage memory peaks; None with `memory_note` where something is not measured."""
    fields: dict[str, Any] = {"peak_allocated_mib": peak_allocated, "peak_reserved_mib": peak_reserved}
    notes = [NO_CUDA_NOTE] if not cuda else []
    if not cuda:
        proc = device = None
    elif repeats:
        proc, device, reason = sampler.peaks(repeats[0].start_s, repeats[-1].end_s)
    else:
        proc, device, reason = None, None, sampler.reason
    if cuda and reason:
        notes.append(reason)
    fields["peak_nvml_mib"], fields["peak_nvml_device_mib"] = proc, device
    for stage in GENERATE_STAGES:
        spans = [s for rep in repeats for s in rep.recording.spans if s.stage == stage]
        alloc = [s.peak_allocated_mib for s in spans if s.peak_allocated_mib is not None]
        res = [s.peak_reserved_mib for s in spans if s.peak_reserved_mib is not None]
        nvml = [p for s in spans for p in [sampler.peaks(s.start_s, s.end_s)[0]] if p is not None]
        fields[f"stage_peak_allocated_mib.{stage}"] = max(alloc) if alloc else None
        fields[f"stage_peak_reserved_mib.{stage}"] = max(res) if res else None
        fields[f"stage_peak_nvml_mib.{stage}"] = max(nvml) if nvml else None
    fields["memory_note"] = "; ".join(dict.fromkeys(notes)) or None
    return fields


def load_fields(recording: Recording, sampler: NvmlSampler) -> dict[str, Any]:
    """load_ms and the load stage's memory peaks, from the probe's recording of WanI2V.load."""
    spans = [s for s in recording.spans if s.stage == "load"]
    if not spans:
        return {"load_ms": None}
    span = spans[0]
    return {
        "load_ms": span.wall_ms,
        "stage_peak_allocated_mib.load": span.peak_allocated_mib,
        "stage_peak_reserved_mib.load": span.peak_reserved_mib,
        "stage_peak_nvml_mib.load": sampler.peaks(span.start_s, span.end_s)[0],
    }


def timeline_record(case_id: str, repeat: int, rep: Repeat, sampler: NvmlSampler) -> dict[str, Any]:
    """Sidecar line: one repeat's stage spans and NVML samples, in seconds from the repeat's start."""
    t0 = rep.start_s
    return {
        "case_id": case_id,
        "repeat": repeat,
        "spans": [
            {"stage": s.stage, "start_s": round(s.start_s - t0, 6), "end_s": round(s.end_s - t0, 6),
             "gpu_ms": s.gpu_ms, "peak_allocated_mib": s.peak_allocated_mib, "failed": s.failed}
            for s in rep.recording.spans if s.stage in STAGES
        ],
        "steps": [{"index": s.index, "expert": s.expert, "ms": round(s.ms, 4)} for s in rep.recording.steps],
        "samples": [[round(s.t - t0, 4), s.process_mib, s.device_mib] for s in sampler.window(rep.start_s, rep.end_s)],
        "samples_note": sampler.reason,
    }
