"""Weights parked in host memory: exact-size pinned buffers, flat tensor layouts, weight groups.

A *weight group* is a set of tensors of one module (one DiT block, or everything of an expert but
its blocks) packed into one flat host buffer, each tensor at an aligned offset. The module's tensors
point either at their views in the host buffer (parked) or at views of one flat device buffer (on the
device); moving in is one copy per group, parking is free because inference never changes a weight.

Pinned host memory is made by page-locking an ordinary allocation of the exact size with
`cudaHostRegister`. torch's own `pin_memory()` goes through a caching allocator that rounds every
request up to a power of two: a 704 MB A14B block would take 1 GiB, an expert ~1.4x its size.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from wan_runtime.errors import BackendUnavailableError

ALIGN_BYTES = 256  # offset alignment of each tensor in a flat buffer (cuBLAS and vector loads want >= 16)


# --------------------------------------------------------------------------------------------
# Host buffers
# --------------------------------------------------------------------------------------------

def _unregister(pointer: int) -> None:
    try:
        torch.cuda.cudart().cudaHostUnregister(pointer)
    except Exception:  # at interpreter exit the CUDA runtime may already be gone; the OS frees the pages
        pass


def host_buffer(nbytes: int, pinned: bool) -> torch.Tensor:
    """A uint8 host tensor of exactly `nbytes`; page-locked (pinned) when `pinned` and CUDA is available."""
    buffer = torch.empty(nbytes, dtype=torch.uint8)
    if not pinned or nbytes == 0:
        return buffer
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "pinned host memory needs CUDA, and torch sees no CUDA device; use host_memory='pageable' "
            "or run on a CUDA device"
        )
    status = int(torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), nbytes, 0))
    if status != 0:
        raise BackendUnavailableError(
            f"could not page-lock {nbytes / 2**30:.2f} GiB of host memory (cudaHostRegister error {status}); "
            "free host memory, or use host_memory='pageable' (slower expert switches, no streaming)"
        )
    # Unregister before the allocation is freed: a later buffer at a reused address must register anew.
    weakref.finalize(buffer, _unregister, buffer.data_ptr())
    return buffer


# --------------------------------------------------------------------------------------------
# Flat layouts
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorEntry:
    """One tensor's place in a flat byte buffer."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    offset: int  # bytes, a multiple of ALIGN_BYTES
    nbytes: int


@dataclass(frozen=True)
class TensorLayout:
    """Where each tensor of a group sits in one flat uint8 buffer."""

    entries: tuple[TensorEntry, ...]
    nbytes: int

    @classmethod
    def of(cls, tensors: Iterable[tuple[str, torch.Tensor]]) -> "TensorLayout":
        """Lay the tensors out in the given order, each at the next aligned offset."""
        entries, offset = [], 0
        for name, tensor in tensors:
            nbytes = tensor.numel() * tensor.element_size()
            entries.append(TensorEntry(name, tuple(tensor.shape), tensor.dtype, offset, nbytes))
            offset += math.ceil(nbytes / ALIGN_BYTES) * ALIGN_BYTES
        return cls(tuple(entries), offset)

    def views(self, buffer: torch.Tensor) -> dict[str, torch.Tensor]:
        """Name -> a typed view of `buffer` (uint8 [nbytes], any device) for every tensor."""
        if buffer.dtype != torch.uint8 or buffer.numel() != self.nbytes:
            raise ValueError(f"a layout of {self.nbytes} bytes needs a uint8 buffer of that size, "
                             f"got {buffer.dtype} [{buffer.numel()}]")
        return {
            e.name: buffer[e.offset:e.offset + e.nbytes].view(e.dtype).view(e.shape) for e in self.entries
        }

    def signature(self) -> tuple:
        """What two layouts must share for one's bytes to be read through the other's views."""
        return tuple((e.name, e.shape, e.dtype, e.offset) for e in self.entries) + (self.nbytes,)


def module_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer of `module` (tied ones once), by name."""
    return list(module.named_parameters()) + list(module.named_buffers())


def bind(module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Point the named parameters/buffers of `module` at `tensors` (parameters keep their identity)."""
    for name, tensor in tensors.items():
        owner_path, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        if leaf in owner._parameters:
            param = owner._parameters[leaf]
            if param.is_meta:  # a meta tensor cannot take a real one's data: give the slot a new Parameter
                owner._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
            else:
                param.data = tensor
        elif leaf in owner._buffers:
            owner._buffers[leaf] = tensor
        else:
            raise KeyError(f"{name!r} is neither a parameter nor a buffer of {type(module).__name__}")


def tensor_bytes(module: nn.Module) -> int:
    """Bytes held by the parameters and buffers of `module`."""
    return sum(t.numel() * t.element_size() for _, t in module_tensors(module))


# --------------------------------------------------------------------------------------------
# Weight groups
# --------------------------------------------------------------------------------------------

class WeightGroup:
    """Tensors of one module with a host copy in one flat buffer; the module points at the host or a device copy."""

    def __init__(self, module: nn.Module, pinned: bool):
        """Copy every tensor of `module` (wherever it is) into a new host buffer and park the module there."""
        self.module = module
        self.pinned = pinned
        self.layout = TensorLayout.of(module_tensors(module))
        self.host = host_buffer(self.layout.nbytes, pinned)
        self._host_views = self.layout.views(self.host)
        for name, tensor in module_tensors(module):
            self._host_views[name].copy_(tensor)
        bind(module, self._host_views)  # the device tensors, if any, are freed here
        self.device: torch.device | None = None

    @property
    def nbytes(self) -> int:
        """Bytes of the flat buffer (tensors plus alignment padding)."""
        return self.layout.nbytes

    def to_device(self, device: torch.device) -> None:
        """Copy the group into a new flat buffer on `device` (asynchronous from pinned memory) and point the module at it."""
        if self.device == device:
            return
        buffer = torch.empty(self.layout.nbytes, dtype=torch.uint8, device=device)
        buffer.copy_(self.host, non_blocking=self.pinned)
        bind(self.module, self.layout.views(buffer))
        self.device = device

    def to_host(self) -> None:
        """Point the module back at the host copy; the device buffer is released (nothing is copied)."""
        if self.device is None:
            return
        bind(self.module, self._host_views)
        self.device = None


__all__ = [
    "ALIGN_BYTES", "host_buffer", "TensorEntry", "TensorLayout", "module_tensors", "bind", "tensor_bytes",
    "WeightGroup",
]
