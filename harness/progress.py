"""The live progress line: case i/N, the case, phase, stage and step, elapsed time and an estimate of what remains."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def format_duration(seconds: float | None) -> str:
    """H:MM:SS or M:SS; '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Renders progress events; rewrites one line on a terminal, prints case starts/ends otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        self.total = total
        self.stream = stream or sys.stderr
        self.clock = clock
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = clock()
        self.done = 0
        self.case_id = ""
        self.phase = ""
        self.stage = ""
        self.step = ""

    def eta_s(self) -> float | None:
        """Remaining time, from the mean time of the cases finished so far in this run."""
        if not self.done:
            return None
        return (self.clock() - self.start) / self.done * (self.total - self.done)

    def line(self) -> str:
        """The current progress line."""
        parts = [f"[{min(self.done + 1, self.total)}/{self.total}] {self.case_id}"]
        if self.phase:
            parts.append(self.phase)
        if self.stage:
            parts.append(self.stage + (f" step {self.step}" if self.step else ""))
        parts.append(f"elapsed {format_duration(self.clock() - self.start)}")
        parts.append(f"ETA {format_duration(self.eta_s())}")
        return " | ".join(parts)

    def _render(self, force_line: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.line()[:200])
            self.stream.flush()
        elif force_line:
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def case_started(self, case_id: str) -> None:
        """A worker began a case."""
        self.case_id, self.phase, self.stage, self.step = case_id, "", "", ""
        self._render(force_line=True)

    def event(self, event: dict) -> None:
        """A phase/stage/step event from the worker."""
        kind = event.get("event")
        if kind == "phase":
            self.phase = f"{event['phase']} {event['index']}/{event['of']}"
        elif kind == "stage":
            self.stage, self.step = event["stage"], ""
        elif kind == "step":
            self.step = f"{event['index'] + 1}/{event['total']}"
        else:
            return
        self._render()

    def case_finished(self, case_id: str, status: str, message: str = "") -> None:
        """A case ended (ok, oom or error)."""
        self.done += 1
        text = f"[{self.done}/{self.total}] {case_id}: {status}" + (f" ({message[:160]})" if message else "")
        text += f" | elapsed {format_duration(self.clock() - self.start)} | ETA {format_duration(self.eta_s())}"
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A message on its own line."""
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        self.stream.flush()
