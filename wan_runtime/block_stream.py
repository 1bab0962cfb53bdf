"""Block streaming: an expert's blocks live in host memory and pass through a ring of device buffers.

    host (pinned)   block 0 | block 1 | block 2 | ... | block L-1      one flat buffer per block
                        |  copy stream, `ahead` blocks in advance
    device ring     slot 0 | slot 1 | ... | slot S-1                 S = ahead + 1 block-sized buffers
                        |  compute stream
    shells          one block module per slot, its tensors are views of the slot's buffer

Blocks are computed in the endless order 0..L-1, 0..L-1, ... (one pass per forward, both CFG
passes and every step of the expert's stage), so the prefetch runs on across forwards: while the
last blocks of one forward compute, the first ones of the next are already being copied.

`BlockRing` is the bookkeeping (which block goes to which slot, when a slot may be overwritten, what
to copy next) in plain Python, unit-tested on the CPU. `BlockStreamer` carries it out: on CUDA with a
side stream and events (a copy waits for the compute that last used its slot; a compute waits for its
copy), on the CPU with the same schedule and synchronous copies, so CPU tests run the same code path.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from wan_runtime.offload import TensorLayout, WeightGroup, bind, module_tensors


# --------------------------------------------------------------------------------------------
# The schedule (pure Python)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Load:
    """Copy `block` into `slot`, for sequence position `position`."""

    position: int
    block: int
    slot: int
    waits_for: int | None  # position whose compute must finish before the slot is overwritten (None: slot unused)


@dataclass(frozen=True)
class Step:
    """Compute sequence position `position` (block `block`, read from `slot`) after issuing `loads`."""

    position: int
    block: int
    slot: int
    loads: tuple[Load, ...]


class BlockRing:
    """Which block is in which slot, when a slot may be reused and what to copy next.

    Position p of the block sequence is block p % L and lives in slot p % S. Before position p is
    computed, loads up to position p + ahead have been issued. The load of position q overwrites
    slot q % S, last used by position q - S: that compute must be finished first. With S = ahead + 1
    that is position p - 1 at most, a block already issued, so copy q proceeds while block p computes.
    """

    def __init__(self, num_blocks: int, ahead: int, num_slots: int | None = None):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        if ahead < 1:
            raise ValueError(f"ahead must be >= 1 (blocks copied in advance of the compute), got {ahead}")
        num_slots = ahead + 1 if num_slots is None else num_slots
        if num_slots < ahead + 1:
            raise ValueError(f"{ahead} blocks ahead need at least {ahead + 1} slots "
                             f"(one computing, {ahead} loading), got {num_slots}")
        self.num_blocks = num_blocks
        self.ahead = ahead
        self.num_slots = num_slots
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next step starts the sequence at block 0 with every slot unused."""
        self._next_compute = 0
        self._next_load = 0
        self._slot_position: list[int | None] = [None] * self.num_slots

    @property
    def position(self) -> int:
        """The sequence position the next `next()` computes."""
        return self._next_compute

    def slot_contents(self) -> list[int | None]:
        """Block held (or being copied in) by each slot; None for a slot never loaded."""
        return [None if p is None else p % self.num_blocks for p in self._slot_position]

    def next(self) -> Step:
        """Advance by one computed block: the loads to issue now, then which block to compute from which slot."""
        p = self._next_compute
        loads = []
        while self._next_load <= p + self.ahead:
            q = self._next_load
            slot = q % self.num_slots
            loads.append(Load(q, q % self.num_blocks, slot, self._slot_position[slot]))
            self._slot_position[slot] = q
            self._next_load += 1
        self._next_compute += 1
        return Step(p, p % self.num_blocks, p % self.num_slots, tuple(loads))


# --------------------------------------------------------------------------------------------
# Tracing (for the overlap evidence; off unless a trace is attached)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    """One copy or compute of one block, in ms from the trace's first event."""

    kind: str  # "copy" | "compute"
    position: int
    block: int
    start_ms: float
    end_ms: float


