"""`wan-generate` with the official multi-GPU flags: launch errors, the plan they make, and a torchrun run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wan_runtime.cli import build_parser, main, resolve
from wan_runtime.errors import ConfigError
from wan_runtime.parallel import ParallelPlan
from wan_runtime.video_io import read_mp4

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def parse(*extra: str):
    return resolve(build_parser().parse_args(["--image", "in.png", "--prompt", "p", "--weights", "synthetic",
                                              "--device", "cpu", *extra]))


@pytest.fixture
def single_process(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def rank_1_of_4(monkeypatch):
    for name, value in {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("flags,ranks", [(["--ulysses_size", "4"], 4), (["--cfg_parallel"], 2),
                                         (["--ulysses_size", "2", "--cfg_parallel"], 4)])
def test_multi_gpu_flags_without_torchrun_name_the_torchrun_command(single_process, flags, ranks):
    with pytest.raises(ConfigError, match=f"single process started; launch it with "
                                          f"torchrun --standalone --nproc-per-node {ranks} -m wan_runtime.cli"):
        parse(*flags)


def test_a_ulysses_size_that_does_not_divide_the_heads_is_refused_before_the_launch(single_process):
    with pytest.raises(ConfigError, match=r"ulysses_size 3 does not divide .* 40 .*\[1, 2, 4, 5, 8, 10, 20, 40\]"):
        parse("--ulysses_size", "3")


def test_a_world_size_that_does_not_match_the_flags_is_refused(rank_1_of_4):
    with pytest.raises(ConfigError, match="runs on 2 ranks .* but 4 ranks started.*--nproc-per-node 2"):
        parse("--ulysses_size", "2")


def test_under_torchrun_the_official_flags_become_the_parallel_plan(rank_1_of_4):
    inv = parse("--ulysses_size", "2", "--cfg_parallel", "--dit_fsdp", "--t5_fsdp")
    assert inv.parallel == ParallelPlan(ulysses_size=2, cfg_parallel=True, dit_fsdp=True, t5_fsdp=True)
    assert inv.rank == 1
    assert (inv.memory.experts, inv.memory.text_encoder) == ("resident", "gpu")


def test_cfg_parallel_with_guidance_1_is_refused_before_loading(rank_1_of_4):
    with pytest.raises(ConfigError, match="guidance scale is 1.0.*nothing to split"):
        parse("--ulysses_size", "2", "--cfg_parallel", "--guidance_scale", "1")


def test_a_single_process_without_the_flags_stays_the_plain_path(single_process):
    assert parse().parallel is None


@pytest.mark.slow
def test_wan_generate_under_torchrun_writes_the_single_process_video(tmp_path, single_process, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    flags = ["--preset", "tiny", "--weights", "synthetic", "--device", "cpu", "--image", str(image),
             "--prompt", "a cat", "--size", "64*48", "--frame_num", "5", "--sample_steps", "4",
             "--base_seed", "1", "--quiet"]
    assert main([*flags, "--save_file", str(tmp_path / "one.mp4")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "wan_runtime.cli", *flags, "--ulysses_size", "2", "--save_file", str(tmp_path / "two.mp4")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("saved ") == 1  # rank 0 writes and reports; rank 1 stays quiet
    np.testing.assert_array_equal(read_mp4(tmp_path / "two.mp4")[0], read_mp4(tmp_path / "one.mp4")[0])
