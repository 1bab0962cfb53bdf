"""The observer protocol: how a caller (e.g. the harness) sees pipeline stages and denoising steps."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

# Stage names are shared verbatim by the runtime, suites, results and reports.
STAGES: tuple[str, ...] = (
    "load",
    "text_encode",
    "image_encode",
    "compile",  # only with compiled blocks, once per input shape (wan_runtime/compile.py)
    "denoise_high",
    "denoise_low",
    "vae_decode",
    "postprocess",
)

Expert = Literal["high", "low"]


@dataclass(frozen=True)
class StepInfo:
    """One denoising step, reported after it has been issued to the device."""

    index: int  # position in the full schedule, 0-based
    total: int  # number of steps in the full schedule
    timestep: float
    expert: Expert
    stage: str  # "denoise_high" or "denoise_low"


@runtime_checkable
class Observer(Protocol):
    """Receives stage spans and step events; implementations decide what (if anything) to measure."""

    def stage(self, name: str) -> AbstractContextManager[None]:
        """Context manager wrapping one stage of the pipeline."""
        ...

    def on_step(self, info: StepInfo) -> None:
        """Called once after each denoising step."""
        ...


class NullObserver:
    """Measures nothing and costs nothing; used when no observer is handed in."""

    def stage(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()

    def on_step(self, info: StepInfo) -> None:
        return None
