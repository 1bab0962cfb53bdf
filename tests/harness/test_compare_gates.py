"""harness.compare on hand-made results files: the both-thresholds rule, significance, matching, listings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.compare import Gate, compare_runs, default_gates, parse_gate, render_text, resolve_gates
from wan_runtime.errors import ConfigError


def _row(case_id: str, total_ms: float = 1000.0, repeats: list[float] | None = None, **fields) -> dict:
    """A minimal ok row of the tiny preset on the CPU (parameters not given take their defaults)."""
    row = {"suite": "hand", "case_id": case_id, "status": "ok", "preset": "tiny", "device": "cpu",
           "timing": "full", "size": "160*96", "steps": 4, "total_ms": total_ms,
           "repeats_ms.total": repeats if repeats is not None else [total_ms] * 2}
    row.update(fields)
    return row


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _compare(tmp_path: Path, base: list[dict], cur: list[dict], gates: dict[str, Gate] | None = None, **kw):
    return compare_runs(_write(tmp_path / "base.jsonl", base), _write(tmp_path / "cur.jsonl", cur),
                        gates or default_gates(), ["test"], **kw)


def _verdict(comparison, metric: str, case: str = "a") -> str:
    return next(c.verdict for c in comparison.changes if c.metric == metric and c.case == case)


@pytest.mark.parametrize("current, verdict", [
    (1100.0, "within"),     # +10% but only +100 ms: under the absolute threshold (500 ms)
    (1600.0, "regressed"),  # +60% and +600 ms: over both
    (10_000.0, "regressed"),
])
def test_a_time_regresses_only_when_worse_by_more_than_both_thresholds(tmp_path, current, verdict):
    assert _verdict(_compare(tmp_path, [_row("a")], [_row("a", current)]), "total_ms") == verdict


def test_an_absolute_change_under_the_relative_threshold_is_within(tmp_path):
    # +600 ms is over the absolute 500 ms, but only +6% of 10 s: under the relative 8%.
    comparison = _compare(tmp_path, [_row("a", 10_000.0)], [_row("a", 10_600.0)])
    assert _verdict(comparison, "total_ms") == "within" and not comparison.failed


def test_quality_regresses_downwards_and_improves_upwards(tmp_path):
    base = [_row("a", psnr_db=30.0, ssim=0.95), _row("b", psnr_db=30.0, ssim=0.95, steps=2)]
    cur = [_row("a", psnr_db=29.4, ssim=0.945), _row("b", psnr_db=32.0, ssim=0.97, steps=2)]
    comparison = _compare(tmp_path, base, cur)
    assert _verdict(comparison, "psnr_db", "a") == "regressed"  # -0.6 dB, gate -0.5 dB
    assert _verdict(comparison, "ssim", "a") == "within"        # -0.005, gate -0.01
    assert _verdict(comparison, "psnr_db", "b") == "improved"
    assert _verdict(comparison, "ssim", "b") == "improved"
    assert comparison.failed


def test_an_improvement_alone_does_not_fail(tmp_path):
    comparison = _compare(tmp_path, [_row("a", 2000.0)], [_row("a", 1000.0)])
    assert _verdict(comparison, "total_ms") == "improved" and not comparison.failed


def test_with_five_repeats_a_change_over_the_thresholds_must_also_be_significant(tmp_path):
    gates = {"total_ms": Gate(0.08, 10.0)}
    base = [100.0, 101.0, 102.0, 103.0, 104.0]
    # The median moved +27% (102 -> 130 ms), but two of the five repeats beat every baseline repeat.
    overlapping = [95.0, 99.0, 130.0, 135.0, 140.0]
    change = _compare(tmp_path, [_row("a", 102.0, base)], [_row("a", 130.0, overlapping)], gates).changes[0]
    assert change.verdict == "within" and "not significant at 0.05" in change.decided_by
    assert change.p_value > 0.05
    separated = [122.0, 123.0, 124.0, 125.0, 126.0]
    change = _compare(tmp_path, [_row("a", 102.0, base)], [_row("a", 124.0, separated)], gates).changes[0]
    assert change.verdict == "regressed" and change.decided_by.startswith("thresholds + Mann-Whitney U")
    assert change.p_value == pytest.approx(1 / 252)  # 5 vs 5, fully separated: the smallest exact p


def test_with_fewer_than_five_repeats_thresholds_alone_decide_and_the_output_says_so(tmp_path):
    comparison = _compare(tmp_path, [_row("a", 1000.0, [1000.0] * 3)], [_row("a", 2000.0, [2000.0] * 3)])
    change = next(c for c in comparison.changes if c.metric == "total_ms")
    assert change.verdict == "regressed" and change.decided_by == "thresholds only (3 vs 3 repeats, fewer than 5)"
    text = render_text(comparison)
    assert "thresholds alone decided" in text and "RESULT: REGRESSION" in text


def test_cases_are_matched_by_their_parameters_not_their_ids(tmp_path):
    # The same configuration under two suites' ids; a parameter missing from the old baseline row
    # (dit_blocks, added to MemoryPlan later) takes its default.
    base = _row("steps=4", 1000.0)
    cur = _row("size=160*96,steps=4", 1000.0, dit_blocks="resident")
    other = _row("size=160*96,steps=2", 1000.0, steps=2)
    comparison = _compare(tmp_path, [base], [cur, other])
    assert comparison.matched == 1 and comparison.only_current == ["size=160*96,steps=2"]
    assert comparison.only_baseline == []


def test_status_changes_and_cases_on_one_side_are_listed_apart(tmp_path):
    base = [_row("a"), _row("b", steps=2), _row("gone", steps=8)]
    cur = [_row("a", status="oom", total_ms=None, error="out of GPU memory in stage 'denoise_high'"),
           _row("b", steps=2), _row("new", steps=3)]
    comparison = _compare(tmp_path, base, cur)
    assert [(s.case, s.baseline, s.current, s.is_regression) for s in comparison.status_changes] == [
        ("a", "ok", "oom", True)]
    assert comparison.only_baseline == ["gone"] and comparison.only_current == ["new"]
    assert comparison.failed
    text = render_text(comparison)
    assert "a: ok -> oom (REGRESSION): out of GPU memory" in text
    assert "only in the baseline (not compared):\n  gone" in text


def test_a_fixed_case_is_listed_but_does_not_fail(tmp_path):
    comparison = _compare(tmp_path, [_row("a", status="error")], [_row("a")])
    assert comparison.status_changes[0].current == "ok" and not comparison.failed


def test_one_configuration_twice_in_a_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="ran the same parameters"):
        _compare(tmp_path, [_row("a"), _row("b")], [_row("a")])


def test_gate_text_sets_both_thresholds_or_switches_a_metric_off():
    assert parse_gate("total_ms=rel:0.1,abs:200") == ("total_ms", Gate(0.1, 200.0))
    assert parse_gate("psnr_db=abs:1") == ("psnr_db", Gate(None, 1.0))
    assert parse_gate("stage_ms.load=off") == ("stage_ms.load", None)
    for bad in ("total_ms", "totl_ms=rel:0.1", "total_ms=rel:x", "total_ms=speed:1", "total_ms=abs:-1"):
        with pytest.raises(ConfigError):
            parse_gate(bad)


def test_suite_gates_replace_the_defaults_and_the_command_line_wins(tmp_path):
    suite = tmp_path / "gated.yaml"
    suite.write_text("name: gated\nmodel: {preset: tiny}\nbase: {size: '64*48', frames: 5, steps: 2}\n"
                     "gates:\n  total_ms: {rel: 0.5, abs: 50}\n  psnr_db: {abs: 2}\n", encoding="utf-8")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"suite": "gated", "suite_file": str(suite), "overrides": []}))
    gates, sources = resolve_gates(run, cli=["psnr_db=abs:0.1", "stage_ms.postprocess=off"])
    assert gates["total_ms"] == Gate(0.5, 50.0)        # from the suite
    assert gates["psnr_db"] == Gate(None, 0.1)         # the command line wins over the suite
    assert gates["peak_nvml_mib"] == Gate(0.05, 256)   # a default the suite left alone
    assert "stage_ms.postprocess" not in gates and "stage_ms.postprocess" in default_gates()
    assert sources[0] == "defaults" and sources[1].startswith("suite gated") and sources[2] == "command line"


def test_a_bare_results_file_takes_the_gates_of_the_suite_it_names(tmp_path):
    results = _write(tmp_path / "committed.jsonl", [_row("a", suite="smoke")])
    gates, sources = resolve_gates(results)
    assert gates["total_ms"] == Gate(0.5, 50.0)  # suites/smoke.yaml
    assert sources[1].startswith("suite smoke found by name")
    unknown = _write(tmp_path / "other.jsonl", [_row("a", suite="no-such-suite")])
    assert resolve_gates(unknown) == (default_gates(), ["defaults"])


def test_compare_cli_exits_0_1_and_2(tmp_path, capsys):
    base = _write(tmp_path / "base.jsonl", [_row("a")])
    same = _write(tmp_path / "same.jsonl", [_row("a", 1010.0)])
    slow = _write(tmp_path / "slow.jsonl", [_row("a", 3000.0)])
    assert main(["compare", str(base), str(same)]) == 0
    assert main(["compare", str(base), str(slow), "--csv", str(tmp_path / "c.csv"),
                 "--markdown", str(tmp_path / "c.md")]) == 1
    assert "RESULT: REGRESSION" in capsys.readouterr().out
    assert "total_ms" in (tmp_path / "c.csv").read_text() and "REGRESSION" in (tmp_path / "c.md").read_text()
    assert main(["compare", str(base), str(tmp_path / "missing")]) == 2
    assert "no results at" in capsys.readouterr().err


def test_two_runs_with_no_case_in_common_are_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"no case of .*cur.jsonl matches a case of .*base.jsonl .*1 case\(s\) only "
                                          r"in the baseline, 1 only in the current run\): nothing was compared"):
        _compare(tmp_path, [_row("a", steps=4)], [_row("b", steps=8)])


def test_allow_empty_accepts_two_runs_with_no_case_in_common(tmp_path):
    comparison = _compare(tmp_path, [_row("a", steps=4)], [_row("b", steps=8)], allow_empty=True)
    assert comparison.matched == 0 and not comparison.failed


def test_compare_of_unrelated_runs_exits_2_unless_allow_empty(tmp_path, capsys):
    base, cur = _write(tmp_path / "base.jsonl", [_row("a", steps=4)]), _write(tmp_path / "cur.jsonl", [_row("b", steps=8)])
    assert main(["compare", str(base), str(cur)]) == 2
    assert "nothing was compared" in capsys.readouterr().err
    assert main(["compare", str(base), str(cur), "--allow-empty"]) == 0


def test_a_damaged_run_json_leaves_compare_with_the_gates_it_can_find(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _write(run / "results.jsonl", [_row("a", suite="not-a-known-suite")])
    (run / "run.json").write_text("[]")
    gates, sources = resolve_gates(run)
    assert gates == default_gates() and sources == ["defaults"]
