"""The benchmark picture is prepared at the size's own aspect, so named sizes give documented tokens."""

from __future__ import annotations

import numpy as np
import pytest

from harness.inputs import center_crop_to_aspect, load_picture, prepare_image
from wan_runtime.errors import ConfigError
from wan_runtime.sizes import geometry


@pytest.mark.parametrize("size, pixels, tokens", [
    ("832*480", (832, 480), 32_760),
    ("480*832", (480, 832), 32_760),
    ("1280*720", (1280, 720), 75_600),
])
def test_prepared_picture_gives_the_documented_size_and_tokens(size, pixels, tokens):
    image = prepare_image("astronaut", size)
    assert image.size == pixels
    geo = geometry(size, 81, image.width, image.height)
    assert (geo.width, geo.height, geo.tokens) == (*pixels, tokens)


def test_a_wide_sample_is_centre_cropped_to_the_target_aspect_not_stretched():
    picture = load_picture("chelsea")  # 451x300, landscape; the target 96*160 is portrait
    crop = center_crop_to_aspect(picture, 96, 160)
    assert crop.shape == (300, 180, 3)  # 180:300 == 96:160
    assert (crop == picture[:, 135:315]).all()  # the centre
    assert prepare_image("chelsea", "96*160").size == (96, 160)


def test_an_unknown_picture_is_a_clear_error():
    with pytest.raises(ConfigError, match="neither a scikit-image sample"):
        prepare_image("no-such-picture", "160*96")


def test_a_16_bit_benchmark_picture_keeps_its_grey_levels(tmp_path):
    from PIL import Image

    grey = np.full((48, 64), 32768, dtype=np.uint16)  # mid-grey on a 16-bit scale
    path = tmp_path / "grey16.png"
    Image.fromarray(grey).save(path)
    picture = load_picture(str(path))
    assert picture.shape == (48, 64, 3) and picture.dtype == np.uint8
    assert abs(int(picture.mean()) - 128) <= 1
