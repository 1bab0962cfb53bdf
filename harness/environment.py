"""The environment a result was measured in: GPU, driver, CUDA, torch, package versions, git revision.

Collected inside the worker process (the parent never touches CUDA, so it holds no GPU memory).
Every field is `env.<name>`; unknown values are None.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("wanbench", "diffusers", "transformers", "numpy", "torchmetrics", "pydantic", "nvidia-ml-py")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception:
        return None


def collect(device: torch.device) -> dict[str, Any]:
    """Environment fields for result rows; GPU fields describe `device` (None on a CPU run)."""
    env: dict[str, Any] = {
        "env.python": platform.python_version(),
        "env.torch": torch.__version__,
        "env.os": platform.platform(),
        "env.hostname": socket.gethostname(),
        "env.cpu": _cpu_name(),
        "env.cpu_count": os.cpu_count(),
        "env.git_rev": _git("rev-parse", "HEAD"),
        "env.git_dirty": None,
        "env.cuda": torch.version.cuda,
        "env.cudnn": None,
        "env.gpu": None,
        "env.gpu_memory_mib": None,
        "env.gpu_count": None,
        "env.driver": None,
    }
    status = _git("status", "--porcelain", "--untracked-files=no")
    if status is not None:
        env["env.git_dirty"] = bool(status)
    for package in PACKAGES:
        env[f"env.{package}"] = _version(package)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env["env.gpu"] = props.name
        env["env.gpu_memory_mib"] = round(props.total_memory / (1024 * 1024))
        env["env.gpu_count"] = torch.cuda.device_count()
        env["env.cudnn"] = torch.backends.cudnn.version()
        env["env.driver"] = _driver_version()
    return env
