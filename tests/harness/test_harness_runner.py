"""The runner with a stand-in pipeline: failures become rows, a killed worker loses one case, resume, folders."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from harness.jobs import CaseJob, WorkerJob
from harness.progress import Progress
from harness.results import append_row, read_results, read_rows, undocumented_fields
from harness.runner import prepare_out_dir, run_suite
from harness.suite import parse_suite
from harness.worker import Worker
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


# ---------------------------------------------------------------- run.json
@pytest.mark.parametrize("content", ["", '{"suite": "fake", "finger', "[]"], ids=["empty", "torn", "a-list"])
def test_a_damaged_run_json_is_rebuilt_when_the_folder_holds_no_results(tmp_path, content):
    (tmp_path / "run.json").write_text(content)
    note = prepare_out_dir(tmp_path, _suite(["a"]))
    assert note.startswith(f"{tmp_path / 'run.json'} was damaged (") and note.endswith("rebuilt (the folder held no "
                                                                                        "results yet)")
    prepare_out_dir(tmp_path, _suite(["a"]))  # the rebuilt one is this suite's
    with pytest.raises(ConfigError, match="run with other settings"):
        prepare_out_dir(tmp_path, _suite(["a", "b"]))


def test_a_damaged_run_json_beside_results_is_refused_naming_the_fix(tmp_path):
    suite = _suite(["a"])
    prepare_out_dir(tmp_path, suite)
    append_row(tmp_path / "results.jsonl", {"suite": "fake", "case_id": "prompt=a", "status": "ok"})
    (tmp_path / "run.json").write_text("[]")
    with pytest.raises(ConfigError) as info:
        prepare_out_dir(tmp_path, suite)
    assert str(info.value) == (
        f"{tmp_path / 'run.json'} is damaged (a JSON list, not an object naming the suite), so nothing tells "
        "which suite definition made the 1 rows of results.jsonl; if they are 'fake' run with these settings, delete "
        "run.json and rerun to adopt them, else use another --out")


# ---------------------------------------------------------------- the worker, in this process
def _worker_rows(tmp_path, prompts: list[str]) -> list[dict]:
    job = WorkerJob(suite="fake", group="all", out=str(tmp_path), preset="tiny", weights="synthetic", device="cpu",
                    timing="full", repeats=1, warmup=0, sampled={"warmup_steps": 1, "measured_steps": 1},
                    quality={"resize_filter": "bicubic", "antialias": True}, factory=FAKE,
                    cases=[CaseJob(f"prompt={p}", {**_suite([p]).cases[0].params}, None, False) for p in prompts])
    events: list[dict] = []
    Worker(job, events.append).run()
    return [e["row"] for e in events if e["event"] == "result"]


def test_a_failed_case_keeps_its_whole_traceback_in_a_field_of_its_own(tmp_path):
    (row,) = _worker_rows(tmp_path, ["fail"])
    assert row["status"] == "error" and row["error"] == "RuntimeError: scripted failure\nsecond line of the message"
    assert row["traceback"].startswith("Traceback (most recent call last):")
    assert "fake_pipeline.py" in row["traceback"] and row["traceback"].rstrip().endswith("second line of the message")
    assert undocumented_fields(row) == []


def test_a_non_finite_figure_makes_the_case_an_error_not_an_ok_row(tmp_path):
    ok, nan = _worker_rows(tmp_path, ["fine", "nan-seed"])
    assert ok["status"] == "ok" and ok["traceback"] is None and ok["schema_version"] == 1
    assert nan["status"] == "error" and nan["seed_used"] is None
    assert nan["error"] == "non-finite values in the result (seed_used=nan); the case is not trusted as measured"
    assert nan["total_ms"] is not None  # the finite figures stay for inspection
