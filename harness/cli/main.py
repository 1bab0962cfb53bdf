"""`wanbench VERB ...`: the dispatcher; each verb lives in its own module, what they share in common.py."""

from __future__ import annotations

import argparse
import shlex
import sys
import traceback
from pathlib import Path

from harness.cli import compare as compare_verb
from harness.cli import list as list_verb
from harness.cli import merge as merge_verb
from harness.cli import report as report_verb
from harness.cli import run as run_verb
from harness.cli import serve as serve_verb
from harness.cli.common import ExitCode, add_debug_argument
from harness.results import NoSpaceLeft
from harness.runlock import RunFolderBusy
from harness.runner import RunInterrupted
from wan_runtime.errors import WanError, first_line

VERBS = {"list": list_verb, "run": run_verb, "report": report_verb, "compare": compare_verb, "serve": serve_verb,
         "merge": merge_verb}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per verb."""
    parser = argparse.ArgumentParser(
        prog="wanbench",
        description="Benchmark Wan2.2-I2V: declarative suites, isolated measured runs, results you can compare.",
    )
    add_debug_argument(parser, top_level=True)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERBS.values():
        add_debug_argument(module.add_parser(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `wanbench`: every failure is one line on stderr and an exit status (ExitCode)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = "wanbench " + shlex.join(argv)  # who holds a run folder, in the lock's record

    def fail(message: str, code: int) -> int:
        if args.debug:
            traceback.print_exc()
        print(f"wanbench {args.verb}: {message}", file=sys.stderr)
        return code

    try:
        return VERBS[args.verb].run(args)
    except RunInterrupted as exc:
        return fail(str(exc), 128 + exc.signum)
    except RunFolderBusy as exc:
        return fail(str(exc), ExitCode.BUSY)
    except NoSpaceLeft as exc:
        return fail(str(exc), ExitCode.NO_SPACE)
    except WanError as exc:
        return fail(str(exc), ExitCode.CONFIG)
    except KeyboardInterrupt:
        return fail("interrupted", ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: say what and where in one line, the traceback on request
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno}"
        return fail(f"unexpected error: {type(exc).__name__}: {first_line(exc)} (at {where}); this is a bug in wanbench: "
                    "rerun with --debug for the traceback and report it", ExitCode.INTERNAL)
