"""`wanbench list` and `wanbench run` as a user calls them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness import runner
from harness.cli import list as list_verb
from harness.cli.main import main
from harness.runlock import RunLock


def test_list_prints_the_expanded_cases_and_runs_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["list", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "6 cases in 2 process group(s)" in out
    assert "size=96*64,steps=4,text_encoder=offload_after" in out
    assert list(tmp_path.iterdir()) == []


def test_the_parser_of_every_verb_loads_neither_torch_nor_scipy():
    code = ("import sys; from harness.cli.main import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'scipy', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


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


def test_the_verbs_share_arguments_through_common_and_never_import_each_other():
    import ast
    from pathlib import Path

    import harness.cli

    folder = Path(harness.cli.__file__).parent
    for path in folder.glob("*.py"):
        imported = {node.module for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Import)
                     for alias in node.names}
        verbs = {m for m in imported if m and m.startswith("harness.cli") and m not in ("harness.cli", "harness.cli.common")}
        if path.name != "main.py" and path.name != "__main__.py":
            assert not verbs, f"{path.name} imports {verbs}"


def test_run_help_documents_every_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for code in ("0 every case ok or oom", "1 a case ended in error", "2 a configuration error",
                 "3 the run folder is in use by another run", "4 no space left on the disk",
                 "5 an unexpected error", "130 interrupted by Ctrl-C, 143 by SIGTERM"):
        assert code in text


def test_a_cuda_suite_on_a_machine_without_cuda_fails_before_any_worker_starts(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "cuda_device_count", lambda: 0)
    out = tmp_path / "run"
    assert main(["run", "bench-4090", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wanbench run: suite 'bench-4090' runs on device 'cuda', but this machine has no CUDA device")
    assert err.endswith("to run it here on the CPU at tiny scale: --preset tiny --set device=cpu")
    assert "\n" not in err and not out.exists()  # nothing created, no worker started


def test_a_cuda_device_beyond_the_machines_count_is_refused(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "cuda_device_count", lambda: 2)
    assert main(["run", "smoke", "--out", str(tmp_path / "run"), "--set", "device=cuda:2"]) == 2
    assert "has 2 CUDA device(s) (cuda:0..cuda:1); choose one with --set device=cuda:N" in capsys.readouterr().err


def test_a_run_into_a_folder_another_run_holds_exits_3_naming_the_holder(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with RunLock(out, command="wanbench run smoke --out run"):
        assert main(["run", "smoke", "--out", str(out), "--preset", "tiny"]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"wanbench run: run folder {out} is in use by another run (pid {os.getpid()} on host ")
    assert err.count("\n") == 1 and not (out / "results.jsonl").exists()


def test_report_into_a_file_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["report", str(tmp_path), "--out", str(blocker)]) == 2
    assert capsys.readouterr().err == f"wanbench report: --out {blocker}: is a file; give a folder\n"


def test_compare_markdown_into_a_folder_is_one_line(capsys, tmp_path):
    assert main(["compare", str(tmp_path), str(tmp_path), "--markdown", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"wanbench compare: --markdown {tmp_path}: is a folder; give a file path "
                                       f"(e.g. {tmp_path / 'compare.md'})\n")


def test_an_unexpected_error_is_one_line_with_a_hint_and_the_traceback_only_with_debug(capsys, monkeypatch):
    def broken(args):
        raise TypeError("unsupported operand\nsecond line")

    monkeypatch.setattr(list_verb, "run", broken)
    assert main(["list", "smoke"]) == 5
    err = capsys.readouterr().err
    assert err.startswith("wanbench list: unexpected error: TypeError: unsupported operand (at test_harness_cli.py:")
    assert err.endswith("this is a bug in wanbench: rerun with --debug for the traceback and report it\n")
    assert err.count("\n") == 1
    assert main(["--debug", "list", "smoke"]) == 5
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    assert main(["list", "smoke", "--debug"]) == 5  # after the verb too
    assert "Traceback (most recent call last)" in capsys.readouterr().err
