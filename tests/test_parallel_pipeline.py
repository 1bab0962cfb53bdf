"""WanI2V with a parallel plan in a single process: the trivial plan is the plain path, others name torchrun."""

from __future__ import annotations

import numpy as np
import pytest

from wan_runtime.errors import ConfigError
from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel import ParallelPlan
from wan_runtime.pipeline import WanI2V

from helpers import tiny_request

FP32 = MemoryPlan(weight_dtype="fp32")


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_a_one_rank_plan_in_a_single_process_makes_the_plain_video():
    plain = WanI2V.load("synthetic", "tiny", "cpu", FP32).generate(tiny_request())
    pipe = WanI2V.load("synthetic", "tiny", "cpu", FP32, parallel=ParallelPlan())
    assert pipe.is_output_rank and pipe.parallel.world_size == 1
    np.testing.assert_array_equal(pipe.generate(tiny_request()).frames, plain.frames)


@pytest.mark.parametrize("memory,parallel", [(MemoryPlan(experts="split"), None),
                                             (FP32, ParallelPlan(ulysses_size=2))])
def test_a_plan_for_several_ranks_fails_the_load_naming_torchrun(memory, parallel):
    with pytest.raises(ConfigError, match="runs on 2 ranks .* single process started.*--nproc-per-node 2"):
        WanI2V.load("synthetic", "tiny", "cpu", memory, parallel=parallel)
