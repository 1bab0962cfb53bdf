"""CPU threads: an explicit count, a default that says where it came from, set on torch before work."""

from __future__ import annotations

import pytest
import torch

from wan_runtime import threads


def test_omp_num_threads_is_the_default_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3


def test_without_omp_num_threads_the_usable_cores_are_split_among_the_sharing_processes(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 16)
    assert threads.default_threads() == 16
    assert threads.default_threads(sharing=8) == 2
    assert threads.default_threads(sharing=32) == 1  # never zero


@pytest.fixture
def restore_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_an_explicit_count_is_set_on_torch_and_reported(restore_torch_threads):
    intra, interop = threads.apply_threads(2)
    assert intra == torch.get_num_threads() == 2
    assert interop == torch.get_num_interop_threads()
