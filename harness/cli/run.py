"""`wanbench run SUITE --out DIR`: run a suite's cases (resuming), write results.jsonl/.csv/.parquet."""

from __future__ import annotations

import argparse
import signal
import sys

from harness.cli.common import EXIT_STATUS_HELP, ExitCode, add_suite_arguments
from harness.jobs import DEFAULT_FACTORY
from harness.runner import raise_signal_interrupt, run_suite
from harness.shards import Shard
from harness.suite import load_suite


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the verb."""
    parser = sub.add_parser(
        "run", help="run a suite into an output folder (re-running resumes)",
        description="Run every case of SUITE, one worker process per process group, holding the output folder "
                    "for this run alone. Rows are kept the moment each case ends: after a crash, a full disk or "
                    "a signal, the same command resumes where it stopped. " + EXIT_STATUS_HELP,
    )
    add_suite_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder (created; one suite per folder, one run at a time)")
    parser.add_argument("--gpus", metavar="IDS|all",
                        help="run process groups side by side, each worker pinned to its GPU(s) through "
                             "CUDA_VISIBLE_DEVICES (e.g. --gpus 0,1,2,3 or --gpus all); a case that asks for N GPUs "
                             "gets N; one results.jsonl either way")
    parser.add_argument("--shard", metavar="I/N",
                        help="run only shard I of N of the process groups (a split stable across runs and machines, "
                             "for CI matrix jobs); `wanbench merge` joins the shard folders")
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local processes (default) or Ray tasks, each asking for its GPUs (pip install "
                             "wanbench[ray])")
    parser.add_argument("--address", metavar="auto|ray://HOST:PORT",
                        help="the Ray cluster of --executor ray (default: a local Ray started for this run)")
    parser.add_argument("--factory", default=DEFAULT_FACTORY, metavar="MODULE:ATTR",
                        help="the callable that loads the pipeline in each worker, `module:attr` or `file.py:attr` "
                             f"(default {DEFAULT_FACTORY}; for tests and other pipelines)")
    parser.set_defaults(verb="run")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the suite and print where the results are; SIGTERM stops it like Ctrl-C."""
    shard = Shard.parse(args.shard) if args.shard else None
    suite = load_suite(args.suite, args.overrides, args.preset, max_cases=args.max_cases)
    previous = signal.signal(signal.SIGTERM, raise_signal_interrupt)
    try:
        outcome = run_suite(suite, args.out, factory=args.factory, stream=sys.stderr,
                            command=getattr(args, "command_line", ""), gpus=args.gpus, shard=shard,
                            executor=args.executor, address=args.address)
    finally:
        signal.signal(signal.SIGTERM, previous)
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.statuses.items()))
    scope = f" (shard {shard})" if shard else ""
    print(f"{suite.name}{scope}: {outcome.cases} cases ({outcome.ran} run now, {outcome.skipped} already done): "
          f"{counts or 'none in this shard'}")
    print(f"results: {outcome.out / 'results.jsonl'}")
    if outcome.tables:
        print(f"tables:  {outcome.tables[0]}, {outcome.tables[1]}")
    return ExitCode.FAILED if outcome.statuses.get("error") else ExitCode.OK
