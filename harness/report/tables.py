"""The report's tables, built from result rows: raw values for CSV, formatted ones for people.

A `Table` keeps the raw values in the results' own units and names (`total_ms`, `peak_nvml_mib`), so
its CSV can be checked against results.jsonl number for number. Its display form picks a readable
unit per column (ms or s, MiB or GiB) and four significant digits.

Noise is shown, never hidden: every median time comes with the range of the repeats behind it,
`median [min, max]` (CSV: `<field>.min`, `<field>.max`); a speed-up is shown only when
harness.stats.shift_test, the rule `wanbench compare` gates with, finds it significant.

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
from harness.stats import ALPHA, MIN_REPEATS, Fit, Shift, fit_linear, fit_power_law, shift_test

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

    kind: text | int | time (ms) | mem (MiB) | db | ratio | number | bool.
    spread: the records also hold `<field>.min` and `<field>.max` (the range of the repeats behind the
    median), shown as `median [min, max]`. optional: hidden from the display when no record has a value
    (e.g. GPU memory on a CPU run; the table's note says why). csv/shown: where the column appears."""

    field: str
    title: str
    kind: str = "text"
    spread: bool = False
    optional: bool = False
    csv: bool = True
    shown: bool = True


SPREAD_LABEL = "median [min, max]"


def time_unit(values_ms: list[float]) -> tuple[str, float]:
    """(unit, divisor) for a column of milliseconds: seconds once any value reaches a second."""
    return ("s", 1000.0) if values_ms and max(values_ms) >= 1000.0 else ("ms", 1.0)


def mem_unit(values_mib: list[float]) -> tuple[str, float]:
    """(unit, divisor) for a column of MiB: GiB once any value reaches a GiB."""
    return ("GiB", MIB_PER_GIB) if values_mib and max(values_mib) >= MIB_PER_GIB else ("MiB", 1.0)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Table:
    """A named table: raw records (CSV) and their display (markdown/HTML).

    `empty` is the one sentence a report shows instead of the table when it has no records."""

    name: str
    title: str
    columns: list[Column]
    records: list[dict[str, Any]]
    note: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # extra values plots need (not written)
    empty: str = ""

    def frame(self) -> pd.DataFrame:
        """Raw values, one column per `Column.field` (and its .min/.max), in the results' units."""
        names = []
        for c in self.columns:
            if c.csv:
                names += [c.field, f"{c.field}.min", f"{c.field}.max"] if c.spread else [c.field]
        return pd.DataFrame(self.records, columns=names)

    def shown_columns(self) -> list[Column]:
        """The columns a reader sees: optional ones only when some record has a value."""
        return [c for c in self.columns if c.shown and not (c.optional and all(
            r.get(c.field) is None for r in self.records))]

    def display_unit(self, column: Column) -> tuple[str, float]:
        """The unit a time/memory column is shown in, and the divisor from the raw unit."""
        values = [r[column.field] for r in self.records if _is_number(r.get(column.field))]
        if column.kind == "time":
            return time_unit(values)
        if column.kind == "mem":
            return mem_unit(values)
        return ("", 1.0)

    def display(self) -> tuple[list[str], list[list[str]]]:
        """(headings with units, rows of formatted cells); every memory column shares one unit."""
        columns = self.shown_columns()
        units = {c.field: self.display_unit(c) for c in columns}
        memory = [c for c in columns if c.kind == "mem"]
        if memory:
            shared = max((units[c.field] for c in memory), key=lambda unit: unit[1])
            units.update({c.field: shared for c in memory})
        headings = []
        for c in columns:
            unit = units[c.field][0] or {"db": "dB", "ratio": "x"}.get(c.kind, "")
            heading = f"{c.title} ({unit})" if unit else c.title
            headings.append(f"{heading}, {SPREAD_LABEL}" if c.spread else heading)
        rows = []
        for record in self.records:
            cells = []
            for c in columns:
                divisor = units[c.field][1]
                if c.spread:
                    cells.append(format_spread(record.get(c.field), record.get(f"{c.field}.min"),
                                               record.get(f"{c.field}.max"), c.kind, divisor))
                else:
                    cells.append(format_cell(record.get(c.field), c.kind, divisor))
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


def format_spread(median: Any, low: Any, high: Any, kind: str, divisor: float = 1.0) -> str:
    """`median [min, max]`, or the median alone where there is no range (one repeat; load, timed once)."""
    shown = format_cell(median, kind, divisor)
    if shown == "-" or low is None or high is None:
        return shown
    return f"{shown} [{format_cell(low, kind, divisor)}, {format_cell(high, kind, divisor)}]"


