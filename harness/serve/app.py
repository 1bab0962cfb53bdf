"""The HTTP API of `wanbench serve` (FastAPI): routes, the optional bearer token, errors as one line each.

    POST   /v1/videos           multipart: `image` (the picture) and `params` (JSON) -> 202 {"id", "state", "url"}
    GET    /v1/jobs             every job: id, state, times
    GET    /v1/jobs/{id}        the job's record (harness/serve/jobs.py): state, stage and step, timings, memory
    GET    /v1/jobs/{id}/video  the mp4 of a done job
    DELETE /v1/jobs/{id}        cancel: a queued job at once, a running one at its next step
    GET    /v1/health           status, model, fixed parameters, limits, queue (no token needed)
    GET    /docs                the OpenAPI documentation

Every error is JSON `{"detail": one line}` (with `"key"`: the parameter, for a parameter's error):
422 a parameter, the picture or the upload's name; 413 an upload over the byte limit; 429 the queue
is full (with Retry-After); 404 an unknown job; 409 a video before it is done, a cancel after the
end; 401 a missing or wrong token; 503 the service is shutting down.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import logging
import time
import traceback
from contextlib import asynccontextmanager
from typing import Any, Optional

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException

from harness.serve.intake import PARAMS_EXAMPLE
from harness.serve.jobqueue import QueueFull
from harness.serve.service import JobConflict, Service, ServiceStopping, UnknownJob
from wan_runtime.errors import ConfigError, ParameterError, first_line

MIB = 2**20

log = logging.getLogger("wanbench.serve")


class Accepted(BaseModel):
    """A queued job."""

    id: str
    state: str
    url: str


class JobRecord(BaseModel):
    """A job's record; the measurement fields (`total_ms`, `stage_ms.<stage>`, `peak_nvml_mib`, ...) are those
    of a results row, plus the service's own times (`accept_ms`, `queue_ms`, `write_ms`, `latency_ms`,
    `overhead_ms`)."""

    model_config = ConfigDict(extra="allow")

    id: str
    state: str
    stage: Optional[str] = None
    step: Optional[int] = None
    steps_total: Optional[int] = None
    error: Optional[str] = None
    failed_stage: Optional[str] = None
    params: dict[str, Any]
    video_url: Optional[str] = None


class Problem(BaseModel):
    """An error: one line naming the problem and the fix; `key` names the parameter when one is at fault."""

    detail: str
    key: Optional[str] = None


def _problem(status: int, detail: str, key: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"detail": detail} if key is None else {"detail": detail, "key": key}
    return JSONResponse(body, status_code=status, headers=headers)


def too_large(limit: int) -> str:
    """The 413 text: the upload is over `limit` bytes."""
    return (f"the upload is larger than this service's limit of {limit:,} bytes ({limit / MIB:g} MiB); send a smaller "
            "picture (a JPEG or PNG of the video's size is plenty)")


class Gate:
    """ASGI middleware at the door: stamps each request's arrival (request.state.received_at) and refuses a body
    declared larger than the upload limit before reading it (a body that turns out larger while it streams is cut
    by FastAPI's max_body_size; both answer 413 with the same text)."""

    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope.setdefault("state", {})["received_at"] = time.time()
            declared = Headers(scope=scope).get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                await _problem(413, too_large(self.max_body_bytes))(scope, receive, send)
                return
        await self.app(scope, receive, send)


def bearer_check(token: str | None):
    """A dependency refusing requests without `Authorization: Bearer <token>` (None: no check)."""
    scheme = HTTPBearer(auto_error=False, description="the token named by `wanbench serve --token-env`")

    def check(credentials: Optional[HTTPAuthorizationCredentials] = Depends(scheme)) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if token is not None and not hmac.compare_digest(given, token.encode()):
            raise HTTPException(401, "a valid bearer token is required: send 'Authorization: Bearer <token>' with the "
                                     "token the service was started with", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(service: Service, token: str | None = None) -> FastAPI:
    """The FastAPI app of a service; its lifespan starts the service's worker and stops it gracefully."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        await asyncio.to_thread(service.stop)

    app = FastAPI(
        title="wanbench serve",
        summary="Wan2.2 image-to-video behind HTTP: one loaded model, a bounded queue, what each video cost.",
        description=__doc__.split("\n\n", 1)[1],
        lifespan=lifespan,
    )
    app.add_middleware(Gate, max_body_bytes=service.limits.max_upload_bytes)
    limit_mib = service.limits.max_upload_bytes / MIB
    errors = {status: {"model": Problem} for status in (401, 404, 409, 413, 422, 429, 503)}
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(bearer_check(token))] if token else [], responses=errors)

    @v1.post("/videos", status_code=202, response_model=Accepted, max_body_size=service.limits.max_upload_bytes)
    def submit(
        request: Request,
        image: UploadFile = File(description="the picture (PNG, JPEG, WebP, ...; decoded by content, its name and "
                                             f"type are ignored), at most {limit_mib:g} MiB and "
                                             f"{service.limits.max_image_pixels:,} pixels"),
        params: str = Form(description=f"the request's parameters as a JSON object, e.g. {PARAMS_EXAMPLE}"),
    ) -> Accepted:
        """Queue a video: 202 with the job's id, or a 4xx naming what to fix (nothing is queued then)."""
        job = service.submit(params, image.file.read(), image.filename, request.state.received_at)
        return Accepted(id=job.id, state=job.state, url=f"/v1/jobs/{job.id}")

    @v1.get("/jobs")
    def jobs() -> list[dict[str, Any]]:
        """Every job of this service's folder: id, state, times (oldest first)."""
        return service.records()

    @v1.get("/jobs/{job_id}", response_model=JobRecord)
    def job(job_id: str) -> dict[str, Any]:
        """The job's record: state (queued, running, done, failed, cancelled, interrupted), stage and step of a
        running job, error and failed_stage of a failed one, timings and memory of a done one."""
        record = service.record(job_id)
        if record["state"] == "done":
            record["video_url"] = f"/v1/jobs/{job_id}/video"
        return record

    @v1.get("/jobs/{job_id}/video", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}, "description": "the H.264 mp4"}})
    def video(job_id: str) -> FileResponse:
        """The mp4 of a done job."""
        return FileResponse(service.video(job_id), media_type="video/mp4", filename=f"{job_id}.mp4")

    @v1.delete("/jobs/{job_id}", response_model=JobRecord)
    def cancel(job_id: str) -> dict[str, Any]:
        """Cancel: a queued job at once (state cancelled); a running one stops at its next step (cancel_requested)."""
        return service.cancel(job_id)

    app.include_router(v1)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        """Status, the model and its fixed parameters, the limits, the queue and the jobs by state."""
        return service.health()

    _add_error_handlers(app, service)
    return app


