"""`wanbench list SUITE`: print the expanded cases of a suite without running anything."""

from __future__ import annotations

import argparse

from harness.cli.common import add_suite_arguments
from harness.suite import Suite, load_suite


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the verb."""
    parser = sub.add_parser("list", help="print a suite's expanded cases (runs nothing)")
    add_suite_arguments(parser)
    parser.set_defaults(verb="list")
    return parser


def render(suite: Suite) -> str:
    """A suite's header and its cases as a table, in the order they would run."""
    spec = suite.spec
    groups = suite.groups()
    lines = [
        f"suite {suite.name} ({suite.path}): preset {spec.model.preset}, weights {spec.model.weights}, "
        f"device {spec.device}, timing {spec.timing}, {spec.repeats} repeats + {spec.warmup} warmup",
        f"{len(suite.cases)} cases in {len(groups)} process group(s)" + (f"; overrides: {', '.join(suite.overrides)}"
                                                                         if suite.overrides else ""),
    ]
    rows = [("#", "case", "group", "reference")]
    n = 0
    for group, cases in groups:
        for case in cases:
            n += 1
            ref = "(itself)" if case.is_reference else (case.reference_id or "-")
            rows.append((str(n), case.case_id, group, ref))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Print the cases."""
    print(render(load_suite(args.suite, args.overrides, args.preset, max_cases=args.max_cases)))
    return 0
