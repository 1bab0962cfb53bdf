"""`wanbench merge DIR... --out DIR`: the shard folders of one run written as one run folder."""

from __future__ import annotations

import argparse

from harness.cli.common import ExitCode, check_output_folder


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the verb."""
    parser = sub.add_parser(
        "merge", help="write the shard folders of one run (wanbench run --shard) as one run folder",
        description="Join the folders of `wanbench run SUITE --shard I/N` into one run folder: every row, the "
                    "timeline, the frames and the logs; quality metrics of cases whose reference ran in another "
                    "shard are computed here. A case with rows in two folders, folders of different suites or "
                    "settings, a missing shard (unless --allow-partial) or an --out holding results is an error "
                    "naming it. Exit status 0, 2 on such an error, 3 when a folder is in use by a run.",
    )
    parser.add_argument("runs", nargs="+", metavar="DIR", help="the shard folders (e.g. runs/shard-*)")
    parser.add_argument("--out", required=True, help="the merged run folder (new or empty)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="merge even when some shards of the split are missing (the merged folder can be "
                             "completed later with `wanbench run SUITE --out DIR`)")
    parser.set_defaults(verb="merge")
    return parser


def run(args: argparse.Namespace) -> int:
    """Merge and say what was written."""
    from harness.merge import merge_runs

    out = check_output_folder(args.out, "--out")
    outcome = merge_runs(args.runs, out, allow_partial=args.allow_partial, command=getattr(args, "command_line", ""))
    for note in outcome.notes:
        print(f"note: {note}")
    missing = f" (shards {', '.join(map(str, outcome.missing_shards))} missing)" if outcome.missing_shards else ""
    print(f"merged {len(args.runs)} folders{missing}: {outcome.cases} cases, {outcome.rows} rows")
    print(f"results: {outcome.out / 'results.jsonl'}")
    return ExitCode.OK
