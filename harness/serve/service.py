"""The service: one loaded pipeline running jobs one at a time from a bounded queue, every job on disk.

- `submit` checks a request completely (harness/serve/intake.py) before it takes a place in the
  queue: a refused request costs no place and leaves nothing on disk. A full queue raises QueueFull
  (the app answers 429 with `retry_after()` seconds).
- One worker thread takes the oldest queued job, runs it (harness/serve/execute.py) and records how
  it ended; a failure (an out-of-memory included) ends that job only.
- `cancel` takes a queued job out at once; a running one stops at its next step (or stage).
- Every change of state is saved under the service's lock (harness/serve/store.py), so a record on
  disk is always one the service held. `start` recovers the folder: finished jobs stay as they are,
  a job recorded as running was cut off by the end of its process and becomes interrupted, queued
  jobs whose upload is kept go back into the queue in submission order.
- `stop(grace_s)`: no job starts any more; the running job has `grace_s` to finish, then is stopped
  at its next step and recorded as interrupted; queued jobs stay queued on disk for the next start.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict
from typing import Any, Mapping

import torch

from harness.serve.execute import Outcome, run_job
from harness.serve.intake import checked_request, check_filename, read_image, read_params, request_params
from harness.serve.jobqueue import JobQueue, QueueFull
from harness.serve.jobs import Job, State
from harness.serve.limits import ServiceLimits
from harness.serve.store import JobStore
from wan_runtime import spec
from wan_runtime.errors import WanError
from wan_runtime.request import GenerationRequest

log = logging.getLogger("wanbench.serve")


class UnknownJob(LookupError):
    """No job with this id in this service's folder (or no video where a done job's should be)."""

    def __init__(self, job_id: str, message: str | None = None):
        super().__init__(message or f"no job {job_id[:64]!r} in this service; ids come from POST /v1/videos")


class JobConflict(WanError):
    """The job is not in a state that allows what was asked (its video before it is done, a second cancel)."""


class ServiceStopping(WanError):
    """The service is shutting down and takes no new job."""


class Service:
    """One loaded pipeline, a bounded queue, one worker thread; see the module docstring."""

    def __init__(self, pipe, store: JobStore, fixed: Mapping[str, Any], model: Mapping[str, Any],
                 limits: ServiceLimits = ServiceLimits()):
        self.pipe = pipe
        self.store = store
        self.fixed = dict(fixed)  # the parameters fixed at start: load options, memory plan, limits.*
        self.model = dict(model)  # preset, weights, device, load_ms
        self.limits = limits
        self.queue = JobQueue(limits.queue_size)
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.running: Job | None = None
        self._interrupt = threading.Event()  # the shutdown's grace ran out: stop the running job
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._run_s: deque[float] = deque(maxlen=20)  # recent jobs' run times, for Retry-After

    # ------------------------------------------------------------ life
    def start(self) -> "Service":
        """Recover the folder's jobs (see the module docstring) and start the worker."""
        now = time.time()
        for job in self.store.load():
            if job.state == "running":
                where = f" (stage {job.stage}, step {job.step} of {job.steps_total})" if job.stage else ""
                self._end(job, "interrupted", now, error=f"the service stopped while this job ran{where}; "
                          "submit it again")
            elif job.state == "queued":
                if self.store.input_path(job.id).is_file():
                    self.queue.put(job.id, beyond_capacity=True)
                else:
                    self._end(job, "interrupted", now, error="its upload was not kept when the service stopped; "
                              "submit it again")
            self.jobs[job.id] = job
        for job_id in self.store.inputs():  # an upload whose job never got a record (a crash mid-submit)
            if job_id not in self.jobs or self.jobs[job_id].state != "queued":
                self.store.drop_input(job_id)
        self._thread = threading.Thread(target=self._work, name="wanbench-serve-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Start no more jobs; let the running one finish within the grace, else record it as interrupted."""
        grace = self.limits.shutdown_grace_s if grace_s is None else grace_s
        with self.lock:
            self._stopping = True
        self.queue.close()
        if self._thread is None:
            return
        self._thread.join(grace)
        if self._thread.is_alive():
            self._interrupt.set()  # stops at the next stage or step
            self._thread.join(max(grace, 5.0))
        with self.lock:
            job = self.running
            if job is not None:  # a stage longer than the wait: record the truth now, the process is ending
                self._end(job, "interrupted", time.time(), error="the service stopped while this job ran "
                          f"(stage {job.stage}); submit it again")

    # ------------------------------------------------------------ the API's operations
    def submit(self, params: str, upload: bytes, filename: str | None, received_at: float) -> Job:
        """Check a request and queue it; ConfigError/ParameterError for bad input, QueueFull, ServiceStopping."""
        self._check_open()
        if len(self.queue) >= self.queue.capacity:  # refuse before decoding anything
            raise QueueFull(self.queue.capacity)
        check_filename(filename)
        values = read_params(params, self.fixed)
        picture = read_image(upload, self.limits.max_image_pixels)
        checked_request(values, picture, self.pipe.cfg)
        job = Job(id=uuid.uuid4().hex, params=request_params(values, self.fixed),
                  image={"bytes": len(upload), "width": picture.width, "height": picture.height},
                  submitted_at=received_at, steps_total=values["steps"])
        self.store.save_input(job.id, upload)
        try:
            with self.lock:
                self._check_open()
                job.queued_at = time.time()
                job.measured["accept_ms"] = _ms(job.queued_at - received_at)
                self.queue.put(job.id)  # QueueFull when the last place went meanwhile
                self.jobs[job.id] = job
                self.store.save(job)
        except BaseException:
            if job.id not in self.jobs:
                self.store.drop_input(job.id)
            raise
        return job

    def record(self, job_id: str) -> dict[str, Any]:
        """A copy of the job's record."""
        with self.lock:
            return self._job(job_id).record()

    def records(self) -> list[dict[str, Any]]:
        """Id, state and times of every job, oldest submission first."""
        keys = ("id", "state", "submitted_at", "finished_at")
        with self.lock:
            return [{k: r[k] for k in keys} for r in (j.record() for j in self.jobs.values())]

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a queued job now, or a running one at its next step; JobConflict when it has ended."""
        with self.lock:
            job = self._job(job_id)
            if job.finished:
                raise JobConflict(f"job {job_id} has already ended ({job.state}); nothing to cancel")
            job.cancel_requested = True
            if job.state == "queued" and self.queue.remove(job_id):
                self._end(job, "cancelled", time.time())
            else:  # running, or taken by the worker a moment ago: it stops before its next stage or step
                self.store.save(job)
            return job.record()

    def video(self, job_id: str):
        """The path of a done job's mp4; JobConflict before it is done, UnknownJob when it is not on disk."""
        with self.lock:
            job = self._job(job_id)
            if job.state != "done":
                where = f", stage {job.stage}, step {job.step} of {job.steps_total}" if job.state == "running" else ""
                raise JobConflict(f"job {job_id} is {job.state}{where}: a video exists once its state is done")
        path = self.store.video_path(job_id)
        if not path.is_file():
            raise UnknownJob(job_id, f"the video of job {job_id} is missing from the service folder ({path.parent}); "
                             "submit the job again")
        return path

    def health(self) -> dict[str, Any]:
        """Status, the model and its fixed parameters, the limits, the queue and the jobs by state."""
        with self.lock:
            states = Counter(j.state for j in self.jobs.values())
            running = self.running.id if self.running else None
            stopping = self._stopping
        return {
            "status": "stopping" if stopping else "ok",
            "model": self.model,
            "fixed": self.fixed,
            "limits": asdict(self.limits),
            "queue": {"waiting": len(self.queue), "capacity": self.queue.capacity, "running": running},
            "jobs": dict(states),
        }

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely free: the recent mean run time less the running job's age."""
        with self.lock:
            mean = sum(self._run_s) / len(self._run_s) if self._run_s else 1.0
            started = self.running.started_at if self.running and self.running.started_at else time.time()
        return max(1, math.ceil(mean - (time.time() - started)))

    # ------------------------------------------------------------ the worker
    def _work(self) -> None:
        if self.pipe.device.type == "cuda":
            torch.cuda.set_device(self.pipe.device)  # the current device is per thread
        while (job_id := self.queue.get()) is not None:
            try:
                self._run(job_id)
            except Exception:  # noqa: BLE001 - a bug in the bookkeeping must not end the worker
                log.exception("job %s: the service failed to run it", job_id)

    def _run(self, job_id: str) -> None:
        with self.lock:
            job = self.jobs[job_id]
            if job.cancel_requested:  # cancelled between the queue and here
                self._end(job, "cancelled", time.time())
                return
            job.state, job.started_at = "running", time.time()
            job.measured["queue_ms"] = _ms(job.started_at - (job.queued_at or job.submitted_at))
            self.running = job
            self.store.save(job)
        request, problem = self._prepare(job)
        if request is None:
            outcome = Outcome("failed", error=problem)
        else:
            outcome = run_job(self.pipe, job, request, self.store.video_path(job_id), self.lock,
                              lambda: self._stop_state(job))
        with self.lock:
            job.measured.update(outcome.fields)
            finished = time.time()
            if outcome.generated_at is not None:
                job.measured["write_ms"] = _ms(finished - outcome.generated_at)
            error = outcome.error
            if outcome.state == "interrupted":
                error = f"the service stopped while this job ran (stage {job.stage}, step {job.step} of " \
                        f"{job.steps_total}); submit it again"
            self._run_s.append(finished - job.started_at)
            self._end(job, outcome.state, finished, error=error, failed_stage=outcome.failed_stage)

    def _prepare(self, job: Job) -> tuple[GenerationRequest | None, str | None]:
        """The job's request, its picture decoded again from the kept upload; or None and why it cannot run."""
        try:
            upload = self.store.input_path(job.id).read_bytes()
        except OSError as exc:
            return None, f"the job's upload could not be read back ({exc.strerror or exc}); submit it again"
        try:
            picture = read_image(upload, self.limits.max_image_pixels)
            return spec.build(GenerationRequest, {**self.fixed, **job.params}, image=picture), None
        except WanError as exc:  # a job queued before a restart with other fixed parameters or limits
            return None, f"the job does not fit this service as it was restarted: {exc}"

    def _stop_state(self, job: Job) -> State | None:
        if self._interrupt.is_set():
            return "interrupted"
        return "cancelled" if job.cancel_requested else None

    # ------------------------------------------------------------ helpers (called with the lock held)
    def _end(self, job: Job, state: State, finished: float, error: str | None = None,
             failed_stage: str | None = None) -> None:
        """Record how a job ended (with the lock held) and drop its upload."""
        job.state, job.finished_at, job.error, job.failed_stage = state, finished, error, failed_stage
        if state == "done":
            job.stage = None
        job.measured["latency_ms"] = _ms(finished - job.submitted_at)
        total = job.measured.get("total_ms")
        if state == "done" and total is not None and "queue_ms" in job.measured:
            job.measured["overhead_ms"] = round(job.measured["latency_ms"] - job.measured["queue_ms"] - total, 3)
        if self.running is job:
            self.running = None
        self.store.save(job)
        self.store.drop_input(job.id)

    def _job(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(job_id)
        return job

    def _check_open(self) -> None:
        if self._stopping:
            raise ServiceStopping("the service is shutting down and takes no new job; retry when it is back")


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)
