"""Video output: written whole or not at all, and an output path that cannot work is refused before a run."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

import wan_runtime.video_io as video_io
from wan_runtime.errors import ConfigError, OutputError
from wan_runtime.video_io import check_output_path, read_mp4, write_mp4


def frames(count: int = 5, value: int = 0) -> np.ndarray:
    rng = np.random.default_rng(value)
    return rng.integers(0, 256, (count, 32, 48, 3), dtype=np.uint8)


def test_overwriting_an_existing_mp4_replaces_it_whole(tmp_path):
    out = tmp_path / "v.mp4"
    write_mp4(frames(5), out)
    write_mp4(frames(9), out)
    assert read_mp4(out)[0].shape[0] == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]


def test_a_write_that_fails_midway_leaves_the_old_file_intact(tmp_path, monkeypatch):
    out = tmp_path / "v.mp4"
    write_mp4(frames(5), out)
    before = out.read_bytes()
    real_encode = video_io._encode

    def disk_full_midway(data, path, *args):
        real_encode(data[:2], path, *args)  # a partial video lands on disk, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video_io, "_encode", disk_full_midway)
    with pytest.raises(OutputError, match=r"No space left on device \(the existing file is kept as it was\)"):
        write_mp4(frames(9), out)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # the partial temporary file is gone


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted(data, path, *args):
        path.write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(video_io, "_encode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_mp4(frames(), tmp_path / "v.mp4")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_folder_is_created(tmp_path):
    out = tmp_path / "a" / "b" / "v.mp4"
    assert check_output_path(out) == out
    write_mp4(frames(), out)
    assert read_mp4(out)[0].shape == (5, 32, 48, 3)


def test_an_existing_directory_is_refused_naming_a_file_in_it(tmp_path):
    with pytest.raises(ConfigError, match=f"is a directory; name a file in it, e.g. {tmp_path / 'video.mp4'}"):
        check_output_path(tmp_path)


def test_a_path_under_a_file_is_refused(tmp_path):
    (tmp_path / "in.png").write_bytes(b"x")
    with pytest.raises(ConfigError, match="lies under .*in.png', which is a file, not a folder"):
        check_output_path(tmp_path / "in.png" / "deeper" / "v.mp4")


@pytest.mark.parametrize("name", ["v.avi", "v.gif", "video"])
def test_an_unknown_extension_is_refused_naming_one_that_works(tmp_path, name):
    with pytest.raises(ConfigError, match=r"the video is H.264, written as .mp4, .mov, .mkv: e.g. .*\.mp4"):
        check_output_path(tmp_path / name)


def test_a_folder_that_cannot_be_written_is_refused(tmp_path, monkeypatch):
    real_open = type(tmp_path).open

    def denied(self, mode="r", *args, **kwargs):
        if "x" in mode:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(type(tmp_path), "open", denied)
    with pytest.raises(ConfigError, match=r"cannot be written \(Permission denied\); choose a writable folder"):
        check_output_path(tmp_path / "v.mp4")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the patched test above covers it")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="cannot be written"):
            check_output_path(folder / "v.mp4")
    finally:
        folder.chmod(0o755)
