"""`wanbench report`: tables, plots, report.md and a self-contained report.html from run folders.

    build_report([run_dir, ...], out_dir) -> ReportFiles

Writes into `out_dir`: report.md, report.html (the same content, plots embedded), one PNG per plot
and one CSV per table (raw values in the results' units and field names). Sections: environment
(with banners for synthetic weights, projected figures and failed cases), memory/latency per
resolution x plan, stage breakdown, quality vs speed (Pareto front, per-frame PSNR), memory over
time for one case (NVML samples, stages shaded), cost vs tokens with fitted growth.

Every median time carries the range of its repeats, a speed-up is shown only when significant
(harness/report/tables.py), and a section with nothing to show is one sentence saying why (a table
without rows, GPU memory on a CPU run) instead of an empty table or plot; its CSV is still written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.report import plots
from harness.report.data import ReportCase, ReportData, load_report_data
from harness.report.tables import (Table, cost_table, environment_table, memory_latency_table, quality_table,
                                   stages_table, summary_table)
from harness.report.writers import Banner, Block, FigureBlock, Heading, Paragraph, TableBlock, render_html, render_markdown

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


@dataclass
class ReportFiles:
    """What build_report wrote."""

    out: Path
    markdown: Path
    html: Path
    pngs: list[Path] = field(default_factory=list)
    csvs: list[Path] = field(default_factory=list)
    tables: dict[str, Table] = field(default_factory=dict)
    memory_case: str | None = None


def banners(data: ReportData) -> list[Banner]:
    """Warnings that qualify every figure of the report."""
    out = []
    n = len(data.cases)
    synthetic = [c for c in data.cases if c.row.get("weights_synthetic")]
    if synthetic:
        out.append(Banner(
            f"Synthetic weights ({len(synthetic)} of {n} cases): latency and memory are those of the real shapes "
            "(they do not depend on weight values), but the videos are structured noise, so PSNR/SSIM measure "
            "numerical drift between configurations, not visual quality."))
    projected = [c for c in data.cases if c.row.get("projected")]
    if projected:
        out.append(Banner(
            f"Projected figures ({len(projected)} of {n} cases, `timing: sampled`): only the first steps of each "
            "expert ran; denoise stage times and totals are the measured stage plus the skipped steps at the "
            "measured step time. These cases have no valid video and no quality metrics."))
    failed = [c for c in data.cases if not c.ok]
    if failed:
        listed = "; ".join(f"{c.label}: {c.row.get('status')}" + (f" in {c.row['failed_stage']}"
                           if c.row.get("failed_stage") else "") for c in failed)
        out.append(Banner(f"{len(failed)} case(s) did not finish ({listed}). Their memory reached is in the main "
                          "table; they have no timings."))
    machines = {(str(c.row.get("env.hostname")), str(c.row.get("env.gpu") or "no GPU")) for c in data.cases}
    if len(machines) > 1:
        listed = "; ".join(f"{host}: {gpu}" for host, gpu in sorted(machines))
        out.append(Banner(f"The cases were measured on {len(machines)} machines ({listed}); differences between "
                          "them include the machines'."))
    return out


def default_memory_case(data: ReportData) -> ReportCase:
    """The case with the highest NVML process peak; without NVML, the slowest finished case."""
    finished = [c for c in data.cases if c.ok] or data.cases
    with_peak = [c for c in finished if isinstance(c.row.get("peak_nvml_mib"), (int, float))]
    if with_peak:
        return max(with_peak, key=lambda c: c.row["peak_nvml_mib"])
    return max(finished, key=lambda c: c.row.get("total_ms") or 0.0)


def build_report(runs: list[str | Path], out: str | Path | None = None, memory_case: str | None = None,
                 title: str | None = None) -> ReportFiles:
    """Read the runs, write every table, plot and both report files into `out` (default RUN/report)."""
    data = load_report_data(list(runs))
    out = Path(out) if out is not None else data.runs[0] / "report"
    out.mkdir(parents=True, exist_ok=True)
    suites = ", ".join(dict.fromkeys(str(c.row.get("suite")) for c in data.cases))
    title = title or f"wanbench report: {suites}"
    files = ReportFiles(out=out, markdown=out / REPORT_MD, html=out / REPORT_HTML)

    tables = {t.name: t for t in (environment_table(data), summary_table(data), memory_latency_table(data),
                                  stages_table(data), quality_table(data), cost_table(data))}
    files.tables = tables
    for table in tables.values():
        path = out / f"{table.name}.csv"
        table.frame().to_csv(path, index=False)
        files.csvs.append(path)

    def figure(path: Path | None, caption: str, missing: str) -> list[Block]:
        if path is None:
            return [Paragraph(missing)]
        files.pngs.append(path)
        return [FigureBlock(path, caption)]

    def table(name: str) -> list[Block]:
        """The table, or the one sentence saying why it has no rows."""
        t = tables[name]
        return [TableBlock(t, f"{name}.csv")] if t.records else [Paragraph(t.empty)]

    chosen = data.case(memory_case) if memory_case is not None else default_memory_case(data)
    blocks: list[Block] = [Heading(title, 1), *banners(data)]
    blocks += [Heading("Environment"), *table("environment")]
    blocks += [Heading("Memory and latency per resolution x plan"), *table("summary"), *table("memory_latency")]
    blocks += [Heading("Stage breakdown"), *table("stages")]
    if tables["stages"].records:
        blocks += figure(plots.stage_breakdown(tables["stages"], out / "stages.png"),
                         "Median time of each stage per case; load (hatched) is once per process and not in the "
                         "total.", "")
    blocks += [Heading("Quality vs speed"), *table("quality")]
    if tables["quality"].records:
        blocks += figure(plots.quality_vs_speed(tables["quality"], out / "quality_vs_speed.png"),
                         "PSNR and SSIM against the reference vs median total time; the dashed line joins the "
                         "Pareto front.", "No quality-vs-speed plot: no case was compared with a reference.")
        blocks += figure(plots.psnr_per_frame(data, out / "psnr_per_frame.png"),
                         "Per-frame PSNR of the lossy cases (those below the 100 dB cap).",
                         "No per-frame PSNR plot: every compared case equals its reference.")
    blocks += [Heading("Memory over time")]
    no_samples = plots.missing_samples_note(data, chosen)
    if no_samples is None:
        files.memory_case = chosen.label
        blocks += [Paragraph(f"Case `{chosen.label}` (pick another with `wanbench report --memory-case CASE`): NVML "
                             "samples of this process's and the device's memory every ~10 ms during the last "
                             "measured repeat, stages shaded.")]
        blocks += figure(plots.memory_timeline(data, chosen, out / "memory_timeline.png"),
                         f"GPU memory over the last measured repeat of {chosen.label}.", "")
    else:
        blocks += [Paragraph(f"No GPU memory over time ({no_samples}).")]
    blocks += [Heading("Cost vs work"), *table("cost_vs_tokens")]
    if tables["cost_vs_tokens"].records:
        blocks += figure(plots.cost_vs_tokens(tables["cost_vs_tokens"], out / "cost_vs_tokens.png"),
                         "Median time and memory against the DiT token count, with the fitted growth.", "")

    files.markdown.write_text(render_markdown(blocks), encoding="utf-8")
    files.html.write_text(render_html(blocks, title), encoding="utf-8")
    return files


__all__ = ["ReportFiles", "build_report", "banners", "default_memory_case", "REPORT_MD", "REPORT_HTML"]