@dataclass
class StreamTrace:
    """Start/end marks of every copy and compute while attached to a BlockStreamer.

    On CUDA the marks are timing events recorded on the stream doing the work, so the intervals are
    the device's own timeline; on the CPU they are wall-clock times.
    """

    _marks: list[tuple[str, int, int, object, object]] = field(default_factory=list)

    def mark(self, device: torch.device, stream: "torch.cuda.Stream | None") -> object:
        """A time mark now on `stream` (CUDA) or the wall clock (CPU)."""
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record(stream)
            return event
        return time.perf_counter()

    def add(self, kind: str, position: int, block: int, start: object, end: object) -> None:
        """Record one interval between two marks."""
        self._marks.append((kind, position, block, start, end))

    def intervals(self) -> list[Interval]:
        """Every recorded interval (synchronizes the device first)."""
        if not self._marks:
            return []
        first = self._marks[0][3]
        if isinstance(first, torch.cuda.Event):
            torch.cuda.synchronize()
            base = min((m[3] for m in self._marks), key=lambda e: first.elapsed_time(e))

            def ms(mark: object) -> float:
                return base.elapsed_time(mark)
        else:
            base = min(m[3] for m in self._marks)

            def ms(mark: object) -> float:
                return (mark - base) * 1e3
        return [Interval(kind, p, b, ms(s), ms(e)) for kind, p, b, s, e in self._marks]

    def summary(self) -> dict[str, float]:
        """Total copy and compute time, and how much of the copy time ran while a block computed."""
        spans = self.intervals()
        copies = [i for i in spans if i.kind == "copy"]
        computes = sorted((i.start_ms, i.end_ms) for i in spans if i.kind == "compute")
        overlapped = sum(_overlap(c.start_ms, c.end_ms, computes) for c in copies)
        copy_ms = sum(c.end_ms - c.start_ms for c in copies)
        return {
            "copies": len(copies),
            "computes": len(computes),
            "copy_ms": copy_ms,
            "compute_ms": sum(e - s for s, e in computes),
            "copy_overlapped_ms": overlapped,
            "copy_overlapped_fraction": overlapped / copy_ms if copy_ms > 0 else 0.0,
            "span_ms": max(i.end_ms for i in spans) - min(i.start_ms for i in spans) if spans else 0.0,
        }

    def clear(self) -> None:
        """Drop the recorded marks."""
        self._marks.clear()


def _overlap(start: float, end: float, spans: Sequence[tuple[float, float]]) -> float:
    """Length of [start, end] covered by the (non-overlapping, sorted) spans."""
    return sum(max(0.0, min(end, e) - max(start, s)) for s, e in spans)


# --------------------------------------------------------------------------------------------
# The streamer
# --------------------------------------------------------------------------------------------

@dataclass
class _Slot:
    """One ring buffer on the device, the shell block reading from it, and its ordering events."""

    buffer: torch.Tensor
    shell: nn.Module
    loaded: "torch.cuda.Event | None"  # recorded on the copy stream after the block landed
    computed: "torch.cuda.Event | None"  # recorded on the compute stream after the block ran


