"""The input picture: decoded by its content, any bit depth or colour mode to 8-bit RGB, bounded in size.

What `load_image` guarantees (each refusal is a one-line ConfigError naming the path and the fix):
- the content decides, never the name: a PNG called `.jpg` is read as a PNG, a text file called
  `.png` is "not a picture"; only the formats in FORMATS are opened (no Ghostscript, no plugins);
- a directory, a missing file and an unreadable file are told apart;
- at most MAX_PIXELS pixels (PIL's own decompression-bomb limit), checked from the header before
  any pixel is decoded, so a decoded picture holds at most ~720 MB (PIL keeps RGB in 4 bytes a pixel);
- every mode becomes 8-bit RGB by its meaning: 16-bit grey (`I;16`, `I;16B`, `I`) is scaled by
  65535 -> 255 (a plain `convert("RGB")` clips it, turning most pictures white), 32-bit float grey
  (`F`) in [0, 1] by 255, 1-bit to 0/255, palettes through their palette, CMYK and YCbCr by PIL's
  conversions; transparent pixels are composited over white (upstream drops the alpha channel and
  keeps whatever colour lies under it; an opaque picture gives the same pixels either way);
- the EXIF orientation of a file is applied, so the picture is the way a viewer shows it.

`conditioning_tensor` is the pipeline's resize of the picture to the video size, as upstream:
[-1, 1] in fp32, bicubic, no anti-aliasing. A bicubic filter reads 4 source rows per output row
and 4 columns per output column, so for a picture far larger than the video (at least
GATHER_RATIO times on both sides) only those rows and columns are converted to float and
filtered, with torch's own coefficients; the result equals `F.interpolate` on the whole picture
to float rounding (at most 1.1e-6 on [-1, 1] over 40 random sizes; tests/test_images.py allows
5e-6), whatever the content. Shrinking the picture first (`Image.draft` / `Image.reduce`) would
not: its box average is a different picture from the point samples this filter takes (measured:
24 dB PSNR apart on a detailed photograph resized 30x). A 13000x13000 PNG for a 720p video peaked
at 1.23 GB of process memory (0.22 GB of it torch, 0.65 GB the decoded picture) instead of 6.0 GB
through `convert("RGB")` and a float32 copy of the whole picture (2 CPU threads, Python 3.11).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from wan_runtime.errors import ConfigError

if TYPE_CHECKING:
    import torch

# PIL's decompression-bomb limit (2 x Image.MAX_IMAGE_PIXELS): about 179 megapixels, e.g. 13000x13000.
MAX_PIXELS = 178_956_970
# Formats opened (by content; JPEG includes the multi-picture JPEGs of phones, MPO); everything else
# is refused rather than handed to another PIL plugin (EPS would run Ghostscript).
FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "PPM")
BACKGROUND = (255, 255, 255)  # what transparent pixels are composited over
# conditioning_tensor reads only the pixels the filter needs once the picture is this many times the video's size.
GATHER_RATIO = 4
CUBIC_A = -0.75  # torch's (and upstream's) bicubic coefficient

ImageSource = Union[str, Path, Image.Image, np.ndarray, bytes, BinaryIO]

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA = ("LA", "PA", "RGBA", "RGBa")
_CONVERTED = ("1", "P", "CMYK", "YCbCr", "RGBX")
_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode a path, bytes, binary file, PIL image or HxWx3 uint8 array to 8-bit RGB (see the module doc).

    `max_pixels` lowers the pixel limit of a file (a service caps its uploads below MAX_PIXELS); it is
    checked from the header, before any pixel is decoded.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(source, "the image")
    if isinstance(source, np.ndarray):
        if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
            raise ConfigError(f"image array must be uint8 HxWx3; got {source.dtype} {tuple(source.shape)}")
        return Image.fromarray(source)
    if isinstance(source, (bytes, bytearray)):
        return _decode(io.BytesIO(source), "the uploaded image", max_pixels)
    if hasattr(source, "read"):
        return _decode(source, "the uploaded image", max_pixels)
    if not isinstance(source, (str, Path)):
        raise ConfigError(f"image must be a path, bytes, a PIL image or a uint8 array, not {type(source).__name__}")
    path = Path(source)
    name = f"image {str(path)!r}"
    if path.is_dir():
        raise ConfigError(f"{name} is a directory; pass the path of a picture file (PNG, JPEG, WebP, ...)")
    if not path.exists():
        raise ConfigError(f"{name} does not exist; pass the path of a picture file (PNG, JPEG, WebP, ...)")
    if not path.is_file():
        raise ConfigError(f"{name} is not a regular file; pass the path of a picture file")
    try:
        with open(path, "rb") as fh:
            return _decode(fh, name, max_pixels)
    except OSError as exc:  # open() itself: permissions and the like (decode errors are ConfigErrors already)
        raise ConfigError(f"{name} cannot be read ({exc.strerror or exc}); check its permissions") from None


def image_to_tensor(img: Image.Image) -> "torch.Tensor":
    """RGB PIL image -> float32 [3, H, W] in [-1, 1] (x/255*2-1, as upstream, one float copy)."""
    import torch  # here, so checking a picture does not need torch

    arr = torch.from_numpy(np.array(img if img.mode == "RGB" else img.convert("RGB"), dtype=np.uint8))
    return arr.permute(2, 0, 1).float().div_(255.0).mul_(2.0).sub_(1.0)


def conditioning_tensor(img: Image.Image, height: int, width: int) -> "torch.Tensor":
    """The picture as float32 [3, height, width] in [-1, 1], resized as upstream (bicubic, no anti-aliasing)."""
    import torch
    import torch.nn.functional as F

    if img.height < GATHER_RATIO * height or img.width < GATHER_RATIO * width:
        return F.interpolate(image_to_tensor(img)[None], size=(height, width), mode="bicubic", align_corners=False)[0]
    rows, row_weights = _cubic_taps(img.height, height)  # [height, 4] each
    cols, col_weights = _cubic_taps(img.width, width)
    rgb = img if img.mode == "RGB" else img.convert("RGB")  # convert() copies even an RGB picture
    picked = torch.from_numpy(_gather(rgb, rows.reshape(-1).numpy(), cols.reshape(-1).numpy()))
    x = picked.permute(2, 0, 1).float().div_(255.0).mul_(2.0).sub_(1.0)  # [3, 4 * height, 4 * width]
    # columns, then rows, each tap added in order: the sums torch forms, in its order
    x = x.view(3, 4 * height, width, 4)
    x = (((x[..., 0] * col_weights[:, 0] + x[..., 1] * col_weights[:, 1]) + x[..., 2] * col_weights[:, 2])
         + x[..., 3] * col_weights[:, 3])
    x = x.view(3, height, 4, width)
    w = row_weights[:, :, None]
    return ((x[:, :, 0] * w[:, 0] + x[:, :, 1] * w[:, 1]) + x[:, :, 2] * w[:, 2]) + x[:, :, 3] * w[:, 3]


def _cubic_taps(in_size: int, out_size: int) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Source indices [out, 4] (clamped at the borders) and weights [out, 4] of torch's bicubic, align_corners=False."""
    import torch

    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    # torch's fp32 source coordinate is the exactly rounded scale * (i + 0.5) - 0.5 (a fused multiply-add);
    # no clamp at 0 for cubic, as in torch
    src = (scale.double() * (torch.arange(out_size, dtype=torch.float64) + 0.5) - 0.5).float()
    base = torch.floor(src)
    t = src - base
    index = (base.long()[:, None] + torch.arange(-1, 3)[None, :]).clamp_(0, in_size - 1)
    a = CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    weights = torch.stack([far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)], dim=1)
    return index, weights


