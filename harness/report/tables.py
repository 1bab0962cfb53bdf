"""The report's tables, built from result rows: raw values for CSV, formatted ones for people.

A `Table` keeps the raw values in the results' own units and names (`total_ms`, `peak_nvml_mib`), so
its CSV can be checked against results.jsonl number for number. Its display form picks a readable
unit per column (ms or s, MiB or GiB) and four significant digits.

Tables:
- environment:     card, driver, CUDA, torch, weights source, suite, timing, the plan all cases share;
- summary:         total and NVML peak per plan x resolution, in the shape of published tables;
- memory_latency:  per resolution x plan, the table people write by hand (total, s/step per expert,
                   NVML process peak, peak allocated, whether it fits the budget);
- stages:          every stage's median time per case, load_ms apart (once per process, not in total);
- quality:         PSNR/SSIM against the reference vs time, with the speed-up and the Pareto front;
- cost_vs_tokens:  growth of time (power law) and memory (line) with the token count.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from harness.metrics import PSNR_CAP_DB
from harness.report.data import SIZE_PARAMS, ReportCase, ReportData
from harness.results import GENERATE_STAGES
from harness.stats import Fit, fit_linear, fit_power_law

MIB_PER_GIB = 1024.0


# ---------------------------------------------------------------- formatting
def fmt_number(value: Any, significant: int = 4) -> str:
    """A number with `significant` digits and no exponent ('-' for a missing value)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    digits = max(0, significant - 1 - int(math.floor(math.log10(abs(value)))))
    return f"{value:.{digits}f}"


@dataclass(frozen=True)
class Column:
    """One table column: the raw field, its heading and how it is displayed.

    kind: text | int | time (ms) | mem (MiB) | db | ratio | number | bool."""

    field: str
    title: str
    kind: str = "text"


def time_unit(values_ms: list[float]) -> tuple[str, float]:
    """(unit, divisor) for a column of milliseconds: seconds once any value reaches a second."""
    return ("s", 1000.0) if values_ms and max(values_ms) >= 1000.0 else ("ms", 1.0)


def mem_unit(values_mib: list[float]) -> tuple[str, float]:
    """(unit, divisor) for a column of MiB: GiB once any value reaches a GiB."""
    return ("GiB", MIB_PER_GIB) if values_mib and max(values_mib) >= MIB_PER_GIB else ("MiB", 1.0)


@dataclass
class Table:
    """A named table: raw records (CSV) and their display (markdown/HTML)."""

    name: str
    title: str
    columns: list[Column]
    records: list[dict[str, Any]]
    note: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # extra values plots need (not written)

    def frame(self) -> pd.DataFrame:
        """Raw values, one column per `Column.field`, in the results' units."""
        return pd.DataFrame(self.records, columns=[c.field for c in self.columns])

    def display_unit(self, column: Column) -> tuple[str, float]:
        """The unit a time/memory column is shown in, and the divisor from the raw unit."""
        values = [r[column.field] for r in self.records if isinstance(r.get(column.field), (int, float))
                  and not isinstance(r.get(column.field), bool)]
        if column.kind == "time":
            return time_unit(values)
        if column.kind == "mem":
            return mem_unit(values)
        return ("", 1.0)

    def display(self) -> tuple[list[str], list[list[str]]]:
        """(headings with units, rows of formatted cells); every memory column shares one unit."""
        units = {c.field: self.display_unit(c) for c in self.columns}
        memory = [c for c in self.columns if c.kind == "mem"]
        if memory:
            shared = max((units[c.field] for c in memory), key=lambda unit: unit[1])
            units.update({c.field: shared for c in memory})
        headings = []
        for c in self.columns:
            unit = units[c.field][0] or {"db": "dB", "ratio": "x"}.get(c.kind, "")
            headings.append(f"{c.title} ({unit})" if unit else c.title)
        rows = []
        for record in self.records:
            cells = []
            for c in self.columns:
                cells.append(format_cell(record.get(c.field), c.kind, units[c.field][1]))
            rows.append(cells)
        return headings, rows


