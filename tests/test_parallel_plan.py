"""ParallelPlan and its launch rules, the rank layout, the token shards and how the Ulysses runner hands
them on: one process, no collectives."""

from __future__ import annotations

import pytest
import torch

from wan_runtime.attention import AttentionOps
from wan_runtime.config import A14B, TINY
from wan_runtime.errors import ConfigError
from wan_runtime.experts import effective_placement
from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel import ParallelPlan
from wan_runtime.parallel.groups import RankGroup
from wan_runtime.parallel.launch import LaunchEnv
from wan_runtime.parallel.plan import RankCoords, RankLayout, check_guidance, check_launch, divisors
from wan_runtime.parallel.ulysses import SequenceParallelBlocks, shard_sizes

RESIDENT = MemoryPlan()
SPLIT = MemoryPlan(experts="split")
HEADS = A14B.dit.num_heads


def launch(plan: ParallelPlan, memory: MemoryPlan = RESIDENT, world: int = 1, local: int | None = None,
           gpus: int | None = None, heads: int = HEADS) -> None:
    check_launch(plan, memory, heads, world, world if local is None else local, gpus)


# ---------------------------------------------------------------- the plan itself
@pytest.mark.parametrize("field,value", [("ulysses_size", 0), ("ulysses_size", "2"), ("ulysses_size", True),
                                         ("cfg_parallel", "yes"), ("collective_timeout_s", 0),
                                         ("collective_timeout_s", float("inf"))])
def test_a_plan_with_a_bad_value_is_a_config_error_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        ParallelPlan(**{field: value})


def test_the_world_size_is_ulysses_times_cfg_times_expert_split():
    assert ParallelPlan().world_size(RESIDENT) == 1
    assert ParallelPlan(ulysses_size=4).world_size(RESIDENT) == 4
    assert ParallelPlan(ulysses_size=2, cfg_parallel=True).world_size(RESIDENT) == 4
    assert ParallelPlan(ulysses_size=2, cfg_parallel=True).world_size(SPLIT) == 8


def test_split_is_a_memory_plan_placement_that_excludes_streaming():
    assert MemoryPlan(experts="split").experts == "split"
    with pytest.raises(ConfigError, match="implies experts='swap'"):
        MemoryPlan(experts="split", dit_blocks="stream")


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_split_experts_are_reported_as_split_and_resident_in_device_memory(device):
    where = effective_placement(SPLIT, torch.device(device))
    assert (where["experts"], where["dit_blocks"], where["host_memory"]) == ("split", "resident", None)


# ---------------------------------------------------------------- launch rules
def test_a_degree_that_does_not_divide_the_heads_names_the_valid_degrees():
    with pytest.raises(ConfigError, match=r"ulysses_size 3 does not divide .* 40 .*\[1, 2, 4, 5, 8, 10, 20, 40\]"):
        launch(ParallelPlan(ulysses_size=3), world=3)


def test_a_plan_for_several_ranks_in_a_single_process_names_the_torchrun_command():
    with pytest.raises(ConfigError, match="runs on 4 ranks .* single process started.*"
                                          "torchrun --standalone --nproc-per-node 4"):
        launch(ParallelPlan(ulysses_size=4))


def test_a_world_size_that_does_not_match_the_plan_is_refused():
    with pytest.raises(ConfigError, match=r"runs on 4 ranks \(ulysses_size 2 x 2 for cfg_parallel\) but 2 ranks"):
        launch(ParallelPlan(ulysses_size=2, cfg_parallel=True), world=2)


def test_more_ranks_than_gpus_is_refused():
    with pytest.raises(ConfigError, match="4 ranks on this machine but 2 GPU"):
        launch(ParallelPlan(ulysses_size=4), world=4, gpus=2)


def test_expert_split_on_one_gpu_is_refused():
    with pytest.raises(ConfigError, match="2 for experts=split.* single process"):
        launch(ParallelPlan(), SPLIT, world=1, gpus=1)
    with pytest.raises(ConfigError, match="2 ranks on this machine but 1 GPU"):
        launch(ParallelPlan(), SPLIT, world=2, gpus=1)


def test_cfg_parallel_with_guidance_1_has_nothing_to_split():
    with pytest.raises(ConfigError, match="guidance scale is 1.0.*nothing to split"):
        check_guidance(ParallelPlan(cfg_parallel=True), [1.0, 1.0])
    check_guidance(ParallelPlan(cfg_parallel=True), [1.0, 3.5])  # one expert still guides


def test_dit_fsdp_needs_resident_experts_and_more_than_one_rank_per_expert():
    with pytest.raises(ConfigError, match="dit_fsdp .* experts='swap'"):
        launch(ParallelPlan(ulysses_size=2, dit_fsdp=True), MemoryPlan(experts="swap"), world=2)
    with pytest.raises(ConfigError, match="each expert runs on one rank: nothing to shard"):
        launch(ParallelPlan(dit_fsdp=True), SPLIT, world=2)