def _gather(img: Image.Image, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """uint8 [len(rows), len(cols), 3] of an RGB picture, converted to numpy one band of rows at a time."""
    out = np.empty((len(rows), len(cols), 3), dtype=np.uint8)
    band = max(1, 2**24 // (3 * img.width))  # ~16 MB of the picture at a time
    for start in range(0, img.height, band):
        wanted = np.nonzero((rows >= start) & (rows < start + band))[0]
        if len(wanted):
            strip = np.asarray(img.crop((0, start, img.width, min(img.height, start + band))))
            out[wanted] = strip[rows[wanted] - start][:, cols]
    return out


# ---------------------------------------------------------------------------------------------- decoding
def _decode(fh: BinaryIO, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    Image.init()  # registers every plugin, so each name in FORMATS is known to Image.open
    try:
        with warnings.catch_warnings():
            # Between PIL's warning and error limits PIL only warns; MAX_PIXELS below is the rule here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fh, formats=FORMATS)
    except Image.DecompressionBombError:
        raise ConfigError(f"{name} has more than {MAX_PIXELS:,} pixels (the decompression-bomb limit); "
                          "downscale it first") from None
    except UnidentifiedImageError:
        empty = _is_empty(fh)
        raise ConfigError(
            f"{name} is not a picture{' (the file is empty)' if empty else ''}: its content is none of "
            f"{', '.join(FORMATS)}; pass a PNG or JPEG file (the file name does not matter, the content does)"
        ) from None
    # No `with im`: the caller owns the file object, and the returned picture may be `im` itself.
    width, height = im.size
    if width * height > max_pixels:
        raise ConfigError(f"{name} is {width}x{height} = {width * height:,} pixels, more than the limit of "
                          f"{max_pixels:,}; downscale it first")
    if width < 1 or height < 1:
        raise ConfigError(f"{name} is empty ({width}x{height})")
    orientation = _orientation(im)
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"{name} is a damaged {im.format} file ({exc}); export it again") from None
    im = _to_rgb(im, name)
    return im.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else im


def _to_rgb(im: Image.Image, name: str) -> Image.Image:
    """8-bit RGB by what the pixel values mean (the picture itself when it already is)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "L":
        return im.convert("RGB")
    if mode in _SIXTEEN_BIT:
        return _scaled_to_l(np.asarray(im), 65535).convert("RGB")
    if mode == "F":
        arr = np.asarray(im)
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ConfigError(f"{name} is a 32-bit float picture with values outside [0, 1] (or NaN); "
                              "save it as an 8- or 16-bit PNG")
        return _scaled_to_l(arr, 1.0).convert("RGB")
    if mode == "P" and "transparency" in im.info:
        mode = "PA"
    if mode in _ALPHA:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    if mode in _CONVERTED:
        return im.convert("RGB")
    raise ConfigError(f"{name} has colour mode {mode!r}, which this runtime does not convert; "
                      "save it as an RGB or greyscale PNG/JPEG")


def _scaled_to_l(arr: np.ndarray, full_scale: float) -> Image.Image:
    """A greyscale array whose `full_scale` is white -> 8-bit L, rounded; row blocks bound the temporaries."""
    out = np.empty(arr.shape, dtype=np.uint8)
    rows = max(1, 2**22 // max(1, arr.shape[1]))
    for start in range(0, arr.shape[0], rows):
        block = arr[start:start + rows].astype(np.float32)
        np.clip(block, 0, full_scale, out=block)
        out[start:start + rows] = np.rint(block * (255.0 / full_scale))
    return Image.fromarray(out, mode="L")


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block is no reason to refuse the picture
        return 1


def _is_empty(fh: BinaryIO) -> bool:
    try:
        fh.seek(0, os.SEEK_END)
        return fh.tell() == 0
    except (OSError, ValueError):
        return False


__all__ = ["MAX_PIXELS", "FORMATS", "BACKGROUND", "GATHER_RATIO", "ImageSource", "load_image", "image_to_tensor",
           "conditioning_tensor"]
