"""`wanbench merge`: shard folders of one run (harness.shards) written as one run folder.

    merge_runs([shard_1, shard_2, ...], out) -> MergeOutcome

The result is a run folder like any other: run.json (the suite, its fingerprint, the folders it came
from), results.jsonl (every row of every shard, shard by shard), timeline.jsonl, frames/ and each
shard's logs/ under logs/<shard folder>/, then results.csv/.parquet. Cases whose reference ran in
another shard get their quality metrics here (the frames of both are in the merged folder), as the
runner's end-of-run pass would have given them. A case with rows in two folders, folders of
different suites or settings, a missing shard (unless allowed) or an `out` that already holds results
is an error naming the problem; nothing is written then. A merged folder of every shard can be resumed
with `wanbench run` like a folder of the whole suite.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from harness.atomic import write_atomic
from harness.jobs import now_iso
from harness.results import MANIFEST_FILE, RESULTS_FILE, TIMELINE_FILE, read_timeline, write_tables
from harness.runlock import RunFolderBusy, RunLock, holder
from harness.shards import RunFolders, read_run
from wan_runtime.errors import ConfigError


@dataclass
class MergeOutcome:
    """What a merge wrote."""

    out: Path
    rows: int
    cases: int
    missing_shards: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def merge_runs(inputs: Sequence[str | Path], out: str | Path, allow_partial: bool = False,
               command: str = "") -> MergeOutcome:
    """Write the run held by the shard folders `inputs` into the folder `out` (see the module docstring)."""
    folders = [Path(p) for p in inputs]
    for folder in folders:
        if not folder.is_dir():
            raise ConfigError(f"{folder} is not a run folder; give the folders written by `wanbench run --shard`")
        busy = holder(folder)
        if busy is not None:
            raise RunFolderBusy(folder, busy)
    run = read_run(folders)
    missing = run.missing_shards()
    if missing and not allow_partial:
        count = next(f.shard.count for f in run.folders if f.shard is not None)
        raise ConfigError(f"shard(s) {', '.join(map(str, missing))} of {count} are missing from the merge "
                          f"({run.describe()}); give every shard's folder, or --allow-partial to merge what is here")
    out = Path(out).resolve()
    if out in [f.path for f in run.folders]:
        raise ConfigError(f"--out {out} is one of the folders being merged; merge into a new folder")
    if (out / RESULTS_FILE).exists() and (out / RESULTS_FILE).stat().st_size:
        raise ConfigError(f"--out {out} already holds results; merge into a new (or empty) folder")
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out, command):
        outcome = MergeOutcome(out, len(run.rows), len(run.latest()), missing)
        write_atomic(out / RESULTS_FILE, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in run.rows))
        write_atomic(out / TIMELINE_FILE, "".join(json.dumps(record, ensure_ascii=False) + "\n" for folder in run.folders
                                                  for record in read_timeline(folder.path / TIMELINE_FILE)))
        for folder in run.folders:
            _copy_tree(folder.path / "frames", out / "frames", skip=".tmp.npy")
            _copy_tree(folder.path / "logs", out / "logs" / folder.path.name)
        _write_manifest(out, run, missing)
        outcome.notes += _quality_across_shards(run, out)
        write_tables(out)
    return outcome


def _copy_tree(source: Path, target: Path, skip: str | None = None) -> None:
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        if path.is_file() and not (skip and path.name.endswith(skip)):
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)


def _write_manifest(out: Path, run: RunFolders, missing: list[int]) -> None:
    first = run.folders[0].manifest or {}
    cases = [case for f in run.folders for case in (f.manifest or {}).get("cases", [])]
    data: dict[str, Any] = {key: first.get(key) for key in ("suite", "fingerprint", "suite_file", "overrides")}
    data.update({"created": now_iso(), "shard": None, "merged_from": [str(f.path) for f in run.folders],
                 "missing_shards": missing, "cases": cases})
    write_atomic(out / MANIFEST_FILE, json.dumps(data, indent=1))


def _quality_across_shards(run: RunFolders, out: Path) -> list[str]:
    """Metrics of cases whose reference ran in another shard: the runner's end-of-run pass, on the merged folder."""
    from harness.registry import available
    from harness.runner import fill_pending_quality
    from harness.suite import load_suite

    manifest = run.folders[0].manifest or {}
    candidates = [manifest.get("suite_file"), available().get(manifest.get("suite"))]
    for path in candidates:
        if path and Path(path).is_file():
            suite = load_suite(path, list(manifest.get("overrides") or []))
            if suite.fingerprint() == manifest.get("fingerprint"):
                fill_pending_quality(suite, out)
                return []
    return [f"quality of cases compared with a reference in another shard not computed: the definition of suite "
            f"{manifest.get('suite')!r} with fingerprint {manifest.get('fingerprint')} was not found here"]


__all__ = ["MergeOutcome", "merge_runs"]
