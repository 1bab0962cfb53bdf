"""The GPU runs committed in baselines/ (h100-a14b, h200-speed) stay readable and describe what the README says.

They are what `wanbench compare` is given on an H100 and where the README's tables come from, so a
schema change that leaves them unreadable, or a README figure that drifts from its run, fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from harness.report import build_report
from harness.results import latest_rows, read_rows, undocumented_fields
from scaleout_runs import deterministic, folder_rows

ROOT = Path(__file__).resolve().parents[2]
H100 = ROOT / "baselines" / "h100-a14b"
RUNS = sorted(p.parent for p in H100.glob("*/results.jsonl"))
H200 = ROOT / "baselines" / "h200-speed"
H200_RUNS = sorted(p.parent for p in H200.rglob("results.jsonl"))  # scaleout-smoke-cuda/ holds three
BENCH = ["bench-h100-832x480", "bench-h100-1280x720", "bench-h100-swap-832x480", "bench-h100-swap-1280x720"]


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_every_committed_h100_run_reads_with_documented_fields_and_finished_cases(run):
    rows = latest_rows(read_rows(run / "results.jsonl"))
    assert rows and {r["status"] for r in rows} == {"ok"}
    assert all("H100" in r["env.gpu"] for r in rows)
    assert [f for r in rows for f in undocumented_fields(r)] == []


def test_the_readme_bench_h100_table_is_the_committed_runs_report(tmp_path):
    files = build_report([H100 / name for name in BENCH], tmp_path)
    summary = {r["plan"]: r for r in files.tables["memory_latency"].records if r["resolution"].startswith("1280")}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    swap = re.search(r"\| swap \(pinned host copy\), bf16 \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", readme)
    assert swap is not None
    row = summary["experts=swap, weight_dtype=bf16"]
    assert float(swap.group(5)) == pytest.approx(row["total_ms"] / 1000, abs=0.05)
    assert float(swap.group(6)) == pytest.approx(row["peak_nvml_mib"] / 1024, abs=0.05)


@pytest.mark.parametrize("run", H200_RUNS, ids=[str(r.relative_to(H200)) for r in H200_RUNS])
def test_every_committed_h200_run_reads_with_documented_fields_and_finished_cases(run):
    rows = latest_rows(read_rows(run / "results.jsonl"))
    assert rows and {r["status"] for r in rows} == {"ok"}
    assert all("H200" in r["env.gpu"] for r in rows)
    assert [f for r in rows for f in undocumented_fields(r)] == []


def test_the_readme_480p_end_to_end_figures_are_the_committed_h200_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"exact ([\d.]+) s \(([\d.]+) s per step, NVML peak ([\d.]+) GiB\); fastest ([\d.]+) s,\s+"
                      r"compile stage \(([\d.]+) s\) included \(([\d.]+) s per step, ([\d.]+) GiB\)", readme)
    assert found is not None
    exact, fastest = (latest_rows(read_rows(H200 / name / "results.jsonl"))[0]
                      for name in ("e2e-480p-exact", "e2e-480p-fastest"))
    figures = [float(g) for g in found.groups()]
    assert figures[0] == pytest.approx(exact["total_ms"] / 1000, abs=0.05)
    assert figures[1] == pytest.approx(exact["step_ms.high"] / 1000, abs=0.005)
    assert figures[2] == pytest.approx(exact["peak_nvml_mib"] / 1024, abs=0.05)
    assert figures[3] == pytest.approx(fastest["total_ms"] / 1000, abs=0.05)
    assert figures[4] == pytest.approx(fastest["stage_ms.compile"] / 1000, abs=0.05)
    assert figures[5] == pytest.approx(fastest["step_ms.high"] / 1000, abs=0.005)
    assert figures[6] == pytest.approx(fastest["peak_nvml_mib"] / 1024, abs=0.05)


def _rows(folder: Path) -> dict[str, dict]:
    return {row["case_id"]: row for row in latest_rows(read_rows(folder / "results.jsonl"))}


def test_the_committed_scaleout_runs_on_a_gpu_give_the_plain_runs_rows():
    runs = H200 / "scaleout-smoke-cuda"
    plain = deterministic(folder_rows(runs / "plain"))
    assert len(plain) == 6
    for launcher in ("gpus0", "ray"):
        assert deterministic(folder_rows(runs / launcher)) == plain, launcher


def test_the_readme_flash_attention_4_figures_are_the_committed_h200_runs():
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))
    e2e = re.search(r"compiled \+ `flash_attn4` ([\d.]+) s \(([\d.]+) s per step, ([\d.]+) GiB\); compiled \+ "
                    r"`matmul: fp8` \+ `flash_attn4` ([\d.]+) s \(([\d.]+) s per step, ([\d.]+) GiB\)", readme)
    quality = re.search(r"compiled \+ `flash_attn4` ([\d.]+) dB / ([\d.]+) \(exact kernels: bf16 rounding alone\), "
                        r"compiled \+ `matmul: fp8` \+ `flash_attn4` ([\d.]+) dB / ([\d.]+)", readme)
    assert e2e is not None and quality is not None
    runs = _rows(H200 / "e2e-480p-fa4")
    for plan, (total, step, peak) in (("weight_dtype=bf16,matmul=native", e2e.groups()[:3]),
                                      ("weight_dtype=fp8,matmul=fp8", e2e.groups()[3:])):
        row = runs[plan]
        assert float(total) == pytest.approx(row["total_ms"] / 1000, abs=0.05)
        assert float(step) == pytest.approx(row["step_ms.high"] / 1000, abs=0.005)
        assert float(peak) == pytest.approx(row["peak_nvml_mib"] / 1024, abs=0.05)
    drift = _rows(H200 / "speed-quality-fa4")
    for plan, (psnr, ssim) in (("compile=blocks,attention=flash_attn4,weight_dtype=bf16,matmul=native", quality.groups()[:2]),
                               ("compile=blocks,attention=flash_attn4,weight_dtype=fp8,matmul=fp8", quality.groups()[2:])):
        assert float(psnr) == pytest.approx(drift[plan]["psnr_db"], abs=0.05)
        assert float(ssim) == pytest.approx(drift[plan]["ssim"], abs=0.0005)


def test_the_readme_flash_attention_3_figures_are_the_committed_h200_runs():
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))
    forward = json.loads((H200 / "bench-speed-fa3.json").read_text())["forward"]
    for plan, label in (("compiled:fa3_fp8", r"`compile: blocks` \+ `fa3_fp8`"),
                        ("fastest:fa3_fp8", r"fastest: `compile: blocks` \+ `matmul: fp8` \+ `fa3_fp8`")):
        row = re.search(rf"\| {label} \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+) dB \| ([\d.]+) \| ([\d.]+)x \|", readme)
        assert row is not None, plan
        s720, x720, psnr, s480, x480 = (float(g) for g in row.groups())
        assert s720 == pytest.approx(forward["720p"][plan]["s"], abs=0.005)
        assert x720 == pytest.approx(forward["720p"][plan]["speedup_vs_diffusers"], abs=0.0005)
        assert psnr == pytest.approx(forward["720p"][plan]["psnr_db"], abs=0.05)
        assert s480 == pytest.approx(forward["480p"][plan]["s"], abs=0.005)
        assert x480 == pytest.approx(forward["480p"][plan]["speedup_vs_diffusers"], abs=0.0005)
    e2e = re.search(r"With `fa3_fp8`: the fastest plan \(compiled \+ `matmul: fp8` \+ `fa3_fp8`\) ([\d.]+) s, compile "
                    r"stage \(([\d.]+) s\) included \(([\d.]+) s per step, ([\d.]+) GiB", readme)
    assert e2e is not None
    row = latest_rows(read_rows(H200 / "e2e-480p-fa3" / "results.jsonl"))[0]
    total, compile_s, step, peak = (float(g) for g in e2e.groups())
    assert total == pytest.approx(row["total_ms"] / 1000, abs=0.05)
    assert compile_s == pytest.approx(row["stage_ms.compile"] / 1000, abs=0.05)
    assert step == pytest.approx(row["step_ms.high"] / 1000, abs=0.005)
    assert peak == pytest.approx(row["peak_nvml_mib"] / 1024, abs=0.05)
    quality = re.search(r"compiled \+ `fa3_fp8` ([\d.]+) dB / ([\d.]+) and the fastest plan ([\d.]+) dB / (\d\.\d+)",
                        readme)
    assert quality is not None
    drift = _rows(H200 / "speed-quality-fa3")
    for plan, (psnr, ssim) in (("compile=blocks,attention=fa3_fp8,weight_dtype=bf16,matmul=native", quality.groups()[:2]),
                               ("compile=blocks,attention=fa3_fp8,weight_dtype=fp8,matmul=fp8", quality.groups()[2:])):
        assert float(psnr) == pytest.approx(drift[plan]["psnr_db"], abs=0.05)
        assert float(ssim) == pytest.approx(drift[plan]["ssim"], abs=0.0005)


def test_the_readme_exact_last_blocks_figures_are_the_committed_h200_runs():
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))
    drift = _rows(H200 / "speed-quality-fa3-exact-last")
    fastest = "compile=blocks,attention=fa3_fp8,weight_dtype=fp8,matmul=fp8,exact_last_blocks="
    for blocks, label in ((0, r"fastest: `compile: blocks` \+ `matmul: fp8` \+ `fa3_fp8`"),
                          (12, r"the same \+ `exact_last_blocks: 12`")):
        row = re.search(rf"\| {label} \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+) dB \| ([\d.]+) dB / ([\d.]+) \|", readme)
        assert row is not None, blocks
        seconds, speedup, psnr, video_psnr, video_ssim = (float(g) for g in row.groups())
        bench = json.loads((H200 / f"bench-speed-fa3-exact-last-{blocks}.json").read_text())
        assert bench["exact_last_blocks"] == blocks
        forward = bench["forward"]["720p"]["fastest:fa3_fp8"]
        assert seconds == pytest.approx(forward["s"], abs=0.005)
        assert speedup == pytest.approx(forward["speedup_vs_diffusers"], abs=0.0005)
        assert psnr == pytest.approx(forward["psnr_db"], abs=0.05)
        assert video_psnr == pytest.approx(drift[fastest + str(blocks)]["psnr_db"], abs=0.05)
        assert video_ssim == pytest.approx(drift[fastest + str(blocks)]["ssim"], abs=0.0005)
    e2e = re.search(r"`exact_last_blocks: 12` \(quantization outside the op\): ([\d.]+) s, compile stage "
                    r"\(([\d.]+) s, two block layouts\) included \(([\d.]+) s per step, ([\d.]+) GiB", readme)
    assert e2e is not None
    row = latest_rows(read_rows(H200 / "e2e-480p-fa3-exact-last-12" / "results.jsonl"))[0]
    assert row["exact_last_blocks"] == 12
    total, compile_s, step, peak = (float(g) for g in e2e.groups())
    assert total == pytest.approx(row["total_ms"] / 1000, abs=0.05)
    assert compile_s == pytest.approx(row["stage_ms.compile"] / 1000, abs=0.05)
    assert step == pytest.approx(row["step_ms.high"] / 1000, abs=0.005)
    assert peak == pytest.approx(row["peak_nvml_mib"] / 1024, abs=0.05)


def test_the_readme_cudnn_plan_figures_are_the_committed_h200_run_and_torch_runs_the_fastest_plan():
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))
    found = re.search(r"torch runs the faster \(([\d.]+) vs ([\d.]+) TFLOP/s at 720p", readme)
    assert found is not None
    run = json.loads((H200 / "cudnn-bf16-plans.json").read_text())["shapes"]["720p"]
    plans = sorted((p for p in run["frontend_plans"] if "tflops" in p), key=lambda p: -p["tflops"])
    assert [float(g) for g in found.groups()] == [round(p["tflops"]) for p in plans]
    assert plans[0]["rel_l2_vs_torch_cudnn"] == 0.0  # the same kernel torch runs: bitwise the same output
    assert run["torch_cudnn_bshd_views"]["tflops"] >= 0.98 * plans[0]["tflops"]