def set_median(record: dict[str, Any], name: str, median: Any, values: list[float] | None) -> None:
    """Put a median and the range of the values behind it into a record (range None with fewer than 2 values)."""
    record[name] = median
    spread = values is not None and len(values) >= 2
    record[f"{name}.min"] = min(values) if spread else None
    record[f"{name}.max"] = max(values) if spread else None


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
        return None  # not measured (a CPU run, no NVML): the column is hidden or shows "-"
    return ("yes" if peak <= budget else "no") + how


def repeats_of(case: ReportCase, name: str) -> list[float] | None:
    """The per-repeat values behind a median field of the results (`total_ms`, `stage_ms.<stage>`)."""
    if name == "total_ms":
        values = case.row.get("repeats_ms.total")
    elif name.startswith("stage_ms."):
        values = case.row.get("repeats_ms." + name.split(".", 1)[1])
    else:
        values = None
    return [float(v) for v in values] if values else None


def step_times(data: ReportData, case: ReportCase, expert: str) -> list[float] | None:
    """The measured step times behind `step_ms.<expert>` (from the timeline), None when they cannot be matched.

    Under sampled timing the first executed steps of each expert in each repeat are warmup and are not
    counted; the times are kept only when their count equals `steps_measured.<expert>` of the row."""
    records = data.timeline(case)
    measured = case.row.get(f"steps_measured.{expert}")
    if not records or not isinstance(measured, int) or measured == 0 or measured % len(records):
        return None
    per_repeat = measured // len(records)
    times: list[float] = []
    for record in records:
        executed = [s["ms"] for s in record.get("steps") or [] if s.get("expert") == expert]
        times += executed[len(executed) - per_repeat:] if per_repeat else []
    return times if len(times) == measured else None


# Repeats are stored rounded to 1e-4 ms; a per-repeat remainder this close to 0 is rounding, not time.
ROUNDING_MS = 1e-3


def unaccounted_repeats(case: ReportCase) -> list[float] | None:
    """Per repeat, its total minus the sum of its stages (None without aligned per-repeat values).

    The stages of one generation run one after another inside the timed call, so the remainder is the
    time between them (Python, synchronization, the probe's bookkeeping) and is never negative beyond
    the rounding of the stored repeats, which is floored at 0."""
    totals = case.row.get("repeats_ms.total")
    stages = [case.row.get(f"repeats_ms.{s}") for s in GENERATE_STAGES]
    stages = [v for v in stages if v]
    if not totals or not stages or any(len(v) != len(totals) for v in stages):
        return None
    out = []
    for i, total in enumerate(totals):
        rest = total - sum(v[i] for v in stages)
        out.append(0.0 if -ROUNDING_MS < rest < 0 else rest)
    return out


def speedup_test(case: ReportCase, reference: ReportCase) -> Shift | None:
    """The shift test of a case's total-time repeats against its reference's (None without repeats)."""
    mine, theirs = repeats_of(case, "total_ms"), repeats_of(reference, "total_ms")
    return shift_test(mine, theirs) if mine and theirs else None


def speedup_text(ratio: float | None, test: Shift | None, caveat: str = "") -> str:
    """The speed-up cell: the ratio only when the shift test finds it significant, else why not."""
    if ratio is None:
        return "-"
    if test is None:
        return "untested: no repeats kept"
    if not test.tested:
        return f"untested: {test.n_x} vs {test.n_y} repeats"
    if not test.significant:
        return "not significant" + (f" (p={test.p_value:.2g})" if test.p_value is not None else " (equal medians)")
    return f"{ratio:.2f} (p={test.p_value:.2g}{', ' + caveat if caveat else ''})"


def process_caveat(data: ReportData, case: ReportCase, reference: ReportCase) -> str:
    """'' when a case ran in its reference's process; else what its time difference includes besides the plan."""
    if case.run == reference.run and case.row.get("group") == reference.row.get("group"):
        return ""
    if data.effective_plan(case) == data.effective_plan(reference):
        return "other process, same effective plan"
    return "other process"


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
        ("probe overhead", probe_overhead_text(overheads)),
    ]
    # The conditions of CPU figures, where the workers recorded them (env.threads, env.load_avg_1m).
    if _distinct(data, "env.threads"):
        items.append(("CPU threads (torch)", joined("env.threads")))
    loads = [c.row["env.load_avg_1m"] for c in data.cases if _is_number(c.row.get("env.load_avg_1m"))]
    if loads:
        items.append(("host load average (1 min) as the workers started",
                      f"{min(loads):.2f}" + (f" to {max(loads):.2f}" if max(loads) > min(loads) else "")))
    return Table("environment", "Environment", [Column("item", "item"), Column("value", "value")],
                 [{"item": k, "value": v} for k, v in items])


