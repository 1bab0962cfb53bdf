"""Shared test fixtures, the rule that `gpu` tests skip without CUDA, and pinned CPU threads.

Threads are pinned before torch loads: on a shared 2-core machine torch's default (one thread per
core) spin-waits whenever another job holds a core, and a test then takes 5-10x longer. The
environment variables are inherited by every subprocess a test starts (suite workers, CLIs), so
they are pinned too. An explicit OMP_NUM_THREADS in the environment wins.
"""

from __future__ import annotations

import os
from pathlib import Path

TEST_THREADS = int(os.environ.setdefault("OMP_NUM_THREADS", "1"))
os.environ.setdefault("MKL_NUM_THREADS", str(TEST_THREADS))

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(TEST_THREADS)

FIXTURES = Path(__file__).parent / "fixtures" / "official"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fixtures_dir() -> Path:
    """Folder holding the official parity fixtures."""
    return FIXTURES
