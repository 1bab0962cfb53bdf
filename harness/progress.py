"""The live progress view: case i/N, the case, phase, stage and step, elapsed time and an estimate of what remains.

One worker at a time: one line. Several workers at once (`--gpus`, Ray): a header line with the cases
done, elapsed and ETA, and one line per running worker (where it runs, its case, phase, stage and
step). On a terminal the view is redrawn in place; otherwise each case's start and end is printed,
prefixed with the worker's place. The ETA is the run's throughput so far (elapsed over cases done)
times the cases left, so it counts the workers running side by side.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Callable, TextIO


def format_duration(seconds: float | None) -> str:
    """H:MM:SS or M:SS; '?' when unknown."""
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class WorkerView:
    """What one worker is doing now."""

    case_id: str = ""
    phase: str = ""
    stage: str = ""
    step: str = ""

    def parts(self) -> list[str]:
        """Its case, phase, and stage with step, as the line shows them."""
        parts = [self.case_id]
        if self.phase:
            parts.append(self.phase)
        if self.stage:
            parts.append(self.stage + (f" step {self.step}" if self.step else ""))
        return parts


class Progress:
    """Renders progress events of `workers` workers running at once (see the module docstring)."""

    def __init__(self, total: int, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 workers: int = 1):
        self.total = total
        self.stream = stream or sys.stderr
        self.clock = clock
        self.parallel = workers > 1
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = clock()
        self.done = 0
        self.views: dict[str, WorkerView] = {}
        self._drawn = 0  # lines of the view drawn on the terminal, to redraw them in place

    def eta_s(self) -> float | None:
        """Remaining time, from the run's throughput so far (elapsed time per finished case)."""
        if not self.done:
            return None
        return (self.clock() - self.start) / self.done * (self.total - self.done)

    def _times(self) -> str:
        return f"elapsed {format_duration(self.clock() - self.start)} | ETA {format_duration(self.eta_s())}"

    def line(self, worker: str = "") -> str:
        """The progress line of one worker (the only line when one worker runs at a time)."""
        view = self.views.get(worker, WorkerView())
        return " | ".join([f"[{min(self.done + 1, self.total)}/{self.total}] {view.case_id}", *view.parts()[1:],
                           self._times()])

    def lines(self) -> list[str]:
        """The view: one line, or a header and one line per running worker."""
        if not self.parallel:
            return [self.line(next(iter(self.views), ""))]
        header = f"[{self.done}/{self.total} done, {len(self.views)} running] {self._times()}"
        return [header] + [f"  {worker}: " + " | ".join(view.parts()) for worker, view in sorted(self.views.items())]

    # ------------------------------------------------------------ drawing
    def _clear(self) -> None:
        if self.tty and self._drawn:
            up = f"\033[{self._drawn - 1}A" if self._drawn > 1 else ""
            self.stream.write("\r" + up + "\033[J")
            self._drawn = 0

    def _draw(self) -> None:
        if not self.tty:
            return
        self._clear()
        lines = [text[:200] for text in self.lines()]
        self.stream.write("\n".join(lines))
        self.stream.flush()
        self._drawn = len(lines)

    def _print(self, text: str) -> None:
        """A line above the view (the view is redrawn below it)."""
        self._clear()
        self.stream.write(text + "\n")
        if self.views:
            self._draw()
        self.stream.flush()

    # ------------------------------------------------------------ events
    def case_started(self, case_id: str, worker: str = "") -> None:
        """A worker began a case."""
        self.views[worker] = WorkerView(case_id)
        if self.tty:
            self._draw()
        elif self.parallel:
            self._print(f"{worker}: {case_id} started")
        else:
            self._print(self.line(worker))

    def event(self, event: dict, worker: str = "") -> None:
        """A phase/stage/step event from a worker."""
        view = self.views.setdefault(worker, WorkerView())
        kind = event.get("event")
        if kind == "phase":
            view.phase = f"{event['phase']} {event['index']}/{event['of']}"
        elif kind == "stage":
            view.stage, view.step = event["stage"], ""
        elif kind == "step":
            view.step = f"{event['index'] + 1}/{event['total']}"
        else:
            return
        self._draw()

    def case_finished(self, case_id: str, status: str, message: str = "", worker: str = "") -> None:
        """A case ended (ok, oom or error)."""
        self.done += 1
        self.views.pop(worker, None)
        where = f"{worker}: " if self.parallel and worker else ""
        text = f"{where}[{self.done}/{self.total}] {case_id}: {status}" + (f" ({message[:160]})" if message else "")
        self._print(f"{text} | {self._times()}")

    def worker_ended(self, worker: str) -> None:
        """A worker exited: its line goes."""
        if self.parallel and self.views.pop(worker, None) is not None:
            self._draw()

    def note(self, text: str) -> None:
        """A message on its own line."""
        self._print(text)
