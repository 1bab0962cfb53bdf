"""The report's plots, drawn with matplotlib's Agg canvas (no pyplot, no display, no global state).

Each function draws one PNG from a table (or the run's timeline sidecar) and returns its path, or
None when there is nothing to draw (e.g. no case has quality metrics); the report then says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from harness.metrics import PSNR_CAP_DB
from harness.report.data import ReportCase, ReportData
from harness.report.tables import Table, mem_unit, time_unit
from harness.results import GENERATE_STAGES

DPI = 110
MAX_LEGEND = 8  # fitted groups named in a legend; more would cover the plot
STAGE_COLORS = {stage: f"C{i}" for i, stage in enumerate(GENERATE_STAGES)}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _legend(ax, **kwargs) -> None:
    """A legend when something on the axes carries a label (matplotlib warns on an empty one)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _log_scale(axis, values: list[float]) -> None:
    """Log scale with plain numbers as tick labels (minor ticks labelled when the span is under a decade)."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if max(values) / min(values) < 10 else NullFormatter())


def _short(label: str, width: int = 48) -> str:
    """A case label wrapped on its commas so long labels fit beside a bar."""
    lines, line = [], ""
    for part in label.split(","):
        candidate = f"{line},{part}" if line else part
        if line and len(candidate) > width:
            lines.append(line + ",")
            line = part
        else:
            line = candidate
    return "\n".join(lines + [line])


def stage_breakdown(table: Table, path: Path) -> Path | None:
    """Stacked horizontal bars: each case's stages, then its load time hatched (not part of the total)."""
    records = table.records
    if not records:
        return None
    totals = [r["total_ms"] or 0.0 for r in records]
    unit, div = time_unit(totals + [r["load_ms"] or 0.0 for r in records])
    fig = _figure(9.0, 1.6 + 0.55 * len(records))
    ax = fig.add_subplot()
    y = np.arange(len(records))
    left = np.zeros(len(records))
    for stage in GENERATE_STAGES:
        widths = np.array([(r.get(f"stage_ms.{stage}") or 0.0) / div for r in records])
        ax.barh(y, widths, left=left, color=STAGE_COLORS[stage], label=stage)
        left += widths
    loads = np.array([(r.get("load_ms") or 0.0) / div for r in records])
    ax.barh(y, loads, left=left, color="white", edgecolor="grey", hatch="//", label="load (once per process)")
    ax.set_yticks(y, [_short(r["case"]) for r in records], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"median time ({unit})")
    ax.set_title("Stage breakdown per case")
    _legend(ax, fontsize=7, loc="lower right")
    return _save(fig, path)


def quality_vs_speed(table: Table, path: Path) -> Path | None:
    """PSNR and SSIM against time, one point per case, the Pareto front joined by a line."""
    records = [r for r in table.records if r["total_ms"] is not None]
    if not any(r["role"] == "compared" for r in records):
        return None
    unit, div = time_unit([r["total_ms"] for r in records])
    fig = _figure(10.0, 4.2)
    groups = list(dict.fromkeys(r["reference_case"] for r in records))
    for column, (metric, perfect, title) in enumerate((("psnr_db", PSNR_CAP_DB, "PSNR (dB)"), ("ssim", 1.0, "SSIM"))):
        ax = fig.add_subplot(1, 2, column + 1)
        for g, ref in enumerate(groups):
            rows = [r for r in records if r["reference_case"] == ref]
            xs = [r["total_ms"] / div for r in rows]
            ys = [perfect if r["role"] == "reference" else r[metric] for r in rows]
            color = f"C{g % 10}"
            for r, x, yv in zip(rows, xs, ys):
                if r.get("total_ms.min") is not None:  # the range of the repeats behind the median
                    ax.plot([r["total_ms.min"] / div, r["total_ms.max"] / div], [yv, yv], color=color, linewidth=1,
                            alpha=0.6, zorder=2)
                marker = "*" if r["role"] == "reference" else "o"
                ax.scatter([x], [yv], color=color, marker=marker, s=90 if marker == "*" else 30,
                           edgecolor="black" if r["pareto"] else "none", zorder=3)
                ax.annotate(str(r["point"]), (x, yv), fontsize=7, xytext=(4, 3), textcoords="offset points")
            front = sorted((x, yv) for r, x, yv in zip(rows, xs, ys) if r["pareto"])
            if len(front) > 1:
                ax.plot([p[0] for p in front], [p[1] for p in front], color=color, linestyle="--", linewidth=1,
                        label=f"front vs {_short(ref, 40)}")
        ax.set_xlabel(f"total time ({unit}): median, line from min to max of the repeats")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
        if column == 0:
            _legend(ax, fontsize=6, loc="best")
    fig.suptitle("Quality vs speed (numbers: # in the table; star: reference; black edge: on the Pareto front)",
                 fontsize=10)
    return _save(fig, path)


