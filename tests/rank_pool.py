"""A pool of ranks kept alive across tests: the same task runs on every rank, results come back.

Spawning a rank costs seconds (importing torch and the runtime); the pool pays that once per test
module. Each worker sets the environment torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR/PORT) and sets up the process group itself (gloo on CPU ranks, NCCL with
one GPU per rank), as a harness worker would, so the runtime joins an existing group. A task is a module-level function `fn(rank, *args)`;
an exception on a rank comes back as a RankFailure (type name and message) instead of a result.
"""

from __future__ import annotations

import os
import queue
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

import torch.multiprocessing as mp


@dataclass(frozen=True)
class RankFailure:
    """What a task raised on one rank."""

    type: str
    message: str
    traceback: str


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for one rank on one machine."""
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
            "OMP_NUM_THREADS": "1"}


def _worker(rank: int, world: int, port: int, tasks, results, timeout_s: float, backend: str) -> None:
    os.environ.update(rank_env(rank, world, port))
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    options = {}
    if backend == "nccl":
        torch.cuda.set_device(rank)
        options["device_id"] = torch.device("cuda", rank)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s), **options)
    while True:
        task = tasks.get()
        if task is None:
            break
        fn, args = task
        try:
            results.put((rank, fn(rank, *args)))
        except BaseException as exc:  # report everything, the test decides
            results.put((rank, RankFailure(type(exc).__name__, str(exc), traceback.format_exc())))
    dist.destroy_process_group()


class RankPool:
    """`world` spawned ranks running the same tasks in lockstep (backend "gloo": CPU, "nccl": a GPU each)."""

    def __init__(self, world: int, timeout_s: float = 60.0, backend: str = "gloo"):
        ctx = mp.get_context("spawn")
        self.world = world
        self.port = free_port()
        self._tasks = [ctx.Queue() for _ in range(world)]
        self._results = ctx.Queue()
        self._procs = [ctx.Process(target=_worker, args=(r, world, self.port, self._tasks[r], self._results, timeout_s, backend),
                                   daemon=True) for r in range(world)]
        for proc in self._procs:
            proc.start()

    def run(self, fn, *args, timeout_s: float = 120.0, wait_for: int | None = None) -> list:
        """fn(rank, *args) on every rank; the results (or RankFailure) in rank order.

        `wait_for`: return as soon as the first `wait_for` ranks answered (the others' entries are None).
        """
        for tasks in self._tasks:
            tasks.put((fn, args))
        out: dict[int, object] = {}
        deadline = time.monotonic() + timeout_s
        while not all(r in out for r in range(self.world if wait_for is None else wait_for)):
            try:
                rank, value = self._results.get(timeout=0.5)
                out[rank] = value
                continue
            except queue.Empty:
                pass
            for rank, proc in enumerate(self._procs):  # a dead rank answers with its exit code
                if rank not in out and not proc.is_alive():
                    out[rank] = RankFailure("died", f"rank {rank} died with exit code {proc.exitcode}", "")
            if time.monotonic() > deadline:
                raise TimeoutError(f"ranks {sorted(set(range(self.world)) - set(out))} did not answer "
                                   f"within {timeout_s} s")
        return [out.get(r) for r in range(self.world)]

    def close(self) -> None:
        """Stop the workers; those still exiting after 2 s are killed (the interpreter's exit takes seconds)."""
        for tasks in self._tasks:
            tasks.put(None)
        deadline = time.monotonic() + 2.0
        for proc in self._procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
        self.kill()

    def kill(self) -> None:
        """Kill the workers still alive (a pool whose process group is broken)."""
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
                proc.join()
