"""What the `wanbench` verbs share: the suite arguments, checks of output paths, and the exit codes."""

from __future__ import annotations

import argparse
from enum import IntEnum
from pathlib import Path

from harness.suite import DEFAULT_MAX_CASES
from wan_runtime.errors import ConfigError


class ExitCode(IntEnum):
    """Exit status of `wanbench` (a signal ends a run with 128 + its number: 130 Ctrl-C, 143 SIGTERM)."""

    OK = 0
    FAILED = 1  # run: a case ended in error; compare: a regression
    CONFIG = 2  # bad input or arguments: one line names the problem and the fix
    BUSY = 3  # run: the run folder is in use by another run (named in the message)
    NO_SPACE = 4  # run: the disk filled up; rows written before are kept, rerun after freeing space
    INTERNAL = 5  # an unexpected error (a bug): one line; --debug prints the traceback
    INTERRUPTED = 130  # Ctrl-C (SIGINT); SIGTERM gives 143


EXIT_STATUS_HELP = (
    "Exit status: 0 every case ok or oom (an out-of-memory is a result); 1 a case ended in error; 2 a "
    "configuration error; 3 the run folder is in use by another run; 4 no space left on the disk (rows written "
    "before are kept: free space and rerun); 5 an unexpected error (a bug: --debug shows the traceback); 130 "
    "interrupted by Ctrl-C, 143 by SIGTERM (finished cases are kept: rerun the same command to resume)."
)


def add_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """SUITE, --preset, --set and --max-cases, shared by the verbs that read a suite."""
    parser.add_argument("suite", metavar="SUITE", help="a suite name from suites/ (e.g. smoke) or a YAML file")
    parser.add_argument("--preset", help="override model.preset (e.g. tiny, to run any suite at tiny scale)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override the suite: a case parameter (steps=2, size=160*96: fixed for every case) or a dotted "
             "key of the document (repeats=1, timing=sampled, sweep.steps=[2,4]); repeatable",
    )
    parser.add_argument(
        "--max-cases", type=int, default=DEFAULT_MAX_CASES, metavar="N",
        help=f"refuse a suite that expands to more than N cases (default {DEFAULT_MAX_CASES}); the count is "
             "checked before any case is built",
    )


def add_debug_argument(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """--debug: print the traceback of a failure (accepted before or after the verb)."""
    parser.add_argument("--debug", action="store_true", default=False if top_level else argparse.SUPPRESS,
                        help="on a failure, print the Python traceback too")


def check_output_file(path: str, option: str, example: str) -> Path:
    """A path a verb will write a file to: not a folder, inside an existing folder."""
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; give a file path (e.g. {target / example})")
    parent = target.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: folder {parent} does not exist; create it or choose another path")
    return target


def check_output_folder(path: str, option: str) -> Path:
    """A path a verb will create a folder at (or fill): not a file, nor under one."""
    target = Path(path)
    for candidate in (target, *target.parents):
        if candidate.exists():
            if not candidate.is_dir():
                what = "is a file" if candidate == target else f"lies under {candidate}, which is a file"
                raise ConfigError(f"{option} {path}: {what}; give a folder")
            break
    return target


def file_error(exc: OSError, context: str) -> ConfigError:
    """A one-line error for a file a verb could not read or write (`exc` names it)."""
    return ConfigError(f"{context}: {exc.filename}: {exc.strerror or exc}")
