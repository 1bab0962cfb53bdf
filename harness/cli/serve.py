"""`wanbench serve --preset P --weights W --device D --out DIR`: the model behind HTTP (harness/serve/).

The flags of the memory plan, the load options and the ceilings (limits.*) are made from the
runtime's parameter spec, as wan-generate's are: one flag per parameter, named after it
(`--experts`, `--weight_dtype`, `--attention`, `--threads`; the ceilings as `--max_steps`,
`--max_frames`, `--max_side`), with the spec's type, choices, default and help. Every value is
checked by the spec before anything loads; the port is bound before the model loads, so a taken
port or a bad flag is one line, at once.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
from typing import Any

from harness.cli.common import ExitCode, check_output_folder
from harness.serve.limits import MIB, ServiceLimits
from wan_runtime import spec
from wan_runtime.cli import add_param_flag
from wan_runtime.compute import ComputePlan
from wan_runtime.config import PRESETS
from wan_runtime.errors import ConfigError, ParameterError
from wan_runtime.memory import MemoryPlan

DEFAULTS = ServiceLimits()


def flag_of(name: str) -> str:
    """The flag of a fixed parameter: its name, a ceiling without its `limits.` prefix (as wan-generate)."""
    return "--" + name.removeprefix("limits.")


def add_parser(sub) -> argparse.ArgumentParser:
    """Register the verb."""
    parser = sub.add_parser(
        "serve", help="serve the model over HTTP: POST a picture and parameters, get the video and what it cost",
        description="Load the model once and serve it with FastAPI/uvicorn: POST /v1/videos (multipart: image, "
                    "params JSON), GET /v1/jobs/{id}, GET /v1/jobs/{id}/video, DELETE /v1/jobs/{id}, GET /v1/health, "
                    "docs at /docs. Jobs run one at a time from a bounded queue; records, uploads and videos live in "
                    "--out, so finished videos survive a restart. Exit status: 130 after Ctrl-C and 143 after SIGTERM "
                    "(each a graceful stop), 2 a configuration error (one line), 3 the folder is in use by another "
                    "service, 5 the service could not start.",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--preset", choices=sorted(PRESETS), required=True, help="model preset")
    model.add_argument("--weights", required=True, metavar="synthetic|DIR",
                       help="synthetic (seeded random weights at the real shapes) or a checkpoint folder")
    model.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when this torch sees one, else cpu)")
    model.add_argument("--out", required=True, metavar="DIR",
                       help="the service's folder: job records, uploads of waiting jobs, videos (one service at a "
                            "time)")
    plan = parser.add_argument_group("memory plan and load options (fixed for the life of the service)")
    for name in spec.load_names():
        add_param_flag(plan, (flag_of(name),), name)
    ceilings = parser.add_argument_group("ceilings on a request (a request cannot raise them)")
    for name in spec.names("limits"):
        add_param_flag(ceilings, (flag_of(name),), name)
    http = parser.add_argument_group("HTTP")
    http.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the "
                           "network: use --token-env then)")
    http.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000; 0 picks a free one)")
    http.add_argument("--token-env", metavar="NAME",
                      help="require 'Authorization: Bearer <token>' on /v1/* (health aside), the token read from "
                           "the environment variable NAME (never from the command line, which others can see)")
    http.add_argument("--queue-size", type=int, default=DEFAULTS.queue_size, metavar="N",
                      help=f"jobs that may wait beside the running one; one more is answered 429 with Retry-After "
                           f"(default: {DEFAULTS.queue_size})")
    http.add_argument("--max-upload-mib", type=float, default=DEFAULTS.max_upload_bytes / MIB, metavar="MIB",
                      help=f"largest upload, the whole multipart body (default: {DEFAULTS.max_upload_bytes / MIB:g})")
    http.add_argument("--max-image-pixels", type=int, default=DEFAULTS.max_image_pixels, metavar="N",
                      help=f"largest picture in pixels, read from its header before decoding (default: "
                           f"{DEFAULTS.max_image_pixels:,})")
    http.add_argument("--shutdown-grace", type=float, default=DEFAULTS.shutdown_grace_s, metavar="SECONDS",
                      help="on Ctrl-C or SIGTERM, how long the running job may take to finish before it is stopped "
                           f"at its next step and recorded as interrupted (default: {DEFAULTS.shutdown_grace_s:g})")
    parser.set_defaults(verb="serve")
    return parser


def fixed_values(args: argparse.Namespace) -> dict[str, Any]:
    """The parameters fixed for the service (plan, load options, limits.*): flags over the spec's defaults."""
    from harness.serve import intake  # it loads torch (the memory check): only once the verb runs

    given = {name: getattr(args, name) for name in intake.fixed_names() if getattr(args, name) is not None}
    try:
        return intake.fixed_values(given)
    except ParameterError as exc:
        if exc.key in given:
            raise ParameterError(exc.key, f"{flag_of(exc.key)}: {exc}") from None
        raise


