"""The tests run with a pinned thread count, and so does every process they start (tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import torch


def test_tests_and_the_processes_they_start_use_the_pinned_thread_count():
    pinned = int(os.environ["OMP_NUM_THREADS"])
    child = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                           capture_output=True, text=True, check=True)
    assert torch.get_num_threads() == pinned == int(child.stdout)
    assert os.environ["MKL_NUM_THREADS"] == str(pinned)
