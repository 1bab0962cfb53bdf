"""One writer per run folder: an exclusive lock held for the whole of `wanbench run`.

    with RunLock(folder, command="wanbench run smoke --out runs/smoke") as lock:
        if lock.took_over:             # a run before this one died without releasing the folder
            print(lock.took_over)      # one line naming that run
        ...                            # only this process appends to the folder now

- Exclusivity comes from `filelock` (flock(2) on `run.lock`): the kernel drops the lock the moment
  its process ends, however it ends (SIGKILL, a crash, a power cut), so a dead run never keeps a
  folder locked.
- Who holds it is recorded beside it in `run.holder.json` (pid, host, start time, command), written
  once the lock is held and removed on release. A second run is refused at once with
  `RunFolderBusy`, whose message names that holder.
- A record left behind (its run died without releasing) while the lock itself is free means the
  run is gone: the next run takes the folder over and says so in `took_over`.
- `holder(folder)` tells, without taking anything, who holds a folder now (None when free).

Other processes of the same run (workers) do not take the lock: the runner holds it for them.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from harness.atomic import write_atomic
from wan_runtime.errors import ConfigError

LOCK_FILE = "run.lock"
HOLDER_FILE = "run.holder.json"


@dataclass(frozen=True)
class Holder:
    """The process that holds (or last held) a run folder."""

    pid: int
    host: str
    started: str  # ISO 8601, UTC
    command: str

    def describe(self) -> str:
        """'pid 123 on host gpu1, started 2025-01-01T10:00:00+00:00: wanbench run smoke ...'."""
        command = f": {self.command}" if self.command else ""
        return f"pid {self.pid} on host {self.host}, started {self.started}{command}"

    @classmethod
    def current(cls, command: str = "") -> "Holder":
        """This process, now."""
        return cls(os.getpid(), socket.gethostname(), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   command or " ".join(sys.argv))


class RunFolderBusy(ConfigError):
    """Another live process holds the run folder."""

    def __init__(self, folder: Path, holder: Holder | None):
        who = holder.describe() if holder else "a process that has not recorded itself yet"
        super().__init__(f"run folder {folder} is in use by another run ({who}); "
                         "wait for it to end, or use another --out")
        self.folder = folder
        self.holder = holder


class RunLock:
    """The exclusive lock of one run folder (a context manager; see the module docstring)."""

    def __init__(self, folder: str | Path, command: str = ""):
        self.folder = Path(folder)
        self.command = command
        self.took_over: str | None = None  # set by acquire() when a dead run's record was found
        self._lock = FileLock(str(self.folder / LOCK_FILE), timeout=0)

    def acquire(self) -> "RunLock":
        """Take the lock now or raise RunFolderBusy naming the holder; never waits."""
        try:
            self._lock.acquire()
        except Timeout:
            raise RunFolderBusy(self.folder, _read_holder(self.folder)) from None
        try:
            left = _read_holder(self.folder)
            if left is not None:
                self.took_over = (f"took over run folder {self.folder}, left locked by a run that ended without "
                                  f"releasing it ({left.describe()})")
            _write_holder(self.folder, Holder.current(self.command))
        except BaseException:
            self._lock.release()
            raise
        return self

    def release(self) -> None:
        """Remove the holder record and drop the lock."""
        if not self._lock.is_locked:
            return
        try:
            (self.folder / HOLDER_FILE).unlink(missing_ok=True)
        finally:
            self._lock.release()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def holder(folder: str | Path) -> Holder | None:
    """Who holds `folder` now, or None when no live process does (takes nothing)."""
    folder = Path(folder)
    if not (folder / LOCK_FILE).exists():
        return None
    probe = FileLock(str(folder / LOCK_FILE), timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return _read_holder(folder)
    probe.release()
    return None


def _read_holder(folder: Path) -> Holder | None:
    """The recorded holder, or None when there is no readable record."""
    try:
        data = json.loads((folder / HOLDER_FILE).read_text(encoding="utf-8"))
        return Holder(int(data["pid"]), str(data["host"]), str(data["started"]), str(data.get("command", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_holder(folder: Path, who: Holder) -> None:
    """Record the holder atomically (a reader never sees half a record)."""
    write_atomic(folder / HOLDER_FILE, json.dumps(asdict(who)))