def probe_overhead_text(percents: list[float]) -> str:
    """The probe's cost per step; at or below 0 it is under what the measurement resolves, and says so."""
    if not percents:
        return "-"
    median = statistics.median(percents)
    if median <= 0:
        return ("< resolution: the probed loop was not measurably slower than the bare one "
                "(their difference was within the timing noise)")
    below = sum(p <= 0 for p in percents)
    if below:
        return (f"median {median:.2f}% of a step, at most {max(percents):.2f}%; below resolution (<= 0) in "
                f"{below} of {len(percents)} cases")
    return f"median {median:.2f}% of a step ({min(percents):.2f}% to {max(percents):.2f}% over the cases)"


def memory_latency_table(data: ReportData) -> Table:
    """Latency and peak memory per resolution x plan (and any other varying parameter)."""
    columns = [Column("case", "case"), Column("resolution", "resolution"), Column("tokens", "tokens", "int"),
               Column("plan", "plan")]
    if data.varying_other:
        columns.append(Column("variant", "variant"))
    columns += [
        Column("status", "status"), Column("total_ms", "total", "time", spread=True),
        Column("step_ms.high", "per step, high-noise expert", "time", spread=True),
        Column("step_ms.low", "per step, low-noise expert", "time", spread=True),
        Column("peak_nvml_mib", "NVML process peak", "mem", optional=True),
        Column("peak_allocated_mib", "peak allocated", "mem", optional=True),
        Column("budget_mib", "budget", "mem", optional=True), Column("fits", "fits budget", optional=True),
        Column("projected", "projected", "bool"),
    ]
    records = []
    for case in _sorted(data, data.cases):
        record = {
            "case": case.label, "resolution": resolution(data, case), "tokens": case.row.get("tokens"),
            "plan": data.plan(case), "variant": variant(data, case), "status": case.row.get("status"),
            "peak_nvml_mib": case.row.get("peak_nvml_mib"), "peak_allocated_mib": case.row.get("peak_allocated_mib"),
            "budget_mib": budget_mib(case), "fits": fits(case), "projected": case.row.get("projected"),
        }
        set_median(record, "total_ms", case.row.get("total_ms"), repeats_of(case, "total_ms"))
        for expert in ("high", "low"):
            set_median(record, f"step_ms.{expert}", case.row.get(f"step_ms.{expert}"), step_times(data, case, expert))
        records.append(record)
    notes = ["total: median wall clock of one generation (load excluded) over the measured repeats; per step: "
             "median of one denoising step (both CFG forwards and the solver) over every measured step; "
             "[min, max]: the range of those values."]
    if any(r["projected"] for r in records):
        notes.append("projected: sampled timing, the full schedule projected from the measured steps.")
    if all(r["peak_nvml_mib"] is None and r["peak_allocated_mib"] is None for r in records):
        notes.append("GPU memory: " + (_distinct(data, "memory_note") or ["not measured"])[0] + ".")
    else:
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
        columns += [Column(f"{res}: total_ms", f"{res}: total", "time", spread=True),
                    Column(f"{res}: peak_nvml_mib", f"{res}: NVML peak", "mem", optional=True)]
    by_row: dict[tuple[str, str], dict[str, Any]] = {}
    for case in _sorted(data, data.cases):
        key = (data.plan(case), variant(data, case))
        record = by_row.setdefault(key, {"plan": key[0], "variant": key[1]})
        res = resolution(data, case)
        set_median(record, f"{res}: total_ms", case.row.get("total_ms") if case.ok else None,
                   repeats_of(case, "total_ms") if case.ok else None)
        record[f"{res}: peak_nvml_mib"] = case.row.get("peak_nvml_mib")
    note = ("The format of published tables (time and peak memory per resolution), with the range of the repeats "
            "beside each median time; '-' where a case did not finish or memory was not measured. Details and "
            "budgets in the next table.")
    return Table("summary", "Summary: total time and NVML peak per plan x resolution", columns,
                 list(by_row.values()), note)


