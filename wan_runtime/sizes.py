"""Output size and frame-count rules: the official max-area/aspect rule, custom sizes, 4n+1 frames."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from wan_runtime.errors import ConfigError

# The four official sizes (W*H). Each is a maximum area; the output keeps the image's aspect ratio.
OFFICIAL_SIZES: tuple[str, ...] = ("1280*720", "720*1280", "832*480", "480*832")
SIZE_ALIASES: dict[str, tuple[str, str]] = {
    # alias -> (landscape, portrait); the image's orientation picks one
    "480p": ("832*480", "480*832"),
    "720p": ("1280*720", "720*1280"),
}

# "exact": integer arithmetic, so an 832x480 image at 832*480 gives 480x832 (32,760 tokens at 81
#   frames, the documented count). Default for wan-generate and the harness.
# "official": the upstream float formula, whose sqrt(230400) = 479.99999... gives 464x832 for that
#   same image; use it to reproduce upstream outputs bit for bit.
SizeRule = Literal["exact", "official"]


@dataclass(frozen=True)
class VideoGeometry:
    """Pixel and latent dimensions of one generation."""

    width: int
    height: int
    frames: int
    lat_frames: int
    lat_height: int
    lat_width: int
    tokens: int  # DiT sequence length after the (1, 2, 2) patch embedding


def parse_size(size: str, image_width: int | None = None, image_height: int | None = None) -> tuple[int, int]:
    """Turn `W*H` or an alias (`480p`, `720p`) into (W, H); aliases take the image's orientation."""
    key = size.strip().lower()
    if key in SIZE_ALIASES:
        landscape, portrait = SIZE_ALIASES[key]
        portrait_image = image_width is not None and image_height is not None and image_height > image_width
        key = portrait if portrait_image else landscape
    parts = key.replace("x", "*").split("*")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(
            f"size {size!r} is not understood; use W*H (e.g. 832*480), one of {list(OFFICIAL_SIZES)} "
            f"or an alias {sorted(SIZE_ALIASES)}"
        )
    w, h = (int(p) for p in parts)
    if key not in OFFICIAL_SIZES and (w % 16 or h % 16 or w <= 0 or h <= 0):
        raise ConfigError(
            f"size {size!r}: custom sizes need both sides positive multiples of 16 "
            f"(nearest: {_round16(w)}*{_round16(h)}), or use one of {list(OFFICIAL_SIZES)}"
        )
    return w, h


def _round16(x: int) -> int:
    return max(16, int(round(x / 16)) * 16)


def validate_frames(frames: int) -> int:
    """Check that `frames` is 4n+1 and return it; otherwise name the nearest valid counts."""
    if not isinstance(frames, int) or frames < 1 or (frames - 1) % 4:
        if isinstance(frames, int) and frames > 1:
            lower = frames - ((frames - 1) % 4)
            hint = f"nearest valid counts: {lower} or {lower + 4}"
        else:
            hint = "the smallest valid count is 1, then 5, 9, ..."
        raise ConfigError(f"frames must be 4n+1 (e.g. 81); got {frames!r}; {hint}")
    return frames


def latent_hw(
    max_area: int,
    image_width: int,
    image_height: int,
    spatial_stride: int = 8,
    patch: int = 2,
    rule: SizeRule = "exact",
) -> tuple[int, int]:
    """Latent (h, w) for an image of the given size under a max pixel area, keeping its aspect."""
    if image_width <= 0 or image_height <= 0:
        raise ConfigError(f"image size {image_width}x{image_height} is empty")
    unit = spatial_stride * patch  # pixels per latent patch side (16)
    if rule == "official":
        aspect = image_height / image_width
        lat_h = round(math.sqrt(max_area * aspect) // spatial_stride // patch * patch)
        lat_w = round(math.sqrt(max_area / aspect) // spatial_stride // patch * patch)
    elif rule == "exact":
        # largest n with (unit*n)^2 <= area*h/w, i.e. unit^2 * n^2 * w <= area * h, in integers
        lat_h = _largest_n(max_area * image_height, unit * unit * image_width) * patch
        lat_w = _largest_n(max_area * image_width, unit * unit * image_height) * patch
    else:
        raise ConfigError(f"size rule {rule!r} is not one of 'exact', 'official'")
    if lat_h < patch or lat_w < patch:
        raise ConfigError(
            f"image {image_width}x{image_height} is too elongated for area {max_area}: "
            f"output would be {lat_w * spatial_stride}x{lat_h * spatial_stride}"
        )
    return lat_h, lat_w


def _largest_n(numerator: int, denominator: int) -> int:
    """Largest integer n with n*n*denominator <= numerator."""
    n = math.isqrt(numerator // denominator)
    while (n + 1) * (n + 1) * denominator <= numerator:
        n += 1
    while n > 0 and n * n * denominator > numerator:
        n -= 1
    return n


def geometry(
    size: str,
    frames: int,
    image_width: int,
    image_height: int,
    vae_stride: tuple[int, int, int] = (4, 8, 8),
    patch_size: tuple[int, int, int] = (1, 2, 2),
    rule: SizeRule = "exact",
) -> VideoGeometry:
    """Pixel/latent geometry for a request: size (max area) + image aspect + 4n+1 frames."""
    validate_frames(frames)
    w, h = parse_size(size, image_width, image_height)
    lat_h, lat_w = latent_hw(w * h, image_width, image_height, vae_stride[1], patch_size[1], rule)
    lat_f = (frames - 1) // vae_stride[0] + 1
    tokens = lat_f // patch_size[0] * (lat_h // patch_size[1]) * (lat_w // patch_size[2])
    return VideoGeometry(
        width=lat_w * vae_stride[2],
        height=lat_h * vae_stride[1],
        frames=frames,
        lat_frames=lat_f,
        lat_height=lat_h,
        lat_width=lat_w,
        tokens=tokens,
    )