def psnr_per_frame(data: ReportData, path: Path, limit: int = 12) -> Path | None:
    """Per-frame PSNR of the lossy cases (PSNR below the cap), the `limit` worst ones."""
    lossy = [c for c in data.cases if c.ok and c.row.get("psnr_frames") and (c.row.get("psnr_db") or 0) < PSNR_CAP_DB]
    if not lossy:
        return None
    lossy = sorted(lossy, key=lambda c: c.row["psnr_db"])[:limit]
    fig = _figure(9.0, 4.5)
    ax = fig.add_subplot()
    for case in lossy:
        series = case.row["psnr_frames"]
        ax.plot(range(len(series)), series, marker=".", linewidth=1, label=_short(case.label, 60))
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR against the reference (dB)")
    title = "Per-frame PSNR of lossy cases"
    if len(lossy) < len([c for c in data.cases if c.row.get("psnr_frames")]):
        title += f" (the {len(lossy)} lowest)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax, fontsize=6)
    return _save(fig, path)


def missing_samples_note(data: ReportData, case: ReportCase) -> str | None:
    """Why the case's memory-over-time plot has no NVML curve (None when it has one)."""
    records = data.timeline(case)
    if not records:
        return "no timeline was recorded for this case (it did not finish, or the sidecar file is missing)"
    record = records[-1]
    if any(p is not None or d is not None for _, p, d in record.get("samples") or []):
        return None
    return record.get("samples_note") or case.row.get("memory_note") or "NVML took no sample during the repeat"


def memory_timeline(data: ReportData, case: ReportCase, path: Path) -> Path:
    """GPU memory of one measured repeat of `case` from the NVML samples, its stages shaded.

    Without samples (a CPU run, NVML missing) the stages are still drawn and the plot says why."""
    records = data.timeline(case)
    record: dict[str, Any] = records[-1] if records else {}
    spans = record.get("spans") or []
    samples = record.get("samples") or []
    fig = _figure(10.0, 4.0)
    ax = fig.add_subplot()
    end = max([s["end_s"] for s in spans] + [s[0] for s in samples] + [1e-3])
    for stage in dict.fromkeys(s["stage"] for s in spans):
        for i, span in enumerate(s for s in spans if s["stage"] == stage):
            ax.axvspan(span["start_s"], span["end_s"], color=STAGE_COLORS.get(stage, "grey"), alpha=0.25,
                       label=stage if i == 0 else None)
    process = [(t, p) for t, p, _ in samples if p is not None]
    device = [(t, d) for t, _, d in samples if d is not None]
    values = [p for _, p in process] + [d for _, d in device]
    unit, div = mem_unit(values)
    if process:
        ax.plot([t for t, _ in process], [p / div for _, p in process], color="black", linewidth=1.2,
                label="this process (NVML)")
    if device:
        ax.plot([t for t, _ in device], [d / div for _, d in device], color="grey", linewidth=0.8, linestyle="--",
                label="whole device (NVML)")
    if not process and not device:
        why = missing_samples_note(data, case)
        shown = "Stage spans of the repeat are shown." if spans else "No stage spans either."
        ax.text(0.5, 0.5, f"No NVML memory samples: {why}.\n{shown}",
                transform=ax.transAxes, ha="center", va="center", fontsize=9,
                bbox={"facecolor": "white", "edgecolor": "grey"})
        ax.set_yticks([])
    ax.set_xlim(0, end)
    ax.set_xlabel("time since the start of the repeat (s)")
    ax.set_ylabel(f"GPU memory ({unit})")
    repeat = f", repeat {record.get('repeat', 0) + 1}" if record else ""
    ax.set_title(f"Memory over time: {case.label}{repeat}", fontsize=9)
    _legend(ax, fontsize=7, loc="upper left", ncols=2)
    return _save(fig, path)