def stages_table(data: ReportData) -> Table:
    """Median time of every stage per case, with the range of its repeats; `unaccounted` is the time between stages."""
    columns = [Column("case", "case"), Column("load_ms", "load (once)", "time")]
    columns += [Column(f"stage_ms.{s}", s, "time", spread=True, optional=True) for s in GENERATE_STAGES]
    columns += [Column("total_ms", "total", "time", spread=True),
                Column("unaccounted_ms", "unaccounted", "time", spread=True)]
    records = []
    overlapped = False
    for case in _sorted(data, [c for c in data.cases if c.ok]):
        record: dict[str, Any] = {"case": case.label, "load_ms": case.row.get("load_ms")}
        for name in [f"stage_ms.{s}" for s in GENERATE_STAGES] + ["total_ms"]:
            set_median(record, name, case.row.get(name), repeats_of(case, name))
        rest = unaccounted_repeats(case)
        set_median(record, "unaccounted_ms", statistics.median(rest) if rest else None, rest)
        overlapped = overlapped or any(v < 0 for v in rest or [])
        records.append(record)
    note = ("Median over the measured repeats of each stage's synchronized wall clock, [min, max] their range; load "
            "is timed once per process group and is not part of total. unaccounted: per repeat, its total minus its "
            "stages (the time between stages: Python, synchronization, the probe's bookkeeping), then the median "
            "over repeats; the stages run one after another, so it is never negative (rounding of the stored "
            "repeats is floored at 0). Medians of parts need not add up to the median total.")
    if overlapped:
        note += " A negative unaccounted time means stages overlapped in time in that case."
    return Table("stages", "Stage breakdown", columns, records, note,
                 empty="No case finished, so there is no stage to break down.")


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
               Column("role", "role"), Column("total_ms", "total", "time", spread=True),
               Column("speedup", "speed-up", "ratio", shown=False),
               Column("speedup_p", "p", "number", shown=False),
               Column("speedup_significant", "significant", "bool", shown=False),
               Column("speedup_shown", "speed-up vs reference (x)", csv=False),
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
            compared = ref is not None and ref is not case and isinstance(ref_total, (int, float))
            ratio = ref_total / case.row["total_ms"] if compared else None
            test = speedup_test(case, ref) if compared else None
            caveat = process_caveat(data, case, ref) if compared else ""
            frames = case.row.get("psnr_frames") or []
            record = {
                "point": len(records) + 1,
                "case": case.label, "reference_case": ref.label if ref is not None else case.row["reference_case"],
                "role": "reference" if case.row.get("is_reference") else "compared",
                "speedup": ratio, "speedup_p": test.p_value if test else None,
                "speedup_significant": test.significant if test else None,
                "speedup_shown": speedup_text(ratio, test, caveat),
                "psnr_db": case.row.get("psnr_db"), "ssim": case.row.get("ssim"),
                "psnr_min_frame_db": min(frames) if frames else None, "pareto": on_front,
                "quality_resize": case.row.get("quality_resize") or "-",
            }
            set_median(record, "total_ms", case.row["total_ms"], repeats_of(case, "total_ms"))
            records.append(record)
    notes = [f"speed-up: the reference's median total over this case's, shown only where a one-sided Mann-Whitney U "
             f"test on the repeats of the two totals finds the difference significant at {ALPHA:g} with at least "
             f"{MIN_REPEATS} repeats a side (harness.stats.shift_test, the rule `wanbench compare` gates with); a "
             "significant slow-down shows as a ratio below 1. The CSV keeps every ratio, its p and the verdict. "
             "other process: the case ran in another worker process than its reference (a plan that loads "
             "differently must), so the difference includes process-to-process variation the test cannot "
             "separate from the plan; with the same effective plan (e.g. every text-encoder placement on a CPU), "
             "that variation is all it measures.",
             f"PSNR per frame (data range 1, {PSNR_CAP_DB:g} dB when identical) and Gaussian SSIM, averaged over "
             "frames. The Pareto front (median time vs PSNR) is taken per reference, the reference counting as "
             "perfect quality; # numbers the points of the plot."]
    if any(c.row.get("weights_synthetic") for c in data.cases):
        notes.append("Synthetic weights: these metrics measure numerical drift between configurations, not visual "
                     "quality.")
    reasons = _distinct(data, "quality_note")
    empty = ("No case has quality metrics" + (f" ({reasons[0]})" if reasons else " (the suite names no reference)")
             + ".")
    return Table("quality", "Quality vs speed", columns, records, " ".join(notes), empty=empty)


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
               Column("step_r2", "R^2", "number"),
               Column("memory_base_mib", "memory at 0 tokens", "mem", optional=True),
               Column("memory_mib_per_1k_tokens", "memory per 1k tokens", "mem", optional=True),
               Column("memory_r2", "R^2", "number", optional=True)]
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
    notes = ["Time is fitted as a power law c * tokens^k (least squares in log-log on the median totals: k near 1 "
             "means linear work dominates, near 2 attention does); memory as a line a + b * tokens "
             f"({memory_field}). R^2 is blank with two points (any such curve passes through both)."]
    if not any(c.row.get(memory_field) for c in data.cases):
        notes.append("GPU memory was not measured, so no memory growth is fitted.")
    empty = ("No group of cases differing only in size or frames has two token counts, so no growth is fitted "
             "(sweep size or frames to get one).")
    return Table("cost_vs_tokens", "Cost vs work (tokens)", columns, records, " ".join(notes),
                 meta={"fits": fits_for_plot, "memory_field": memory_field}, empty=empty)
