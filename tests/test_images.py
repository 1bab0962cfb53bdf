"""The input picture: decoded by content, every mode to 8-bit RGB by its meaning, bounded; its exact resize."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import wan_runtime.images as images
from wan_runtime.errors import ConfigError
from wan_runtime.images import MAX_PIXELS, conditioning_tensor, image_to_tensor, load_image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Pixel noise: every detail finer than any target, the hardest picture to resize alike."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def upstream_resize(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """The whole picture in [-1, 1] through F.interpolate (bicubic, no anti-aliasing), as upstream."""
    return F.interpolate(image_to_tensor(image)[None], size=(height, width), mode="bicubic", align_corners=False)[0]


def test_a_16_bit_grayscale_png_keeps_its_grey_levels():
    levels = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    data = png_bytes(Image.fromarray(levels))
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    rgb = np.asarray(load_image(data)).astype(int)
    expected = np.rint(levels / 257.0)
    assert np.abs(rgb - expected[..., None]).max() <= 1
    assert (rgb == 255).mean() < 0.01  # `convert("RGB")` clips 16-bit values: ~100% white


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_other_sixteen_bit_grey_modes_are_scaled_the_same_way(mode):
    levels = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    image = Image.fromarray(levels).convert(mode) if mode == "I" else Image.frombytes(
        mode, (4, 1), levels.astype(">u2").tobytes())
    assert np.asarray(load_image(image))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_a_float_picture_in_0_1_is_scaled_and_one_outside_is_refused():
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    assert np.asarray(load_image(Image.fromarray(values, "F")))[0, :, 0].tolist() == [0, 128, 255]
    with pytest.raises(ConfigError, match=r"values outside \[0, 1\]"):
        load_image(Image.fromarray(values * 300, "F"))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_pixels_are_composited_over_white(mode):
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 255))
    image = rgba if mode == "RGBA" else rgba.convert(mode)
    if mode == "P":
        image = Image.new("P", (2, 1), 0)
        image.putpalette([0, 0, 0, 10, 10, 10])
        image.putpixel((1, 0), 1)
        image.info["transparency"] = 0
    pixels = np.asarray(load_image(png_bytes(image)))
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 1].tolist() in ([0, 0, 0], [10, 10, 10])


@pytest.mark.parametrize("mode, colour, rgb", [("CMYK", (255, 0, 0, 0), (0, 255, 255)), ("1", 1, (255, 255, 255))])
def test_cmyk_and_one_bit_pictures_become_rgb(mode, colour, rgb):
    assert tuple(np.asarray(load_image(Image.new(mode, (2, 2), colour)))[0, 0]) == rgb


def test_the_exif_orientation_of_a_file_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 0, 0)).save(buffer, "JPEG", exif=exif.tobytes())
    assert load_image(buffer.getvalue()).size == (20, 40)


def test_a_directory_given_as_image_is_named_as_such(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; pass the path of a picture file"):
        load_image(tmp_path)


def test_a_missing_file_is_named_as_missing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_a_text_file_is_refused_as_not_a_picture(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("a cat surfing\n")
    with pytest.raises(ConfigError, match=r"notes.png' is not a picture: its content is none of PNG, JPEG"):
        load_image(text)


def test_a_picture_is_read_by_its_content_not_its_name(tmp_path):
    misnamed = tmp_path / "really_a_png.jpg"
    misnamed.write_bytes(png_bytes(Image.new("RGB", (8, 6), (1, 2, 3))))
    assert load_image(misnamed).getpixel((0, 0)) == (1, 2, 3)


def test_a_damaged_picture_is_named_as_damaged(tmp_path):
    cut = tmp_path / "cut.png"
    cut.write_bytes(png_bytes(noise(64, 64))[:2000])
    with pytest.raises(ConfigError, match="is a damaged PNG file"):
        load_image(cut)


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path):
    # a valid 1x1 PNG whose header claims 20000 x 20000 pixels (400 megapixels)
    data = bytearray(png_bytes(Image.new("L", (1, 1))))
    ihdr = struct.pack(">II", 20000, 20000) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=f"more than {MAX_PIXELS:,} pixels"):
        load_image(bomb)


@pytest.mark.parametrize("source, target", [((1920, 1440), (64, 48)), ((1999, 1001), (80, 40)),
                                            ((333, 4000), (16, 192)), ((4097, 3001), (832, 480))])
def test_a_huge_picture_resizes_to_what_the_whole_picture_gives(source, target):
    picture = noise(*source)
    assert picture.width >= images.GATHER_RATIO * target[0]  # the path that reads only the filter's pixels
    exact = upstream_resize(picture, *target)
    assert torch.allclose(conditioning_tensor(picture, target[1], target[0]), exact, rtol=0, atol=5e-6)


def test_a_huge_picture_is_never_converted_to_float_whole(monkeypatch):
    def whole(_):
        raise AssertionError("the whole picture was converted to float")

    monkeypatch.setattr(images, "image_to_tensor", whole)
    assert conditioning_tensor(noise(1600, 1200), 48, 64).shape == (3, 48, 64)


def test_a_picture_near_the_video_size_takes_upstreams_own_resize():
    picture = noise(100, 80)
    assert torch.equal(conditioning_tensor(picture, 48, 64), upstream_resize(picture, 64, 48))