class BlockStreamer:
    """Runs a stack of blocks held in host memory through a ring of device buffers.

    `groups[i]` is block i's host copy (all blocks share one layout); `template` is a block of the
    same structure on the meta device, cloned into one shell per slot. `start(device)` allocates the
    ring, `stop()` waits for copies in flight and frees it. `run(x, args, call)` computes every block
    once, in order, as `call(shell, x, *args)`.
    """

    def __init__(self, groups: Sequence[WeightGroup], template: nn.Module, ahead: int):
        if not groups:
            raise ValueError("a streamer needs at least one block")
        signature = groups[0].layout.signature()
        if any(g.layout.signature() != signature for g in groups):
            raise ValueError("streamed blocks must share one tensor layout (same names, shapes and dtypes)")
        self.groups = list(groups)
        self.layout: TensorLayout = groups[0].layout
        if {name for name, _ in module_tensors(template)} != {e.name for e in self.layout.entries}:
            raise ValueError("the shell template's tensors differ from the streamed blocks' "
                             "(built for another config or precision?)")
        self.template = template
        self.ring = BlockRing(len(groups), ahead)
        self.trace: StreamTrace | None = None
        self.device: torch.device | None = None
        self._slots: list[_Slot] = []
        self._copy_stream: torch.cuda.Stream | None = None

    @property
    def block_nbytes(self) -> int:
        """Bytes of one block (and of one ring slot)."""
        return self.layout.nbytes

    @property
    def active(self) -> bool:
        """True between start() and stop()."""
        return self.device is not None

    def start(self, device: torch.device) -> None:
        """Allocate the ring on `device` (S block-sized buffers and their shells); the sequence restarts at block 0."""
        if self.device is not None:
            return
        cuda = device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(device) if cuda else None
        slots = []
        for _ in range(self.ring.num_slots):
            buffer = torch.empty(self.layout.nbytes, dtype=torch.uint8, device=device)
            shell = copy.deepcopy(self.template)
            bind(shell, self.layout.views(buffer))
            slots.append(_Slot(buffer, shell, torch.cuda.Event() if cuda else None,
                               torch.cuda.Event() if cuda else None))
        self._slots = slots
        if cuda:
            # The new buffers may reuse memory that kernels queued on the compute stream still read:
            # the copy stream starts after everything queued so far.
            self._copy_stream.wait_stream(torch.cuda.current_stream(device))
        self.ring.reset()
        self.device = device

    def stop(self) -> None:
        """Wait for copies in flight, then free the ring."""
        if self.device is None:
            return
        self._drain()
        self._slots = []
        self._copy_stream = None
        self.device = None
        self.ring.reset()

    def _drain(self) -> None:
        if self._copy_stream is not None:
            self._copy_stream.synchronize()

    def run(self, x: torch.Tensor, args: tuple = (), call: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
        """Compute every block once, in order, on `x` (one forward's pass over the blocks).

        Each block is computed as `call(shell, x, *args)`; the default calls the shell itself.
        """
        call = call or _call_module
        if self.device is None:
            raise RuntimeError("BlockStreamer.run before start(): activate the expert first")
        if self.ring.position % self.ring.num_blocks:
            raise RuntimeError("internal error: the block ring is not at the start of a pass")
        try:
            for _ in range(self.ring.num_blocks):
                step = self.ring.next()
                for load in step.loads:
                    self._load(load)
                x = self._compute(step, x, args, call)
        except BaseException:
            # A pass cut short (e.g. out of memory) leaves the ring mid-sequence: let the queued work
            # finish (the next loads will not wait for it), then start the sequence over.
            self._drain()
            if self._copy_stream is not None:
                torch.cuda.current_stream(self.device).synchronize()
            self.ring.reset()
            raise
        return x

    def call_first(self, x: torch.Tensor, args: tuple, call: Callable[..., torch.Tensor]) -> None:
        """Copy block 0 into slot 0 and compute it once, outside the ring's sequence (a warm-up; no result).

        The ring starts its next pass from scratch, and its first copy waits for this compute.
        """
        if self.device is None:
            raise RuntimeError("BlockStreamer.call_first before start(): activate the expert first")
        self._drain()
        slot = self._slots[0]
        slot.buffer.copy_(self.groups[0].host)
        call(slot.shell, x, *args)
        if self._copy_stream is not None:
            self._copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        self.ring.reset()

    def _load(self, load: Load) -> None:
        slot = self._slots[load.slot]
        source = self.groups[load.block].host
        stream = self._copy_stream
        if stream is None:  # CPU: the same schedule with synchronous copies
            start = self.trace.mark(self.device, None) if self.trace else None
            slot.buffer.copy_(source)
            if self.trace:
                self.trace.add("copy", load.position, load.block, start, self.trace.mark(self.device, None))
            return
        with torch.cuda.stream(stream):
            if load.waits_for is not None:
                stream.wait_event(slot.computed)  # the block last read from this slot has been computed
            start = self.trace.mark(self.device, stream) if self.trace else None
            slot.buffer.copy_(source, non_blocking=True)
            slot.loaded.record(stream)
            if self.trace:
                self.trace.add("copy", load.position, load.block, start, self.trace.mark(self.device, stream))

    def _compute(self, step: Step, x: torch.Tensor, args: tuple, call: Callable[..., torch.Tensor]) -> torch.Tensor:
        slot = self._slots[step.slot]
        stream = torch.cuda.current_stream(self.device) if self._copy_stream is not None else None
        if stream is not None:
            stream.wait_event(slot.loaded)
        start = self.trace.mark(self.device, stream) if self.trace else None
        x = call(slot.shell, x, *args)
        if stream is not None:
            slot.computed.record(stream)
        if self.trace:
            self.trace.add("compute", step.position, step.block, start, self.trace.mark(self.device, stream))
        return x


def _call_module(module: nn.Module, x: torch.Tensor, *args) -> torch.Tensor:
    return module(x, *args)


__all__ = ["Load", "Step", "BlockRing", "Interval", "StreamTrace", "BlockStreamer"]
