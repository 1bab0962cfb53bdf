"""`wanbench list` and `wanbench run` as a user calls them."""

from __future__ import annotations

import json

from harness.cli.main import main


def test_list_prints_the_expanded_cases_and_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["list", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "6 cases in 2 process group(s)" in out
    assert "size=96*64,steps=4,text_encoder=offload_after" in out
    assert list(tmp_path.iterdir()) == []


def test_a_bad_override_exits_2_with_the_problem_named(capsys):
    assert main(["list", "smoke", "--set", "repeats=many"]) == 2
    err = capsys.readouterr().err
    assert "wanbench list:" in err and "repeats (from --set repeats=many): Input should be a valid integer" in err


def test_run_writes_results_and_reports_where(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["run", "smoke", "--out", str(out), "--set", "size=160*96", "--set", "steps=2", "--set", "text_encoder=gpu",
            "--set", "repeats=1", "--set", "warmup=0", "--preset", "tiny"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "smoke: 1 cases (1 run now, 0 already done): 1 ok" in captured.out
    assert f"results: {out / 'results.jsonl'}" in captured.out
    assert "[1/1] base: ok" in captured.err  # the progress line
    assert json.loads((out / "run.json").read_text())["overrides"][0] == "model.preset=tiny"
    assert main(args) == 0  # the same command again resumes: nothing left to run
    assert "(0 run now, 1 already done)" in capsys.readouterr().out
