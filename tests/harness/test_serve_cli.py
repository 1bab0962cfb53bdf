"""`wanbench serve` on the command line: flags made from the spec, one-line refusals before anything loads,
and (slow) the real process serving a job and stopping gracefully on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from harness.cli.main import build_parser, main
from harness.cli.serve import flag_of
from harness.runlock import HOLDER_FILE
from harness.serve.intake import fixed_names
from harness.serve.store import JobStore
from serve_helpers import LONG, png
from wan_runtime import spec
from wan_runtime.errors import ParameterError

BASE = ["serve", "--preset", "tiny", "--weights", "synthetic", "--device", "cpu"]


def serve(capsys, tmp_path, *extra: str) -> tuple[int, list[str]]:
    """Run `wanbench serve` in this process (it must refuse before loading); exit status and stderr lines."""
    code = main([*BASE, "--out", str(tmp_path / "service"), *extra])
    return code, capsys.readouterr().err.strip().splitlines()


def test_every_fixed_parameter_has_a_flag_made_from_the_spec():
    serve_parser = build_parser()._subparsers._group_actions[0].choices["serve"]
    actions = {a.dest: a for a in serve_parser._actions}
    for name in fixed_names():
        param = spec.lookup(name)
        assert actions[name].option_strings == [flag_of(name)]
        assert actions[name].help.startswith(param.doc.replace("%", "%%"))
        if param.choices:
            assert actions[name].metavar == "{" + ",".join(param.choices) + "}"


def test_a_bad_flag_value_is_refused_in_one_line_with_the_specs_text(capsys, tmp_path):
    code, err = serve(capsys, tmp_path, "--experts", "swapp")
    with pytest.raises(ParameterError) as expected:
        spec.coerce("experts", "swapp")
    assert code == 2 and err == [f"wanbench serve: --experts: {expected.value}"]
    assert not (tmp_path / "service").exists()  # refused before the folder is taken


@pytest.mark.parametrize("flags, text", [
    (["--dit_blocks", "stream"], "dit_blocks='stream' implies experts='swap'"),
    (["--matmul", "fp8"], "matmul='fp8' multiplies the fp8-stored block weights"),
    (["--queue-size", "0"], "--queue-size 0: must be a number of at least 1"),
    (["--token-env", "WANBENCH_TEST_TOKEN_NOT_SET"], "the environment variable WANBENCH_TEST_TOKEN_NOT_SET is not set"),
    (["--ulysses_size", "2"], "this plan runs on 2 ranks (ulysses_size, cfg_parallel, experts=split): wanbench serve "
                              "runs one process on one device"),
], ids=["stream_without_swap", "fp8_matmul_without_fp8_weights", "no_queue", "unset_token", "multi_gpu"])
def test_settings_that_cannot_work_are_refused_in_one_line(capsys, tmp_path, flags, text):
    code, err = serve(capsys, tmp_path, *flags)
    assert code == 2 and len(err) == 1 and text in err[0]


def test_a_port_in_use_is_refused_in_one_line(capsys, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        code, err = serve(capsys, tmp_path, "--port", str(port))
    assert code == 2
    assert err == [f"wanbench serve: --host 127.0.0.1 --port {port}: cannot listen there (Address already in use); "
                   "choose another --port, or stop what uses it"]


def test_a_folder_another_service_holds_is_refused_naming_it(capsys, tmp_path):
    with JobStore(tmp_path / "service", command="wanbench serve (the first)"):
        code, err = serve(capsys, tmp_path)
    assert code == 3 and len(err) == 1
    assert "is in use by another run" in err[0] and "wanbench serve (the first)" in err[0]


@pytest.mark.slow
def test_the_command_serves_a_job_and_stops_gracefully_on_sigterm(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free now; the service binds it again below
    folder = tmp_path / "service"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANBENCH_TEST_TOKEN": "s3cret"}
    process = subprocess.Popen(
        [sys.executable, "-m", "harness.cli", *BASE, "--out", str(folder), "--port", str(port), "--threads", "1",
         "--shutdown-grace", "0.5", "--token-env", "WANBENCH_TEST_TOKEN"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer s3cret"}
    try:
        with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
            deadline = time.monotonic() + 180
            while True:  # the model loads first (seconds; the import of torch dominates)
                assert process.poll() is None, process.stdout.read()
                try:
                    if client.get("/v1/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the service did not come up"
                time.sleep(0.2)
            answer = client.post("/v1/videos", files={"image": ("in.png", png(), "image/png")},
                                 data={"params": json.dumps(LONG)})
            job_id = answer.json()["id"]
            while (client.get(f"/v1/jobs/{job_id}").json().get("step") or 0) < 1:
                time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    log = process.stdout.read()
    record = json.loads((folder / "jobs" / f"{job_id}.json").read_text())
    assert code == 128 + signal.SIGTERM, log
    assert record["state"] == "interrupted" and record["step"] < LONG["steps"]
    assert not (folder / HOLDER_FILE).exists()  # released: the next start takes the folder without a word
