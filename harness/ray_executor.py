"""`--executor ray`: each process group's worker runs inside a Ray task that asks for the group's GPUs.

    RayLauncher(device, address)   # a Launcher (harness.launch): the runner keeps its bookkeeping

Ray places the task (`num_gpus` = the group's ranks on a CUDA suite; Ray sets CUDA_VISIBLE_DEVICES)
and the task runs the same local launcher there: the plain worker process or torchrun, in a scratch
folder of that node. What the worker produces comes back to the driver as the task's streamed
results: its events, the frames it saved (for quality metrics; the driver computes those whose
reference ran elsewhere at the end of the run) and its log. The driver alone writes the run folder.

A lost task (its Ray worker killed, its node gone) ends the stream with a Ray error: the runner turns
the case it was running into an error row and gives the rest of the group to a fresh task, and a
rerun resumes (tasks are never retried by Ray: a retry would replay rows). Some Ray releases leave the
stream of a killed task open instead (ray-project/ray#62537: the end-of-stream marker skipped), so the
task also sends a heartbeat every HEARTBEAT_S while its worker is quiet, and a stream silent for
SILENCE_S after its first event counts as lost the same way (before it, the task may be queued for
resources as long as Ray needs). Ray is optional (`pip install wanbench[ray]`); without it
`--executor ray` is a one-line error.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from harness.atomic import write_atomic
from harness.jobs import WorkerJob
from harness.launch import REPO_ROOT, Launcher, LocalWorker, WorkerExit, WorkerHandle, WorkerSpec
from wan_runtime.errors import ConfigError, first_line

LOG_TAIL_BYTES = 64 * 1024  # the end of a worker's log shipped back to the driver
HEARTBEAT_S = 5.0  # a task says it is alive this often while its worker is quiet
SILENCE_S = 60.0  # a stream silent this long is a lost task (twelve missed heartbeats)


def require_ray():
    """The ray module, or a one-line ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray, which is not installed: pip install 'wanbench[ray]' "
                          "(or pip install 'ray>=2.9')") from None
    return ray