def test_t5_fsdp_needs_the_text_encoder_on_the_gpu_and_several_ranks():
    with pytest.raises(ConfigError, match="t5_fsdp .* text_encoder='offload_after'"):
        launch(ParallelPlan(ulysses_size=2, t5_fsdp=True), MemoryPlan(text_encoder="offload_after"), world=2)
    with pytest.raises(ConfigError, match="t5_fsdp shards the text encoder over the ranks, and there is one"):
        launch(ParallelPlan(t5_fsdp=True))


def test_valid_launches_pass():
    launch(ParallelPlan())
    launch(ParallelPlan(ulysses_size=8, cfg_parallel=True, dit_fsdp=True, t5_fsdp=True), world=16, local=8, gpus=8)
    launch(ParallelPlan(ulysses_size=2), world=2, heads=TINY.dit.num_heads)


def test_divisors_are_the_valid_degrees():
    assert divisors(40) == [1, 2, 4, 5, 8, 10, 20, 40]


# ---------------------------------------------------------------- torchrun's environment
def test_a_process_without_torchrun_variables_is_rank_0_of_1():
    assert LaunchEnv.read({}) == LaunchEnv(0, 1, 0, 1)


def test_torchrun_variables_describe_the_rank():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert LaunchEnv.read(env) == LaunchEnv(5, 8, 1, 4, torchrun=True)


def test_garbled_torchrun_variables_are_a_config_error():
    with pytest.raises(ConfigError, match="must be integers"):
        LaunchEnv.read({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="do not describe a rank"):
        LaunchEnv.read({"RANK": "2", "WORLD_SIZE": "2"})


# ---------------------------------------------------------------- rank layout
def test_rank_and_coords_are_inverse_with_ulysses_neighbours_adjacent():
    layout = RankLayout(experts=2, cfg=2, ulysses=2)
    assert [layout.rank(layout.coords(r)) for r in range(8)] == list(range(8))
    assert layout.coords(1) == RankCoords(expert=0, cfg=0, ulysses=1)
    assert layout.coords(6) == RankCoords(expert=1, cfg=1, ulysses=0)


def test_each_family_of_groups_partitions_the_ranks():
    layout = RankLayout(experts=2, cfg=2, ulysses=2)
    expected = {
        "ulysses": [[0, 1], [2, 3], [4, 5], [6, 7]],
        "cfg": [[0, 2], [1, 3], [4, 6], [5, 7]],
        "experts": [[0, 4], [1, 5], [2, 6], [3, 7]],
        "shard": [[0, 1, 2, 3], [4, 5, 6, 7]],
        "world": [list(range(8))],
    }
    for family, groups in expected.items():
        assert layout.groups(family) == groups


# ---------------------------------------------------------------- token shards
@pytest.mark.parametrize("tokens,ranks,sizes", [(24, 4, [6, 6, 6, 6]), (27, 4, [7, 7, 7, 6]), (27, 2, [14, 13]),
                                                (31668, 8, [3959, 3959, 3959, 3959, 3958, 3958, 3958, 3958])])
def test_tokens_are_shared_as_evenly_as_possible_first_ranks_first(tokens, ranks, sizes):
    assert shard_sizes(tokens, ranks) == sizes


# ---------------------------------------------------------------- the Ulysses runner's shard (no exchange)
class RecordingRunner:
    """An inner runner that records what it is handed."""

    def __init__(self):
        self.seen = []

    def warm_up(self, model, x, e0, context, rope, ops):
        self.seen.append((x, rope, ops))


def test_the_ulysses_runner_hands_its_inner_runner_this_ranks_tokens_and_rope_rows():
    inner = RecordingRunner()
    runner = SequenceParallelBlocks(inner, RankGroup((0, 1), 1, None, 60.0))  # rank 1 of 2; no exchange here
    x, rope = torch.arange(27.0).reshape(1, 27, 1), torch.arange(27.0).reshape(27, 1, 1)
    ops = AttentionOps(lambda q, k, v: q, lambda q, k, v: q)
    runner.warm_up(None, x, None, None, rope, ops)
    runner.warm_up(None, x, None, None, rope, ops)
    (x0, rope0, ops0), (_, _, ops1) = inner.seen
    assert x0.flatten().tolist() == list(range(14, 27)) and rope0.flatten().tolist() == list(range(14, 27))
    assert ops0.cross_attn is ops.cross_attn and ops0.self_attn is not ops.self_attn
    assert ops1 is ops0  # the same wrapped functions every forward (a compiled block call is not re-specialized)
