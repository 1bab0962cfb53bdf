"""Writing frames to an mp4 (PyAV, H.264) and reading them back."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from wan_runtime.errors import ConfigError


def write_mp4(frames: np.ndarray, path: str | Path, fps: int = 16, crf: int = 18) -> Path:
    """Encode uint8 [F, H, W, 3] frames as an H.264 mp4 at `fps`; returns the path written."""
    import av  # imported here: only video output needs PyAV

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ConfigError(f"frames must be uint8 [F, H, W, 3]; got {frames.dtype} {frames.shape}")
    _, height, width, _ = frames.shape
    if height % 2 or width % 2:
        raise ConfigError(f"H.264 needs even sides; got {width}x{height}: resize the output to even sides")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def read_mp4(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode an mp4 into uint8 [F, H, W, 3] frames and its frame rate."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate or stream.guessed_rate or 0)
    return np.stack(frames), fps
