"""The Ray executor's watchdog, without Ray: a task's heartbeats while its worker is quiet, and a stream that
stays silent (a killed task whose stream Ray leaves open, ray-project/ray#62537) counted as a lost task."""

from __future__ import annotations

import time
import types
from pathlib import Path

import pytest

from harness.jobs import WorkerJob
from harness.launch import WorkerSpec
from harness.ray_executor import RayWorker, _with_heartbeats


def _slow(events: list, pause_s: float):
    for event in events:
        time.sleep(pause_s)
        yield event


def test_a_quiet_worker_is_reported_alive_between_its_events_which_keep_their_order():
    out = list(_with_heartbeats(_slow([{"event": "a"}, {"event": "b"}], 0.3), every_s=0.05))
    real = [e["event"] for e in out if e["event"] != "alive"]
    assert real == ["a", "b"] and sum(e["event"] == "alive" for e in out) >= 4


def test_an_error_reading_the_worker_reaches_the_task():
    def broken():
        yield {"event": "a"}
        raise OSError("the event socket broke")

    with pytest.raises(OSError, match="socket broke"):
        list(_with_heartbeats(broken(), every_s=0.05))


class FakeRay:
    """Ray's calls the driver makes: a stream that says `events` (the first after a queue), then nothing."""

    class exceptions:  # noqa: N801 - the name Ray uses
        RayError = RuntimeError

    def __init__(self, events: list[dict]) -> None:
        self.cancelled: list[tuple] = []
        self.timeouts: list[float | None] = []
        self.events = list(events)
        self.stream = self

    def remote(self, fn):
        return types.SimpleNamespace(options=lambda **_: types.SimpleNamespace(remote=lambda *a: self.stream))

    def wait(self, waitables, timeout):
        self.timeouts.append(timeout)
        if self.events:
            return list(waitables), []
        time.sleep(timeout)
        return [], list(waitables)

    def __next__(self):
        return self.events.pop(0)

    def get(self, ref):
        return ref

    def cancel(self, ref, force):
        self.cancelled.append((ref, force))


def _worker(tmp_path: Path, ray: FakeRay) -> RayWorker:
    job = WorkerJob(suite="t", group="all", out=str(tmp_path), preset="tiny", weights="synthetic", device="cpu",
                    timing="full", repeats=1, warmup=0, sampled={}, quality={})
    job.write(tmp_path / "job.json")
    return RayWorker(ray, WorkerSpec(tmp_path / "job.json", tmp_path / "worker.log"), cuda=False, label="t",
                     silence_s=0.05)


def test_a_stream_silent_after_its_task_was_placed_is_a_lost_task_that_is_cancelled_and_logged(tmp_path):
    ray = FakeRay([{"event": "placed", "node": "n1", "gpus": None}, {"event": "alive"}, {"event": "case"}])
    worker = _worker(tmp_path, ray)
    assert list(worker.events()) == [{"event": "case"}]  # heartbeats and placement stay with the driver
    exit = worker.wait()
    assert exit.code is None and exit.how == "its Ray task was lost: no word from it for 0.05 s"
    assert ray.cancelled == [(ray.stream, True)]
    assert "[wanbench] its Ray task was lost: no word from it" in (tmp_path / "worker.log").read_text()


def test_a_task_still_queued_for_resources_is_waited_for_without_a_limit(tmp_path):
    ray = FakeRay([{"event": "placed", "node": "n1", "gpus": "0"}])
    worker = _worker(tmp_path, ray)
    list(worker.events())
    assert ray.timeouts[0] is None and ray.timeouts[1:] == [0.05]
    assert worker.label == "t on n1 gpu 0"
