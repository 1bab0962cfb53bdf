"""A bounded load on `wanbench serve` over loopback: N requests from C concurrent clients against a queue of Q.

    python3 bench/serve_load.py [--out reports/serve-load] [--requests 40] [--clients 8] [--queue-size 4]
        [--preset tiny --weights synthetic --device cpu] [--size 64*48 --frames 5 --steps 2] [--threads 1]

The service is the real command (`python -m harness.cli serve`) in a process of its own on
127.0.0.1; the clients are threads of this process (harness/serve/loadtest.py), each submitting,
then polling its job every 20 ms until it ends; a 429 ends a request (no retry), and that client
waits the answer's Retry-After before its next request. It reports:
- every request's ending (done or 429; anything else, an id handed out twice or a job missing from
  the service's list is a failure: exit status 1);
- latency per done job, p50/p95/mean/max: as the client saw it (POST sent to the end seen, within
  one poll) and as the service measured it (latency_ms), with its parts: accept_ms (upload and
  checks), queue_ms, total_ms (the generation, as a results row times it), write_ms (the mp4) and
  overhead_ms (latency_ms - queue_ms - total_ms: what the service itself added per job);
- the conditions: machine, cores, load average before and after, torch threads of the service.
Writes DIR/serve-load.json (the summary, the conditions, every request) and DIR/serve-load.md
(the table), and prints the table. The service's folder is DIR/service (refused if it exists).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402

from harness import environment  # noqa: E402
from harness.serve.loadtest import SERVICE_TIMES, LoadReport, run_load  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="reports/serve-load", help="output folder (default: reports/serve-load)")
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--queue-size", type=int, default=4)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--weights", default="synthetic")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the service (default: 1)")
    p.add_argument("--size", default="64*48")
    p.add_argument("--frames", type=int, default=5)
    p.add_argument("--steps", type=int, default=2)
    return p.parse_args(argv)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def picture(width: int, height: int) -> bytes:
    """A scikit-image photograph, resized to the video's size, as PNG bytes."""
    import io

    from PIL import Image
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 600) -> dict[str, Any]:
    """Poll /v1/health until the service answers; its answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the service exited with status {process.returncode} before it came up")
        try:
            return httpx.get(f"{url}/v1/health", timeout=5).json()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise SystemExit(f"the service did not come up within {timeout_s:.0f} s") from None
            time.sleep(0.2)


def table(summary: dict[str, Any]) -> str:
    """The latency table (ms) of a summary, in markdown."""
    lines = ["| per done job (ms) | p50 | p95 | mean | max |", "|---|---:|---:|---:|---:|"]
    for name in ("client_latency_ms", *SERVICE_TIMES):
        s = summary.get(name)
        if s:
            lines.append(f"| {name} | {s['p50']:.1f} | {s['p95']:.1f} | {s['mean']:.1f} | {s['max']:.1f} |")
    return "\n".join(lines)


def conditions(args: argparse.Namespace, health: dict[str, Any], env: dict[str, Any], load_before: float,
               load_after: float) -> str:
    """One paragraph: what ran where, under which load."""
    model = health["model"]
    return (f"{args.requests} requests from {args.clients} concurrent clients against a queue of {args.queue_size} "
            f"(+1 running), loopback; {model['preset']} preset ({model['weights']} weights) on {model['device']}, "
            f"{args.size}, {args.frames} frames, {args.steps} steps; service with {model['threads']} torch thread(s); "
            f"{env['env.cpu']} ({env['env.cpu_usable']} usable cores), 1-min load average {load_before:.2f} before, "
            f"{load_after:.2f} after; "
            f"clients poll every 20 ms and wait Retry-After after a 429.")


def main(argv: list[str] | None = None) -> int:
    """Start the service, load it, stop it gracefully, write and print the report; 1 when a request went astray."""
    args = parse_args(argv)
    out = Path(args.out)
    folder = out / "service"
    if folder.exists():
        raise SystemExit(f"{folder} exists: choose another --out (a load starts from an empty service folder)")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "harness.cli", "serve", "--preset", args.preset, "--weights", args.weights,
               "--device", args.device, "--out", str(folder), "--port", str(port), "--queue-size",
               str(args.queue_size), "--threads", str(args.threads)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(out / "service.log", "w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            health = wait_until_up(url, process)
            width, height = (int(v) for v in args.size.split("*"))
            params = {"prompt": "An astronaut waves at the camera", "size": args.size, "frames": args.frames,
                      "steps": args.steps, "seed": 42}
            load_before = os.getloadavg()[0]
            report: LoadReport = run_load(url, picture(width, height), params, args.requests, args.clients)
            load_after = os.getloadavg()[0]
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(120)
    summary = report.summary()
    problems = report.check()
    env = environment.collect(torch.device("cpu"))  # this machine (the service's device is in health)
    text = conditions(args, health, env, load_before, load_after)
    endings = ", ".join(f"{n} {ending}" for ending, n in sorted(summary["endings"].items()))
    markdown = (f"# wanbench serve under load\n\n{text}\n\nEndings: {endings}; {summary['done_per_s']} done/s over "
                f"{summary['wall_s']} s. Problems: {'; '.join(problems) or 'none'}.\n\n{table(summary)}\n")
    (out / "serve-load.md").write_text(markdown, encoding="utf-8")
    (out / "serve-load.json").write_text(json.dumps({
        "conditions": text, "environment": env, "command": command, "summary": summary, "problems": problems,
        "health": health,
        "requests": [{"index": o.index, "status": o.status, "job_id": o.job_id, "state": o.state,
                      "client_latency_ms": None if o.latency_s is None else round(o.latency_s * 1000, 3),
                      **{k: (o.record or {}).get(k) for k in SERVICE_TIMES}} for o in report.outcomes],
    }, indent=1), encoding="utf-8")
    print(markdown)
    print(f"written: {out / 'serve-load.md'}, {out / 'serve-load.json'}, service log {out / 'service.log'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