def format_cell(value: Any, kind: str, divisor: float = 1.0) -> str:
    """How one raw value is shown (the test that checks the report uses this same rule)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if kind in ("time", "mem"):
        return fmt_number(value / divisor)
    if kind == "db":
        return f"{value:.2f}"
    if kind == "ratio":
        return f"{value:.2f}"
    if kind == "number":
        return fmt_number(value)
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "int":
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------- helpers
def _distinct(data: ReportData, field_name: str) -> list[str]:
    values = [c.row.get(field_name) for c in data.cases]
    return list(dict.fromkeys(str(v) for v in values if v is not None))


def resolution(data: ReportData, case: ReportCase) -> str:
    """The work size of a case: the requested size, and the frame count."""
    return f"{data.value(case, 'size')}, {data.value(case, 'frames')} frames"


def variant(data: ReportData, case: ReportCase) -> str:
    """The varying parameters that are neither plan nor size (e.g. steps), or '-'."""
    return data.describe(case, data.varying_other) or "-"


def budget_mib(case: ReportCase) -> float | None:
    """The memory a case must fit in: the plan's vram_budget_gib, else the card's memory."""
    budget = case.row.get("vram_budget_gib")
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        return float(budget) * MIB_PER_GIB
    card = case.row.get("env.gpu_memory_mib")
    return float(card) if isinstance(card, (int, float)) else None


def fits(case: ReportCase) -> str:
    """Whether the case fits its budget: judged on the NVML process peak (CUDA context included)."""
    status = case.row.get("status")
    if status == "oom":
        return "no (oom)"
    if status != "ok":
        return f"- ({status})"
    budget = budget_mib(case)
    peak = case.row.get("peak_nvml_mib")
    how = ""
    if peak is None and case.row.get("peak_nvml_device_mib") is not None:
        peak, how = case.row["peak_nvml_device_mib"], " (device peak)"  # this process was not visible to NVML
    if peak is None or budget is None:
        return "n/a (not measured)"
    return ("yes" if peak <= budget else "no") + how


def mean_step_ms(case: ReportCase) -> float | None:
    """Mean of the two experts' step times (what grows with the token count)."""
    steps = [case.row.get(f"step_ms.{e}") for e in ("high", "low")]
    steps = [s for s in steps if isinstance(s, (int, float))]
    return sum(steps) / len(steps) if steps else None


def _sorted(data: ReportData, cases: list[ReportCase]) -> list[ReportCase]:
    return sorted(cases, key=lambda c: (c.get("tokens", 0), resolution(data, c), data.plan(c), variant(data, c)))


# ---------------------------------------------------------------- tables
def environment_table(data: ReportData) -> Table:
    """Where and how the figures were measured."""
    def joined(name: str, fmt: Callable[[str], str] = str) -> str:
        values = _distinct(data, name)
        return ", ".join(fmt(v) for v in values) if values else "-"

    gpus = _distinct(data, "env.gpu")
    if gpus:
        memory = _distinct(data, "env.gpu_memory_mib")
        card = ", ".join(gpus) + (f" ({', '.join(f'{float(m) / MIB_PER_GIB:.1f} GiB' for m in memory)})" if memory else "")
    else:
        card = f"none: CPU run ({joined('env.cpu')}, {joined('env.cpu_count')} cores)"
    weights = ", ".join(f"{w}" for w in _distinct(data, "weights")) or "-"
    if any(c.row.get("weights_synthetic") for c in data.cases):
        weights += " (seeded random values at the real shapes)"
    statuses = [c.row.get("status") for c in data.cases]
    started = sorted(v for v in _distinct(data, "started_at"))
    finished = sorted(v for v in _distinct(data, "finished_at"))
    overheads = [c.row["probe_overhead_pct"] for c in data.cases if isinstance(c.row.get("probe_overhead_pct"), float)]
    dirty = _distinct(data, "env.git_dirty")
    items = [
        ("card", card),
        ("driver", joined("env.driver")),
        ("CUDA / cuDNN", f"{joined('env.cuda')} / {joined('env.cudnn')}"),
        ("torch", joined("env.torch")),
        ("diffusers / transformers", f"{joined('env.diffusers')} / {joined('env.transformers')}"),
        ("python / OS", f"{joined('env.python')} / {joined('env.os')}"),
        ("host", joined("env.hostname")),
        ("git revision", joined("env.git_rev", lambda v: v[:12]) + (" (uncommitted changes)" if "True" in dirty else "")),
        ("model", f"preset {joined('preset')}, device {joined('device')}"),
        ("weights source", weights),
        ("suite", f"{joined('suite')} ({', '.join(str(r) for r in data.runs)})"),
        ("timing", f"{joined('timing')}; {joined('repeats')} measured repeat(s) after {joined('warmup')} warmup"),
        ("cases", f"{len(statuses)}: " + ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))),
        ("plan shared by every case", data.common_plan()),
        ("measured", f"{started[0] if started else '-'} to {finished[-1] if finished else '-'} (UTC)"),
        ("probe overhead", f"median {statistics.median(overheads):.2f}% of a step" if overheads else "-"),
    ]
    return Table("environment", "Environment", [Column("item", "item"), Column("value", "value")],
                 [{"item": k, "value": v} for k, v in items])


