"""`wanbench VERB ...`: the dispatcher; each verb lives in its own module."""

from __future__ import annotations

import argparse
import sys

from harness.cli import compare as compare_verb
from harness.cli import list as list_verb
from harness.cli import report as report_verb
from harness.cli import run as run_verb
from harness.cli import serve as serve_verb
from wan_runtime.errors import WanError

VERBS = {"list": list_verb, "run": run_verb, "report": report_verb, "compare": compare_verb, "serve": serve_verb}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per verb."""
    parser = argparse.ArgumentParser(
        prog="wanbench",
        description="Benchmark Wan2.2-I2V: declarative suites, isolated measured runs, results you can compare.",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, module in VERBS.items():
        module.add_parser(sub)
    return parser


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """SUITE, --preset and --set, shared by the verbs that read a suite."""
    parser.add_argument("suite", metavar="SUITE", help="a suite name from suites/ (e.g. smoke) or a YAML file")
    parser.add_argument("--preset", help="override model.preset (e.g. tiny, to run any suite at tiny scale)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override the suite: a case parameter (steps=2, size=160*96: fixed for every case) or a dotted "
             "key of the document (repeats=1, timing=sampled, sweep.steps=[2,4]); repeatable",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of `wanbench`; configuration errors print one message and exit 2."""
    args = build_parser().parse_args(argv)
    try:
        return VERBS[args.verb].run(args)
    except WanError as exc:
        print(f"wanbench {args.verb}: {exc}", file=sys.stderr)
        return 2
