"""`wan-generate`: official flags, aliases, configuration.json, refusals, and the mp4 end to end."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from wan_runtime import cli, spec
from wan_runtime.cli import PARAM_FLAGS, build_parser, main, resolve
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
    with pytest.raises(ConfigError, match=r"steps=0: too small; allowed: an integer >= 1"):
        parse("--sample_steps", "0")


# ------------------------------------------------------------------ checked against the spec, fast, one line
def run_cli(*args: str) -> subprocess.CompletedProcess:
    """wan-generate in a fresh interpreter, which then prints the heavy modules it had imported."""
    code = ("import sys\nfrom wan_runtime.cli import main\ntry:\n    code = main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nheavy = [m for m in ('torch', 'diffusers', 'transformers', 'numpy', 'PIL') if m in sys.modules]\n"
            "print('HEAVY', heavy)\nsys.exit(code)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


def test_help_imports_no_heavy_module():
    done = run_cli("--help")
    assert done.returncode == 0 and "--size_rule" in done.stdout
    assert "HEAVY []" in done.stdout


@pytest.mark.parametrize("bad", [["--sample_guide_scale", "nan"], ["--base_seed", str(2**70)], ["--device", "tpu"],
                                 ["--sample_steps", "abc"], ["--frame_num", "100001"]])
def test_an_argument_error_is_one_line_exit_2_before_any_heavy_import(bad):
    done = run_cli("--image", "in.png", "--prompt", "p", "--weights", "synthetic", *bad)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1  # no usage block, no tokenizer warning, no traceback
    assert "HEAVY []" in done.stdout


def test_help_defaults_come_from_the_dataclasses():
    text = " ".join(build_parser().format_help().split())
    for _, name in PARAM_FLAGS:
        default = spec.lookup(name).default
        if default not in (None, dataclasses.MISSING):
            assert f"(default: {json.dumps(default)})" in text, name


def test_choices_in_help_come_from_the_value_objects():
    text = build_parser().format_help()
    assert "{resident,stream}" in text and "{pinned,pageable}" in text and "{exact,official}" in text
    assert "{a14b,tiny}" in text


def test_nan_guidance_names_the_flag_and_the_parameter():
    with pytest.raises(ConfigError, match=r"^--sample_guide_scale: guide_scale_high=nan: not a finite number"):
        parse("--sample_guide_scale", "nan")


def test_a_seed_beyond_torch_is_refused_with_the_range():
    with pytest.raises(ConfigError, match="from -1 to 18446744073709551615"):
        parse("--base_seed", str(2**70))


def test_steps_above_the_ceiling_pass_with_max_steps():
    with pytest.raises(ConfigError, match="--max_steps"):
        parse("--sample_steps", "1500")
    assert parse("--sample_steps", "1500", "--max_steps", "2000").request.steps == 1500


def test_size_rule_reaches_the_request():
    assert parse().request.size_rule == "exact"
    assert parse("--size_rule", "official").request.size_rule == "official"


def test_threads_reach_the_load_options():
    assert parse("--threads", "3").load.threads == 3
    assert parse().load.threads is None  # the default: OMP_NUM_THREADS, else the usable cores


def test_a_value_from_the_configuration_file_names_its_key(tmp_path):
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({"diffusion": {"guidance_scale": 1e400}}))  # JSON reads it as inf
    with pytest.raises(ConfigError, match=r"^--config diffusion.guidance_scale: guide_scale_high=inf"):
        parse("--config", str(conf))


def _config_path(tmp_path, kind: str):
    if kind == "folder":
        return tmp_path
    path = tmp_path / f"{kind}.json"
    if kind == "latin1":
        path.write_bytes('{"x": "caf\xe9"}'.encode("latin-1"))
    return path


@pytest.mark.parametrize("kind, expected", [("folder", "is a folder"), ("missing", "file not found"),
                                            ("latin1", "not UTF-8 text")])
def test_an_unusable_configuration_file_is_one_line(tmp_path, capsys, kind, expected):
    config = _config_path(tmp_path, kind)
    code = main(["--image", "in.png", "--prompt", "p", "--weights", "synthetic", "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


def test_cuda_without_cuda_is_one_line_naming_the_cpu(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_cuda_available", lambda: False)
    assert main(["--image", "in.png", "--prompt", "p", "--weights", "synthetic", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "sees no CUDA device" in err and "--device cpu" in err and len(err.strip().splitlines()) == 1


def _crash(*_args, **_kwargs):
    raise RuntimeError("something inside broke\nacross two lines")


def test_an_unexpected_error_is_one_line_with_a_hint(monkeypatch, capsys, image_path):
    monkeypatch.setattr(cli, "generate", _crash)
    code = main(["--image", str(image_path), "--prompt", "p", "--weights", "synthetic", "--device", "cpu",
                 "--preset", "tiny"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip() == ("wan-generate: unexpected RuntimeError: something inside broke across two lines; "
                           "rerun with --debug for the traceback")


def test_debug_shows_the_traceback(monkeypatch, capsys, image_path):
    monkeypatch.setattr(cli, "generate", _crash)
    main(["--image", str(image_path), "--prompt", "p", "--weights", "synthetic", "--device", "cpu", "--preset", "tiny",
          "--debug"])
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_exact_last_blocks_reaches_the_compute_plan_and_its_check():
    inv = parse("--fp8", "--matmul", "fp8", "--exact_last_blocks", "12")
    assert (inv.compute.matmul, inv.compute.exact_last_blocks) == ("fp8", 12)
    with pytest.raises(ConfigError, match="exact_last_blocks"):
        parse("--exact_last_blocks", "-1")
