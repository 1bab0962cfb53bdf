"""`wanbench report RUN_DIR [RUN_DIR ...]`: report.md, report.html, PNG plots and CSV tables."""

from __future__ import annotations

import argparse

from harness.cli.common import check_output_folder, file_error


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the verb."""
    parser = sub.add_parser(
        "report", help="write report.md, a self-contained report.html, PNG plots and CSV tables from run folders",
        description="Build the report of one or more run folders (e.g. one per resolution): environment, "
                    "memory/latency per resolution x plan, stage breakdown, quality vs speed, memory over time, "
                    "cost vs tokens. Exit status 0, or 2 on a configuration error (no results, unknown case, an "
                    "--out that is a file).",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folder(s) written by `wanbench run`")
    parser.add_argument("--out", help="output folder (default: RUN_DIR/report of the first run)")
    parser.add_argument("--memory-case", metavar="CASE",
                        help="case shown in the memory-over-time plot (default: the highest NVML peak)")
    parser.add_argument("--title", help="report title (default: 'wanbench report: SUITE')")
    parser.set_defaults(verb="report")
    return parser


def run(args: argparse.Namespace) -> int:
    """Build the report and print where its files are."""
    from harness.report import build_report  # matplotlib/pandas load only when a report is asked for

    from harness.report.writers import text_table

    if args.out:
        check_output_folder(args.out, "--out")
    try:
        files = build_report(args.runs, args.out, args.memory_case, args.title)
    except OSError as exc:
        if exc.filename is None:
            raise
        raise file_error(exc, "cannot build the report") from exc
    print(text_table(files.tables["summary"]), end="\n\n")
    print(f"report: {files.markdown}")
    print(f"html:   {files.html}")
    print(f"plots:  {', '.join(p.name for p in files.pngs)}")
    print(f"tables: {', '.join(p.name for p in files.csvs)}")
    return 0
