"""Every shipped GPU suite, run at tiny scale on the CPU and reported, so none can rot.

The tiny variant of a suite is the suite file itself with the model swapped for the tiny preset on
the CPU, every official size mapped to a small one of similar shape (and `output_size` with it),
5 frames, one repeat and no warmup: the same cases, sweeps, references and timing mode. A VRAM
budget is dropped (the CPU has none to cap).
A size not in the map fails the test, so a suite that adds one must add it here too.
The speed suites name CUDA attention kernels and compile with inductor: at tiny scale their backends
become the CPU's two (cuDNN -> auto, SageAttention -> math, so the cases stay distinct) and blocks
compile with `aot_eager` (inductor's C++ build takes about a minute per case on a 2-core CPU).

Also checked: the real (A14B) suite still loads and expands to the same cases, and the committed
tiny baseline of the regression suite still describes it (same cases, quality within its gates).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.compare import compare_runs, default_gates
from harness.registry import PROJECT_SUITES
from harness.report import build_report
from harness.results import latest_rows, read_rows
from harness.runner import run_suite
from harness.suite import load_suite, parse_suite

SUITES = ("bench-h100", "bench-4090", "offload", "offload-quality", "cross-res", "quality", "regression", "speed",
          "speed-quality")
TINY_SIZES = {"832*480": "80*48", "1280*720": "128*80"}
# cross-res keeps 480p -> 720p a 1.5x upscale at tiny scale, as refine mode's scale_factor expects.
TINY_SIZES_BY_SUITE = {"cross-res": {"832*480": "96*64", "1280*720": "144*96"}}
CPU_ATTENTION = {"cudnn": "auto", "sage": "math"}
BASELINE = Path(__file__).resolve().parents[2] / "baselines" / "regression-tiny-cpu" / "results.jsonl"


def _tiny_value(value: Any, sizes: dict[str, str] = TINY_SIZES) -> Any:
    """A parameter value with official sizes (and W x H lists) mapped to tiny ones."""
    if isinstance(value, str) and "*" in value:
        if value not in sizes:
            raise AssertionError(f"size {value!r} has no tiny counterpart: add it to TINY_SIZES")
        return sizes[value]
    if isinstance(value, list) and len(value) == 2 and f"{value[0]}*{value[1]}" in sizes:
        return [int(v) for v in sizes[f"{value[0]}*{value[1]}"].split("*")]
    if isinstance(value, list):
        return [_tiny_value(v, sizes) for v in value]
    if isinstance(value, dict):
        return {k: _tiny_value(v, sizes) for k, v in value.items()}
    return value


def tiny_variant(name: str) -> str:
    """The suite's YAML at tiny scale (see the module docstring)."""
    doc = yaml.safe_load((PROJECT_SUITES / f"{name}.yaml").read_text(encoding="utf-8"))
    doc.update(model={"preset": "tiny", "weights": "synthetic"}, device="cpu", repeats=1, warmup=0)
    for section in ("base", "sweep", "reference"):
        if section in doc:
            doc[section] = _tiny_value(doc[section], TINY_SIZES_BY_SUITE.get(name, TINY_SIZES))
    doc["base"].pop("vram_budget_gib", None)
    if doc["base"].get("frames", 81) > 5:
        doc["base"]["frames"] = 5
    for section in (doc["base"], doc.get("sweep", {})):
        for key in ("attention", "cross_attention"):
            if key in section:
                value = section[key]
                section[key] = [CPU_ATTENTION[v] for v in value] if isinstance(value, list) else CPU_ATTENTION[value]
    for row in [*doc.get("sweep", {}).get("exclude", []), *doc.get("sweep", {}).get("include", []),
                doc.get("reference", {}).get("where", {})]:
        if "attention" in row:
            row["attention"] = CPU_ATTENTION[row["attention"]]
    if "compile" in doc.get("sweep", {}) or "compile" in doc["base"]:
        doc["base"]["compile_backend"] = "aot_eager"
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Each suite's tiny variant run and reported: name -> (suite, rows by case_id, report files)."""
    out = {}
    for name in SUITES:
        suite = parse_suite(tiny_variant(name), source=f"{name} (tiny)")
        run = tmp_path_factory.mktemp(name)
        run_suite(suite, run / "run", stream=io.StringIO())
        rows = {r["case_id"]: r for r in latest_rows(read_rows(run / "run" / "results.jsonl"))}
        out[name] = (suite, rows, build_report([run / "run"], run / "report"))
    return out


@pytest.mark.parametrize("name", SUITES)
def test_the_real_suite_loads_and_its_tiny_variant_has_the_same_cases(name):
    real = load_suite(name)
    tiny = parse_suite(tiny_variant(name), source=f"{name} (tiny)")
    assert real.config.name == "a14b" and real.spec.device == "cuda"
    assert len(tiny.cases) == len(real.cases)
    assert [c.reference_id is None for c in tiny.cases] == [c.reference_id is None for c in real.cases]
    assert len(tiny.groups()) == len(real.groups())


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITES)
def test_the_tiny_variant_runs_every_case_and_is_reported(tiny_runs, name):
    suite, rows, files = tiny_runs[name]
    assert sorted(rows) == sorted(c.case_id for c in suite.cases)
    assert {r["status"] for r in rows.values()} == {"ok"}, {k: r.get("error") for k, r in rows.items()}
    assert files.markdown.is_file() and files.html.is_file() and len(files.csvs) == 6
    assert f"wanbench report: {name}" in files.markdown.read_text()


