"""Size and frame rules: the official area/aspect rule, its float quirk, custom sizes, 4n+1 frames."""

import pytest

from wan_runtime.errors import ConfigError
from wan_runtime.sizes import geometry, parse_size, validate_frames


def test_480p_landscape_image_gives_documented_token_count():
    geo = geometry("832*480", 81, 832, 480)
    assert (geo.width, geo.height, geo.tokens) == (832, 480, 32_760)


def test_720p_gives_documented_token_count():
    geo = geometry("1280*720", 81, 1280, 720)
    assert (geo.width, geo.height, geo.lat_frames, geo.tokens) == (1280, 720, 21, 75_600)


def test_official_rule_reproduces_the_float_quirk_464x832():
    geo = geometry("832*480", 81, 832, 480, rule="official")
    assert (geo.width, geo.height, geo.tokens) == (832, 464, 31_668)


def test_alias_takes_orientation_from_the_image():
    assert parse_size("480p", 600, 1000) == (480, 832)
    assert parse_size("720p", 1000, 600) == (1280, 720)


def test_output_keeps_the_image_aspect_within_the_area():
    geo = geometry("1280*720", 81, 1024, 1024)
    assert geo.width == geo.height == 960
    assert geo.width * geo.height <= 1280 * 720


def test_custom_size_must_be_multiple_of_16():
    with pytest.raises(ConfigError, match="multiples of 16"):
        parse_size("1000*1000")


def test_unparseable_size_lists_the_official_sizes():
    with pytest.raises(ConfigError, match="832\\*480"):
        parse_size("big")


@pytest.mark.parametrize("frames,hint", [(80, "77 or 81"), (82, "81 or 85"), (0, "smallest valid")])
def test_frames_not_4n_plus_1_name_the_nearest_valid_counts(frames, hint):
    with pytest.raises(ConfigError, match=hint):
        validate_frames(frames)


def test_valid_frame_counts_pass():
    assert [validate_frames(f) for f in (1, 5, 81)] == [1, 5, 81]
