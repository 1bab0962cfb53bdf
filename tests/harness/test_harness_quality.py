"""harness.quality: one rule fills a case's quality fields, whether its reference ran before or after it."""

from __future__ import annotations

import numpy as np
import pytest

from harness.jobs import frames_path
from harness.quality import SYNTHETIC_NOTE, case_quality, pending_quality, save_frames

QUALITY = {"resize_filter": "bicubic", "antialias": True}


def _video(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)


def _after_case(out, frames: np.ndarray, **overrides) -> dict:
    """case_quality of case `c` against reference `ref`, as the worker calls it when `c` ends."""
    kwargs = dict(valid_video=True, keep_frames=False, quality=QUALITY, device="cpu", synthetic=True) | overrides
    return case_quality(out, "c", "ref", frames, **kwargs)


def test_a_late_reference_gives_the_metrics_an_early_one_gives(tmp_path):
    frames, reference = _video(1), _video(2)
    early, late = tmp_path / "early", tmp_path / "late"
    save_frames(frames_path(early, "ref"), reference)
    measured_now = _after_case(early, frames)
    waiting = _after_case(late, frames)  # the reference has not run yet: the case keeps its frames
    assert waiting["psnr_db"] is None and waiting["quality_note"].startswith("pending")
    save_frames(frames_path(late, "ref"), reference)
    measured_later = pending_quality(late, "c", "ref", "ok", QUALITY, synthetic=True)
    assert measured_later == measured_now
    assert measured_now["psnr_db"] < 20 and measured_now["quality_note"] == SYNTHETIC_NOTE


def test_a_reference_that_failed_leaves_no_metrics_and_says_why(tmp_path):
    _after_case(tmp_path, _video(1))
    fields = pending_quality(tmp_path, "c", "ref", "oom", QUALITY, synthetic=False)
    assert fields["psnr_db"] is None and fields["quality_note"] == "no metrics: reference case 'ref' is oom"


def test_a_sampled_video_has_no_metrics_and_keeps_no_frames(tmp_path):
    fields = _after_case(tmp_path, _video(1), valid_video=False)
    assert fields["psnr_db"] is None and "sampled timing" in fields["quality_note"]
    assert not frames_path(tmp_path, "c").exists()


@pytest.mark.parametrize("reference, note", [(None, None), ("c", "reference case (compared with nothing)")])
def test_a_case_without_another_reference_has_no_metrics(tmp_path, reference, note):
    fields = case_quality(tmp_path, "c", reference, _video(1), valid_video=True, keep_frames=True, quality=QUALITY,
                          device="cpu", synthetic=False)
    assert fields["psnr_db"] is None and fields["quality_note"] == note
    assert frames_path(tmp_path, "c").exists()  # kept for the cases compared with it
