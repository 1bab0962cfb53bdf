"""`wanbench compare` on the smoke suite's real output, with planted changes.

Gates are set for the smoke suite's scale (a generation takes 0.2-0.7 s on a CPU, a step ~5 ms), on the
command line as a CI job would: total +8% and +20 ms, a step +8% and +0.5 ms; PSNR -0.5 dB comes from
the suite. A planted 20% slowdown and a 2 dB PSNR drop must be caught, a 2% wobble must not.
The run is shared with the report tests (report_smoke_run.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from harness.cli.main import main
from report_smoke_run import smoke_run_folder

SMOKE_GATES = ["--suite", "smoke", "--gate", "total_ms=rel:0.08,abs:20",
               "--gate", "step_ms.high=rel:0.08,abs:0.5", "--gate", "step_ms.low=rel:0.08,abs:0.5"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke suite's run folder (5 repeats after 1 warmup)."""
    return smoke_run_folder(tmp_path_factory)


def _planted(smoke_run: Path, path: Path, time_factor=lambda: 1.0, psnr_drop_db: float = 0.0) -> Path:
    """A copy of the run's results with every time scaled (repeats one by one) and lossy PSNRs lowered."""
    lines = []
    for line in (smoke_run / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key == "total_ms" or key.startswith(("stage_ms.", "step_ms.")):
                row[key] = value * time_factor() if isinstance(value, float) else value
            elif key.startswith("repeats_ms.") and value:
                row[key] = [v * time_factor() for v in value]
        if row.get("psnr_db") is not None and row["psnr_db"] < 100.0:
            row["psnr_db"] -= psnr_drop_db
            row["psnr_frames"] = [v - psnr_drop_db for v in row["psnr_frames"]]
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def _compare(capsys, baseline: Path, current: Path, *extra: str) -> tuple[int, str]:
    code = main(["compare", str(baseline), str(current), *SMOKE_GATES, *extra])
    return code, capsys.readouterr().out


def _regressed(out: str) -> list[tuple[str, str]]:
    """(case, metric) of every `regressed` line of the changes table."""
    found = []
    for line in out.splitlines():
        parts = line.split()
        if "regressed" in parts:
            found.append((parts[0], parts[1]))
    return found


def test_a_run_compared_with_itself_has_no_regression(smoke_run, capsys):
    code, out = _compare(capsys, smoke_run, smoke_run)
    assert code == 0 and "RESULT: no regression" in out
    assert "6 matched case(s)" in out and " 0 regressed" in out


def test_a_planted_20_percent_slowdown_is_caught_in_every_case(smoke_run, tmp_path, capsys):
    slow = _planted(smoke_run, tmp_path / "slow.jsonl", time_factor=lambda: 1.2)
    code, out = _compare(capsys, smoke_run, slow, "--all")  # --all: also the lines judged within
    assert code == 1 and "RESULT: REGRESSION" in out
    flagged = {c for c, metric in _regressed(out) if metric == "total_ms"}
    rows = [json.loads(line) for line in (smoke_run / "results.jsonl").read_text().splitlines()]
    for row in rows:
        repeats = row["repeats_ms.total"]
        line = next(x for x in out.splitlines() if x.startswith(row["case_id"] + " ") and " total_ms " in x)
        if max(repeats) < 1.2 * min(repeats):
            # Every slowed repeat is above every original one: the smallest p of 5 vs 5, 1/252.
            assert row["case_id"] in flagged, line
            assert "thresholds + Mann-Whitney U p=0.00397 (5 vs 5 repeats)" in line
        else:
            # The run's own repeats spread by 20% or more (a busy machine): the test may find the
            # change not significant, and must then say so rather than guess.
            assert row["case_id"] in flagged or "not significant at 0.05" in line, line
    # Per-step times have no raw repeats: thresholds alone decide them, and the output says so.
    assert any(metric == "step_ms.high" for _, metric in _regressed(out))
    assert "thresholds only (no raw repeats kept for this metric)" in out


def test_a_planted_2_db_psnr_drop_is_caught_in_every_lossy_case(smoke_run, tmp_path, capsys):
    worse = _planted(smoke_run, tmp_path / "worse.jsonl", psnr_drop_db=2.0)
    code, out = _compare(capsys, smoke_run, worse)
    assert code == 1
    rows = [json.loads(line) for line in (smoke_run / "results.jsonl").read_text().splitlines()]
    lossy = {r["case_id"] for r in rows if r.get("psnr_db") is not None and r["psnr_db"] < 100.0}
    assert len(lossy) == 2  # the 2-step case of each size
    assert {c for c, metric in _regressed(out) if metric == "psnr_db"} == lossy
    assert {metric for _, metric in _regressed(out)} == {"psnr_db"}


def test_a_2_percent_wobble_is_not_a_regression(smoke_run, tmp_path, capsys):
    rng = random.Random(7)
    wobbly = _planted(smoke_run, tmp_path / "wobbly.jsonl", time_factor=lambda: 1.0 + rng.uniform(0.0, 0.02))
    code, out = _compare(capsys, smoke_run, wobbly)
    assert code == 0 and " 0 regressed" in out


def test_a_baseline_can_be_a_results_file_and_fewer_repeats_leave_thresholds_alone(smoke_run, tmp_path, capsys):
    rows = [json.loads(line) for line in (smoke_run / "results.jsonl").read_text().splitlines()]
    for row in rows:  # a baseline that kept only 3 repeats, 30% faster
        row["repeats_ms.total"] = [v / 1.3 for v in row["repeats_ms.total"][:3]]
        row["total_ms"] /= 1.3
    baseline = tmp_path / "committed" / "results.jsonl"
    baseline.parent.mkdir()
    baseline.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = _compare(capsys, baseline, smoke_run)
    assert code == 1
    totals = [line for line in out.splitlines() if " total_ms " in line]
    assert len(totals) == 6 and all("thresholds only (3 vs 5 repeats, fewer than 5)" in line for line in totals)
