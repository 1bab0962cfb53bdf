"""Attention backends: objects registered once, resolved to a plain function when a model is placed.

A backend is one implementation of softmax attention over [B, L, H, D] tensors: one of torch's
scaled-dot-product kernels (restricted with `sdpa_kernel`, so torch cannot quietly pick another)
or an optional package (flash-attn 2/3, SageAttention). `resolve_attention(name, device)` checks
that the backend can run there, imports what it needs once, and returns an `AttentionFn`; the
model calls that function on every forward, with no lookup or import per call. Asking for a
backend this machine cannot run raises `BackendUnavailableError`; nothing falls back silently.

Self- and cross-attention are resolved separately (`AttentionOps`), so a lossy kernel can be
limited to the long self-attention while the short cross-attention stays exact.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Callable, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from wan_runtime.errors import BackendUnavailableError
from wan_runtime.load_options import LoadOptions


class AttentionFn(Protocol):
    """Softmax attention of q [B, Lq, H, D] over k, v [B, Lk, H, D] -> [B, Lq, H, D]."""

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor: ...


class AttentionOps(NamedTuple):
    """The resolved attention functions one DiT forward uses."""

    self_attn: AttentionFn
    cross_attn: AttentionFn


# --------------------------------------------------------------------------------------------
# Backends
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SdpaBackend:
    """torch's scaled_dot_product_attention, restricted to one kernel (or torch's choice for 'auto')."""

    name: str
    kernel: SDPBackend | None  # None: torch picks among all kernels
    cuda_only: bool

    def unavailable_reason(self, device: torch.device) -> str | None:
        """Why this backend cannot run on `device`, or None."""
        if not self.cuda_only:
            return None
        if device.type != "cuda":
            return f"it needs a CUDA device, and this one is {device.type!r}"
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        if self.kernel == SDPBackend.CUDNN_ATTENTION and not torch.backends.cudnn.is_available():
            return "this torch build has no cuDNN"
        if self.kernel == SDPBackend.FLASH_ATTENTION and not torch.backends.cuda.is_flash_attention_available():
            return "this torch build has no flash-attention kernel"
        return None

    def bind(self, device: torch.device) -> AttentionFn:
        """The attention function (`key_padding_mask`, a bool [B, Lk] with True = attend, is accepted)."""
        kernel = self.kernel

        def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
            # SDPA wants [B, H, L, D]; transposed views keep the last dim contiguous, as the kernels need.
            qt, kt, vt = (u.transpose(1, 2) for u in (q, k, v))
            mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :]
            if kernel is None:
                out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
            else:
                with sdpa_kernel([kernel]):
                    out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
            return out.transpose(1, 2)

        return sdpa


@dataclass(frozen=True)
class PackageBackend:
    """An attention kernel from an optional package; every one takes and returns [B, L, H, D]."""

    name: str
    module: str
    how_to_get: str
    call: Callable[[ModuleType, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

    def _import(self) -> ModuleType | None:
        try:
            return importlib.import_module(self.module)
        except Exception:  # a broken build (missing CUDA symbols) is as unusable as a missing one
            return None

    def unavailable_reason(self, device: torch.device) -> str | None:
        """Why this backend cannot run on `device`, or None (a missing package is named first)."""
        if self._import() is None:
            return self.how_to_get
        if device.type != "cuda":
            return f"it needs a CUDA device, and this one is {device.type!r}"
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        return None

    def bind(self, device: torch.device) -> AttentionFn:
        """The attention function; the package is imported here, once."""
        module = self._import()
        name, call = self.name, self.call

        def packaged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if q.dtype not in (torch.float16, torch.bfloat16):
                raise BackendUnavailableError(
                    f"attention backend {name!r} needs float16 or bfloat16 inputs, got {q.dtype}; "
                    "run the model in bf16 or pick a torch SDPA backend"
                )
            return call(module, q, k, v)

        return packaged


def _flash_attn(module: ModuleType, q, k, v) -> torch.Tensor:
    out = module.flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out  # some FlashAttention-3 builds add softmax_lse


Backend = SdpaBackend | PackageBackend

# The registry: every backend by name, in the order they are listed to users. The names are the
# load option's vocabulary (load_options.AttentionBackend); a test keeps the two equal.
_REGISTERED: tuple[Backend, ...] = (
    SdpaBackend("auto", None, cuda_only=False),
    SdpaBackend("cudnn", SDPBackend.CUDNN_ATTENTION, cuda_only=True),
    SdpaBackend("flash", SDPBackend.FLASH_ATTENTION, cuda_only=True),
    SdpaBackend("efficient", SDPBackend.EFFICIENT_ATTENTION, cuda_only=True),
    SdpaBackend("math", SDPBackend.MATH, cuda_only=False),
    PackageBackend(
        "flash_attn2", "flash_attn",
        "flash_attn is not installed: it has no wheels on PyPI; build it from source "
        "(pip install flash-attn --no-build-isolation)",
        _flash_attn,
    ),
    PackageBackend(
        "flash_attn3", "flash_attn_interface",
        "flash_attn_interface (FlashAttention-3) is not installed: it has no wheels on PyPI; "
        "build it from source (flash-attention/hopper, `python setup.py install`)",
        _flash_attn,
    ),
    PackageBackend(
        "sage", "sageattention", "sageattention is not installed: pip install sageattention",
        lambda module, q, k, v: module.sageattn(q, k, v, tensor_layout="NHD", is_causal=False),
    ),
)
REGISTRY: MappingProxyType[str, Backend] = MappingProxyType({b.name: b for b in _REGISTERED})
BACKENDS: tuple[str, ...] = tuple(REGISTRY)


# --------------------------------------------------------------------------------------------
# Looking backends up
# --------------------------------------------------------------------------------------------

def check_backend_name(name: str) -> None:
    """Raise ConfigError for a backend name that does not exist, suggesting the closest one."""
    LoadOptions(attention=name)  # the parameter spec's own check and error text


def available_backends(device: torch.device | str) -> list[str]:
    """Names of the attention backends this machine can run on `device`."""
    device = torch.device(device)
    return [name for name, backend in REGISTRY.items() if backend.unavailable_reason(device) is None]


def check_backend(name: str, device: torch.device | str) -> None:
    """Raise a clear error if backend `name` is unknown or cannot run on `device`."""
    check_backend_name(name)
    device = torch.device(device)
    reason = REGISTRY[name].unavailable_reason(device)
    if reason is not None:
        raise BackendUnavailableError(
            f"attention backend {name!r} is not available: {reason}; "
            f"pick one of {available_backends(device)} (available on {device.type})"
        )


def resolve_attention(name: str, device: torch.device | str) -> AttentionFn:
    """The attention function of backend `name` on `device` (raises when it cannot run there)."""
    check_backend(name, device)
    return REGISTRY[name].bind(torch.device(device))


def resolve_ops(self_attn: str, cross_attn: str, device: torch.device | str) -> AttentionOps:
    """Self- and cross-attention functions for one device."""
    return AttentionOps(resolve_attention(self_attn, device), resolve_attention(cross_attn, device))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto",
              key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One-off attention through backend `backend` on q's device (resolves per call: not for hot loops).

    `key_padding_mask` is a bool [B, Lk], True for keys to attend to (torch SDPA backends only).
    """
    fn = resolve_attention(backend, q.device)
    if key_padding_mask is None:
        return fn(q, k, v)
    if not isinstance(REGISTRY[backend], SdpaBackend):
        raise BackendUnavailableError(
            f"attention backend {backend!r} does not take a key padding mask here; "
            "use a torch SDPA backend ('auto', 'cudnn', 'efficient', 'math') for masked attention"
        )
    return fn(q, k, v, key_padding_mask=key_padding_mask)


__all__ = ["AttentionFn", "AttentionOps", "SdpaBackend", "PackageBackend", "REGISTRY", "BACKENDS",
           "attention", "available_backends", "check_backend", "check_backend_name", "resolve_attention",
           "resolve_ops"]