def memory_latency_table(data: ReportData) -> Table:
    """Latency and peak memory per resolution x plan (and any other varying parameter)."""
    columns = [Column("case", "case"), Column("resolution", "resolution"), Column("tokens", "tokens", "int"),
               Column("plan", "plan")]
    if data.varying_other:
        columns.append(Column("variant", "variant"))
    columns += [
        Column("status", "status"), Column("total_ms", "total", "time"),
        Column("step_ms.high", "per step, high-noise expert", "time"),
        Column("step_ms.low", "per step, low-noise expert", "time"),
        Column("peak_nvml_mib", "NVML process peak", "mem"), Column("peak_allocated_mib", "peak allocated", "mem"),
        Column("budget_mib", "budget", "mem"), Column("fits", "fits budget"), Column("projected", "projected", "bool"),
    ]
    records = []
    for case in _sorted(data, data.cases):
        records.append({
            "case": case.label, "resolution": resolution(data, case), "tokens": case.row.get("tokens"),
            "plan": data.plan(case), "variant": variant(data, case), "status": case.row.get("status"),
            "total_ms": case.row.get("total_ms"), "step_ms.high": case.row.get("step_ms.high"),
            "step_ms.low": case.row.get("step_ms.low"), "peak_nvml_mib": case.row.get("peak_nvml_mib"),
            "peak_allocated_mib": case.row.get("peak_allocated_mib"), "budget_mib": budget_mib(case),
            "fits": fits(case), "projected": case.row.get("projected"),
        })
    notes = ["total: median wall clock of one generation (load excluded); per step: median of one denoising "
             "step (both CFG forwards and the solver)."]
    if any(r["projected"] for r in records):
        notes.append("projected: sampled timing, the full schedule projected from the measured steps.")
    if all(r["peak_nvml_mib"] is None for r in records):
        notes.append("GPU memory: " + (_distinct(data, "memory_note") or ["not measured"])[0] + ".")
    notes.append("fits: NVML process peak (CUDA context included) within vram_budget_gib, or the card's memory "
                 "when the plan sets no budget.")
    return Table("memory_latency", "Memory and latency per resolution x plan", columns, records, " ".join(notes))


def summary_table(data: ReportData) -> Table:
    """Total time and NVML peak per plan (rows) x resolution (columns), as published tables show them."""
    resolutions = list(dict.fromkeys(resolution(data, c) for c in _sorted(data, data.cases)))
    columns = [Column("plan", "plan")]
    if data.varying_other:
        columns.append(Column("variant", "variant"))
    for res in resolutions:
        columns += [Column(f"{res}: total_ms", f"{res}: total", "time"),
                    Column(f"{res}: peak_nvml_mib", f"{res}: NVML peak", "mem")]
    by_row: dict[tuple[str, str], dict[str, Any]] = {}
    for case in _sorted(data, data.cases):
        key = (data.plan(case), variant(data, case))
        record = by_row.setdefault(key, {"plan": key[0], "variant": key[1]})
        res = resolution(data, case)
        record[f"{res}: total_ms"] = case.row.get("total_ms") if case.ok else None
        record[f"{res}: peak_nvml_mib"] = case.row.get("peak_nvml_mib")
    note = ("The format of published tables (seconds / peak memory per resolution); '-' where a case did not "
            "finish or memory was not measured. Details and budgets in the next table.")
    return Table("summary", "Summary: total time and NVML peak per plan x resolution", columns,
                 list(by_row.values()), note)


