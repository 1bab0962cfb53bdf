"""The environment a result was measured in: GPU, driver, CUDA, torch, threads, host load, versions, git,
and on a GPU host every device and how they are linked (`nvidia-smi topo -m`).

Collected inside the worker process (the parent never touches CUDA, so it holds no GPU memory).
Every field is `env.<name>`; unknown values are None. A CPU timing depends on the threads torch ran
with and on what else the host was doing, so both are recorded: `env.threads` (set explicitly by
`set_threads` before any work), the load average and `env.host_busy` (the 1-minute load average
above the machine's cores when the worker started).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import torch

from wan_runtime.threads import apply_threads, usable_cores

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


def host_devices() -> list[str] | None:
    """Every GPU of the host as NVML lists it (`index: name, MiB`), whatever CUDA_VISIBLE_DEVICES hides; None
    without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        out = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            out.append(f"{index}: {name}, {pynvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20} MiB")
        return out
    except Exception:  # no library, no driver: unknown
        return None


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def interconnect() -> str | None:
    """How the host's GPUs are linked (`nvidia-smi topo -m`: NVLink, PCIe switches, NUMA); None without it."""
    tool = shutil.which("nvidia-smi")
    if tool is None:
        return None
    try:
        done = subprocess.run([tool, "topo", "-m"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    # nvidia-smi underlines the header with terminal escapes even into a pipe: keep the plain table
    return ANSI_ESCAPE.sub("", done.stdout).strip() or None if done.returncode == 0 else None


def set_threads(threads: int | None, device: torch.device, workers: int = 1) -> dict[str, Any]:
    """Set torch's threads for a worker; the env fields recording what is in effect.

    `threads` None (a suite's default): OMP_NUM_THREADS when set, else the usable cores split evenly among
    the processes one host may run at once: `workers` (the run's parallel workers, times their ranks), or
    one per visible GPU for a CUDA suite run one worker at a time.
    """
    sharing = max(workers, torch.cuda.device_count() if device.type == "cuda" and workers == 1 else 1)
    intra, interop = apply_threads(threads, sharing)
    return {"env.threads": intra, "env.interop_threads": interop}


def host_load() -> dict[str, Any]:
    """The host's load average (1/5/15 min), its cores, and whether it is busier than its cores."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:  # not available on this platform
        return {"env.load_avg_1m": None, "env.load_avg_5m": None, "env.load_avg_15m": None, "env.host_busy": None}
    cores = os.cpu_count() or 1
    return {"env.load_avg_1m": round(one, 2), "env.load_avg_5m": round(five, 2), "env.load_avg_15m": round(fifteen, 2),
            "env.host_busy": one > cores}


def busy_warning(env: dict[str, Any]) -> str | None:
    """One line to log when the host was busier than its cores (CPU timings are then inflated), else None."""
    if not env.get("env.host_busy"):
        return None
    return (f"warning: host busy: load average {env['env.load_avg_1m']} over {env['env.cpu_count']} cores "
            f"(running with {env.get('env.threads')} threads); CPU timings of this run are inflated")


def collect(device: torch.device) -> dict[str, Any]:
    """Environment fields for result rows; GPU fields describe `device` (None on a CPU run)."""
    env: dict[str, Any] = {
        "env.python": platform.python_version(),
        "env.torch": torch.__version__,
        "env.os": platform.platform(),
        "env.hostname": socket.gethostname(),
        "env.cpu": _cpu_name(),
        "env.cpu_count": os.cpu_count(),
        "env.cpu_usable": usable_cores(),
        "env.git_rev": _git("rev-parse", "HEAD"),
        "env.git_dirty": None,
        "env.cuda": torch.version.cuda,
        "env.cudnn": None,
        "env.gpu": None,
        "env.gpu_memory_mib": None,
        "env.gpu_count": None,
        "env.driver": None,
        "env.cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "env.devices": None,
        "env.interconnect": None,
    }
    env.update(host_load())
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
        env["env.devices"] = host_devices()
        env["env.interconnect"] = interconnect()
    return env
