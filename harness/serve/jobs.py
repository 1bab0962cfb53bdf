"""A job of the service: what it asked for, where it is, and what it cost, as one flat JSON record.

States: queued -> running -> done | failed | cancelled, and interrupted when the service stopped
while the job ran (a restart after a crash, or a shutdown whose grace ran out). A record carries:
- `id`, `state`, `stage` and `step` of `steps_total` while running, `error` and `failed_stage` when
  it did not finish (the names a results row uses);
- `params`: every request parameter as the spec validated it, and `image`: the upload's size;
- the measurement, with the field names of a results row (harness/results.py SCHEMA): `total_ms`,
  `stage_ms.<stage>`, `step_ms.<expert>`, `peak_allocated_mib`, `peak_nvml_mib`,
  `stage_peak_nvml_mib.<stage>`, `memory_note`, `seed_used`, `out_width`, ...;
- the service's own times (SERVICE_FIELDS): `accept_ms`, `queue_ms`, `write_ms`, `latency_ms` and
  `overhead_ms`, what the service added to the generation itself.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

State = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
STATES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled", "interrupted")
FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled", "interrupted"})

# Ids are chosen by the service (uuid4 hex); anything else in a URL is an unknown job.
JOB_ID = re.compile(r"[0-9a-f]{32}")

# What each time of the service measures, in ms (documented here once; the README points here).
SERVICE_FIELDS: dict[str, str] = {
    "accept_ms": "from the request's arrival to the job queued: reading the upload, the checks, the record",
    "queue_ms": "from queued to started (waiting for the jobs ahead)",
    "write_ms": "from the generation's end to the record saying done: the mp4 and the record",
    "latency_ms": "from the request's arrival to the job finished",
    "overhead_ms": "latency_ms - queue_ms - total_ms: what the service itself added to the generation",
}

_TIMES = ("submitted_at", "started_at", "finished_at")


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")


def epoch(text: str | None) -> float | None:
    """ISO 8601 back to epoch seconds (None stays None)."""
    return None if text is None else datetime.fromisoformat(text).timestamp()


@dataclass
class Job:
    """One submitted video; the service mutates it under its lock and saves its record at every change of state."""

    id: str
    params: dict[str, Any]  # every request parameter, validated by the spec
    image: dict[str, Any]  # the upload: bytes, width, height, format
    submitted_at: float = field(default_factory=time.time)  # epoch seconds: the request's arrival
    state: State = "queued"
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    stage: str | None = None
    step: int | None = None  # steps done so far
    steps_total: int | None = None
    error: str | None = None
    failed_stage: str | None = None
    cancel_requested: bool = False
    measured: dict[str, Any] = field(default_factory=dict)  # results-row fields and the service's times

    @property
    def finished(self) -> bool:
        """True once the job can change no more."""
        return self.state in FINISHED

    def record(self) -> dict[str, Any]:
        """The JSON record: what GET /v1/jobs/{id} answers and what jobs/<id>.json holds."""
        return {
            "id": self.id, "state": self.state, "stage": self.stage, "step": self.step,
            "steps_total": self.steps_total, "error": self.error, "failed_stage": self.failed_stage,
            "cancel_requested": self.cancel_requested,
            "submitted_at": iso(self.submitted_at), "queued_at": iso(self.queued_at),
            "started_at": iso(self.started_at), "finished_at": iso(self.finished_at),
            "params": self.params, "image": self.image, **self.measured,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> "Job":
        """A job from its record (KeyError/ValueError/TypeError when the record is not one)."""
        if not isinstance(data, dict) or not JOB_ID.fullmatch(str(data["id"])) or data["state"] not in STATES:
            raise ValueError("not a job record")
        own = {"id", "state", "stage", "step", "steps_total", "error", "failed_stage", "cancel_requested",
               "queued_at", "params", "image", *_TIMES}
        return cls(
            id=data["id"], params=dict(data["params"]), image=dict(data["image"]),
            submitted_at=epoch(data["submitted_at"]), state=data["state"], queued_at=epoch(data.get("queued_at")),
            started_at=epoch(data.get("started_at")), finished_at=epoch(data.get("finished_at")),
            stage=data.get("stage"), step=data.get("step"), steps_total=data.get("steps_total"),
            error=data.get("error"), failed_stage=data.get("failed_stage"),
            cancel_requested=bool(data.get("cancel_requested")),
            measured={k: v for k, v in data.items() if k not in own},
        )
