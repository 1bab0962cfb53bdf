"""What the runner hands a worker process (a JSON job file), and the row fields both sides build."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from harness.results import GENERATE_STAGES, SCHEMA_VERSION

DEFAULT_FACTORY = "harness.worker:load_wan_pipeline"
RUNNER_PID_ENV = "WANBENCH_RUNNER_PID"  # the runner's pid, set in a worker's environment: it must not outlive it


@dataclass(frozen=True)
class CaseJob:
    """One case for a worker: parameters, reference, and whether its frames must be kept."""

    case_id: str
    params: dict[str, Any]
    reference_id: str | None
    save_frames: bool  # other cases compare against this one


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker needs: the model to load once and the cases to run with it."""

    suite: str
    group: str
    out: str
    preset: str
    weights: str
    device: str
    timing: str
    repeats: int
    warmup: int
    sampled: dict[str, int]
    quality: dict[str, Any]
    cases: list[CaseJob] = field(default_factory=list)
    factory: str = DEFAULT_FACTORY  # "module:attr" or "file.py:attr" returning a loaded pipeline
    host_workers: int = 1  # workers the run may have running at once on one host (they share its cores)
    ranks: int = 1  # torchrun ranks (GPUs) of the worker: its cases' ParallelPlan world size

    def write(self, path: Path) -> None:
        """Save as JSON."""
        path.write_text(json.dumps(asdict(self), indent=1), encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "WorkerJob":
        """Load from JSON."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        data["cases"] = [CaseJob(**c) for c in data["cases"]]
        return cls(**data)


def now_iso() -> str:
    """Current UTC time, ISO 8601, seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def slug(case_id: str) -> str:
    """A file-name-safe, unique name for a case."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", case_id)[:80].strip("_") or "case"
    return f"{readable}-{hashlib.sha1(case_id.encode()).hexdigest()[:8]}"


def frames_path(out: str | Path, case_id: str) -> Path:
    """Where a case's lossless frames are kept (uint8 [F, H, W, 3] .npy)."""
    return Path(out) / "frames" / f"{slug(case_id)}.npy"


def identity_fields(job: WorkerJob, case: CaseJob) -> dict[str, Any]:
    """Fields every row of the case carries, whatever happened to it."""
    return {
        "schema_version": SCHEMA_VERSION,
        "suite": job.suite,
        "case_id": case.case_id,
        "group": job.group,
        **case.params,
        "preset": job.preset,
        "weights": job.weights,
        "weights_synthetic": job.weights == "synthetic",
        "device": job.device,
        "timing": job.timing,
        "repeats": job.repeats,
        "warmup": job.warmup,
        "ranks": job.ranks,
        "reference_case": case.reference_id,
        "is_reference": case.reference_id == case.case_id,
    }


def failure_row(
    job: WorkerJob,
    case: CaseJob,
    status: str,
    message: str,
    stage: str | None,
    memory: dict[str, Any] | None = None,
    started_at: str | None = None,
    traceback: str | None = None,
) -> dict[str, Any]:
    """A row for a case that ran out of memory or failed: the message, the stage, the memory reached and
    the whole traceback (when there is one)."""
    row = identity_fields(job, case)
    row.update({"status": status, "error": message, "traceback": traceback, "failed_stage": stage,
                "started_at": started_at, "finished_at": now_iso()})
    row.update({f"stage_ms.{s}": None for s in GENERATE_STAGES})
    row.update({"total_ms": None, "projected": job.timing == "sampled", "psnr_db": None, "ssim": None})
    row.update(memory or {})
    return row