@pytest.mark.slow
def test_bench_h100_at_tiny_scale_is_projected_and_grows_with_tokens(tiny_runs):
    _, rows, files = tiny_runs["bench-h100"]
    assert all(r["projected"] and not r["valid_video"] for r in rows.values())
    assert {r["tokens"] for r in rows.values()} == {2 * 3 * 5, 2 * 5 * 8}  # 80x48 and 128x80, 5 frames
    assert "> **Note:** Projected figures (6 of 6 cases" in files.markdown.read_text()
    fits = {r["group"]: r for r in files.tables["cost_vs_tokens"].records}
    assert len(fits) == 3 and all(r["points"] == 2 and r["total_exponent"] is not None for r in fits.values())


@pytest.mark.slow
def test_offload_quality_finds_swap_and_stream_lossless_and_fp8_and_tiling_measured(tiny_runs):
    _, rows, _ = tiny_runs["offload-quality"]
    compared = [r for r in rows.values() if not r["is_reference"]]
    assert len(compared) == 5 and all(r["valid_video"] and not r["projected"] for r in compared)
    for row in compared:
        if row["weight_dtype"] == "bf16" and row["vae_tiling"] is None:
            assert row["psnr_db"] == 100.0, row["case_id"]  # swap and stream move weights, not values
        elif row["weight_dtype"] == "fp8":
            assert 25.0 < row["psnr_db"] < 100.0, row["case_id"]
        else:
            assert row["vae_tiling"] == 256 and row["psnr_db"] is not None, row["case_id"]


@pytest.mark.slow
def test_cross_res_compares_every_route_with_native_720p(tiny_runs):
    _, rows, _ = tiny_runs["cross-res"]
    reference = next(r for r in rows.values() if r["is_reference"])
    assert (reference["out_width"], reference["out_height"], reference["mode"]) == (144, 96, "both")
    others = [r for r in rows.values() if not r["is_reference"]]
    assert len(others) == 4 and all(r["psnr_db"] is not None and r["psnr_db"] < 100 for r in others)
    native_480 = next(r for r in others if r["size"] == "96*64" and r["output_size"] is None)
    assert native_480["quality_resize"].startswith("lanczos")
    upscaled = [r for r in others if r["output_size"] == [144, 96]]
    assert len(upscaled) == 2 and all(r["quality_resize"] == "none" for r in upscaled)


@pytest.mark.slow
def test_quality_measures_each_schedule_against_the_75_step_run_of_its_guidance(tiny_runs):
    _, rows, _ = tiny_runs["quality"]
    for row in rows.values():
        reference = rows[row["reference_case"]]
        assert reference["steps"] == 75 and reference["shift"] == 5.0
        assert reference["guide_scale_high"] == row["guide_scale_high"]
        if not row["is_reference"]:
            assert row["psnr_db"] is not None


@pytest.mark.slow
def test_regression_at_tiny_scale_matches_the_committed_baseline_on_quality(tiny_runs, tmp_path):
    _, rows, _ = tiny_runs["regression"]
    swap = next(r for r in rows.values() if r["experts"] == "swap")
    assert swap["psnr_db"] == 100.0  # swapping experts is lossless
    current = tmp_path / "current.jsonl"
    current.write_text("".join(json.dumps(r) + "\n" for r in rows.values()))
    gates = {m: g for m, g in default_gates().items() if m in ("psnr_db", "ssim")}
    comparison = compare_runs(BASELINE, current, gates, ["quality gates"])
    assert comparison.matched == 3 and not comparison.only_baseline and not comparison.only_current
    assert not comparison.failed, [(c.case, c.metric, c.baseline, c.current) for c in comparison.regressions]


@pytest.mark.slow
def test_speed_reports_the_compile_stage_of_compiled_plans_only(tiny_runs):
    _, rows, _ = tiny_runs["speed"]
    assert len(rows) == 12 and all(r["projected"] for r in rows.values())
    for row in rows.values():
        compiled = row["compile"] == "blocks"
        assert (row["stage_ms.compile"] is not None) == compiled, row["case_id"]


@pytest.mark.slow
def test_speed_quality_finds_compiled_blocks_lossless_and_fp8_compute_measured(tiny_runs):
    _, rows, _ = tiny_runs["speed-quality"]
    compared = [r for r in rows.values() if not r["is_reference"]]
    assert len(compared) == 5 and all(r["valid_video"] for r in compared)
    for row in compared:
        if row["matmul"] == "fp8":
            assert 25.0 < row["psnr_db"] < 100.0, row["case_id"]
        elif row["attention"] == "auto":  # compiled with exact kernels
            assert row["psnr_db"] == 100.0, row["case_id"]
