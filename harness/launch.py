"""How one process group's worker is started: the launcher seam between the runner and a worker.

    handle = LocalLauncher().start(WorkerSpec(job, log, python, gpus=("2",), ranks=1))
    for event in handle.events():   # JSON events of the worker (rank 0 only), until it ends
        ...
    exit = handle.wait()            # WorkerExit: the exit status and how it ended, in words
    handle.kill()                   # stop it (and every rank) now; safe to call at any time

Launchers (the runner's bookkeeping of rows, resume, dead-worker rows and the lock is the same for all):
- LocalLauncher: a plain subprocess (`python -m harness.worker JOB SOCKET`) or, for a case that
  asks for N ranks, `torchrun --standalone --nproc-per-node N -m harness.worker JOB SOCKET`; pinned
  to given GPUs through CUDA_VISIBLE_DEVICES when `gpus` is set.
- harness.ray_executor.RayLauncher: the same LocalLauncher inside a Ray task that asks for the
  group's GPUs; events stream back to the driver.

The event channel is a Unix socket the launcher listens on, passed as a path (torchrun does not hand
inherited file descriptors to its ranks, a path it does): rank 0 connects and writes one JSON object
per line; the other ranks do not connect. A worker that cannot connect finds its runner gone and exits.
A worker started by a launcher dies with it: a plain worker asks the kernel for that itself
(harness.worker), torchrun is asked for it here, and its ranks ask it of torchrun.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from harness.jobs import RUNNER_PID_ENV
from wan_runtime.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
ACCEPT_POLL_S = 0.2  # how often a launcher waiting for its worker to connect checks that it still runs
EXIT_GRACE_S = 30.0  # after rank 0 closed its events, how long the job may take to exit before it is killed


@dataclass(frozen=True)
class WorkerSpec:
    """What to start: the job file, the log every rank writes to, and where it runs."""

    job: Path
    log: Path
    python: str = sys.executable
    gpus: tuple[str, ...] | None = None  # CUDA_VISIBLE_DEVICES of the worker; None: the launcher's own
    ranks: int = 1  # >1: that many ranks under torchrun


@dataclass(frozen=True)
class WorkerExit:
    """How a worker ended: its exit status (negative: killed by that signal; None: unknown) in words."""

    code: int | None
    how: str

    @classmethod
    def of(cls, code: int) -> "WorkerExit":
        """The exit of a process from its return code."""
        return cls(code, f"killed by signal {-code}" if code < 0 else f"exit code {code}")


class WorkerHandle(ABC):
    """A started worker: its events, its exit, and a way to stop it."""

    spec: WorkerSpec  # what was started (with the GPUs it was given)
    label: str = ""  # where it runs, for the progress view ("gpu 0", "gpus 2,3", "ray node1 gpu 3")

    @abstractmethod
    def events(self) -> Iterator[dict]:
        """The worker's events in order, until rank 0 closes the channel or the worker ends."""

    @abstractmethod
    def wait(self) -> WorkerExit:
        """Wait for the worker (every rank) to end; how it ended."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the worker and every rank now (idempotent)."""


class Launcher(ABC):
    """Starts workers where they fit; the runner asks before it starts one and tells when one ended."""

    capacity: int = 1  # workers that may run at once (the progress view has one line per place)

    @abstractmethod
    def check(self, ranks: int, what: str) -> None:
        """Raise ConfigError when a worker of `ranks` ranks can never be placed (`what` names its cases)."""

    @abstractmethod
    def can_start(self, ranks: int) -> bool:
        """True when a worker of `ranks` ranks can start now."""

    @abstractmethod
    def start(self, spec: WorkerSpec) -> WorkerHandle:
        """Start the worker of `spec`."""

    @abstractmethod
    def release(self, spec: WorkerSpec) -> None:
        """The worker started from `spec` has ended."""

    def close(self) -> None:
        """The run is over (a launcher holding a connection lets it go)."""


# ---------------------------------------------------------------- the event channel
class EventServer:
    """A Unix socket in a private temporary folder; the worker's rank 0 connects to `path`."""

    def __init__(self) -> None:
        self._dir = tempfile.mkdtemp(prefix="wanbench-")  # short: a socket path has ~100 bytes at most
        self.path = os.path.join(self._dir, "events.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(1)

    def accept(self, alive) -> socket.socket | None:
        """Wait for the worker to connect while `alive()`; None when it ended without connecting."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            while True:
                if selector.select(ACCEPT_POLL_S):
                    conn, _ = self._sock.accept()
                    return conn
                if not alive():
                    return None

    def close(self) -> None:
        """Stop listening and remove the socket's folder."""
        self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)


def read_events(conn: socket.socket) -> Iterator[dict]:
    """JSON objects, one per line, until the peer closes; a line torn by a death is skipped."""
    with conn, conn.makefile("r", encoding="utf-8") as stream:
        for line in stream:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event