def service_limits(args: argparse.Namespace) -> ServiceLimits:
    """The service's own limits from their flags, each checked."""
    for flag, value, low in (("--queue-size", args.queue_size, 1), ("--max-upload-mib", args.max_upload_mib, 0.001),
                             ("--max-image-pixels", args.max_image_pixels, 1), ("--shutdown-grace",
                                                                                args.shutdown_grace, 0)):
        if not math.isfinite(value) or value < low:
            raise ConfigError(f"{flag} {value}: must be a number of at least {low}")
    return ServiceLimits(args.queue_size, int(args.max_upload_mib * MIB), args.max_image_pixels, args.shutdown_grace)


def read_token(name: str | None) -> str | None:
    """The bearer token from the environment variable `name` (None without --token-env)."""
    if name is None:
        return None
    token = os.environ.get(name, "")
    if not token.strip():
        raise ConfigError(f"--token-env {name}: the environment variable {name} is not set or empty; export the "
                          f"token first (e.g. export {name}=$(openssl rand -hex 32))")
    return token.strip()


def run(args: argparse.Namespace) -> int:
    """Check everything, take the folder, bind the port, load the model once, serve until Ctrl-C or SIGTERM."""
    from harness.serve.server import is_loopback, listen
    from harness.serve.store import JobStore

    fixed = fixed_values(args)
    limits = service_limits(args)
    token = read_token(args.token_env)
    device = spec.check_device_name(args.device) if args.device else None
    if args.weights != "synthetic" and not os.path.isdir(args.weights):
        raise ConfigError(f"--weights {args.weights}: not a folder; give a checkpoint folder or 'synthetic'")
    check_output_folder(args.out, "--out")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with JobStore(args.out, getattr(args, "command_line", "")) as store:  # RunFolderBusy: another service has it
        if store.took_over:
            print(f"wanbench serve: {store.took_over}", file=sys.stderr)
        sock = listen(args.host, args.port)
        if token is None and not is_loopback(args.host):
            print(f"wanbench serve: warning: listening on {args.host} without --token-env: anyone who can reach "
                  "this port can run jobs on this machine", file=sys.stderr)
        return _serve(args, store, fixed, limits, token, device, sock)


def _serve(args: argparse.Namespace, store, fixed: dict[str, Any], limits: ServiceLimits, token: str | None,
           device: str | None, sock) -> int:
    """Load and serve until Ctrl-C or SIGTERM; either ends in a graceful stop and exit status 128 + the signal."""
    previous = signal.signal(signal.SIGTERM, _terminated)  # a clean exit (folder released) from here on
    try:
        return _load_and_run(args, store, fixed, limits, token, device, sock)
    except KeyboardInterrupt:  # uvicorn passes Ctrl-C on after its graceful shutdown
        return 128 + signal.SIGINT
    except Terminated:  # and SIGTERM likewise
        return 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, previous)


class Terminated(Exception):
    """SIGTERM arrived (uvicorn handles it while serving and raises it again once it has stopped)."""


def _terminated(signum, frame) -> None:
    raise Terminated()


def _load_and_run(args: argparse.Namespace, store, fixed: dict[str, Any], limits: ServiceLimits, token: str | None,
                  device: str | None, sock) -> int:
    """Load the model (its load measured by the Probe), then run uvicorn on `sock`."""
    import torch

    from harness.probe import Probe
    from harness.serve.app import create_app
    from harness.serve.server import server
    from harness.serve.service import Service
    from wan_runtime.pipeline import WanI2V
    from wan_runtime.threads import apply_threads
    from wan_runtime.weights import resolve_device

    apply_threads(fixed["threads"])
    target = resolve_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    probe = Probe(target)
    print(f"wanbench serve: loading {args.preset} ({args.weights}) on {target} ...", file=sys.stderr, flush=True)
    pipe = WanI2V.load(args.weights, args.preset, target, spec.build(MemoryPlan, fixed), fixed["attention"],
                       observer=probe, cross_attention=fixed["cross_attention"], compute=spec.build(ComputePlan, fixed))
    load_ms = round(probe.recording.spans[0].wall_ms, 1)
    model = {"preset": args.preset, "weights": args.weights, "device": str(target), "load_ms": load_ms,
             "threads": torch.get_num_threads()}
    service = Service(pipe, store, fixed, model, limits)
    host, port = sock.getsockname()[:2]
    print(f"wanbench serve: loaded in {load_ms / 1000:.1f} s; serving http://{host}:{port} (docs /docs), folder "
          f"{args.out}, queue {limits.queue_size}{', bearer token required' if token else ''}", file=sys.stderr,
          flush=True)
    uvicorn = server(create_app(service, token))
    uvicorn.run(sockets=[sock])
    if not uvicorn.started:  # its startup failed (the log above says why)
        print("wanbench serve: the service did not start; the log above says why", file=sys.stderr)
        return ExitCode.INTERNAL
    return ExitCode.OK
