"""Shards: a suite's process groups split over N machines (CI matrix jobs), and their folders read back as one run.

    wanbench run regression --shard 2/4 --out runs/shard-2     # one of four matrix jobs
    wanbench merge runs/shard-* --out runs/merged              # one folder again
    wanbench report runs/shard-*   /   wanbench compare BASE runs/shard-*

The split is by process group (a group shares a loaded model, so it never spans machines) and depends
only on the group keys: the groups are ranked by the SHA-256 of their key and dealt round-robin, so
every machine computes the same split from the same suite, whatever the order or the time, and the
shards differ by at most one group.

Folders of one run (`RunFolders`): each holds run.json naming the same suite and fingerprint, and
each case's rows come from one folder only: a case in two folders is an error naming it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, TypeVar

from harness.results import MANIFEST_FILE, RESULTS_FILE, latest_rows, read_manifest, read_rows, results_path
from wan_runtime.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (1-based, as a CI matrix counts: 1/4 ... 4/4)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """`i/N` with 1 <= i <= N, or a one-line ConfigError."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise ConfigError(f"--shard {text!r}: give i/N with 1 <= i <= N (e.g. --shard 1/4 ... --shard 4/4)")
        return cls(int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, groups: Sequence[tuple[str, T]]) -> list[tuple[str, T]]:
        """The groups of this shard, in their given order (see the module docstring)."""
        ranked = sorted((group_hash(key), key) for key, _ in groups)
        mine = {key for position, (_, key) in enumerate(ranked) if position % self.count == self.index - 1}
        return [(key, item) for key, item in groups if key in mine]


def group_hash(key: str) -> str:
    """The stable hash of a process group's key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- several folders as one run
@dataclass(frozen=True)
class RunFolder:
    """One folder of a run: its path, its run.json (None for a bare results file) and its rows."""

    path: Path
    manifest: dict[str, Any] | None
    rows: list[dict[str, Any]]

    @property
    def shard(self) -> Shard | None:
        """The shard this folder ran (None: the whole suite)."""
        text = (self.manifest or {}).get("shard")
        return Shard.parse(text) if text else None


@dataclass(frozen=True)
class RunFolders:
    """Folders holding one run between them (shards, or a single folder)."""

    folders: tuple[RunFolder, ...]

    @property
    def rows(self) -> list[dict[str, Any]]:
        """Every row of every folder (each folder's in its order, the folders in the order given)."""
        return [row for folder in self.folders for row in folder.rows]

    def latest(self) -> list[dict[str, Any]]:
        """The latest row of each case."""
        return latest_rows(self.rows)

    def origin(self) -> dict[str, Path]:
        """The folder each case's rows come from."""
        return {row["case_id"]: folder.path for folder in self.folders for row in folder.rows}

    def describe(self) -> str:
        """The folders' paths joined for messages."""
        return " + ".join(str(f.path) for f in self.folders)

    def missing_shards(self) -> list[int]:
        """Shards of an i/N split that no folder holds (empty when unsharded or complete)."""
        shards = [f.shard for f in self.folders if f.shard is not None]
        if not shards:
            return []
        return sorted(set(range(1, shards[0].count + 1)) - {s.index for s in shards})


def read_folder(run: str | Path) -> RunFolder:
    """A run folder (or a results .jsonl file) with its manifest and rows."""
    path = results_path(run)
    manifest_path = path.parent / MANIFEST_FILE
    manifest = read_manifest(manifest_path)[0] if Path(run).is_dir() and manifest_path.is_file() else None
    if not path.is_file() and not (manifest and manifest.get("shard")):  # a shard may hold no group at all
        raise ConfigError(f"no results at {path}: give a run folder (holding {RESULTS_FILE}) or a results .jsonl file")
    return RunFolder(path.parent.resolve() if Path(run).is_dir() else path.resolve(), manifest, read_rows(path))


def read_run(runs: Sequence[str | Path]) -> RunFolders:
    """Folders of one run read together; a ConfigError names what does not fit (see the module docstring)."""
    if not runs:
        raise ConfigError("give at least one run folder (a folder holding results.jsonl)")
    folders = [read_folder(run) for run in runs]
    if len(folders) == 1:
        return RunFolders(tuple(folders))
    paths = [f.path for f in folders]
    for path in paths:
        if paths.count(path) > 1:
            raise ConfigError(f"run folder {path} is given twice")
    first = folders[0]
    for folder in folders:
        if folder.manifest is None:
            raise ConfigError(f"{folder.path} has no readable {MANIFEST_FILE}: several folders are read as one run "
                              "only when each names its suite (give run folders written by `wanbench run`)")
        for key in ("suite", "fingerprint"):
            if folder.manifest.get(key) != first.manifest.get(key):
                raise ConfigError(
                    f"{folder.path} holds {key} {folder.manifest.get(key)!r} but {first.path} holds "
                    f"{first.manifest.get(key)!r}: folders read as one run must be shards of one suite definition")
        shard = folder.shard
        if shard is not None and first.shard is not None and shard.count != first.shard.count:
            raise ConfigError(f"{folder.path} is shard {shard} but {first.path} is shard {first.shard}: "
                              "shards of one run split the suite the same way")
    seen: dict[str, Path] = {}
    for folder in folders:
        for case_id in dict.fromkeys(row["case_id"] for row in folder.rows):
            if case_id in seen:
                raise ConfigError(f"case {case_id!r} has rows in both {seen[case_id]} and {folder.path}: each case "
                                  "of a run comes from one folder; drop one of them")
            seen[case_id] = folder.path
    return RunFolders(tuple(folders))


__all__ = ["RunFolder", "RunFolders", "Shard", "group_hash", "read_folder", "read_run"]