# ---------------------------------------------------------------- local processes
def worker_env(gpus: tuple[str, ...] | None) -> dict[str, str]:
    """The environment of a worker: unbuffered output, this project importable, its GPUs, and this
    process's pid (the child checks its parent is still there: it may have died while the child started)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **{RUNNER_PID_ENV: str(os.getpid())})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    return env


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent dies (Linux; elsewhere a no-op)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def worker_command(spec: WorkerSpec, events_path: str) -> list[str]:
    """The command line of a worker: a plain process, or torchrun with `spec.ranks` ranks."""
    worker = ["-m", "harness.worker", str(spec.job), events_path]
    if spec.ranks == 1:
        return [spec.python, *worker]
    # torchrun through this module (see main); --standalone: a private rendezvous on a free port, so
    # several jobs share a host
    return [spec.python, "-m", "harness.launch", "--standalone", "--nproc-per-node", str(spec.ranks),
            "--max-restarts", "0", *worker]


class LocalWorker(WorkerHandle):
    """A worker process (or a torchrun job) on this machine."""

    def __init__(self, spec: WorkerSpec, label: str = ""):
        self.spec = spec
        self.label = label
        self._server = EventServer()
        torchrun = spec.ranks > 1
        try:
            with open(spec.log, "ab") as log:
                self._proc = subprocess.Popen(
                    worker_command(spec, self._server.path), stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, env=worker_env(spec.gpus),
                    start_new_session=torchrun,  # a terminal's Ctrl-C is the runner's to handle, not torchrun's
                )
        except BaseException:
            self._server.close()
            raise

    def events(self) -> Iterator[dict]:
        try:
            conn = self._server.accept(lambda: self._proc.poll() is None)
            if conn is not None:
                yield from read_events(conn)
        finally:
            self._server.close()

    def wait(self) -> WorkerExit:
        try:
            code = self._proc.wait(EXIT_GRACE_S)
        except subprocess.TimeoutExpired:  # rank 0 is done but a rank hangs: stop them all
            self.kill()
            code = self._proc.wait()
        return WorkerExit.of(code)

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()  # torchrun's ranks die with it (they ask for that, see harness.worker)
        self._proc.wait()
        self._server.close()


class LocalLauncher(Launcher):
    """Workers as processes of this machine, at most one per free device (see the module docstring).

    `gpus` None: one worker at a time, not pinned (it sees what the runner sees). A list: one worker per
    free entry at once, each pinned to the GPUs it was given; on a CPU suite the entries only count
    workers (CUDA_VISIBLE_DEVICES is set but nothing uses it).
    """

    def __init__(self, gpus: list[str] | None = None, visible: int | None = None):
        self.gpus = list(gpus) if gpus else None
        self.visible = visible  # CUDA devices an unpinned worker sees (None: a CPU suite, ranks are processes)
        self._free = list(self.gpus or ())
        self._busy = False

    @property
    def capacity(self) -> int:
        """How many GPUs (or worker places) the launcher has."""
        return len(self.gpus) if self.gpus else 1

    def check(self, ranks: int, what: str) -> None:
        """Refuse, before anything starts, a group whose ranks can never be placed."""
        if self.gpus and ranks > len(self.gpus):
            raise ConfigError(f"{what} runs on {ranks} GPUs but --gpus gives {len(self.gpus)} "
                              f"({','.join(self.gpus)}); give at least {ranks} or leave its cases out")
        if not self.gpus and self.visible is not None and ranks > self.visible:
            raise ConfigError(f"{what} runs on {ranks} GPUs but this machine has {self.visible}; run it on a machine "
                              "with more, or leave its cases out")

    def can_start(self, ranks: int) -> bool:
        """True when a worker of `ranks` ranks fits now."""
        return len(self._free) >= ranks if self.gpus else not self._busy

    def start(self, spec: WorkerSpec) -> LocalWorker:
        if self.gpus:
            taken = tuple(self._free[: spec.ranks])
            del self._free[: spec.ranks]
            spec = dataclasses.replace(spec, gpus=taken)
        self._busy = True
        try:
            return LocalWorker(spec, _gpu_label(spec.gpus))
        except BaseException:
            self.release(spec)
            raise

    def release(self, spec: WorkerSpec) -> None:
        """Its worker ended: its GPUs are free again."""
        self._busy = False
        if self.gpus and spec.gpus:
            self._free = [g for g in self.gpus if g in self._free or g in spec.gpus]


def _gpu_label(gpus: tuple[str, ...] | None) -> str:
    if not gpus:
        return ""
    return f"gpu {gpus[0]}" if len(gpus) == 1 else f"gpus {','.join(gpus)}"


def parse_gpus(text: str, visible: int | None) -> list[str]:
    """`--gpus 0,1,3` or `--gpus all` (needs `visible` CUDA devices) -> the device ids, in order, unique."""
    if text.strip() == "all":
        if not visible:
            raise ConfigError("--gpus all: this machine has no CUDA device; give a list (e.g. --gpus 0,1) to run "
                              "workers side by side on a CPU suite")
        return [str(i) for i in range(visible)]
    ids = [part.strip() for part in text.split(",")]
    if not ids or not all(i.isdigit() for i in ids):
        raise ConfigError(f"--gpus {text!r}: give device indices separated by commas (e.g. --gpus 0,1,2,3) or all")
    if len(set(ids)) != len(ids):
        raise ConfigError(f"--gpus {text!r} names a device twice; each worker needs GPUs of its own")
    if visible is not None and visible > 0 and max(map(int, ids)) >= visible:
        raise ConfigError(f"--gpus {text!r}: this machine has {visible} CUDA device(s) (0..{visible - 1})")
    parent = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible and len(parent) >= visible:  # indices count within what this process sees, as torch's do
        return [parent[int(i)] for i in ids]
    return ids


def main(argv: list[str] | None = None) -> None:
    """`python -m harness.launch TORCHRUN_ARGS...`: torchrun that dies with the runner that started it."""
    die_with_parent()
    runner = os.environ.pop(RUNNER_PID_ENV, None)  # the ranks' parent is torchrun, not the runner
    if runner and os.getppid() != int(runner):  # the runner died while this process started
        sys.exit(1)
    from torch.distributed.run import main as torchrun

    torchrun(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()


__all__ = ["EventServer", "Launcher", "LocalLauncher", "LocalWorker", "WorkerExit", "WorkerHandle", "WorkerSpec",
           "die_with_parent", "parse_gpus", "read_events", "worker_command", "worker_env"]
