"""Video quality against a reference: per-frame PSNR and SSIM with torchmetrics.

Conventions (the ones video papers report; FACTS.md lists where libraries differ):
- frames are uint8 RGB converted to float in [0, 1]; data range 1.0;
- PSNR per frame from that frame's MSE over all pixels and channels, capped at 100 dB (identical
  frames have MSE 0, i.e. infinite PSNR); the video's PSNR is the mean of the per-frame values;
- SSIM per frame (2-D, channels averaged; torchmetrics would treat a 5-D video as 3-D SSIM, so
  frames are passed as a batch of images), Gaussian window 11x11, sigma 1.5, K1 0.01, K2 0.03,
  population covariances, the (11-1)/2-px border excluded as scikit-image does; the video's SSIM is
  the mean over frames;
- a case of another resolution is resized to the reference's with a named filter (float result,
  not re-quantized). Different frame counts are not comparable and raise an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from wan_runtime.errors import ConfigError

PSNR_CAP_DB = 100.0
SSIM_KERNEL = 11
SSIM_SIGMA = 1.5
RESIZE_FILTERS = ("bicubic", "bilinear", "lanczos", "area", "nearest")
_CHUNK = 8  # frames per SSIM call, bounding memory on long 720p videos


@dataclass(frozen=True)
class VideoQuality:
    """Per-frame PSNR/SSIM of a video against its reference, and their means."""

    psnr_db: float
    ssim: float
    psnr_frames: list[float]
    ssim_frames: list[float]
    resize: str  # "none" or how the case's frames were brought to the reference's size


def to_unit_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 [F, H, W, 3] -> float32 [F, 3, H, W] in [0, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(f"frames must be uint8 [F, H, W, 3]; got {frames.dtype} {tuple(frames.shape)}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div(255.0)


def resize_frames(frames: torch.Tensor, height: int, width: int, filter: str, antialias: bool) -> torch.Tensor:
    """Resize float [F, 3, H, W] frames in [0, 1] with a named filter; the result is clamped to [0, 1]."""
    if filter not in RESIZE_FILTERS:
        raise ConfigError(f"resize filter {filter!r} is not one of {list(RESIZE_FILTERS)}")
    if filter == "lanczos":
        if not antialias:
            raise ConfigError("the lanczos filter (PIL) always anti-aliases; use antialias: true or another filter")
        out = [
            np.stack([np.asarray(Image.fromarray(ch.numpy(), mode="F").resize((width, height), Image.LANCZOS))
                      for ch in frame])
            for frame in frames
        ]
        return torch.from_numpy(np.stack(out)).clamp(0, 1)
    kwargs = {"align_corners": False, "antialias": antialias} if filter in ("bicubic", "bilinear") else {}
    return F.interpolate(frames, size=(height, width), mode=filter, **kwargs).clamp(0, 1)


def psnr_per_frame(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR of each frame [F] (data range 1, capped at PSNR_CAP_DB)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    values = peak_signal_noise_ratio(preds, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return values.nan_to_num(posinf=PSNR_CAP_DB).clamp(max=PSNR_CAP_DB)


def ssim_per_frame(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM of each frame [F] (Gaussian 11x11, sigma 1.5, data range 1, 5-px border excluded).

    torchmetrics (1.9) averages its SSIM map over the whole reflect-padded image; the reference
    definition (Wang et al., scikit-image) averages only where the window fits inside the image.
    The map is therefore taken from torchmetrics and its border cropped here.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    border = (SSIM_KERNEL - 1) // 2
    if min(preds.shape[-2:]) <= 2 * border:
        raise ConfigError(f"frames of {tuple(preds.shape[-2:])} px are too small for an {SSIM_KERNEL}x{SSIM_KERNEL} SSIM window")
    parts = []
    for i in range(0, preds.shape[0], _CHUNK):
        _, ssim_map = structural_similarity_index_measure(
            preds[i : i + _CHUNK], target[i : i + _CHUNK], gaussian_kernel=True, sigma=SSIM_SIGMA,
            kernel_size=SSIM_KERNEL, data_range=1.0, reduction="none", return_full_image=True,
        )
        parts.append(ssim_map[..., border:-border, border:-border].mean(dim=(1, 2, 3)))
    return torch.cat(parts)


def compare_videos(
    frames: np.ndarray,
    reference: np.ndarray,
    filter: str = "bicubic",
    antialias: bool = True,
    device: str | torch.device = "cpu",
) -> VideoQuality:
    """PSNR/SSIM of uint8 `frames` [F, H, W, 3] against `reference`, resizing to the reference if needed."""
    if frames.shape[0] != reference.shape[0]:
        raise ConfigError(
            f"cannot compare a {frames.shape[0]}-frame video with a {reference.shape[0]}-frame reference; "
            "give the case and its reference the same frame count"
        )
    preds = to_unit_float(frames).to(device)
    target = to_unit_float(reference).to(device)
    resize = "none"
    if preds.shape[-2:] != target.shape[-2:]:
        preds = resize_frames(preds.cpu(), target.shape[-2], target.shape[-1], filter, antialias).to(device)
        resize = f"{filter}, antialias {'on' if antialias else 'off'}, {frames.shape[2]}x{frames.shape[1]} -> " \
                 f"{reference.shape[2]}x{reference.shape[1]}"
    psnr = psnr_per_frame(preds, target).double().cpu()
    ssim = ssim_per_frame(preds, target).double().cpu()
    return VideoQuality(
        psnr_db=float(psnr.mean()),
        ssim=float(ssim.mean()),
        psnr_frames=[round(float(v), 4) for v in psnr],
        ssim_frames=[round(float(v), 6) for v in ssim],
        resize=resize,
    )
