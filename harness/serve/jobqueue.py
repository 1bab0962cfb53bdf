"""The bounded FIFO of job ids waiting for the model (the running job is not in it).

Unlike `queue.Queue` a waiting job can be taken out (a cancelled one frees its place at once), and
jobs recovered after a restart go in even beyond the bound: they were accepted before.
"""

from __future__ import annotations

import threading
from collections import deque


class QueueFull(Exception):
    """The queue holds `capacity` jobs; the client should retry later."""

    def __init__(self, capacity: int):
        super().__init__(f"the queue is full ({capacity} jobs waiting); retry after the time in Retry-After")
        self.capacity = capacity


class JobQueue:
    """Job ids in submission order; `get` blocks until one is there or the queue is closed."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("a queue holds at least one job")
        self.capacity = capacity
        self._ids: deque[str] = deque()
        self._closed = False
        self._ready = threading.Condition()

    def put(self, job_id: str, beyond_capacity: bool = False) -> None:
        """Append a job; QueueFull when `capacity` are waiting (unless `beyond_capacity`)."""
        with self._ready:
            if not beyond_capacity and len(self._ids) >= self.capacity:
                raise QueueFull(self.capacity)
            self._ids.append(job_id)
            self._ready.notify()

    def remove(self, job_id: str) -> bool:
        """Take a waiting job out; False when it is not waiting (already taken, or never there)."""
        with self._ready:
            try:
                self._ids.remove(job_id)
            except ValueError:
                return False
            return True

    def get(self) -> str | None:
        """The oldest waiting job, blocking until there is one; None once the queue is closed."""
        with self._ready:
            while not self._ids and not self._closed:
                self._ready.wait()
            return None if self._closed else self._ids.popleft()

    def close(self) -> None:
        """Wake `get` with None: no further job starts (those waiting stay recorded as queued)."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def __len__(self) -> int:
        with self._ready:
            return len(self._ids)
