"""A case's quality fields: PSNR/SSIM of its frames against the frames its reference case kept.

The one place that fills `psnr_db`, `ssim`, `psnr_frames`, `ssim_frames`, `quality_resize` and
`quality_note` (the metrics themselves are harness.metrics). Two callers, one rule:
- the worker, as a case ends (`case_quality`): its reference usually ran first and kept its frames;
- the runner, at the end of a run (`pending_quality`): cases whose reference ran after them kept
  their own frames for this.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from harness.jobs import frames_path
from wan_runtime.errors import WanError

SYNTHETIC_NOTE = "synthetic weights: PSNR/SSIM measure numerical drift between configurations, not visual quality"
PENDING_NOTE = "pending: reference frames not available yet"
QUALITY_FIELDS = ("psnr_db", "ssim", "psnr_frames", "ssim_frames", "quality_resize", "quality_note")


def save_frames(path: Path, frames: np.ndarray) -> None:
    """Keep lossless frames for later comparison (written to a temp name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, frames)
    os.replace(tmp, path)


def _note(reason: str | None, synthetic: bool) -> str | None:
    """The quality note: why metrics are missing (if they are), then what they mean on synthetic weights."""
    parts = ([reason] if reason else []) + ([SYNTHETIC_NOTE] if synthetic else [])
    return "; ".join(parts) or None


def _no_metrics(reason: str | None, synthetic: bool) -> dict[str, Any]:
    return {name: None for name in QUALITY_FIELDS} | {"quality_note": _note(reason, synthetic)}


def compare_frames(frames: np.ndarray, reference: np.ndarray, quality: dict[str, Any], device,
                   synthetic: bool) -> dict[str, Any]:
    """The quality fields of `frames` against `reference` (resized per `quality`'s filter when sizes differ).

    Videos that cannot be compared (e.g. different frame counts) leave the metrics null with the reason
    in quality_note: the case's measurements stand, and a rerun would fail the same way.
    """
    from harness.metrics import compare_videos

    try:
        q = compare_videos(frames, reference, quality["resize_filter"], quality["antialias"], device)
    except WanError as exc:
        return _no_metrics(f"not compared: {exc}", synthetic)
    return {"psnr_db": q.psnr_db, "ssim": q.ssim, "psnr_frames": q.psnr_frames, "ssim_frames": q.ssim_frames,
            "quality_resize": q.resize, "quality_note": _note(None, synthetic)}


def case_quality(out: str | Path, case_id: str, reference_id: str | None, frames: np.ndarray, *,
                 valid_video: bool, keep_frames: bool, quality: dict[str, Any], device, synthetic: bool) -> dict[str, Any]:
    """The quality fields of a case that just ran; keeps its frames when others compare with it or its reference is late."""
    if not valid_video:
        return _no_metrics("sampled timing: steps were skipped, the video is not valid; no metrics", False)
    if keep_frames:
        save_frames(frames_path(out, case_id), frames)
    if reference_id is None:
        return _no_metrics(None, False)
    if reference_id == case_id:
        return _no_metrics("reference case (compared with nothing)", synthetic)
    ref_path = frames_path(out, reference_id)
    if not ref_path.exists():
        save_frames(frames_path(out, case_id), frames)  # for pending_quality at the end of the run
        return _no_metrics(PENDING_NOTE, synthetic)
    return compare_frames(frames, np.load(ref_path), quality, device, synthetic)


def pending_quality(out: str | Path, case_id: str, reference_id: str, reference_status: str | None,
                    quality: dict[str, Any], synthetic: bool) -> dict[str, Any]:
    """The quality fields of a case whose reference ran after it, from both kept frames, or why there are none."""
    own, ref = frames_path(out, case_id), frames_path(out, reference_id)
    if reference_status != "ok":
        return _no_metrics(f"no metrics: reference case {reference_id!r} is {reference_status or 'not run'}",
                           synthetic)
    if not ref.exists() or not own.exists():
        missing = "the reference's" if not ref.exists() else "this case's"
        return _no_metrics(f"no metrics: {missing} kept frames are missing", synthetic)
    return compare_frames(np.load(own), np.load(ref), quality, "cpu", synthetic)
