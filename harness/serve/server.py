"""Listening and serving: the socket is bound before the model loads, uvicorn serves the app on it.

Binding first means a port in use is a one-line error before minutes of loading, and a caller that
asks for port 0 (the tests) learns the free port the system chose before the server runs.
"""

from __future__ import annotations

import ipaddress
import os
import socket

import uvicorn
from fastapi import FastAPI

from wan_runtime.errors import ConfigError

# How long uvicorn waits for open connections (a client still downloading a video) when it stops.
CONNECTIONS_GRACE_S = 10


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); ConfigError naming the way out when that address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({reason}); choose another --port, or "
                          "stop what uses it") from None


def is_loopback(host: str) -> bool:
    """True when `host` can only be reached from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def server(app: FastAPI, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for `app` (run it with `.run(sockets=[listen(...)])`)."""
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=CONNECTIONS_GRACE_S,
                            access_log=log_level in ("debug", "info"))
    return uvicorn.Server(config)
