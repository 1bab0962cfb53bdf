"""Cases that span GPUs (issue 10, the harness side): a case's ParallelPlan decides its ranks, its worker runs
under torchrun through the launcher, rank 0 reports, every rank's memory is in the row, and a rank that dies
makes its case an error row instead of a hang. suites/multi-gpu.yaml runs at tiny scale on 2 gloo CPU ranks
(the tiny DiT has 2 attention heads: Ulysses 1 or 2) and every parallel case gives the one-rank video.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
import yaml

from harness.registry import PROJECT_SUITES
from harness.results import latest_rows, read_rows, undocumented_fields
from harness.runner import run_suite
from harness.suite import load_suite, parse_suite
from wan_runtime.errors import ConfigError

pytestmark = pytest.mark.slow

FAKE = f"{Path(__file__).with_name('fake_pipeline.py')}:FakePipeline.load"
TINY_SIZES = {"832*480": "80*48", "1280*720": "128*80"}


def tiny_multi_gpu() -> str:
    """suites/multi-gpu.yaml at tiny scale on CPU ranks: at most 2 ranks, full timing, the one-rank case as
    the reference of each size."""
    doc = yaml.safe_load((PROJECT_SUITES / "multi-gpu.yaml").read_text(encoding="utf-8"))
    doc.update(model={"preset": "tiny", "weights": "synthetic"}, device="cpu", timing="full", repeats=1, warmup=0)
    doc["base"].update(frames=5, steps=4)
    sweep = doc["sweep"]
    sweep["size"] = [TINY_SIZES[s] for s in sweep["size"]]
    sweep["ulysses_size"] = [1, 2]
    sweep["exclude"] = [{"ulysses_size": 2, "cfg_parallel": True}]  # 4 ranks
    sweep["include"] = [dict(row, size=TINY_SIZES[row["size"]]) for row in sweep["include"]
                        if row.get("ulysses_size", 1) == 1]
    doc["reference"] = {"where": {"ulysses_size": 1, "cfg_parallel": False, "experts": "resident"}, "match": ["size"]}
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    suite = parse_suite(tiny_multi_gpu(), source="multi-gpu (tiny)")
    out = tmp_path_factory.mktemp("multi-gpu") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        outcome = run_suite(suite, out, stream=io.StringIO())
    return suite, outcome, {r["case_id"]: r for r in latest_rows(read_rows(out / "results.jsonl"))}


def test_the_multi_gpu_suite_runs_on_two_cpu_ranks(tiny_run):
    suite, outcome, rows = tiny_run
    assert outcome.statuses == {"ok": len(suite.cases)} == {"ok": 8}
    ranks = {case_id: row["ranks"] for case_id, row in rows.items()}
    assert sorted(ranks.values()) == [1, 1, 2, 2, 2, 2, 2, 2]
    for row in rows.values():
        assert len(row["peak_nvml_mib_devices"]) == row["ranks"]  # one entry per rank's device
        assert undocumented_fields(row) == []


def test_every_parallel_case_gives_the_one_rank_video(tiny_run):
    _, _, rows = tiny_run
    parallel = [row for row in rows.values() if row["ranks"] > 1]
    assert all(row["psnr_db"] >= 45 for row in parallel), {r["case_id"]: r["psnr_db"] for r in parallel}


def test_the_real_suite_sweeps_ulysses_cfg_parallel_and_the_expert_split():
    suite = load_suite("multi-gpu")
    from harness.params import case_ranks

    ranks = sorted({case_ranks(c.params) for c in suite.cases})
    assert ranks == [1, 2, 4, 8] and len(suite.cases) == 2 * (4 * 2 - 1 + 2)
    assert {c.params["size"] for c in suite.cases} == {"832*480", "1280*720"}
    assert {c.params["frames"] for c in suite.cases} == {81} and suite.spec.timing == "sampled"


def _fake_parallel(folder: Path, prompts: list[str], timeout_s: float = 300) -> Path:
    path = folder / "fake.yaml"
    lines = ["name: fake", "model: {preset: tiny}", 'base: {size: "64*48", frames: 5, steps: 2, ulysses_size: 2, '
             f"collective_timeout_s: {timeout_s}}}", "repeats: 1", "warmup: 0", "sweep:", "  prompt:"]
    path.write_text("\n".join(lines + [f"    - '{p}'" for p in prompts]) + "\n")
    return path


def test_a_rank_that_dies_makes_its_case_an_error_row_not_a_hang(tmp_path):
    marker = tmp_path / "die"
    marker.touch()
    suite = load_suite(_fake_parallel(tmp_path, ["first", f"rank-1-dies-if-exists:{marker}", "last"]))
    out = tmp_path / "out"
    started = time.monotonic()
    outcome = run_suite(suite, out, factory=FAKE, stream=io.StringIO())
    assert time.monotonic() - started < 300  # torchrun stopped the job: no rank waited out its collective timeout
    rows = read_rows(out / "results.jsonl")
    assert [(r["prompt"].split(":")[0], r["status"]) for r in rows] == [
        ("first", "ok"), ("rank-1-dies-if-exists", "error"), ("last", "ok")]
    dead = rows[1]
    assert dead["error"].startswith("worker process died (exit code 1) in stage 'denoise_high'; last log lines:")
    assert outcome.statuses == {"ok": 2, "error": 1} and all(r["ranks"] == 2 for r in rows)
    marker.unlink()
    again = run_suite(suite, out, factory=FAKE, stream=io.StringIO())
    assert (again.ran, again.skipped, again.statuses) == (1, 2, {"ok": 3})


def test_a_case_of_two_ranks_takes_two_of_the_given_gpus(tmp_path):
    suite = load_suite(_fake_parallel(tmp_path, ["first"]))
    run_suite(suite, tmp_path / "out", factory=FAKE, stream=io.StringIO(), gpus="0,1,2")
    (row,) = read_rows(tmp_path / "out" / "results.jsonl")
    assert row["status"] == "ok" and row["env.cuda_visible_devices"] == "0,1"


def test_a_case_needing_more_gpus_than_given_is_refused_before_anything_starts(tmp_path):
    suite = load_suite(_fake_parallel(tmp_path, ["first"]))
    with pytest.raises(ConfigError, match=r"process group 'all' runs on 2 GPUs but --gpus gives 1 \(0\); give at "
                                          r"least 2 or leave its cases out"):
        run_suite(suite, tmp_path / "out", factory=FAKE, stream=io.StringIO(), gpus="0")
    assert not (tmp_path / "out" / "results.jsonl").exists()
