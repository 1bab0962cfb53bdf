"""`wanbench compare BASELINE CURRENT [CURRENT ...]`: the changes between two runs; exit 1 on a regression."""

from __future__ import annotations

import argparse
import csv

from harness.cli.common import ExitCode, check_output_file, file_error
from harness.compare import change_records, compare_runs, render_markdown, render_text, resolve_gates
from harness.stats import ALPHA, MIN_REPEATS


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the verb."""
    parser = sub.add_parser(
        "compare", help="compare a run with a baseline; exit 1 on a regression",
        description="Match the cases of CURRENT with those of BASELINE by their parameters and gate every metric: "
                    "worse by more than both the relative and the absolute threshold is a regression (with >= 5 "
                    "repeats on both sides a time change must also pass a one-sided Mann-Whitney U test). Exit "
                    "status: 0 no regression, 1 a regression (or an ok case now oom/error), 2 a configuration error "
                    "(including two runs with no case in common, unless --allow-empty).",
    )
    parser.add_argument("baseline", metavar="BASELINE", help="a run folder or a results .jsonl file")
    parser.add_argument("current", metavar="CURRENT", nargs="+",
                        help="a run folder or a results .jsonl file; several folders are the shards of one run "
                             "(wanbench run --shard), read as one")
    parser.add_argument(
        "--gate", dest="gates", action="append", default=[], metavar="METRIC=rel:R,abs:A",
        help="override one metric's thresholds (e.g. total_ms=rel:0.08,abs:500, psnr_db=abs:1) or drop it "
             "(stage_ms.postprocess=off); repeatable; wins over the suite's gates and the defaults",
    )
    parser.add_argument("--suite", help="take `gates:` from this suite (default: the current run's own suite file)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help=f"significance level of the test (default {ALPHA})")
    parser.add_argument("--min-repeats", type=int, default=MIN_REPEATS,
                        help=f"repeats needed on both sides before the test applies (default {MIN_REPEATS})")
    parser.add_argument("--all", action="store_true", help="list every compared metric, not only the changes")
    parser.add_argument("--allow-empty", action="store_true",
                        help="accept two runs with no case in common (otherwise an error: nothing was compared)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the comparison as markdown")
    parser.add_argument("--csv", metavar="FILE", help="also write every compared metric as CSV")
    parser.set_defaults(verb="compare")
    return parser


def run(args: argparse.Namespace) -> int:
    """Compare, print, write the optional files; 1 when something regressed."""
    markdown = check_output_file(args.markdown, "--markdown", "compare.md") if args.markdown else None
    csv_path = check_output_file(args.csv, "--csv", "compare.csv") if args.csv else None
    current = args.current[0] if len(args.current) == 1 else args.current
    gates, sources = resolve_gates(current, args.suite, args.gates)
    comparison = compare_runs(args.baseline, current, gates, sources, args.alpha, args.min_repeats,
                              allow_empty=args.allow_empty)
    print(render_text(comparison, everything=args.all))
    try:
        if markdown:
            markdown.write_text(render_markdown(comparison), encoding="utf-8")
        if csv_path:
            rows = change_records(comparison)
            with open(csv_path, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["case", "metric", "verdict"])
                writer.writeheader()
                writer.writerows(rows)
    except OSError as exc:
        raise file_error(exc, "cannot write the comparison") from exc
    return ExitCode.FAILED if comparison.failed else ExitCode.OK
