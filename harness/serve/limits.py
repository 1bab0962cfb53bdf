"""ServiceLimits: what one service accepts and how long it waits on shutdown (the CLI's --queue-size ... flags).

A module of its own, importing nothing heavy, so `wanbench` can show the defaults in its help without
loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 2**20


@dataclass(frozen=True)
class ServiceLimits:
    """What one service accepts and how long it waits on shutdown (the CLI's --queue-size ... flags)."""

    queue_size: int = 4  # jobs waiting beside the running one; one more is answered 429
    max_upload_bytes: int = 32 * MIB  # whole multipart body; a larger one is answered 413
    max_image_pixels: int = 4096 * 4096  # checked from the picture's header, before decoding
    shutdown_grace_s: float = 30.0  # how long the running job may take to finish when the service stops
