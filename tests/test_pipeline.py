"""WanI2V on the tiny preset (CPU, fp32): stages, expert accounting, modes, memory plans, errors."""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from wan_runtime.compute import ComputePlan
from wan_runtime.config import DEFAULT_NEGATIVE_PROMPT
from wan_runtime.errors import ConfigError, StageOutOfMemoryError
from wan_runtime.memory import MemoryPlan
from wan_runtime.observer import STAGES, StepInfo
from wan_runtime.pipeline import WanI2V, condition_mask
from wan_runtime.request import RefineOptions

from helpers import tiny_request as request

FP32 = MemoryPlan(weight_dtype="fp32", vae_dtype="fp32")


class RecordingObserver:
    """Records stage order and step events."""

    def __init__(self):
        self.stages: list[str] = []
        self.steps: list[StepInfo] = []

    @contextmanager
    def stage(self, name):
        self.stages.append(name)
        yield

    def on_step(self, info):
        self.steps.append(info)


@pytest.fixture(scope="module")
def pipe() -> WanI2V:
    return WanI2V.load("synthetic", "tiny", "cpu", FP32)


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))



def count_forwards(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_generate_returns_uint8_frames_of_the_requested_count_and_size(pipe, image):
    res = pipe.generate(request(image))
    assert res.frames.dtype == np.uint8
    assert res.frames.shape == (5, 48, 64, 3)
    assert (res.geometry.width, res.geometry.height) == (64, 48)


def test_every_stage_reaches_the_observer_in_order():
    obs = RecordingObserver()
    pipe = WanI2V.load("synthetic", "tiny", "cpu", FP32, observer=obs)
    image = Image.new("RGB", (64, 48), (120, 30, 200))
    pipe.generate(request(image), observer=obs)
    assert obs.stages == [s for s in STAGES if s != "compile"]  # compile: only with compiled blocks


@pytest.mark.parametrize("shift,high", [(5.0, 15), (3.0, 10)])
def test_40_steps_split_between_experts_as_upstream(image, shift, high):
    pipe = WanI2V.load("synthetic", "tiny", "cpu", FP32)
    calls_high, calls_low = count_forwards(pipe.experts["high"]), count_forwards(pipe.experts["low"])
    obs = RecordingObserver()
    res = pipe.generate(request(image, steps=40, shift=shift, size="32*32", frames=1), observer=obs)
    assert (res.steps_high, res.steps_low) == (high, 40 - high)
    assert [s.expert for s in obs.steps] == ["high"] * high + ["low"] * (40 - high)
    assert all((s.expert == "high") == (s.timestep >= 900) for s in obs.steps)
    assert (calls_high[0], calls_low[0]) == (2 * high, 2 * (40 - high))  # CFG: two forwards per step


def test_experts_have_distinct_weights(pipe):
    high = pipe.experts["high"].state_dict()
    low = pipe.experts["low"].state_dict()
    assert not torch.equal(high["blocks.0.self_attn.q.weight"], low["blocks.0.self_attn.q.weight"])


def test_same_seed_gives_the_same_video(pipe, image):
    a = pipe.generate(request(image, seed=7)).frames
    b = pipe.generate(request(image, seed=7)).frames
    assert np.array_equal(a, b)


def test_different_seed_gives_a_different_video(pipe, image):
    a = pipe.generate(request(image, seed=7)).frames
    b = pipe.generate(request(image, seed=8)).frames
    assert not np.array_equal(a, b)


def test_random_seed_is_reported(pipe, image):
    res = pipe.generate(request(image, seed=-1))
    assert res.seed >= 0
    again = pipe.generate(request(image, seed=res.seed))
    assert np.array_equal(res.frames, again.frames)


def test_block_streaming_gives_the_same_frames_as_resident(pipe, image):
    # On a CPU swap and offload_after move nothing (host memory is device memory); streaming still
    # runs every block through its ring of slots, so it is the plan with a real path to check here.
    plan = MemoryPlan(experts="swap", dit_blocks="stream", weight_dtype="fp32")
    other = WanI2V.load("synthetic", "tiny", "cpu", plan)
    assert np.array_equal(other.generate(request(image)).frames, pipe.generate(request(image)).frames)


def test_single_expert_mode_uses_only_the_low_noise_expert(pipe, image):
    res = pipe.generate(request(image, mode="single_expert", steps=10))
    assert (res.steps_high, res.steps_low) == (0, 10)


def test_empty_negative_prompt_uses_the_official_default(pipe, image, monkeypatch):
    seen = []
    original = pipe.text_encoder.encode
    monkeypatch.setattr(pipe.text_encoder, "encode", lambda prompts, device: seen.extend(prompts) or original(prompts, device))
    pipe.generate(request(image, negative_prompt=""))
    assert seen == ["a cat", DEFAULT_NEGATIVE_PROMPT]


def test_output_size_resizes_to_the_exact_target(pipe, image):
    res = pipe.generate(request(image, output_size=(40, 30)))
    assert res.frames.shape == (5, 30, 40, 3)


def test_refine_mode_upscales_to_the_requested_size_and_finishes_with_the_low_noise_expert(pipe):
    wide = Image.new("RGB", (64, 32), (10, 200, 90))
    refine = RefineOptions(scale_factor=1.5, first_size="64*32", strength=0.5)
    obs = RecordingObserver()
    res = pipe.generate(request(wide, mode="refine", refine=refine, steps=8, size="96*48"), observer=obs)
    assert res.frames.shape[1:3] == (48, 96)  # the requested size, 1.5x the first pass
    first_pass, second_pass = obs.steps[:8], obs.steps[8:]
    assert [s.index for s in first_pass] == list(range(8))
    assert [s.index for s in second_pass] == [4, 5, 6, 7]  # the last half of the schedule, re-run
    assert all(s.expert == "low" for s in second_pass)


def test_refine_mode_refuses_a_target_that_contradicts_scale_factor(pipe):
    wide = Image.new("RGB", (64, 32), (10, 200, 90))
    refine = RefineOptions(scale_factor=1.5, first_size="64*32")
    with pytest.raises(ConfigError, match="scale_factor"):
        pipe.generate(request(wide, mode="refine", refine=refine, steps=4, size="128*64"))


def test_execute_steps_runs_only_those_steps_and_marks_the_video_invalid(pipe, image):
    obs = RecordingObserver()
    res = pipe.generate(request(image, steps=40, execute_steps=frozenset({0, 20})), observer=obs)
    assert [s.index for s in obs.steps] == [0, 20]
    assert not res.valid_video
    assert (res.steps_high, res.steps_low) == (15, 25)  # the schedule is kept


def test_condition_mask_marks_only_the_first_frame():
    mask = condition_mask(9, 2, 3, torch.device("cpu"))
    assert mask.shape == (4, 3, 2, 3)
    assert mask[:, 0].eq(1).all() and mask[:, 1:].eq(0).all()


def test_missing_image_is_a_clear_error(pipe, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        pipe.generate(request(tmp_path / "nope.png"))


def test_steps_below_one_are_refused(image):
    with pytest.raises(ConfigError, match=r"steps=0: too small; allowed: an integer >= 1"):
        request(image, steps=0)


def test_frames_not_4n_plus_1_are_refused(pipe, image):
    with pytest.raises(ConfigError, match="77 or 81"):
        pipe.generate(request(image, frames=80))


def test_out_of_memory_names_the_stage_and_the_options(pipe, image, monkeypatch):
    def boom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipe.experts["high"], "forward", boom)
    with pytest.raises(StageOutOfMemoryError, match="denoise_high") as info:
        pipe.generate(request(image))
    assert info.value.stage == "denoise_high"
    assert "experts=swap" in str(info.value)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "plan", [MemoryPlan(experts="swap"), MemoryPlan(text_encoder="offload_after")]
)
def test_on_gpu_offloading_plans_give_the_same_frames_as_resident(image, plan):
    reference = WanI2V.load("synthetic", "tiny", "cuda", MemoryPlan()).generate(request(image, steps=6)).frames
    other = WanI2V.load("synthetic", "tiny", "cuda", plan)
    frames = other.generate(request(image, steps=6)).frames
    if plan.experts == "swap":  # only the active expert stays on the device
        assert next(other.experts["high"].parameters()).device.type == "cpu"
    assert np.array_equal(frames, reference)