class RayLauncher(Launcher):
    """Starts each worker as a Ray task; Ray queues what does not fit yet (see the module docstring)."""

    def __init__(self, device: str, address: str | None = None):
        ray = self.ray = require_ray()
        self.cuda = device.startswith("cuda")
        self._started = False
        self._count = 0
        if not ray.is_initialized():
            try:
                if address is None:  # a local Ray for this run: its workers import this checkout
                    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH"))
                                                         if p)}
                    ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                             runtime_env={"env_vars": env})
                else:
                    ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError, OSError) as exc:
                # OSError: a local Ray whose own programs (gcs_server, raylet) cannot be started
                why = f"({type(exc).__name__}: {first_line(exc)})"
                if address:
                    raise ConfigError(f"--address {address}: Ray did not start {why}; check the address "
                                      "(auto, or ray://HOST:10001) and that the cluster runs") from None
                raise ConfigError(f"a local Ray did not start {why}; check Ray's installation on this machine "
                                  "(`ray start --head` says what is wrong) or give --address of a running "
                                  "cluster") from None
            self._started = True
        resources = ray.cluster_resources()
        self.gpus = int(resources.get("GPU", 0))
        self.capacity = max(1, self.gpus if self.cuda else int(resources.get("CPU", 1)))

    def check(self, ranks: int, what: str) -> None:
        if self.cuda and ranks > self.gpus:
            raise ConfigError(f"{what} runs on {ranks} GPUs but the Ray cluster has {self.gpus}; add GPU nodes or "
                              "leave the case out (Ray would wait for them forever)")

    def can_start(self, ranks: int) -> bool:
        return True  # Ray queues a task until its resources are free

    def start(self, spec: WorkerSpec) -> WorkerHandle:
        self._count += 1
        return RayWorker(self.ray, spec, self.cuda, f"ray task {self._count}")

    def release(self, spec: WorkerSpec) -> None:
        pass

    def close(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


class RayWorker(WorkerHandle):
    """One group's worker in a Ray task, seen from the driver."""

    def __init__(self, ray, spec: WorkerSpec, cuda: bool, label: str, silence_s: float = SILENCE_S):
        self.ray, self.spec, self.label, self.silence_s = ray, spec, label, silence_s
        self._exit: WorkerExit | None = None
        job = WorkerJob.read(spec.job)
        task = ray.remote(run_group).options(
            num_returns="streaming", max_retries=0, num_gpus=spec.ranks if cuda else 0,
            num_cpus=1 if cuda else spec.ranks, name=f"wanbench {job.suite} {job.group}")
        self._stream = task.remote(spec.job.read_text(encoding="utf-8"), spec.ranks)
        self._out = Path(job.out)

    def events(self) -> Iterator[dict]:
        try:
            heard = False  # a task Ray has not placed yet (queued for GPUs or a node) says nothing: no limit then
            while True:
                ready, _ = self.ray.wait([self._stream], timeout=self.silence_s if heard else None)
                if not ready:
                    self._lost(f"no word from it for {self.silence_s:g} s")
                    return
                heard = True
                try:
                    ref = next(self._stream)
                except StopIteration:
                    return
                event = self.ray.get(ref)
                kind = event.get("event")
                if kind == "alive":
                    continue
                if kind == "placed":
                    gpus = f" gpu {event['gpus']}" if event.get("gpus") else ""
                    self.label = f"{self.label} on {event['node']}{gpus}"
                elif kind == "file":
                    _write_file(self._out / event["name"], event["data"])
                elif kind == "exit":
                    _append_log(self.spec.log, event["log"])
                    self._exit = WorkerExit(event["code"], event["how"])
                else:
                    yield event
        except self.ray.exceptions.RayError as exc:
            self._lost(f"{type(exc).__name__}: {first_line(exc, 300)}")

    def _lost(self, why: str) -> None:
        """Record the task as lost (and stop it, if it is only silent)."""
        self.kill()
        self._exit = WorkerExit(None, f"its Ray task was lost: {why}")
        _append_log(self.spec.log, f"[wanbench] {self._exit.how}\n")

    def wait(self) -> WorkerExit:
        return self._exit or WorkerExit(None, "its Ray task ended without saying how")

    def kill(self) -> None:
        if self._exit is None:
            try:
                self.ray.cancel(self._stream, force=True)  # kills the Ray worker; the worker process dies with it
            except Exception:  # already finished, or the cluster is gone: nothing left to stop
                pass


# ---------------------------------------------------------------- on the Ray node
def run_group(job_text: str, ranks: int) -> Iterator[dict]:
    """The Ray task: run the group's worker (its job file's text) in a scratch folder; stream its events, new
    frames, exit and log."""
    scratch = Path(tempfile.mkdtemp(prefix="wanbench-ray-"))
    try:
        job_path, log = scratch / "job.json", scratch / "worker.log"
        job_path.write_text(json.dumps(json.loads(job_text) | {"out": str(scratch)}), encoding="utf-8")
        yield {"event": "placed", "node": socket.gethostname(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
        worker = LocalWorker(WorkerSpec(job_path, log, sys.executable, gpus=None, ranks=ranks))
        shipped: dict[str, float] = {}
        try:
            for event in _with_heartbeats(worker.events()):
                if event.get("event") == "result":  # its frames first: the driver has them once it has the row
                    yield from _new_files(scratch, shipped)
                yield event
            exit = worker.wait()
        finally:
            worker.kill()
        yield from _new_files(scratch, shipped)
        yield {"event": "exit", "code": exit.code, "how": exit.how, "log": _tail(log)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _with_heartbeats(events: Iterator[dict], every_s: float = HEARTBEAT_S) -> Iterator[dict]:
    """`events`, with an {"event": "alive"} whenever none came for `every_s` (a thread reads them)."""
    box: queue.Queue = queue.Queue()
    end = object()

    def pump() -> None:
        try:
            for event in events:
                box.put(event)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the generator's side
            box.put(exc)
        box.put(end)

    threading.Thread(target=pump, name="wanbench-events", daemon=True).start()
    while True:
        try:
            item = box.get(timeout=every_s)
        except queue.Empty:
            yield {"event": "alive"}
            continue
        if item is end:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def _new_files(scratch: Path, shipped: dict[str, float]) -> Iterator[dict]:
    """Frames saved since the last call, as file events (a path relative to the run folder, the bytes)."""
    frames = scratch / "frames"
    for path in sorted(frames.glob("*.npy")) if frames.is_dir() else ():
        if path.name.endswith(".tmp.npy"):
            continue
        stamp = path.stat().st_mtime_ns
        if shipped.get(path.name) != stamp:
            shipped[path.name] = stamp
            yield {"event": "file", "name": f"frames/{path.name}", "data": path.read_bytes()}


def _tail(log: Path) -> str:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


# ---------------------------------------------------------------- on the driver
def _write_file(path: Path, data: bytes) -> None:
    """A file shipped from a node, written atomically into the run folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)


def _append_log(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


__all__ = ["RayLauncher", "RayWorker", "require_ray", "run_group"]
