"""Quality metrics: per-frame PSNR (range 1, 100 dB cap) and SSIM (Gaussian 11x11, sigma 1.5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from harness.metrics import compare_videos
from wan_runtime.errors import ConfigError


def _video(seed: int = 0, frames: int = 3, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = np.linspace(0, 255, w)[None, None, :, None] * np.ones((frames, h, 1, 3))
    return np.clip(smooth + rng.normal(0, 30, (frames, h, w, 3)), 0, 255).astype(np.uint8)


def _distorted(video: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(video + rng.normal(0, sigma, video.shape), 0, 255).astype(np.uint8)


def test_identical_videos_give_psnr_100_and_ssim_1():
    video = _video()
    q = compare_videos(video, video)
    assert q.psnr_db == 100.0 and q.psnr_frames == [100.0] * 3
    assert q.ssim == pytest.approx(1.0, abs=1e-6)
    assert q.resize == "none"


def test_torchmetrics_agree_with_scikit_image_under_the_same_conventions():
    """Settings on both sides: frames as float in [0, 1], data_range 1.0, per-frame 2-D SSIM with a
    Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11x11), population covariance
    (use_sample_covariance=False), K1 0.01, K2 0.03, channels averaged, 5-px border excluded.
    Tolerance: 1e-4 dB on PSNR, 1e-5 on SSIM (float32 vs float64 arithmetic)."""
    reference = _video(seed=0)
    video = _distorted(reference, sigma=12.0)
    q = compare_videos(video, reference)
    for i in range(reference.shape[0]):
        ref, out = reference[i] / 255.0, video[i] / 255.0
        assert q.psnr_frames[i] == pytest.approx(sk_psnr(ref, out, data_range=1.0), abs=1e-4)
        expected = sk_ssim(ref, out, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                           use_sample_covariance=False, K1=0.01, K2=0.03)
        assert q.ssim_frames[i] == pytest.approx(expected, abs=1e-5)


def test_video_psnr_is_the_mean_of_per_frame_values_not_of_the_global_mse():
    reference = _video(frames=2)
    video = reference.copy()
    video[1] = _distorted(reference[1:2], sigma=20.0)[0]  # frame 0 identical, frame 1 noisy
    q = compare_videos(video, reference)
    assert q.psnr_frames[0] == 100.0
    assert q.psnr_db == pytest.approx((100.0 + q.psnr_frames[1]) / 2)
    global_mse = np.mean((video / 255.0 - reference / 255.0) ** 2)
    assert q.psnr_db != pytest.approx(10 * math.log10(1 / global_mse), abs=1.0)


def test_more_distortion_gives_lower_psnr_and_ssim():
    reference = _video()
    mild, strong = compare_videos(_distorted(reference, 4.0), reference), compare_videos(_distorted(reference, 25.0), reference)
    assert strong.psnr_db < mild.psnr_db < 100.0
    assert strong.ssim < mild.ssim < 1.0


def test_another_resolution_is_resized_to_the_reference_with_the_named_filter():
    reference = _video(h=48, w=64)
    small = reference[:, ::2, ::2]
    q = compare_videos(small, reference, filter="bicubic", antialias=False)
    assert q.resize == "bicubic, antialias off, 32x24 -> 64x48"
    assert 10.0 < q.psnr_db < 100.0
    with pytest.raises(ConfigError, match="lanczos filter \\(PIL\\) always anti-aliases"):
        compare_videos(small, reference, filter="lanczos", antialias=False)


def test_videos_with_different_frame_counts_are_not_compared():
    with pytest.raises(ConfigError, match="cannot compare a 2-frame video with a 3-frame reference"):
        compare_videos(_video(frames=2), _video(frames=3))


def test_videos_that_cannot_be_compared_keep_null_metrics_and_say_why():
    from harness.quality import compare_frames

    frames = np.zeros((5, 16, 16, 3), dtype=np.uint8)
    reference = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    fields = compare_frames(frames, reference, {"resize_filter": "bicubic", "antialias": True}, "cpu", False)
    assert fields["psnr_db"] is None and fields["ssim"] is None
    assert fields["quality_note"].startswith("not compared:")
