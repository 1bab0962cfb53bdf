"""Exceptions raised by the runtime; each message names the problem and the fix."""

from __future__ import annotations


def first_line(message: object, limit: int | None = None) -> str:
    """The first line of an error message (an exception or its text; None is ""), stripped, cut at `limit` chars.

    What a one-line report shows of a message that may run over several lines (a traceback, a driver's dump).
    """
    lines = ("" if message is None else str(message)).strip().splitlines()
    return (lines[0].strip() if lines else "")[:limit]


class WanError(Exception):
    """Base class of every error the runtime raises on purpose."""


class ConfigError(WanError, ValueError):
    """An invalid preset, size, frame count or option."""


class ParameterError(ConfigError):
    """A generation parameter with a value it does not allow; `key` is its public name (see wan_runtime.spec)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


class WeightsError(WanError):
    """A checkpoint folder or file that is missing, corrupt or does not match the model."""


class BackendUnavailableError(WanError, RuntimeError):
    """An attention backend or dtype that this machine or install lacks."""


class StageOutOfMemoryError(WanError, RuntimeError):
    """The GPU ran out of memory in a named pipeline stage (or, as InsufficientMemoryError, would have)."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


class InsufficientMemoryError(StageOutOfMemoryError):
    """Refused before allocating: the memory floor of a stage exceeds what the device or host has free.

    The floor (wan_runtime/resources.py) counts only what certainly has to be held, so this is an
    out-of-memory known in advance, not a guess; `side` is "device" or "host".
    """

    def __init__(self, stage: str, message: str, side: str, need_bytes: int, available_bytes: int):
        super().__init__(stage, message)
        self.side = side
        self.need_bytes = need_bytes
        self.available_bytes = available_bytes


class OutputError(WanError, OSError):
    """A result that could not be written (a full disk, a vanished folder); what existed before is kept."""


class NonFiniteError(WanError, RuntimeError):
    """The latents became NaN or infinite during denoising; names the first step and expert where they did."""

    def __init__(self, message: str, step: int, expert: str):
        super().__init__(message)
        self.step = step
        self.expert = expert


class ParallelError(WanError, RuntimeError):
    """A collective between ranks failed: another rank died or stopped answering within the timeout."""
