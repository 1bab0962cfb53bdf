"""Helpers of the service tests: a real uvicorn on 127.0.0.1 in a thread, pictures, and waiting for a job."""

from __future__ import annotations

import io
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
from PIL import Image

from harness.serve.app import create_app
from harness.serve.intake import fixed_values
from harness.serve.jobs import FINISHED
from harness.serve.server import listen, server
from harness.serve.service import Service, ServiceLimits
from harness.serve.store import JobStore

# Small and fast on the tiny preset: ~0.5 s a job on one CPU thread.
PARAMS: dict[str, Any] = {"prompt": "a cat", "size": "64*48", "frames": 5, "steps": 2, "seed": 1}
# Long enough to be caught running (tens of ms a step), cut short by every test that starts one.
LONG: dict[str, Any] = {**PARAMS, "steps": 1000}


def png(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """A noise picture as PNG bytes."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class BackgroundServer:
    """A real uvicorn serving `app` on 127.0.0.1 (a port the system picks) in a thread."""

    def __init__(self, app):
        self.sock = listen("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = server(app, log_level="warning")
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True  # what a SIGTERM does: stop accepting, then the lifespan's graceful stop
        self.thread.join(60)


@contextmanager
def serving(pipe, folder: Path, token: str | None = None, **limits: Any) -> Iterator[tuple[httpx.Client, Service]]:
    """A service on `pipe` over `folder`, behind a real uvicorn; yields an httpx client and the service."""
    with JobStore(folder) as store:
        model = {"preset": "tiny", "weights": "synthetic", "device": str(pipe.device)}
        service = Service(pipe, store, fixed_values({}), model, ServiceLimits(**limits))
        with BackgroundServer(create_app(service, token)) as running:
            with httpx.Client(base_url=running.url, timeout=60) as client:
                yield client, service


def submit(client: httpx.Client, params: dict[str, Any] | str = PARAMS, image: bytes | None = None,
           filename: str = "in.png", **kwargs: Any) -> httpx.Response:
    """POST /v1/videos with a picture and params (a dict is sent as JSON, a str as it is)."""
    import json

    text = params if isinstance(params, str) else json.dumps(params)
    return client.post("/v1/videos", files={"image": (filename, png() if image is None else image, "image/png")},
                       data={"params": text}, **kwargs)


def wait_for(client: httpx.Client, job_id: str, until=lambda r: r["state"] in FINISHED, timeout_s: float = 60,
             **kwargs: Any) -> dict[str, Any]:
    """Poll the job's record until `until(record)` holds; fails the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        record = client.get(f"/v1/jobs/{job_id}", **kwargs).json()
        if until(record):
            return record
        assert time.monotonic() < deadline, f"job {job_id} stayed {record['state']} ({record.get('stage')})"
        time.sleep(0.02)


def running(record: dict[str, Any]) -> bool:
    """A job that has done at least one denoising step."""
    return record["state"] == "running" and (record.get("step") or 0) >= 1
