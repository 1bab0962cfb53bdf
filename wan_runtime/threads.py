"""CPU threads: how many torch uses, set explicitly before any work, so a timing says what it ran with.

On a shared CPU, torch's own default (every core) can be several times slower than one thread when
other processes hold the cores: a choice this important is made explicitly and recorded.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; the machine's count where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads(sharing: int = 1) -> int:
    """OMP_NUM_THREADS when it is set to a count, else the usable cores split evenly among `sharing` processes."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) >= 1:
        return int(env)
    return max(1, usable_cores() // max(1, sharing))


def apply_threads(threads: int | None, sharing: int = 1) -> tuple[int, int]:
    """Set torch's intra-op threads (and inter-op threads while torch still allows it); return both in effect.

    `threads` None takes `default_threads(sharing)`.
    """
    import torch

    count = threads if threads is not None else default_threads(sharing)
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(count)
    except RuntimeError:  # allowed once per process, before any inter-op work: the first setting stays
        pass
    return torch.get_num_threads(), torch.get_num_interop_threads()
