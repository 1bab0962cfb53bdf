"""`wan-generate`: official flags, aliases, configuration.json, refusals, and the mp4 end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from wan_runtime.cli import build_parser, main, resolve
from wan_runtime.errors import ConfigError
from wan_runtime.video_io import read_mp4


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "in.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(path)
    return path


def parse(*extra: str, image="in.png"):
    return resolve(build_parser().parse_args(["--image", str(image), "--prompt", "p", "--weights", "synthetic", *extra]))


def test_official_flags_reach_the_request():
    inv = parse("--size", "832*480", "--frame_num", "33", "--sample_steps", "20", "--sample_shift", "3",
                "--sample_guide_scale", "4.5", "--sample_solver", "dpm++", "--base_seed", "9")
    r = inv.request
    assert (r.size, r.frames, r.steps, r.shift, r.solver, r.seed) == ("832*480", 33, 20, 3.0, "dpm++", 9)
    assert r.guide_scale_low == r.guide_scale_high == 4.5


def test_aliases_num_inference_steps_and_guidance_scale():
    r = parse("--num_inference_steps", "12", "--guidance_scale", "2.0,5.0").request
    assert r.steps == 12
    assert (r.guide_scale_low, r.guide_scale_high) == (2.0, 5.0)  # official tuple order: low, high


def test_offload_model_means_swap_and_text_encoder_offload():
    plan = parse("--offload_model", "True", "--device", "cpu").memory
    assert (plan.experts, plan.text_encoder) == ("swap", "offload_after")


def test_t5_cpu_and_convert_model_dtype_map_onto_the_plan():
    plan = parse("--t5_cpu", "--convert_model_dtype", "--offload_model", "False").memory
    assert (plan.text_encoder, plan.weight_dtype, plan.experts) == ("cpu", "bf16", "resident")


def test_without_convert_model_dtype_the_experts_stay_fp32():
    assert parse().memory.weight_dtype == "fp32"


def test_single_expert_and_enable_refiner_select_modes():
    assert parse("--single_expert").request.mode == "single_expert"
    assert parse("--enable_refiner").request.mode == "refine"


def test_configuration_file_fills_what_flags_leave_out(tmp_path):
    conf = tmp_path / "configuration.json"
    conf.write_text(json.dumps({
        "resolution": {"target": "480p", "scale_factor": 1.5, "anti_aliasing": False},
        "vae": {"compression_ratio": "4x16x16", "tile_size": 256},
        "diffusion": {"num_inference_steps": 50, "guidance_scale": 7.5},
    }))
    inv = parse("--config", str(conf), "--sample_steps", "30")
    assert inv.request.size == "480p"
    assert inv.request.steps == 30  # the flag wins
    assert inv.request.guide_scale_high == 7.5
    assert inv.memory.vae_tiling == 256
    assert inv.request.refine.anti_aliasing is False and inv.request.output_anti_aliasing is False


def test_configuration_file_with_wrong_compression_ratio_is_an_error(tmp_path):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"vae": {"compression_ratio": "4x8x8"}}))
    with pytest.raises(ConfigError, match="4x16x16"):
        parse("--config", str(conf))


def test_configuration_file_with_unknown_key_names_it(tmp_path):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"diffusion": {"steps": 5}}))
    with pytest.raises(ConfigError, match="diffusion.steps"):
        parse("--config", str(conf))


def test_checkpoint_or_synthetic_must_be_given_once(tmp_path):
    args = build_parser().parse_args(["--image", "x", "--prompt", "p"])
    with pytest.raises(ConfigError, match="--ckpt_dir"):
        resolve(args)


def test_cli_writes_an_mp4_with_the_requested_frames_and_size(image_path, tmp_path, capsys):
    out = tmp_path / "video.mp4"
    code = main(["--preset", "tiny", "--weights", "synthetic", "--device", "cpu", "--image", str(image_path),
                 "--prompt", "a boat", "--size", "48*32", "--frame_num", "9", "--sample_steps", "4",
                 "--base_seed", "3", "--save_file", str(out), "--quiet"])
    assert code == 0
    frames, fps = read_mp4(out)
    assert frames.shape == (9, 32, 48, 3)
    assert fps == 16
    printed = capsys.readouterr().out
    assert "seed 3" in printed and "denoise_high" in printed and "vae_decode" in printed


def test_cli_reports_bad_frame_count_and_exits_nonzero(image_path, tmp_path, capsys):
    code = main(["--preset", "tiny", "--weights", "synthetic", "--device", "cpu", "--image", str(image_path),
                 "--prompt", "x", "--size", "48*32", "--frame_num", "8", "--save_file", str(tmp_path / "v.mp4")])
    assert code == 2
    assert "nearest valid counts: 5 or 9" in capsys.readouterr().err


def test_cli_reports_missing_checkpoint_part(image_path, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    (ckpt / "high_noise_model").mkdir(parents=True)
    code = main(["--preset", "tiny", "--ckpt_dir", str(ckpt), "--device", "cpu", "--image", str(image_path),
                 "--prompt", "x", "--size", "48*32", "--frame_num", "5", "--save_file", str(tmp_path / "v.mp4")])
    assert code == 2
    err = capsys.readouterr().err
    assert "is missing from the official checkpoint" in err and "--ckpt_dir" in err


def test_explicit_zero_steps_is_refused_not_replaced_by_the_default():
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        parse("--sample_steps", "0")
