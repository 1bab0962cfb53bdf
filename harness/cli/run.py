"""`wanbench run SUITE --out DIR`: run a suite's cases (resuming), write results.jsonl/.csv/.parquet."""

from __future__ import annotations

import argparse
import sys

from harness.runner import run_suite
from harness.suite import load_suite


def add_parser(sub) -> None:
    """Register the verb."""
    from harness.cli.main import add_suite_arguments

    parser = sub.add_parser(
        "run", help="run a suite into an output folder (re-running resumes)",
        description="Run every case of SUITE, one worker process per process group. Exit status: 0 when every "
                    "case is ok or oom (an out-of-memory is a result), 1 when a case ended in error, 2 on a "
                    "configuration error.",
    )
    add_suite_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (created; one suite per folder)")
    parser.set_defaults(verb="run")


def run(args: argparse.Namespace) -> int:
    """Run the suite and print where the results are."""
    suite = load_suite(args.suite, args.overrides, args.preset)
    outcome = run_suite(suite, args.out, stream=sys.stderr)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.statuses.items()))
    print(f"{suite.name}: {len(suite.cases)} cases ({outcome.ran} run now, {outcome.skipped} already done): {counts}")
    print(f"results: {outcome.out / 'results.jsonl'}")
    if outcome.tables:
        print(f"tables:  {outcome.tables[0]}, {outcome.tables[1]}")
    return 1 if outcome.statuses.get("error") else 0
