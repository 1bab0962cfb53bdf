"""NVML memory sampler: a background thread reading GPU memory every ~10 ms.

Each sample holds this process's GPU memory as NVML sees it (CUDA context and non-PyTorch
allocations included, which torch's own counters miss) and the whole device's used memory. Without
NVML, without a CUDA device, or when NVML does not list this process (e.g. a container whose PID
namespace hides the host PID), the affected values are None and `reason` says why; never zero.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from wan_runtime.nvml import nvml_handle, process_bytes

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One reading: perf_counter time, this process's MiB (None if unseen) and the device's used MiB."""

    t: float
    process_mib: float | None
    device_mib: float


class NvmlSampler:
    """Samples this process's and the device's GPU memory on a thread; start() / stop() around the work."""

    def __init__(self, cuda_index: int | None, interval_s: float = 0.01):
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.reason: str | None = None  # why values are missing (None when everything is measured)
        self._handle = None
        self._nvml = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        if cuda_index is None:
            self.reason = "no CUDA device: NVML memory is not measured"
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = nvml_handle(pynvml, cuda_index)
        except Exception as exc:  # missing library, no driver, permission: all mean "not measured"
            self.reason = f"NVML unavailable ({type(exc).__name__}: {exc})"
            self._handle = None

    @property
    def available(self) -> bool:
        """True when device memory is being sampled."""
        return self._handle is not None

    def read(self) -> Sample | None:
        """One reading now (None without NVML)."""
        if self._handle is None:
            return None
        nv = self._nvml
        device_mib = nv.nvmlDeviceGetMemoryInfo(self._handle).used / MIB
        used = process_bytes(nv, self._handle, self._pid)
        process_mib = None if used is None else used / MIB
        return Sample(time.perf_counter(), process_mib, device_mib)

    def start(self) -> "NvmlSampler":
        """Start the sampling thread (a no-op without NVML)."""
        if self._handle is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="nvml-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and take one last reading."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._append()

    def _append(self) -> None:
        try:
            sample = self.read()
        except Exception as exc:  # the device went away mid-run: keep what was sampled
            self.reason = f"NVML read failed ({exc})"
            self._stop.set()
            return
        if sample is not None:
            self.samples.append(sample)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._append()
            self._stop.wait(self.interval_s)

    def window(self, t0: float, t1: float | None = None) -> list[Sample]:
        """Samples taken between t0 and t1 (perf_counter seconds)."""
        end = float("inf") if t1 is None else t1
        return [s for s in list(self.samples) if t0 <= s.t <= end]

    def peaks(self, t0: float, t1: float | None = None) -> tuple[float | None, float | None, str | None]:
        """(process peak MiB, device peak MiB, reason when a value is None) over a time window.

        A fresh reading is added first, so a window shorter than the interval still has a sample."""
        if self._handle is None:
            return None, None, self.reason
        if self._thread is not None:
            self._append()
        samples = self.window(t0, t1)
        if not samples:
            return None, None, "no NVML sample in this window"
        seen = [s.process_mib for s in samples if s.process_mib is not None]
        device_peak = max(s.device_mib for s in samples)
        if not seen:
            return None, device_peak, (
                f"NVML does not list this process (pid {self._pid}) on the device: a container PID namespace "
                "hides it; peak_nvml_device_mib holds the whole device's peak"
            )
        return max(seen), device_peak, None