def _add_error_handlers(app: FastAPI, service: Service) -> None:
    limit = service.limits.max_upload_bytes

    @app.exception_handler(ConfigError)
    async def bad_input(request: Request, exc: ConfigError) -> JSONResponse:
        return _problem(422, str(exc), exc.key if isinstance(exc, ParameterError) else None)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        return _problem(429, str(exc), headers={"Retry-After": str(service.retry_after())})

    @app.exception_handler(UnknownJob)
    async def unknown(request: Request, exc: UnknownJob) -> JSONResponse:
        return _problem(404, str(exc))

    @app.exception_handler(JobConflict)
    async def conflict(request: Request, exc: JobConflict) -> JSONResponse:
        return _problem(409, str(exc))

    @app.exception_handler(ServiceStopping)
    async def stopping(request: Request, exc: ServiceStopping) -> JSONResponse:
        return _problem(503, str(exc), headers={"Retry-After": str(math.ceil(service.limits.shutdown_grace_s))})

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "the request"
        if first.get("type") == "missing" and where in ("image", "params"):
            return _problem(422, f"{where} is missing: send the picture as the multipart file field 'image' and "
                                 f"the parameters as JSON in the field 'params', e.g. {PARAMS_EXAMPLE}")
        return _problem(422, f"{where}: {first.get('msg', 'not understood')}; send a multipart form with the file "
                             "field 'image' and the text field 'params'")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed:\n%s", request.method, request.url.path, "".join(traceback.format_exception(exc)))
        return _problem(500, f"unexpected {type(exc).__name__}: {first_line(exc, 300)} (a bug: the service log holds the traceback)")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:
            return _problem(413, too_large(limit))
        return _problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))
