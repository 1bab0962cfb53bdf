"""Writing frames to an mp4 (PyAV, H.264) and reading them back; the output path checked before a run.

A video is written to a temporary file beside the target and renamed over it only once complete,
so a failed write (a full disk, a signal) never leaves a partial file in its place: an existing file
is either replaced whole (as upstream, which overwrites silently) or left as it was.
"""

from __future__ import annotations

import os
import uuid
from fractions import Fraction
from pathlib import Path

import numpy as np

from wan_runtime.errors import ConfigError, OutputError

# Extensions written, and the container each one means (all hold H.264).
CONTAINERS: dict[str, str] = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


def check_output_path(path: str | Path) -> Path:
    """Refuse, before any work, an output path that cannot be written; returns it as a Path.

    Refused: an existing directory, a path under a file, an extension not in CONTAINERS, a folder
    that cannot be written (checked by creating and removing a file in the nearest existing folder,
    which also catches read-only mounts and root-squashed shares). A missing folder is fine:
    `write_mp4` creates it.
    """
    path = Path(path)
    name = f"output {str(path)!r}"
    if path.is_dir():
        raise ConfigError(f"{name} is a directory; name a file in it, e.g. {path / 'video.mp4'}")
    if path.suffix.lower() not in CONTAINERS:
        raise ConfigError(f"{name} has the extension {path.suffix or '(none)'!r}; the video is H.264, "
                          f"written as {', '.join(CONTAINERS)}: e.g. {path.with_suffix('.mp4')}")
    folder = path.parent
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{name} lies under {str(folder)!r}, which is a file, not a folder; choose another path")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{name} exists and is not a regular file; choose another path")
    probe = folder / f".wan-write-check-{uuid.uuid4().hex[:12]}"
    try:
        probe.open("xb").close()
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{name}: the folder {str(folder)!r} cannot be written ({exc.strerror or exc}); "
                          "choose a writable folder") from None
    return path


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 16, crf: int = 18) -> Path:
    """Encode uint8 [F, H, W, 3] frames as H.264 at `fps` into `path` (written whole or not at all); returns it."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(f"frames must be uint8 [F, H, W, 3]; got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ConfigError(f"H.264 needs even sides; got {width}x{height}: resize the output to even sides")
    path = check_output_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.part")
    try:
        _encode(frames, tmp, CONTAINERS[path.suffix.lower()], fps, crf)
        with open(tmp, "rb") as fh:  # on disk before the rename, so a crash cannot leave an empty file behind
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        kept = " (the existing file is kept as it was)" if path.exists() else ""
        raise OutputError(f"could not write {path}: {exc.strerror or exc}{kept}; free space or choose "
                          "another output path and run again") from exc
    except BaseException:
        _remove(tmp)
        raise
    return path


def _encode(frames: np.ndarray, path: Path, container_format: str, fps: int, crf: int) -> None:
    """H.264-encode `frames` into a new file at `path`."""
    import av  # imported here: only video output needs PyAV

    _, height, width, _ = frames.shape
    with av.open(str(path), mode="w", format=container_format) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def read_mp4(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode an mp4 into uint8 [F, H, W, 3] frames and its frame rate."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
    return np.stack(frames), fps
