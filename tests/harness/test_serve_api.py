"""`wanbench serve`'s API through a real uvicorn on 127.0.0.1: the tiny preset on the CPU, loaded once here."""

from __future__ import annotations

import io
import json

import pytest
import torch
from PIL import Image

from harness.results import GENERATE_STAGES
from harness.serve.app import too_large
from harness.serve.intake import fixed_values
from harness.serve.jobs import Job
from harness.serve.loadtest import run_load
from harness.serve.store import JobStore
from serve_helpers import LONG, PARAMS, png, running, serving, submit, wait_for
from wan_runtime import spec
from wan_runtime.errors import ParameterError
from wan_runtime.pipeline import WanI2V
from wan_runtime.video_io import read_mp4


@pytest.fixture(scope="module")
def pipe():
    return WanI2V.load("synthetic", "tiny", "cpu")


def spec_error(params: dict) -> ParameterError:
    """The error the spec gives for `params` (as wan-generate and the suites print it)."""
    with pytest.raises(ParameterError) as caught:
        spec.validate(params, base=fixed_values({}))
    return caught.value


# ---------------------------------------------------------------------------------------------- the round trip
def test_a_video_round_trip_reports_its_stages_and_memory_as_a_results_row(pipe, tmp_path):
    with serving(pipe, tmp_path) as (client, _):
        answer = submit(client)
        assert answer.status_code == 202
        job_id = answer.json()["id"]
        record = wait_for(client, job_id)
        assert record["state"] == "done", record["error"]
        video = client.get(record["video_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "got.mp4").write_bytes(video.content)
    frames, fps = read_mp4(tmp_path / "got.mp4")
    assert frames.shape == (5, 48, 64, 3) and fps == pipe.cfg.fps
    assert (record["out_width"], record["out_height"], record["out_frames"], record["seed_used"]) == (64, 48, 5, 1)
    ran = [stage for stage in GENERATE_STAGES if stage != "compile"]  # compile: only with compiled blocks
    assert all(record[f"stage_ms.{stage}"] > 0 for stage in ran) and record["stage_ms.compile"] is None
    assert record["total_ms"] >= sum(record[f"stage_ms.{stage}"] for stage in ran)
    assert record["peak_nvml_mib"] is None and "no CUDA device" in record["memory_note"]  # measured on a GPU
    assert all(record[k] >= 0 for k in ("accept_ms", "queue_ms", "write_ms", "latency_ms"))
    assert record["overhead_ms"] >= record["accept_ms"] + record["write_ms"] - 1  # both lie outside queue and total
    assert record["params"] == {k: v for k, v in spec.validate(PARAMS).items() if k in record["params"]}
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"{job_id}.mp4"]
    assert list((tmp_path / "inputs").iterdir()) == []  # the upload is dropped once its job ends


def test_health_docs_and_openapi_describe_the_service(pipe, tmp_path):
    with serving(pipe, tmp_path, queue_size=3) as (client, _):
        health = client.get("/v1/health").json()
        docs = client.get("/docs")
        openapi = client.get("/openapi.json").json()
    assert health["status"] == "ok" and health["queue"] == {"waiting": 0, "capacity": 3, "running": None}
    assert health["fixed"] == fixed_values({}) and health["model"]["preset"] == "tiny"
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    form = openapi["paths"]["/v1/videos"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    ref = form["$ref"].rsplit("/", 1)[-1]
    assert set(openapi["components"]["schemas"][ref]["required"]) == {"image", "params"}
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/video", "/v1/health"} <= set(openapi["paths"])


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("params", [
    {**PARAMS, "size": "100*70"},  # not a multiple of 16
    {**PARAMS, "frames": 8},  # 4n, not 4n+1
    {**PARAMS, "guide_scale_high": float("nan")},  # sent as the JSON literal NaN
    {**PARAMS, "steps": 5000},  # above limits.max_steps
    {**PARAMS, "promt": "a typo"},
    {"size": "64*48"},  # no prompt
], ids=["size", "frames_4n", "nan_guidance", "steps_ceiling", "unknown_key", "no_prompt"])
def test_a_bad_parameter_gets_422_with_the_specs_message(pipe, tmp_path, params):
    with serving(pipe, tmp_path) as (client, _):
        answer = submit(client, json.dumps(params))  # json.dumps writes nan as NaN, which the service reads
        listed = client.get("/v1/jobs").json()
    error = spec_error(params)
    assert answer.status_code == 422
    assert answer.json() == {"detail": str(error), "key": error.key}
    assert listed == [] and list((tmp_path / "inputs").iterdir()) == []  # refused: nothing queued, nothing kept


@pytest.mark.parametrize("params, key", [({**PARAMS, "experts": "swap"}, "experts"),
                                         ({**PARAMS, "limits.max_steps": 5000}, "limits.max_steps")])
def test_a_request_cannot_change_what_the_service_fixed(pipe, tmp_path, params, key):
    with serving(pipe, tmp_path) as (client, _):
        refused = submit(client, params)
        same = submit(client, {**PARAMS, "experts": "resident"})  # the service's own value may be repeated
        wait_for(client, same.json()["id"])
    assert refused.status_code == 422 and refused.json()["key"] == key
    assert "fixed by this service" in refused.json()["detail"]
    assert same.status_code == 202


def test_params_that_are_not_a_json_object_get_422(pipe, tmp_path):
    with serving(pipe, tmp_path) as (client, _):
        broken = submit(client, "{prompt: a cat")
        listed = submit(client, "[1, 2]")
        missing = client.post("/v1/videos", files={"image": ("in.png", png(), "image/png")})
    assert broken.status_code == 422 and broken.json()["detail"].startswith("params is not valid JSON")
    assert listed.status_code == 422 and "parameters are a mapping" in listed.json()["detail"]
    assert missing.status_code == 422 and missing.json()["detail"].startswith("params is missing")


def test_a_text_file_sent_as_a_png_is_not_a_picture(pipe, tmp_path):
    with serving(pipe, tmp_path) as (client, _):
        answer = submit(client, image=b"a cat, surfing\n", filename="cat.png")
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("the uploaded image is not a picture")


def test_a_50_megapixel_picture_is_refused_from_its_header(pipe, tmp_path):
    buffer = io.BytesIO()
    Image.new("1", (10_000, 5_000)).save(buffer, format="PNG")  # a few kB on the wire, 50 MP decoded
    with serving(pipe, tmp_path) as (client, service):
        answer = submit(client, image=buffer.getvalue())
    assert answer.status_code == 422
    assert answer.json()["detail"] == (f"the uploaded image is 10000x5000 = 50,000,000 pixels, more than the limit of "
                                       f"{service.limits.max_image_pixels:,}; downscale it first")


# A Windows path (C:\\...\\cat.png) never arrives: python-multipart keeps its last part, as browsers do;
# httpx percent-encodes control characters.
@pytest.mark.parametrize("filename", ["../../etc/cat.png", "/tmp/cat.png", ".."])
def test_a_path_like_file_name_is_refused_and_never_used(pipe, tmp_path, filename):
    with serving(pipe, tmp_path / "service") as (client, _):
        answer = submit(client, filename=filename)
    assert answer.status_code == 422 and "holds a path or control characters" in answer.json()["detail"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["service"]


def test_an_oversize_upload_gets_413_whether_its_size_is_declared_or_streamed(pipe, tmp_path):
    limit = 256 * 1024
    boundary = "wanbench-boundary"

    def streamed():  # chunked, no Content-Length: the limit is found while reading
        yield f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n".encode()
        for _ in range(40):
            yield b"\0" * 16384

    with serving(pipe, tmp_path, max_upload_bytes=limit) as (client, _):
        declared = submit(client, image=b"\0" * (2 * limit))
        chunked = client.post("/v1/videos", content=streamed(),
                              headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        fits = submit(client)
        wait_for(client, fits.json()["id"])
    for answer in (declared, chunked):
        assert answer.status_code == 413 and answer.json() == {"detail": too_large(limit)}
    assert fits.status_code == 202


# ---------------------------------------------------------------------------------------------- cancel, queue, OOM
def test_a_running_job_is_cancelled_between_steps_and_the_next_one_runs(pipe, tmp_path):
    with serving(pipe, tmp_path) as (client, _):
        long_id = submit(client, LONG).json()["id"]
        wait_for(client, long_id, until=running)
        answer = client.delete(f"/v1/jobs/{long_id}")
        cancelled = wait_for(client, long_id)
        early_video = client.get(f"/v1/jobs/{long_id}/video")
        after = wait_for(client, submit(client).json()["id"])
    assert answer.status_code == 200 and answer.json()["cancel_requested"] is True
    assert cancelled["state"] == "cancelled" and 1 <= cancelled["step"] < LONG["steps"]
    assert cancelled["stage"] in ("denoise_high", "denoise_low") and cancelled["error"] is None
    assert early_video.status_code == 409
    assert after["state"] == "done"
    assert list((tmp_path / "videos").iterdir()) == [tmp_path / "videos" / f"{after['id']}.mp4"]


def test_a_queued_job_is_cancelled_at_once(pipe, tmp_path):
    with serving(pipe, tmp_path) as (client, _):
        long_id = submit(client, LONG).json()["id"]
        wait_for(client, long_id, until=running)
        queued_id = submit(client).json()["id"]
        answer = client.delete(f"/v1/jobs/{queued_id}")
        again = client.delete(f"/v1/jobs/{queued_id}")
        client.delete(f"/v1/jobs/{long_id}")
        wait_for(client, long_id)
    assert answer.status_code == 200 and answer.json()["state"] == "cancelled" and answer.json()["step"] is None
    assert again.status_code == 409 and "already ended (cancelled)" in again.json()["detail"]
    assert not (tmp_path / "inputs" / f"{queued_id}.upload").exists()


def test_a_full_queue_answers_429_with_retry_after(pipe, tmp_path):
    with serving(pipe, tmp_path, queue_size=1) as (client, _):
        long_id = submit(client, LONG).json()["id"]
        wait_for(client, long_id, until=running)
        waiting = submit(client)
        refused = submit(client)
        health = client.get("/v1/health").json()
        client.delete(f"/v1/jobs/{waiting.json()['id']}")
        freed = submit(client)  # a cancelled job frees its place at once
        for job_id in (long_id, freed.json()["id"]):
            client.delete(f"/v1/jobs/{job_id}")
            wait_for(client, job_id)
    assert waiting.status_code == 202
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["detail"].startswith("the queue is full (1 jobs waiting)")
    assert health["queue"] == {"waiting": 1, "capacity": 1, "running": long_id}
    assert freed.status_code == 202


def _refuse_host_memory(monkeypatch, pipe):
    monkeypatch.setattr("wan_runtime.resources.host_available_bytes", lambda: 1024)  # the runtime refuses in advance
    return "image_encode", "not enough host memory"


def _run_out_in_the_decoder(monkeypatch, pipe):
    def decode(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipe.vae, "decode", decode)  # what a GPU does mid-stage; the runtime names the stage
    return "vae_decode", "Options that would help: vae_tiling"


@pytest.mark.parametrize("run_out", [_refuse_host_memory, _run_out_in_the_decoder], ids=["refused", "measured"])
def test_an_out_of_memory_fails_that_job_with_stage_and_advice_and_the_service_goes_on(pipe, tmp_path, monkeypatch,
                                                                                        run_out):
    with serving(pipe, tmp_path) as (client, _):
        stage, advice = run_out(monkeypatch, pipe)
        failed = wait_for(client, submit(client).json()["id"])
        monkeypatch.undo()
        after = wait_for(client, submit(client).json()["id"])
    assert failed["state"] == "failed" and failed["failed_stage"] == stage
    assert advice in failed["error"] and stage in failed["error"]
    assert after["state"] == "done"


def test_unknown_jobs_are_404(pipe, tmp_path):
    with serving(pipe, tmp_path) as (client, _):
        answers = [client.get("/v1/jobs/0123456789abcdef0123456789abcdef"), client.get("/v1/jobs/..%2F..%2Fetc"),
                   client.get("/v1/jobs/nope/video"), client.delete("/v1/jobs/nope")]
    assert [a.status_code for a in answers] == [404] * 4
    assert answers[0].json()["detail"].startswith("no job '0123456789abcdef0123456789abcdef'")


# ---------------------------------------------------------------------------------------------- restart, shutdown
def test_finished_videos_survive_a_restart(pipe, tmp_path):
    with serving(pipe, tmp_path) as (client, _):
        job_id = submit(client).json()["id"]
        before = wait_for(client, job_id)
        video = client.get(f"/v1/jobs/{job_id}/video").content
    with serving(pipe, tmp_path) as (client, _):
        after = client.get(f"/v1/jobs/{job_id}").json()
        again = client.get(f"/v1/jobs/{job_id}/video").content
        listed = client.get("/v1/jobs").json()
    assert after == before and again == video
    assert listed == [{k: before[k] for k in ("id", "state", "submitted_at", "finished_at")}]


def test_a_job_running_when_its_process_died_is_recorded_as_interrupted(pipe, tmp_path):
    store = JobStore(tmp_path)  # what a crash leaves: a record still saying running, an upload without a record
    store.save(Job("ab" * 16, params={"prompt": "a cat"}, image={}, state="running", stage="denoise_high", step=3,
                   steps_total=40))
    store.save_input("cd" * 16, png())
    with serving(pipe, tmp_path) as (client, _):
        record = client.get(f"/v1/jobs/{'ab' * 16}").json()
    assert record["state"] == "interrupted"
    assert record["error"] == ("the service stopped while this job ran (stage denoise_high, step 3 of 40); "
                               "submit it again")
    assert store.inputs() == []


def test_a_shutdown_interrupts_the_running_job_after_its_grace_and_keeps_the_queued_one(pipe, tmp_path):
    with serving(pipe, tmp_path, shutdown_grace_s=0.2) as (client, _):
        long_id = submit(client, LONG).json()["id"]
        wait_for(client, long_id, until=running)
        queued_id = submit(client).json()["id"]
    with serving(pipe, tmp_path) as (client, _):
        interrupted = client.get(f"/v1/jobs/{long_id}").json()
        resumed = wait_for(client, queued_id)
    assert interrupted["state"] == "interrupted" and 1 <= interrupted["step"] < LONG["steps"]
    assert interrupted["error"].startswith("the service stopped while this job ran (stage denoise_")
    assert resumed["state"] == "done"


def test_a_shutdown_lets_the_running_job_finish_within_its_grace(pipe, tmp_path):
    with serving(pipe, tmp_path, shutdown_grace_s=60) as (client, _):
        job_id = submit(client, {**PARAMS, "steps": 8}).json()["id"]
        wait_for(client, job_id, until=lambda r: r["state"] == "running")
    record = json.loads((tmp_path / "jobs" / f"{job_id}.json").read_text())
    assert record["state"] == "done" and (tmp_path / "videos" / f"{job_id}.mp4").is_file()


@pytest.mark.gpu
def test_on_a_gpu_a_job_reports_torch_and_nvml_peaks_per_stage(tmp_path):
    gpu = WanI2V.load("synthetic", "tiny", "cuda")
    with serving(gpu, tmp_path) as (client, _):
        record = wait_for(client, submit(client).json()["id"])
    assert record["state"] == "done", record["error"]
    assert record["peak_allocated_mib"] > 0 and record["stage_peak_allocated_mib.denoise_high"] > 0
    assert record["peak_nvml_device_mib"] > 0  # the whole device; this process's own peak unless a container hides it
    assert record["peak_nvml_mib"] is not None or "NVML does not list this process" in record["memory_note"]


# ---------------------------------------------------------------------------------------------- token, load
def test_a_service_with_a_token_refuses_requests_without_it(pipe, tmp_path):
    with serving(pipe, tmp_path, token="s3cret") as (client, _):
        none = submit(client)
        wrong = submit(client, headers={"Authorization": "Bearer guess"})
        right = submit(client, headers={"Authorization": "Bearer s3cret"})
        health = client.get("/v1/health")
        wait_for(client, right.json()["id"], headers={"Authorization": "Bearer s3cret"})
    assert none.status_code == wrong.status_code == 401 and none.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 202 and health.status_code == 200


def test_concurrent_clients_end_done_or_429_and_no_job_is_lost_or_duplicated(pipe, tmp_path):
    with serving(pipe, tmp_path, queue_size=2) as (client, _):
        report = run_load(str(client.base_url), png(), PARAMS, requests=12, clients=4, pace=False)
    assert report.check() == []
    endings = report.summary()["endings"]
    assert set(endings) <= {"done", "429"} and endings.get("done", 0) >= 3  # the queue plus the running job
    assert sorted(o.job_id for o in report.outcomes if o.job_id) == sorted(j["id"] for j in report.server_jobs)
