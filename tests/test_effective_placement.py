"""Where a memory plan really puts the networks: the plan's words on a GPU, the CPU's reality on a CPU."""

from __future__ import annotations

import pytest
import torch

from wan_runtime.experts import effective_placement
from wan_runtime.memory import MemoryPlan
from wan_runtime.pipeline import WanI2V

CUDA = torch.device("cuda", 0)  # only a name here: nothing is allocated
CPU = torch.device("cpu")


@pytest.mark.parametrize("plan, expected", [
    (MemoryPlan(), {"experts": "resident", "dit_blocks": "resident", "host_memory": None, "text_encoder": "gpu"}),
    (MemoryPlan(experts="swap", text_encoder="offload_after"),
     {"experts": "swap", "dit_blocks": "resident", "host_memory": "pinned", "text_encoder": "offload_after"}),
    (MemoryPlan(experts="swap", host_memory="pageable"),
     {"experts": "swap", "dit_blocks": "resident", "host_memory": "pageable", "text_encoder": "gpu"}),
    (MemoryPlan(experts="swap", dit_blocks="stream", text_encoder="cpu"),
     {"experts": "swap", "dit_blocks": "stream", "host_memory": "pinned", "text_encoder": "cpu"}),
])
def test_on_a_gpu_the_plan_is_what_runs(plan, expected):
    assert effective_placement(plan, CUDA) == expected


@pytest.mark.parametrize("plan, expected", [
    (MemoryPlan(experts="swap", text_encoder="gpu"),
     {"experts": "resident", "dit_blocks": "resident", "host_memory": None, "text_encoder": "cpu"}),
    (MemoryPlan(experts="swap", dit_blocks="stream", text_encoder="offload_after"),
     {"experts": "swap", "dit_blocks": "stream", "host_memory": "pageable", "text_encoder": "cpu"}),
])
def test_on_a_cpu_swapping_pinning_and_gpu_placements_are_moot(plan, expected):
    assert effective_placement(plan, CPU) == expected


def test_a_loaded_pipeline_exposes_its_effective_placement():
    pipe = WanI2V.load("synthetic", "tiny", "cpu", MemoryPlan(text_encoder="offload_after"))
    assert pipe.effective_placement["text_encoder"] == "cpu"
    assert {name: p.mode for name, p in pipe.placed.items()} == {"high": "resident", "low": "resident"}
