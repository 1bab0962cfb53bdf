"""The smoke suite end to end on the real tiny pipeline (CPU): rows, stages, quality, schema, sampled timing.

To keep CI short the suite runs with 2 measured repeats and no warmup (`--set repeats=2 --set warmup=0`);
its cases, references and processes are the shipped ones.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from harness.results import GENERATE_STAGES, read_results, read_rows, undocumented_fields
from harness.runner import run_suite
from harness.suite import load_suite


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke suite's results as a DataFrame indexed by case_id, and the run folder."""
    suite = load_suite("smoke", overrides=["repeats=2", "warmup=0"])
    out = tmp_path_factory.mktemp("smoke")
    run_suite(suite, out, stream=io.StringIO())
    return suite, out, read_results(out).set_index("case_id")


def test_smoke_gives_the_expected_rows_all_ok(smoke):
    suite, _, df = smoke
    assert sorted(df.index) == sorted(c.case_id for c in suite.cases) and len(df) == 6
    assert set(df["status"]) == {"ok"}
    assert set(df["group"]) == {"text_encoder=gpu", "text_encoder=offload_after"}
    assert (df["load_ms"] > 0).all()


def test_smoke_times_every_stage_of_every_case(smoke):
    _, _, df = smoke
    stages = [s for s in GENERATE_STAGES if s != "compile"]  # compile: only with compiled blocks
    for stage in stages:
        assert (df[f"stage_ms.{stage}"] > 0).all(), stage
        assert df[f"repeats_ms.{stage}"].map(len).eq(2).all()
    assert df["stage_ms.compile"].isna().all()
    assert (df["step_ms.high"] > 0).all() and (df["step_ms.low"] > 0).all()
    assert (df["total_ms"] >= df[[f"stage_ms.{s}" for s in stages]].sum(axis=1) * 0.5).all()


def test_smoke_records_the_real_output_size_and_spans_two_token_counts(smoke):
    _, _, df = smoke
    wide = df[df["size"] == "96*64"]
    assert set(wide["out_width"]) == {96} and set(wide["out_height"]) == {64}
    # (5-1)/4+1 latent frames x h/16 x w/16: two token counts, so the report fits growth with the work
    assert set(df["tokens"]) == {2 * 3 * 3, 2 * 4 * 6}
    assert set(df["out_frames"]) == {5}


def test_a_cpu_case_records_where_the_plan_really_put_the_networks(smoke):
    _, _, df = smoke
    assert set(df["text_encoder"]) == {"gpu", "offload_after"}
    assert set(df["effective.text_encoder"]) == {"cpu"}  # on a CPU both placements are the CPU
    assert set(df["effective.experts"]) == {"resident"} and set(df["effective.dit_blocks"]) == {"resident"}
    assert df["effective.host_memory"].isna().all()  # nothing is parked in host memory


def test_a_case_equal_to_its_reference_gives_psnr_100_and_ssim_1(smoke):
    _, _, df = smoke
    same = df.loc["size=48*48,steps=4,text_encoder=offload_after"]  # offload_after is lossless
    assert same["reference_case"] == "size=48*48,steps=4,text_encoder=gpu"
    assert same["psnr_db"] == 100.0 and same["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert same["psnr_frames"] == [100.0] * 5


def test_fewer_steps_give_lower_quality_than_the_reference(smoke):
    _, _, df = smoke
    for size in ("48*48", "96*64"):
        lossy = df.loc[f"size={size},steps=2,text_encoder=gpu"]
        assert lossy["psnr_db"] < 60.0 and lossy["ssim"] < 0.99
        assert len(lossy["ssim_frames"]) == 5
    references = df[df["is_reference"]]
    assert len(references) == 2 and references["psnr_db"].isna().all()
    assert df["quality_note"].str.contains("synthetic weights").all()


def test_smoke_rows_follow_the_documented_schema_and_tables_match(smoke):
    _, out, df = smoke
    for row in read_rows(out / "results.jsonl"):
        assert undocumented_fields(row) == []
    assert len(pd.read_parquet(out / "results.parquet")) == len(pd.read_csv(out / "results.csv")) == 6
    timeline = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert len(timeline) == 12 and {s["stage"] for s in timeline[0]["spans"]} == set(GENERATE_STAGES) - {"compile"}


def test_sampled_timing_runs_few_steps_and_projects_the_rest(tmp_path):
    suite = load_suite("smoke", overrides=["timing=sampled", "steps=8", "size=160*96", "text_encoder=gpu",
                                           "repeats=1", "warmup=0"])
    run_suite(suite, tmp_path, stream=io.StringIO())
    (row,) = read_rows(tmp_path / "results.jsonl")
    assert row["status"] == "ok" and row["projected"] is True and row["valid_video"] is False
    assert row["psnr_db"] is None and "no metrics" in row["quality_note"]
    n_high, n_low = row["steps_high"], row["steps_low"]
    assert n_high + n_low == 8 and row["sampled_steps.high"] == [0, 1] and row["sampled_steps.low"] == [n_high, n_high + 1]
    (line,) = [json.loads(x) for x in (tmp_path / "timeline.jsonl").read_text().splitlines()]
    for expert, n in (("high", n_high), ("low", n_low)):
        span = next(s for s in line["spans"] if s["stage"] == f"denoise_{expert}")
        measured = [s["ms"] for s in line["steps"] if s["expert"] == expert][1:]  # first one is warmup
        expected = (span["end_s"] - span["start_s"]) * 1000 + (n - 2) * sum(measured) / len(measured)
        assert row[f"stage_ms.denoise_{expert}"] == pytest.approx(expected, rel=1e-3)


@pytest.mark.gpu
def test_smoke_on_cuda_times_with_events_and_sees_nvml_above_torch(tmp_path):
    picture = tmp_path / "picture.png"  # a file, so the test needs no scikit-image on the GPU machine
    ramp = np.linspace(0, 255, 160 * 96 * 3).reshape(96, 160, 3).astype(np.uint8)
    Image.fromarray(ramp).save(picture)
    suite = load_suite("smoke", overrides=["device=cuda", f"image={picture}", "size=160*96", "steps=4",
                                           "repeats=1", "warmup=0"])
    run_suite(suite, tmp_path / "out", stream=io.StringIO())
    df = read_results(tmp_path / "out")
    assert set(df["status"]) == {"ok"} and len(df) == 2
    for stage in [s for s in GENERATE_STAGES if s != "compile"]:  # compile: compiled blocks only
        assert (df[f"stage_gpu_ms.{stage}"] > 0).all(), stage
    assert (df["peak_reserved_mib"] >= df["peak_allocated_mib"]).all()
    assert (df["peak_nvml_mib"] > df["peak_reserved_mib"]).all()  # NVML adds the CUDA context
    assert df["env.gpu"].notna().all() and df["memory_note"].isna().all()
    assert list(df["effective.text_encoder"]) == list(df["text_encoder"])  # on a GPU the plan is what runs
