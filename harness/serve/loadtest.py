"""A bounded load on a running service: `requests` submissions from `clients` concurrent clients.

Each client (a thread with its own httpx.Client) submits, and follows an accepted job until it ends
(polling GET /v1/jobs/{id}); a 429 ends that request (no retry: the load test counts refusals), and
with `pace` the client waits the answer's Retry-After before its next request, as a polite client does.
The report accounts for every request: its POST status, its job's final state, the latency the
client saw (POST sent to the finished state seen, within one poll interval) and the job's record,
whose service times (accept_ms, queue_ms, total_ms, write_ms, latency_ms, overhead_ms) give the
service's own cost per job. `check()` lists what breaks the contract: a request that ended neither
done nor 429, an id handed out twice, a job the service lost.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from harness.serve.jobs import FINISHED

SERVICE_TIMES = ("accept_ms", "queue_ms", "total_ms", "write_ms", "latency_ms", "overhead_ms")


@dataclass
class RequestOutcome:
    """One request of the load: the POST's status, and for an accepted job its end."""

    index: int
    status: int
    job_id: str | None = None
    state: str | None = None  # the accepted job's final state
    latency_s: float | None = None  # client side: POST sent -> finished state seen
    record: dict[str, Any] | None = None
    detail: str | None = None  # the error text of a refused request

    @property
    def ending(self) -> str:
        """'done', '429', or what else it ended as (a state or an HTTP status)."""
        return self.state if self.status == 202 else str(self.status)


@dataclass
class LoadReport:
    """Every request's outcome, the service's job list afterwards, and the wall time of the whole load."""

    outcomes: list[RequestOutcome]
    wall_s: float
    clients: int
    server_jobs: list[dict[str, Any]] = field(default_factory=list)

    def check(self) -> list[str]:
        """What breaks the contract (empty when every request ended done or 429, none lost or duplicated)."""
        problems = [f"request {o.index} ended {o.ending}: {o.detail or ''}".rstrip(": ")
                    for o in self.outcomes if o.ending not in ("done", "429")]
        ids = [o.job_id for o in self.outcomes if o.job_id]
        if len(set(ids)) != len(ids):
            problems.append(f"{len(ids) - len(set(ids))} job id(s) handed out twice")
        known = {j["id"]: j["state"] for j in self.server_jobs}
        lost = [i for i in ids if i not in known]
        if lost:
            problems.append(f"{len(lost)} accepted job(s) missing from the service's list: {lost[:3]}")
        extra = set(known) - set(ids)
        if extra:
            problems.append(f"{len(extra)} job(s) on the service that no request of this load made")
        return problems

    def summary(self) -> dict[str, Any]:
        """Counts by ending, client latency and the service's times per done job (p50/p95/mean, ms)."""
        done = [o for o in self.outcomes if o.ending == "done"]
        endings: dict[str, int] = {}
        for o in self.outcomes:
            endings[o.ending] = endings.get(o.ending, 0) + 1
        out: dict[str, Any] = {"requests": len(self.outcomes), "clients": self.clients, "endings": endings,
                               "wall_s": round(self.wall_s, 3),
                               "done_per_s": round(len(done) / self.wall_s, 3) if self.wall_s else None,
                               "client_latency_ms": _spread([o.latency_s * 1000 for o in done])}
        for name in SERVICE_TIMES:
            out[name] = _spread([o.record[name] for o in done if o.record and o.record.get(name) is not None])
        return out


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    p50, p95 = np.percentile(values, [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "mean": round(float(np.mean(values)), 3),
            "max": round(float(max(values)), 3), "n": len(values)}


def run_load(base_url: str, image: bytes, params: dict[str, Any], requests: int, clients: int,
             token: str | None = None, poll_s: float = 0.02, timeout_s: float = 600.0, pace: bool = True,
             max_pause_s: float = 10.0) -> LoadReport:
    """Submit `requests` jobs from `clients` threads, follow each accepted one to its end, and report."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    local = threading.local()
    body = {"params": json.dumps(params)}
    opened: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, headers=headers, timeout=60.0)
            opened.append(local.client)
        return local.client

    def one(index: int) -> RequestOutcome:
        http = client()
        sent = time.perf_counter()
        response = http.post("/v1/videos", files={"image": ("in.png", image, "image/png")}, data=body)
        if response.status_code != 202:
            if pace and response.status_code == 429:
                time.sleep(min(max_pause_s, float(response.headers.get("retry-after", 1))))
            return RequestOutcome(index, response.status_code, detail=_detail(response))
        job_id = response.json()["id"]
        deadline = sent + timeout_s
        while True:
            record = http.get(f"/v1/jobs/{job_id}").json()
            if record["state"] in FINISHED or time.perf_counter() > deadline:
                break
            time.sleep(poll_s)
        return RequestOutcome(index, 202, job_id, record["state"], time.perf_counter() - sent, record,
                              record.get("error"))

    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(clients, thread_name_prefix="load-client") as pool:
            outcomes = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    finally:
        for http in opened:
            http.close()
    with httpx.Client(base_url=base_url, headers=headers, timeout=60.0) as http:
        server_jobs = http.get("/v1/jobs").json()
    return LoadReport(outcomes, wall, clients, server_jobs)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))
    except ValueError:
        return response.text[:200]
