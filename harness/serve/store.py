"""The service's folder: job records written atomically, uploads and videos under names the service chooses.

    DIR/jobs/<id>.json      one record per job, replaced whole at every change of state
    DIR/inputs/<id>.upload  the picture of a job not yet run (removed when the job ends)
    DIR/videos/<id>.mp4     the video of a done job
    DIR/jobs/<id>.json.bad  a record that could not be read, set aside (the service goes on)
    DIR/run.lock, run.holder.json   one service at a time (harness/runlock.py; `with JobStore(...)`)

Every name is the job's id (uuid4 hex, JOB_ID); nothing a client sends becomes part of a path.
A record is written to a temporary file, forced to disk and renamed over the old one, so a crash
leaves the previous record or the new one, never half of either.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from harness.atomic import write_atomic
from harness.runlock import RunLock
from harness.serve.jobs import JOB_ID, Job
from wan_runtime.errors import ConfigError

log = logging.getLogger("wanbench.serve")

JOBS_DIR, INPUTS_DIR, VIDEOS_DIR = "jobs", "inputs", "videos"


class JobStore:
    """Records, uploads and videos of the jobs in one service folder; `with` holds the folder's lock.

    The lock is the run folder's (RunLock): a second service on the same folder is refused with
    RunFolderBusy naming the holder, and a folder left locked by a dead service is taken over.
    """

    def __init__(self, folder: str | Path, command: str = ""):
        self.folder = Path(folder)
        for sub in (JOBS_DIR, INPUTS_DIR, VIDEOS_DIR):
            try:
                (self.folder / sub).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"service folder {self.folder}: cannot create {sub}/ ({exc.strerror or exc}); "
                                  "choose a writable --out") from None
        self._lock = RunLock(self.folder, command or "wanbench serve")
        self.took_over: str | None = None  # set when a dead service's lock record was found

    def __enter__(self) -> "JobStore":
        self._lock.acquire()
        self.took_over = self._lock.took_over
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()

    def record_path(self, job_id: str) -> Path:
        """jobs/<id>.json."""
        return self.folder / JOBS_DIR / f"{_checked(job_id)}.json"

    def input_path(self, job_id: str) -> Path:
        """inputs/<id>.upload: the upload's bytes as received."""
        return self.folder / INPUTS_DIR / f"{_checked(job_id)}.upload"

    def video_path(self, job_id: str) -> Path:
        """videos/<id>.mp4."""
        return self.folder / VIDEOS_DIR / f"{_checked(job_id)}.mp4"

    def save(self, job: Job) -> None:
        """Write the job's record (atomically)."""
        write_atomic(self.record_path(job.id), json.dumps(job.record(), allow_nan=False, ensure_ascii=False))

    def save_input(self, job_id: str, data: bytes) -> None:
        """Keep an upload until its job has run, forced to disk (a restart runs the job from it)."""
        path = self.input_path(job_id)
        with open(path, "xb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def drop_input(self, job_id: str) -> None:
        """Remove a job's upload (its job has ended)."""
        self.input_path(job_id).unlink(missing_ok=True)

    def inputs(self) -> list[str]:
        """Ids of the jobs whose upload is kept."""
        return [p.stem for p in (self.folder / INPUTS_DIR).glob("*.upload") if JOB_ID.fullmatch(p.stem)]

    def load(self) -> list[Job]:
        """Every readable record, oldest submission first; an unreadable one is renamed *.bad with a warning."""
        jobs = []
        for path in sorted((self.folder / JOBS_DIR).glob("*.json")):
            if not JOB_ID.fullmatch(path.stem):
                continue
            try:
                job = Job.from_record(json.loads(path.read_text(encoding="utf-8")))
                if job.id != path.stem:
                    raise ValueError(f"the record holds id {job.id}")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                aside = path.with_name(path.name + ".bad")
                os.replace(path, aside)
                log.warning("job record %s cannot be read (%s); set aside as %s", path, exc, aside.name)
                continue
            jobs.append(job)
        return sorted(jobs, key=lambda j: j.submitted_at)


def _checked(job_id: str) -> str:
    """`job_id` when it is one the service made (so a path built from it stays in its folder)."""
    if not JOB_ID.fullmatch(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return job_id