# ------------------------------------------------------------------ speed options in the pipeline
COMPILED = ComputePlan(compile="blocks", compile_backend="aot_eager")  # see tests/test_compile.py


def test_compiled_blocks_compile_in_their_own_stage_once_per_shape(pipe, image):
    torch._dynamo.reset()
    compiled = WanI2V.load("synthetic", "tiny", "cpu", FP32, compute=COMPILED)
    first, second = RecordingObserver(), RecordingObserver()
    frames = compiled.generate(request(image), observer=first).frames
    compiled.generate(request(image), observer=second)
    assert first.stages == ["text_encode", "image_encode", "compile", "denoise_high", "denoise_low",
                            "vae_decode", "postprocess"]
    assert "compile" not in second.stages  # the same shapes: nothing left to compile
    assert len(first.steps) == 4  # the warm-up is not a step
    np.testing.assert_array_equal(frames, pipe.generate(request(image)).frames)
    torch._dynamo.reset()


def test_offload_after_parks_the_text_encoder_in_one_host_buffer(image):
    plan = dataclasses.replace(FP32, text_encoder="offload_after")
    offloaded = WanI2V.load("synthetic", "tiny", "cpu", plan)
    group = offloaded.text_weights
    model = offloaded.text_encoder.model
    host = group.host
    parked = lambda: all(p.untyped_storage().data_ptr() == host.untyped_storage().data_ptr()  # noqa: E731
                         for p in model.parameters())
    assert parked()
    moves: list[str] = []
    to_device, to_host = group.to_device, group.to_host
    group.to_device = lambda device: moves.append("in") or to_device(device)
    group.to_host = lambda: moves.append("out") or to_host()
    resident = WanI2V.load("synthetic", "tiny", "cpu", FP32)
    assert (offloaded._encode_text(request(image), RecordingObserver())[0]
            == resident._encode_text(request(image), RecordingObserver())[0]).all()
    assert moves == ["in", "out"] and parked()
