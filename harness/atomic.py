"""Writing a file whole or not at all: the run folder's and the service folder's one way to replace a file.

A reader (another process, or the next run after a crash) sees the old file or the new one, never
half of one: the data goes to a temporary file beside the target (named for this process, so two
writers never share one), is forced to disk, then renamed over the target. A failed write removes
the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Replace `path` with `data` (str: UTF-8) atomically (see the module docstring); raises what the write raised."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


__all__ = ["write_atomic"]
