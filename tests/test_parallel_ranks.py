"""Many ranks, one video: Ulysses, CFG parallel, expert split and FSDP on 2 and 4 gloo ranks equal one process.

The ranks are CPU processes (gloo) kept in a pool per module (rank_pool.py); every case runs the tiny
preset with 4 attention heads (divisible by 2 and 4) in fp32 and is compared with the same request in
this process: latents within 1e-5, frames equal up to one rounding step.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext

import pytest
import torch

from wan_runtime.compute import ComputePlan
from wan_runtime.errors import ParallelError
from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel import ParallelPlan

from parallel_cases import FP32, TINY4, UNEVEN, assert_same_video, generate, on_ranks, reference
from rank_pool import RankPool

pytestmark = pytest.mark.slow  # spawning ranks takes seconds (imports); each case then takes about one


class FailAt:
    """An observer that makes one rank die (exit) or stop answering for `stall_s` at a step."""

    def __init__(self, rank: int, step: int, how: str, stall_s: float = 0.0):
        self.rank, self.step, self.how, self.stall_s = rank, step, how, stall_s

    def stage(self, name):
        return nullcontext()

    def on_step(self, info):
        if int(os.environ["RANK"]) == self.rank and info.index == self.step:
            if self.how == "die":
                os._exit(3)
            time.sleep(self.stall_s)


def dit_forward(rank: int, parallel: ParallelPlan | None) -> torch.Tensor:
    """One forward of the tiny expert on a batch of 2 and 27 tokens, plainly or through a parallel context."""
    from wan_runtime.parallel import ParallelContext
    from wan_runtime.weights import load_dit

    model = load_dit("synthetic", TINY4, "high", "fp32", "cpu")
    ctx = None
    if parallel is not None:
        ctx = ParallelContext.start(parallel, FP32, TINY4.dit.num_heads, torch.device("cpu"))
        model.runner = ctx.sequence_runner(model.runner)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 16, 3, 6, 6, generator=gen), torch.randn(2, 20, 3, 6, 6, generator=gen)
    context = torch.randn(2, 7, TINY4.dit.text_dim, generator=gen)
    out = model(x, torch.tensor([900.0, 300.0]), context, y)
    if ctx is not None:
        ctx.close()
    return out


def timed_generate(rank: int, parallel: ParallelPlan, observer) -> tuple[float, object]:
    """generate() on a rank, returning (seconds, what it raised or returned)."""
    start = time.perf_counter()
    try:
        outcome = generate(rank, parallel, observer=observer)
    except Exception as exc:  # the test inspects what the surviving rank saw
        outcome = exc
    return time.perf_counter() - start, outcome


@pytest.fixture(scope="module")
def pool2():
    pool = RankPool(2)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def pool4():
    pool = RankPool(4)
    yield pool
    pool.close()


# ---------------------------------------------------------------- 2 ranks
def test_ulysses_on_2_ranks_gives_the_single_process_video(pool2):
    runs = on_ranks(pool2, ParallelPlan(ulysses_size=2))
    assert_same_video(runs[0], reference())


def test_ulysses_forward_of_a_batch_of_2_with_uneven_tokens_equals_the_plain_forward(pool2):
    outs = pool2.run(dit_forward, ParallelPlan(ulysses_size=2))
    expected = dit_forward(0, None)
    for out in outs:
        assert (out - expected).abs().max().item() <= 1e-5


def test_only_rank_0_gets_frames(pool2):
    runs = on_ranks(pool2, ParallelPlan(ulysses_size=2))
    assert runs[0].frames is not None
    assert runs[1].frames is None and runs[1].latent is None  # rank 1 did not decode


def test_tokens_that_do_not_divide_are_split_unevenly(pool2):
    runs = on_ranks(pool2, ParallelPlan(ulysses_size=2), FP32, UNEVEN)
    assert_same_video(runs[0], reference(**UNEVEN))


def test_cfg_parallel_on_2_ranks_gives_the_single_process_video(pool2):
    assert_same_video(on_ranks(pool2, ParallelPlan(cfg_parallel=True))[0], reference())


def test_expert_split_on_2_ranks_gives_the_single_process_video(pool2):
    assert_same_video(on_ranks(pool2, ParallelPlan(), MemoryPlan(weight_dtype="fp32", experts="split"))[0],
                      reference())


def test_dit_and_t5_fsdp_give_the_single_process_video(pool2):
    runs = on_ranks(pool2, ParallelPlan(ulysses_size=2, dit_fsdp=True, t5_fsdp=True))
    assert_same_video(runs[0], reference())


def test_ulysses_composes_with_swap_and_block_streaming(pool2):
    memory = MemoryPlan(weight_dtype="fp32", experts="swap", dit_blocks="stream", prefetch_blocks=1)
    assert_same_video(on_ranks(pool2, ParallelPlan(ulysses_size=2), memory)[0], reference())


def test_ulysses_composes_with_fp8_storage(pool2):
    fp8 = MemoryPlan(weight_dtype="fp8")  # bf16 compute: compared with the single-process fp8 run
    assert_same_video(on_ranks(pool2, ParallelPlan(ulysses_size=2), fp8)[0], reference(fp8), latent_tol=1e-2)


def test_ulysses_composes_with_compiled_blocks(pool2):
    compiled = ComputePlan(compile="blocks", compile_backend="aot_eager")  # traces as inductor does, on the CPU
    assert_same_video(on_ranks(pool2, ParallelPlan(ulysses_size=2), FP32, None, None, "cpu", compiled)[0],
                      reference())


def test_every_rank_uses_rank_0s_random_seed(pool2):
    runs = on_ranks(pool2, ParallelPlan(ulysses_size=2), FP32, {"seed": -1})
    assert runs[0].seed == runs[1].seed
    assert_same_video(runs[0], reference(seed=runs[0].seed))


def test_cfg_parallel_with_guidance_1_is_refused_on_every_rank(pool2):
    plain = {"guide_scale_high": 1.0, "guide_scale_low": 1.0}
    failures = pool2.run(generate, ParallelPlan(cfg_parallel=True), FP32, plain)
    assert all(f.type == "ConfigError" and "nothing to split" in f.message for f in failures)


# ---------------------------------------------------------------- 4 ranks
def test_ulysses_on_4_ranks_gives_the_single_process_video(pool4):
    assert_same_video(on_ranks(pool4, ParallelPlan(ulysses_size=4))[0], reference())


def test_cfg_parallel_times_ulysses_on_4_ranks_gives_the_single_process_video(pool4):
    assert_same_video(on_ranks(pool4, ParallelPlan(ulysses_size=2, cfg_parallel=True))[0], reference())


def test_expert_split_times_cfg_parallel_on_4_ranks_gives_the_single_process_video(pool4):
    split = MemoryPlan(weight_dtype="fp32", experts="split")
    assert_same_video(on_ranks(pool4, ParallelPlan(cfg_parallel=True), split)[0], reference())


def test_fsdp_of_each_split_expert_over_its_cfg_pair_gives_the_single_process_video(pool4):
    split = MemoryPlan(weight_dtype="fp32", experts="split")
    assert_same_video(on_ranks(pool4, ParallelPlan(cfg_parallel=True, dit_fsdp=True), split)[0], reference())


def test_uneven_tokens_and_fsdp_on_4_ranks_give_the_single_process_video(pool4):
    plan = ParallelPlan(ulysses_size=4, dit_fsdp=True, t5_fsdp=True)
    assert_same_video(on_ranks(pool4, plan, FP32, UNEVEN)[0], reference(**UNEVEN))


# ---------------------------------------------------------------- failures end in errors, not hangs
@pytest.mark.parametrize("how", ["die", "stall"])
def test_a_rank_that_dies_or_stops_answering_fails_the_others_within_the_timeout(how):
    timeout, stall = 3.0, 600.0
    pool = RankPool(2)
    try:
        plan = ParallelPlan(ulysses_size=2, collective_timeout_s=timeout)
        outcomes = pool.run(timed_generate, plan, FailAt(rank=1, step=1, how=how, stall_s=stall), wait_for=1)
    finally:
        pool.kill()  # the process group is broken: nothing to close cleanly
    seconds, error = outcomes[0]
    assert isinstance(error, ParallelError), error
    assert "rank 0:" in str(error) and "collective_timeout_s=3" in str(error)
    assert seconds < 60  # its load, a few steps and the timeout: it did not wait for the stalled rank
