"""Exceptions raised by the runtime; each message names the problem and the fix."""

from __future__ import annotations


class WanError(Exception):
    """Base class of every error the runtime raises on purpose."""


class ConfigError(WanError, ValueError):
    """An invalid preset, size, frame count or option."""


class WeightsError(WanError):
    """A checkpoint folder or file that is missing, corrupt or does not match the model."""


class BackendUnavailableError(WanError, RuntimeError):
    """An attention backend or dtype that this machine or install lacks."""


class StageOutOfMemoryError(WanError, RuntimeError):
    """The GPU ran out of memory in a named pipeline stage."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


class ParallelError(WanError, RuntimeError):
    """A collective between ranks failed: another rank died or stopped answering within the timeout."""
