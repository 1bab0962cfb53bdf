"""NVML look-ups shared by the runtime (VRAM budget) and the harness (memory sampler)."""

from __future__ import annotations

import os


def nvml_handle(nv, cuda_index: int):
    """NVML handle of torch's CUDA device `cuda_index` (matched by UUID, since CUDA_VISIBLE_DEVICES may renumber)."""
    import torch

    uuid = str(getattr(torch.cuda.get_device_properties(cuda_index), "uuid", "") or "")
    if uuid:
        for candidate in (uuid, f"GPU-{uuid}"):
            try:
                return nv.nvmlDeviceGetHandleByUUID(candidate)
            except Exception:
                continue
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    ids = [v.strip() for v in visible.split(",") if v.strip()]
    if ids and cuda_index < len(ids) and ids[cuda_index].isdigit():
        return nv.nvmlDeviceGetHandleByIndex(int(ids[cuda_index]))
    return nv.nvmlDeviceGetHandleByIndex(cuda_index)


def process_bytes(nv, handle, pid: int | None = None) -> int | None:
    """GPU memory NVML attributes to process `pid` (this one by default), or None when NVML does not list it."""
    pid = os.getpid() if pid is None else pid
    for proc in nv.nvmlDeviceGetComputeRunningProcesses(handle):
        if proc.pid == pid and proc.usedGpuMemory is not None:
            return int(proc.usedGpuMemory)
    return None


def this_process_bytes(cuda_index: int) -> int | None:
    """This process's GPU memory on `cuda_index` as NVML sees it (CUDA context included); None without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return process_bytes(pynvml, nvml_handle(pynvml, cuda_index))
    except Exception:  # no library, no driver, no permission: unknown, not zero
        return None