def stages_table(data: ReportData) -> Table:
    """Median time of every stage per case; `unaccounted` is total minus the stages (the harness's gaps)."""
    columns = [Column("case", "case"), Column("load_ms", "load", "time")]
    columns += [Column(f"stage_ms.{s}", s, "time") for s in GENERATE_STAGES]
    columns += [Column("total_ms", "total", "time"), Column("unaccounted_ms", "unaccounted", "time")]
    records = []
    for case in _sorted(data, [c for c in data.cases if c.ok]):
        record: dict[str, Any] = {"case": case.label, "load_ms": case.row.get("load_ms")}
        stage_values = [case.row.get(f"stage_ms.{s}") for s in GENERATE_STAGES]
        for stage, value in zip(GENERATE_STAGES, stage_values):
            record[f"stage_ms.{stage}"] = value
        total = case.row.get("total_ms")
        record["total_ms"] = total
        present = [v for v in stage_values if isinstance(v, (int, float))]
        record["unaccounted_ms"] = total - sum(present) if isinstance(total, (int, float)) and present else None
        records.append(record)
    note = ("Median over the measured repeats of each stage's synchronized wall clock; load is timed once per "
            "process group and is not part of total. Medians of parts need not add up to the median total.")
    return Table("stages", "Stage breakdown", columns, records, note)


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
    """Which (time, quality) points no other point beats (faster or equal AND better or equal, one strictly)."""
    flags = []
    for i, (t, q) in enumerate(points):
        dominated = any((t2 <= t and q2 >= q) and (t2 < t or q2 > q) for j, (t2, q2) in enumerate(points) if j != i)
        flags.append(not dominated)
    return flags


def quality_table(data: ReportData) -> Table:
    """PSNR/SSIM of each case against its reference vs time; Pareto front per reference.

    A reference case stands at PSNR_CAP_DB and SSIM 1 (it is what the others are measured against)."""
    columns = [Column("point", "#", "int"), Column("case", "case"), Column("reference_case", "reference"),
               Column("role", "role"),
               Column("total_ms", "total", "time"), Column("speedup", "speed-up vs reference", "ratio"),
               Column("psnr_db", "PSNR", "db"), Column("ssim", "SSIM", "number"),
               Column("psnr_min_frame_db", "worst frame PSNR", "db"), Column("pareto", "Pareto front", "bool"),
               Column("quality_resize", "resize")]
    by_id = {(c.run, c.row["case_id"]): c for c in data.cases}
    groups: dict[str, list[ReportCase]] = {}
    for case in data.cases:
        ref = case.row.get("reference_case")
        if not case.ok or ref is None or not isinstance(case.row.get("total_ms"), (int, float)):
            continue
        if case.row.get("is_reference") or case.row.get("psnr_db") is not None:
            groups.setdefault(f"{case.run}|{ref}", []).append(case)
    records = []
    for cases in groups.values():
        points = [(c.row["total_ms"], PSNR_CAP_DB if c.row.get("is_reference") else c.row["psnr_db"]) for c in cases]
        front = pareto_front(points)
        for case, on_front in zip(cases, front):
            ref = by_id.get((case.run, case.row["reference_case"]))
            ref_total = ref.row.get("total_ms") if ref is not None else None
            frames = case.row.get("psnr_frames") or []
            records.append({
                "point": len(records) + 1,
                "case": case.label, "reference_case": ref.label if ref is not None else case.row["reference_case"],
                "role": "reference" if case.row.get("is_reference") else "compared",
                "total_ms": case.row["total_ms"],
                "speedup": ref_total / case.row["total_ms"] if isinstance(ref_total, (int, float)) else None,
                "psnr_db": case.row.get("psnr_db"), "ssim": case.row.get("ssim"),
                "psnr_min_frame_db": min(frames) if frames else None, "pareto": on_front,
                "quality_resize": case.row.get("quality_resize") or "-",
            })
    notes = [f"PSNR per frame (data range 1, {PSNR_CAP_DB:g} dB when identical) and Gaussian SSIM, averaged over "
             "frames. The Pareto front (time vs PSNR) is taken per reference, the reference counting as perfect "
             "quality; # numbers the points of the plot."]
    if any(c.row.get("weights_synthetic") for c in data.cases):
        notes.append("Synthetic weights: these metrics measure numerical drift between configurations, not visual "
                     "quality.")
    if not records:
        reasons = _distinct(data, "quality_note")
        notes.append("No case has quality metrics" + (f" ({reasons[0]})" if reasons else
                                                      " (the suite names no reference)") + ".")
    return Table("quality", "Quality vs speed", columns, records, " ".join(notes))


