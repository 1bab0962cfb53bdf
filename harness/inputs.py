"""The benchmark picture: a scikit-image sample (or a file) prepared at the target size's own aspect.

The pipeline keeps the input image's aspect ratio under the size's maximum area, so an arbitrary
picture would change the output size and token count. Preparing the picture at exactly the size's
W x H (centre crop to that aspect, then a Lanczos resize) makes a named size give its documented
geometry: `832*480` at 81 frames is 480x832 px and 32,760 tokens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from wan_runtime.errors import ConfigError
from wan_runtime.images import load_image
from wan_runtime.sizes import parse_size

# scikit-image samples that ship inside the package (no download) and are colour photographs.
SAMPLES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket")


def load_picture(name: str) -> np.ndarray:
    """A uint8 HxWx3 picture: a scikit-image sample name or an image file path."""
    if name in SAMPLES:
        from skimage import data

        picture = getattr(data, name)()
        return np.ascontiguousarray(picture[..., :3])
    path = Path(name)
    if not path.exists():
        raise ConfigError(f"image {name!r} is neither a scikit-image sample {list(SAMPLES)} nor an existing file")
    return np.asarray(load_image(path))  # the runtime's decoder: any mode scaled by its meaning


def center_crop_to_aspect(picture: np.ndarray, width: int, height: int) -> np.ndarray:
    """The largest centred crop of `picture` with aspect width:height."""
    h, w = picture.shape[:2]
    if w * height > h * width:  # too wide: crop the sides
        crop_w = max(1, round(h * width / height))
        left = (w - crop_w) // 2
        return picture[:, left : left + crop_w]
    crop_h = max(1, round(w * height / width))
    top = (h - crop_h) // 2
    return picture[top : top + crop_h]


def prepare_image(name: str, size: str) -> Image.Image:
    """The picture `name` cropped to the aspect of `size` (W*H or an alias) and resized to exactly W x H."""
    width, height = parse_size(size)
    cropped = center_crop_to_aspect(load_picture(name), width, height)
    return Image.fromarray(cropped).resize((width, height), Image.LANCZOS)
