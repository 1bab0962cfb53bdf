"""Spreading a suite: workers side by side (`--gpus`, fake device lists on the CPU), shards and their merge,
reports and comparisons of shard folders, the progress view of a parallel run, and the launcher seam.

Every spread of the smoke suite must give the plain run's rows (same case ids, statuses and
deterministic fields; scaleout_runs.py); the fault tests use the stand-in pipeline
(fake_pipeline.py), whose prompts script what happens mid-case.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.compare import compare_runs
from harness.launch import WorkerSpec, parse_gpus, worker_command
from harness.merge import merge_runs
from harness.progress import Progress
from harness.report.data import load_report_data
from harness.results import read_rows
from harness.runner import FINISHED_STATUSES, run_suite
from harness.shards import Shard
from harness.suite import load_suite, parse_suite
from scaleout_runs import deterministic, folder_rows, smoke_cases, smoke_run, smoke_suite
from test_faults import _alive
from wan_runtime.errors import ConfigError

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FAKE = f"{Path(__file__).with_name('fake_pipeline.py')}:FakePipeline.load"
TIMEOUT_S = 180


# ---------------------------------------------------------------- the runs compared
@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return smoke_run(tmp_path_factory, "plain")


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    return smoke_run(tmp_path_factory, "gpus-0-1", gpus="0,1")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """The smoke suite in two shards, then merged."""
    folders = [smoke_run(tmp_path_factory, f"shard-{i}", shard=Shard(i, 2))[0] for i in (1, 2)]
    merged = tmp_path_factory.getbasetemp() / "scaleout-merged"
    if not merged.exists():
        merge_runs(folders, merged)
    return folders, merged


# ---------------------------------------------------------------- --gpus
def test_gpus_on_a_cpu_suite_gives_the_plain_runs_rows(plain, side_by_side):
    assert deterministic(folder_rows(side_by_side[0])) == deterministic(folder_rows(plain[0]))
    assert side_by_side[1].statuses == plain[1].statuses == {"ok": smoke_cases()}
    assert len(folder_rows(side_by_side[0])) == smoke_cases()  # one row per case: none lost, none twice


def test_gpus_pins_each_process_group_to_its_own_device(side_by_side):
    rows = folder_rows(side_by_side[0])
    pinned = {r["group"]: {r2["env.cuda_visible_devices"] for r2 in rows if r2["group"] == r["group"]} for r in rows}
    assert sorted(v for values in pinned.values() for v in values) == ["0", "1"]  # each group on its own device


def test_gpus_runs_the_process_groups_at_the_same_time(tmp_path):
    # Each group's case waits for the other group's worker to arrive: run one after the other, they time out.
    suite = load_suite(_fake_suite(tmp_path, [f"rendezvous:{tmp_path / 'arrived'}"]))
    outcome = run_suite(suite, tmp_path / "out", factory=FAKE, stream=io.StringIO(), gpus="0,1")
    assert outcome.statuses == {"ok": 2}
    assert len(list((tmp_path / "arrived").iterdir())) == 2  # two worker processes met


def test_the_progress_of_a_parallel_run_names_each_workers_device(side_by_side):
    log = side_by_side[2]
    assert "gpu 0: " in log and "gpu 1: " in log
    assert log.count(": ok |") == smoke_cases()


def _fake_suite(folder: Path, prompts: list[str]) -> Path:
    """Two process groups (text encoder placements) of the stand-in pipeline, one case per prompt each."""
    path = folder / "fake.yaml"
    lines = ["name: fake", "model: {preset: tiny}", 'base: {size: "64*48", frames: 5, steps: 2}', "repeats: 1",
             "warmup: 0", "sweep:", "  text_encoder: [gpu, offload_after]", "  prompt:"]
    path.write_text("\n".join(lines + [f"    - '{p}'" for p in prompts]) + "\n")
    return path


def test_with_gpus_oom_and_killed_workers_become_rows_and_a_rerun_completes(tmp_path):
    marker = tmp_path / "die"
    marker.touch()
    suite = load_suite(_fake_suite(tmp_path, ["first", f"die-if-exists:{marker}", "oom", "last"]))
    out = tmp_path / "out"
    first = run_suite(suite, out, factory=FAKE, stream=io.StringIO(), gpus="0,1")
    assert first.statuses == {"ok": 4, "oom": 2, "error": 2}
    rows = read_rows(out / "results.jsonl")
    dead = [r for r in rows if r["status"] == "error"]
    assert {r["error"].split(" in stage")[0] for r in dead} == {"worker process died (killed by signal 9)"}
    marker.unlink()
    second = run_suite(suite, out, factory=FAKE, stream=io.StringIO(), gpus="0,1")
    assert (second.ran, second.skipped, second.statuses) == (2, 6, {"ok": 6, "oom": 2})
    after = read_rows(out / "results.jsonl")
    assert after[: len(rows)] == rows
    for case in suite.cases:
        assert len([r for r in after if r["case_id"] == case.case_id and r["status"] in FINISHED_STATUSES]) == 1


def test_sigterm_stops_every_worker_keeps_finished_rows_and_the_rerun_completes(tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    suite_path = _fake_suite(tmp_path, ["first", f"wait-while-exists:{gate}"])
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", str(suite_path), "--out", str(out),
                             "--factory", FAKE, "--gpus", "0,1"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + TIMEOUT_S
    workers: set[int] = set()
    while len(workers) < 2:  # both groups' workers wait in their gated case (a marker each: no shared file)
        if proc.poll() is not None or time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):  # its workers die with it: never wait on a run that waits
                os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{len(workers)} of 2 workers reached the gate: {proc.communicate(timeout=30)}")
        workers = {int(p.name.rsplit(".", 1)[1]) for p in tmp_path.glob("gate.started.*")}
        time.sleep(0.02)
    rows_before = read_rows(out / "results.jsonl")
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 143
    assert stderr.splitlines()[-1] == ("wanbench run: interrupted; 2 finished cases kept; rerun the same command "
                                       "to resume")
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)
    assert sorted(r["prompt"] for r in rows_before) == ["first", "first"]
    gate.unlink()
    again = run_suite(load_suite(suite_path), out, factory=FAKE, stream=io.StringIO(), gpus="0,1")
    assert (again.ran, again.skipped, again.statuses) == (2, 2, {"ok": 4})
    assert read_rows(out / "results.jsonl")[:2] == rows_before


def test_gpus_all_without_a_cuda_device_is_a_one_line_error(tmp_path, capsys):
    assert main(["run", "smoke", "--out", str(tmp_path / "out"), "--gpus", "all"]) == 2
    err = capsys.readouterr().err
    assert err == ("wanbench run: --gpus all: this machine has no CUDA device; give a list (e.g. --gpus 0,1) to run "
                   "workers side by side on a CPU suite\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("gpus, message", [
    ("0,x", "--gpus '0,x': give device indices separated by commas (e.g. --gpus 0,1,2,3) or all"),
    ("1,1", "--gpus '1,1' names a device twice; each worker needs GPUs of its own"),
])
def test_a_bad_gpu_list_is_refused_naming_the_fix(gpus, message):
    with pytest.raises(ConfigError) as info:
        parse_gpus(gpus, visible=None)
    assert str(info.value) == message


def test_gpu_indices_count_within_the_devices_the_runner_sees(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert parse_gpus("1,3", visible=4) == ["5", "7"]
    with pytest.raises(ConfigError, match=r"this machine has 4 CUDA device\(s\) \(0..3\)"):
        parse_gpus("4", visible=4)


def test_gpus_with_a_suite_pinned_to_one_device_is_refused(tmp_path):
    suite = parse_suite("name: one\ndevice: 'cuda:1'\n", source="one.yaml")
    from harness.runner import make_launcher

    with pytest.raises(ConfigError, match=r"--gpus pins each worker to its GPUs, but suite 'one' names device "
                                          r"'cuda:1'; set --set device=cuda"):
        make_launcher(suite, "0,1", "local", None)


# ---------------------------------------------------------------- shards
GROUPS = [(f"attention=a{i},experts=e{i % 3}", i) for i in range(11)]


def test_a_shard_split_covers_each_group_once_and_balances_them():
    parts = [Shard(i, 4).select(GROUPS) for i in range(1, 5)]
    assert sorted(key for part in parts for key, _ in part) == sorted(key for key, _ in GROUPS)
    assert sorted(len(part) for part in parts) == [2, 3, 3, 3]


def test_a_shard_split_depends_on_the_group_keys_not_their_order():
    shuffled = list(reversed(GROUPS))
    for i in range(1, 4):
        assert {k for k, _ in Shard(i, 3).select(GROUPS)} == {k for k, _ in Shard(i, 3).select(shuffled)}


def test_the_shard_of_a_group_is_the_same_on_every_machine():
    # sha256 of the key, ranked: fixed values, whatever the process, platform or PYTHONHASHSEED
    assert [k for k, _ in Shard(1, 4).select(GROUPS)] == [
        "attention=a3,experts=e0", "attention=a6,experts=e0", "attention=a8,experts=e2"]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_a_bad_shard_is_a_one_line_error(tmp_path, capsys, text):
    assert main(["run", "smoke", "--out", str(tmp_path / "out"), "--shard", text]) == 2
    assert capsys.readouterr().err == (f"wanbench run: --shard {text!r}: give i/N with 1 <= i <= N (e.g. --shard 1/4 "
                                       "... --shard 4/4)\n")


def test_two_shards_merged_give_the_plain_runs_rows(plain, shards):
    folders, merged = shards
    assert deterministic(folder_rows(merged)) == deterministic(folder_rows(plain[0]))
    assert sum(len(folder_rows(f)) for f in folders) == len(folder_rows(merged)) == smoke_cases()


def test_each_shard_runs_only_its_groups_and_records_its_shard(shards):
    folders, _ = shards
    groups = [{r["group"] for r in folder_rows(f)} for f in folders]
    assert groups[0] and groups[1] and not groups[0] & groups[1]
    assert [json.loads((f / "run.json").read_text())["shard"] for f in folders] == ["1/2", "2/2"]


def test_a_merge_carries_the_timeline_frames_and_logs_over(shards):
    folders, merged = shards
    timeline = [json.loads(line) for line in (merged / "timeline.jsonl").read_text().splitlines()]
    assert sorted(r["case_id"] for r in timeline) == sorted(r["case_id"] for r in folder_rows(merged))
    frames = sorted(p.name for f in folders for p in (f / "frames").glob("*.npy"))
    assert frames and sorted(p.name for p in (merged / "frames").glob("*.npy")) == frames
    assert sorted(p.name for p in (merged / "logs").iterdir()) == sorted(f.name for f in folders)


def test_a_shard_folder_is_refused_for_another_shard_or_the_whole_suite(shards):
    folders, _ = shards
    with pytest.raises(ConfigError, match=r"holds shard 1/2 of suite 'smoke', not shard 2/2; use another --out"):
        run_suite(smoke_suite(), folders[0], stream=io.StringIO(), shard=Shard(2, 2))
    with pytest.raises(ConfigError, match=r"holds shard 1/2 of suite 'smoke', not the whole suite"):
        run_suite(smoke_suite(), folders[0], stream=io.StringIO())


def test_merging_a_case_twice_is_an_error_naming_the_case(shards, tmp_path):
    folders, merged = shards
    with pytest.raises(ConfigError) as info:
        merge_runs([merged, folders[0]], tmp_path / "again", allow_partial=True)
    case = folder_rows(merged)[0]["case_id"]
    assert str(info.value).startswith(f"case {case!r} has rows in both {merged} and {folders[0]}: each case")
    assert not (tmp_path / "again").exists()


def test_merging_a_missing_shard_is_refused_unless_allowed(shards, tmp_path, capsys):
    folders, _ = shards
    assert main(["merge", str(folders[0]), "--out", str(tmp_path / "part")]) == 2
    assert capsys.readouterr().err == (f"wanbench merge: shard(s) 2 of 2 are missing from the merge ({folders[0]}); "
                                       "give every shard's folder, or --allow-partial to merge what is here\n")
    assert main(["merge", str(folders[0]), "--out", str(tmp_path / "part"), "--allow-partial"]) == 0
    assert "(shards 2 missing)" in capsys.readouterr().out


def test_merging_runs_of_other_settings_is_refused(shards, tmp_path):
    folders, _ = shards
    other = tmp_path / "other"
    other.mkdir()
    manifest = json.loads((folders[1] / "run.json").read_text()) | {"fingerprint": "0123456789abcdef"}
    (other / "run.json").write_text(json.dumps(manifest))
    (other / "results.jsonl").write_text((folders[1] / "results.jsonl").read_text())
    with pytest.raises(ConfigError) as info:
        merge_runs([folders[0], other], tmp_path / "out")
    assert str(info.value).startswith(f"{other} holds fingerprint '0123456789abcdef' but {folders[0]} holds '")
    assert str(info.value).endswith("': folders read as one run must be shards of one suite definition")


def test_report_reads_shard_folders_as_one_run(shards, plain):
    folders, _ = shards
    data = load_report_data(folders)
    assert sorted(c.label for c in data.cases) == sorted(deterministic(folder_rows(plain[0])))


def test_compare_reads_shard_folders_as_one_run(shards, plain):
    folders, _ = shards
    comparison = compare_runs(plain[0], folders, gates={})
    assert comparison.matched == smoke_cases() and not comparison.status_changes and not comparison.only_current


# ---------------------------------------------------------------- the progress view
def test_a_parallel_progress_view_has_a_line_per_worker_and_the_overall_eta():
    now = [0.0]
    stream = io.StringIO()
    stream.isatty = lambda: True
    progress = Progress(total=4, stream=stream, clock=lambda: now[0], workers=2)
    progress.case_started("steps=2", "gpu 0")
    progress.case_started("steps=4", "gpu 1")
    now[0] = 10.0
    progress.case_finished("steps=2", "ok", worker="gpu 0")
    progress.case_started("steps=8", "gpu 0")
    progress.event({"event": "phase", "phase": "repeat", "index": 1, "of": 5}, "gpu 1")
    progress.event({"event": "stage", "stage": "denoise_high"}, "gpu 1")
    progress.event({"event": "step", "index": 0, "total": 4, "expert": "high"}, "gpu 1")
    now[0] = 12.0
    assert progress.lines() == ["[1/4 done, 2 running] elapsed 0:12 | ETA 0:36",
                                "  gpu 0: steps=8",
                                "  gpu 1: steps=4 | repeat 1/5 | denoise_high step 1/4"]


def test_a_parallel_progress_view_is_redrawn_in_place_on_a_terminal():
    stream = io.StringIO()
    stream.isatty = lambda: True
    progress = Progress(total=2, stream=stream, clock=lambda: 0.0, workers=2)
    progress.case_started("a", "gpu 0")
    progress.case_started("b", "gpu 1")
    drawn = stream.getvalue()
    # the second draw went back to the first line of the first view, cleared it, and drew a line more
    assert drawn.endswith("\r\033[1A\033[J[0/2 done, 2 running] elapsed 0:00 | ETA ?\n  gpu 0: a\n  gpu 1: b")
    assert drawn.count("\033[J") == 1


# ---------------------------------------------------------------- the launcher
def test_a_worker_of_several_ranks_is_started_under_torchrun():
    spec = WorkerSpec(Path("job.json"), Path("log"), python="py", ranks=4)
    assert worker_command(spec, "/tmp/s") == ["py", "-m", "harness.launch", "--standalone", "--nproc-per-node", "4",
                                              "--max-restarts", "0", "-m", "harness.worker", "job.json", "/tmp/s"]
    assert worker_command(WorkerSpec(Path("job.json"), Path("log"), python="py"), "/tmp/s") == [
        "py", "-m", "harness.worker", "job.json", "/tmp/s"]