def cost_vs_tokens(table: Table, path: Path) -> Path | None:
    """Time (log-log, power-law fits) and memory (linear fits) against the token count."""
    fits: dict[str, dict[str, Any]] = table.meta.get("fits", {})
    if not fits:
        return None
    memory_field = table.meta.get("memory_field", "peak_nvml_mib")
    all_totals = [c.row["total_ms"] for g in fits.values() for c in g["cases"]]
    unit, div = time_unit(all_totals)
    memory_values = [c.row.get(memory_field) for g in fits.values() for c in g["cases"] if c.row.get(memory_field)]
    m_unit, m_div = mem_unit(memory_values)
    if memory_values:
        fig = _figure(10.0, 4.2)
        ax_t, ax_m = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    else:  # no GPU memory measured (a CPU run): time alone, the table's note says why
        fig = _figure(6.0, 4.2)
        ax_t = fig.add_subplot()
        ax_m = None
    fitted = [name for name, group in fits.items() if group["total"] is not None]
    for name, group in fits.items():
        tokens = np.array([c.row["tokens"] for c in group["cases"]], dtype=float)
        totals = np.array([c.row["total_ms"] for c in group["cases"]], dtype=float)
        memory = [(c.row["tokens"], c.row.get(memory_field)) for c in group["cases"] if c.row.get(memory_field)]
        if name not in fitted:  # one token count: points only, in grey, one legend entry for all of them
            label = "cases with one token count" if name == next(n for n in fits if n not in fitted) else None
            ax_t.scatter(tokens, totals / div, color="grey", s=15, label=label)
            if memory and ax_m is not None:
                ax_m.scatter([t for t, _ in memory], [m / m_div for _, m in memory], color="grey", s=15, label=label)
            continue
        index = fitted.index(name)
        color = f"C{index % 10}"
        label = _short(name, 40) if index < MAX_LEGEND else None
        ax_t.scatter(tokens, totals / div, color=color, s=25, label=label)
        for case, t in zip(group["cases"], tokens):  # the range of the repeats behind each median
            repeats = case.row.get("repeats_ms.total")
            if repeats:
                ax_t.plot([t, t], [min(repeats) / div, max(repeats) / div], color=color, linewidth=1, alpha=0.6)
        grid = np.geomspace(tokens.min(), tokens.max(), 50)
        k = group["total"].exponent_or_slope
        ax_t.plot(grid, group["total"].predict(grid) / div, color=color, linewidth=1,
                  label=f"fit k={k:.2f}" if label else None)
        if memory and ax_m is not None:
            ax_m.scatter([t for t, _ in memory], [m / m_div for _, m in memory], color=color, s=25, label=label)
            if group["memory"] is not None:
                line = np.linspace(0, tokens.max(), 50)
                ax_m.plot(line, group["memory"].predict(line) / m_div, color=color, linewidth=1,
                          label=f"fit {group['memory'].exponent_or_slope * 1000:.3g} MiB / 1k tokens" if label else None)
    several_sizes = len({c.row["tokens"] for g in fits.values() for c in g["cases"]}) > 1
    if several_sizes and min(all_totals) > 0:
        ax_t.set_xscale("log")
        ax_t.set_yscale("log")
        _log_scale(ax_t.xaxis, [c.row["tokens"] for g in fits.values() for c in g["cases"]])
        _log_scale(ax_t.yaxis, [t / div for t in all_totals])
    ax_t.set_xlabel("tokens")
    ax_t.set_ylabel(f"total time ({unit}): median, min to max")
    ax_t.set_title("Time vs tokens (power-law fit)", fontsize=9)
    ax_t.grid(alpha=0.3, which="both")
    _legend(ax_t, fontsize=6)
    if ax_m is not None:
        ax_m.set_xlabel("tokens")
        ax_m.set_ylabel(f"{memory_field} ({m_unit})")
        ax_m.set_title("Memory vs tokens (linear fit)", fontsize=9)
        ax_m.grid(alpha=0.3)
        _legend(ax_m, fontsize=6)
    if not several_sizes:
        ax_t.set_title("Time vs tokens (one token count: nothing to fit)", fontsize=9)
    return _save(fig, path)