def _fit_cells(fit: Fit | None) -> tuple[float | None, float | None]:
    return (fit.exponent_or_slope, fit.r2) if fit is not None else (None, None)


def cost_table(data: ReportData) -> Table:
    """Growth of time and memory with the token count, per group of cases that differ only in size."""
    memory_field = "peak_nvml_mib" if any(c.row.get("peak_nvml_mib") for c in data.cases) else "peak_allocated_mib"
    group_params = [p for p in data.varying if p not in SIZE_PARAMS]
    groups: dict[str, list[ReportCase]] = {}
    for case in data.cases:
        if case.ok and isinstance(case.row.get("tokens"), int) and isinstance(case.row.get("total_ms"), (int, float)):
            groups.setdefault(data.describe(case, group_params) or "all cases", []).append(case)
    columns = [Column("group", "cases"), Column("points", "points", "int"), Column("tokens_min", "tokens from", "int"),
               Column("tokens_max", "tokens to", "int"), Column("total_exponent", "total ~ tokens^k: k", "number"),
               Column("total_r2", "R^2", "number"), Column("step_exponent", "step ~ tokens^k: k", "number"),
               Column("step_r2", "R^2", "number"), Column("memory_base_mib", "memory at 0 tokens", "mem"),
               Column("memory_mib_per_1k_tokens", "memory per 1k tokens", "mem"), Column("memory_r2", "R^2", "number")]
    records, fits_for_plot = [], {}
    for name, cases in groups.items():
        tokens = [c.row["tokens"] for c in cases]
        total_fit = fit_power_law(tokens, [c.row["total_ms"] for c in cases])
        step_pairs = [(c.row["tokens"], mean_step_ms(c)) for c in cases if mean_step_ms(c) is not None]
        step_fit = fit_power_law([t for t, _ in step_pairs], [s for _, s in step_pairs]) if step_pairs else None
        mem_pairs = [(c.row["tokens"], c.row.get(memory_field)) for c in cases if c.row.get(memory_field) is not None]
        mem_fit = fit_linear([t for t, _ in mem_pairs], [m for _, m in mem_pairs]) if mem_pairs else None
        fits_for_plot[name] = {"cases": cases, "total": total_fit, "step": step_fit, "memory": mem_fit}
        if len(set(tokens)) < 2:  # nothing grows within this group: it is plotted, not tabled
            continue
        k_total, r2_total = _fit_cells(total_fit)
        k_step, r2_step = _fit_cells(step_fit)
        records.append({
            "group": name, "points": len(cases), "tokens_min": min(tokens), "tokens_max": max(tokens),
            "total_exponent": k_total, "total_r2": r2_total, "step_exponent": k_step, "step_r2": r2_step,
            "memory_base_mib": mem_fit.coef if mem_fit else None,
            "memory_mib_per_1k_tokens": mem_fit.exponent_or_slope * 1000 if mem_fit else None,
            "memory_r2": mem_fit.r2 if mem_fit else None,
        })
    notes = ["Time is fitted as a power law c * tokens^k (least squares in log-log: k near 1 means linear work "
             "dominates, near 2 attention does); memory as a line a + b * tokens "
             f"({memory_field}). R^2 is blank with two points."]
    if not records:
        notes.append("No group of cases differing only in size or frames has two token counts: no growth is fitted "
                     "(sweep size or frames to get one).")
    if not any(c.row.get(memory_field) for c in data.cases):
        notes.append("GPU memory was not measured, so no memory growth is fitted.")
    return Table("cost_vs_tokens", "Cost vs work (tokens)", columns, records, " ".join(notes),
                 meta={"fits": fits_for_plot, "memory_field": memory_field})
