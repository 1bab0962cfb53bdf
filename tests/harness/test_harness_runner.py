"""The runner with a stand-in pipeline: failures become rows, a killed worker loses one case, resume, folders."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness.progress import Progress
from harness.results import read_results, read_rows
from harness.runner import prepare_out_dir, run_suite
from harness.suite import parse_suite
from wan_runtime.errors import ConfigError

FAKE = f"{Path(__file__).with_name('fake_pipeline.py')}:FakePipeline.load"


def _suite(prompts: list[str], name: str = "fake", **extra: str):
    lines = [f"name: {name}", "model: {preset: tiny}", 'base: {size: "64*48", frames: 5, steps: 2}',
             "repeats: 2", "warmup: 0", "sweep:", "  prompt:"] + [f"    - '{p}'" for p in prompts]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    return parse_suite("\n".join(lines) + "\n", source="fake.yaml")


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A 4-case sweep in one group: ok, killed by SIGKILL mid-case, out of memory, ok; then a rerun."""
    tmp = tmp_path_factory.mktemp("killed")
    marker = tmp / "die"
    marker.touch()
    suite = _suite(["first", f"die-if-exists:{marker}", "oom", "last"])
    out = tmp / "out"
    first = run_suite(suite, out, factory=FAKE, stream=io.StringIO())
    rows_after_first = read_rows(out / "results.jsonl")
    marker.unlink()
    second = run_suite(suite, out, factory=FAKE, stream=io.StringIO())
    return suite, out, first, rows_after_first, second


def test_a_killed_worker_loses_only_its_current_case(killed_run):
    suite, out, first, rows, _ = killed_run
    by_prompt = {r["prompt"]: r for r in rows}
    assert [r["prompt"] for r in rows] == [c.params["prompt"] for c in suite.cases]
    dead = next(r for p, r in by_prompt.items() if p.startswith("die"))
    assert dead["status"] == "error" and dead["failed_stage"] == "denoise_high"
    assert dead["error"].startswith("worker process died (killed by signal 9) in stage 'denoise_high'")
    assert by_prompt["first"]["status"] == "ok" and by_prompt["last"]["status"] == "ok"
    assert first.statuses == {"ok": 2, "error": 1, "oom": 1}


def test_an_out_of_memory_case_becomes_a_row_and_the_sweep_goes_on(killed_run):
    _, _, _, rows, _ = killed_run
    oom = next(r for r in rows if r["prompt"] == "oom")
    assert oom["status"] == "oom" and oom["failed_stage"] == "denoise_high"
    assert "out of GPU memory in stage 'denoise_high'" in oom["error"]
    assert oom["total_ms"] is None and oom["memory_note"]
    assert rows[-1]["prompt"] == "last" and rows[-1]["status"] == "ok"


def test_rerunning_completes_the_killed_case_and_skips_finished_ones(killed_run):
    _, out, _, rows_before, second = killed_run
    assert (second.ran, second.skipped) == (1, 3)  # oom is a finished result; the error is retried
    rows = read_rows(out / "results.jsonl")
    assert rows[: len(rows_before)] == rows_before  # earlier results survive untouched
    assert rows[-1]["prompt"].startswith("die-if-exists:") and rows[-1]["status"] == "ok"
    latest = read_results(out)
    assert sorted(latest["status"]) == ["ok", "ok", "ok", "oom"]
    assert (out / "results.parquet").exists() and (out / "results.csv").exists()


def test_an_output_folder_holding_another_suites_results_is_refused(tmp_path):
    prepare_out_dir(tmp_path, _suite(["a"], name="first"))
    with pytest.raises(ConfigError, match=r"holds results of suite 'first', not 'second'; use another --out"):
        run_suite(_suite(["a"], name="second"), tmp_path, factory=FAKE, stream=io.StringIO())


def test_the_same_suite_with_other_settings_is_refused_in_the_same_folder(tmp_path):
    prepare_out_dir(tmp_path, _suite(["a"]))
    with pytest.raises(ConfigError, match="run with other settings"):
        prepare_out_dir(tmp_path, _suite(["a", "b"]))


def test_an_unwritable_output_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"output folder .*file/out is not writable \(Not a directory\)"):
        run_suite(_suite(["a"]), blocker / "out", factory=FAKE, stream=io.StringIO())


def test_progress_shows_case_position_stage_step_elapsed_and_eta():
    now = [0.0]
    stream = io.StringIO()
    stream.isatty = lambda: True
    progress = Progress(total=4, stream=stream, clock=lambda: now[0])
    progress.case_started("steps=2")
    now[0] = 10.0
    progress.case_finished("steps=2", "ok")
    progress.case_started("steps=4")
    progress.event({"event": "phase", "phase": "repeat", "index": 2, "of": 5})
    progress.event({"event": "stage", "stage": "denoise_high"})
    progress.event({"event": "step", "index": 2, "total": 4, "expert": "high"})
    now[0] = 15.0
    assert progress.line() == "[2/4] steps=4 | repeat 2/5 | denoise_high step 3/4 | elapsed 0:15 | ETA 0:45"
