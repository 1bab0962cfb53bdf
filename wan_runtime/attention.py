"""Attention backends: objects registered once, resolved to a plain function when a model is placed.

A backend is one implementation of softmax attention over [B, L, H, D] tensors: one of torch's
scaled-dot-product kernels (restricted with `sdpa_kernel`, so torch cannot quietly pick another)
or an optional package (flash-attn 2/3/4, SageAttention). Package kernels are called through one
torch custom op (`wan_runtime::package_attention`), so `torch.compile` treats them as opaque calls
instead of tracing into their Python (compiled blocks keep one graph). `resolve_attention(name, device)` checks
that the backend can run there, imports what it needs once, and returns an `AttentionFn`; the
model calls that function on every forward, with no lookup or import per call. Asking for a
backend this machine cannot run raises `BackendUnavailableError`; nothing falls back silently.

Self- and cross-attention are resolved separately (`AttentionOps`), so a lossy kernel can be
limited to the long self-attention while the short cross-attention stays exact.

`cudnn_fp8` (cuDNN's fused fp8 attention through cudnn-frontend, wan_runtime/fp8_attention.py) is a
package backend too. The same custom op calls it, so a compiled block stays one graph around it; its
quantization runs inside the op (inductor cannot fuse those few memory passes over q, k and v with the
RoPE before them, which keeps the op simple and the same compiled or eager; bench/speed.py times the
whole call). Resolving it builds a small fp8 graph once per device, so a cuDNN or GPU that cannot run
it is refused at load with cuDNN's reason, not at the first step. `fa3_fp8` (FlashAttention-3's fp8
kernel, a library built by bench/fa3_build.sh, wan_runtime/fa3_attention.py) is its own backend: its
quantization is plain torch that a compiled block fuses, and only the kernel is an opaque custom op.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Callable, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from wan_runtime.errors import BackendUnavailableError
from wan_runtime.fa3_attention import Fa3Fp8Backend
from wan_runtime.fp8_attention import HOW_TO_GET as CUDNN_FRONTEND_HOW_TO_GET
from wan_runtime.fp8_attention import MIN_CAPABILITY as CUDNN_FP8_CAPABILITY
from wan_runtime.fp8_attention import CudnnFp8Attention
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
    min_capability: tuple[int, int] = (8, 0)  # the oldest GPU architecture the package's kernels build for
    # A last check once the package, the device and its capability pass (the package's own verdict), or None.
    check: Callable[[ModuleType, torch.device], str | None] | None = None
    head_dims: tuple[int, ...] | None = None  # the head dims the kernels take (None: whatever the package checks)
    # A function the module must hold: `flash_attn` imports as an empty namespace where only
    # FlashAttention-4 (flash_attn.cute) is installed, which is not FlashAttention-2.
    entry_point: str | None = None

    def _import(self) -> ModuleType | None:
        try:
            module = importlib.import_module(self.module)
        except Exception:  # a broken build (missing CUDA symbols) is as unusable as a missing one
            return None
        return None if self.entry_point and not hasattr(module, self.entry_point) else module

    def unavailable_reason(self, device: torch.device) -> str | None:
        """Why this backend cannot run on `device`, or None (a missing package is named first)."""
        if self._import() is None:
            return self.how_to_get
        if device.type != "cuda":
            return f"it needs a CUDA device, and this one is {device.type!r}"
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        capability = torch.cuda.get_device_capability(device)
        if capability < self.min_capability:
            return (f"it needs a GPU of compute capability {self.min_capability[0]}.{self.min_capability[1]} "
                    f"or newer, and this one is {capability[0]}.{capability[1]}")
        return None if self.check is None else self.check(self._import(), device)

    def bind(self, device: torch.device) -> AttentionFn:
        """The attention function; the package is imported here, once, and found in sys.modules after."""
        if self._import() is None:
            raise BackendUnavailableError(f"attention backend {self.name!r} is not available: {self.how_to_get}")
        name, head_dims = self.name, self.head_dims

        def packaged(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            if q.dtype not in (torch.float16, torch.bfloat16):
                raise BackendUnavailableError(
                    f"attention backend {name!r} needs float16 or bfloat16 inputs, got {q.dtype}; "
                    "run the model in bf16 or pick a torch SDPA backend"
                )
            if head_dims is not None and q.shape[-1] not in head_dims:
                raise BackendUnavailableError(
                    f"attention backend {name!r} takes head dims {list(head_dims)}, and this model's is "
                    f"{q.shape[-1]}; pick a torch SDPA backend (cudnn, auto)"
                )
            return package_attention(name, q, k, v)

        return packaged


@torch.library.custom_op("wan_runtime::package_attention", mutates_args=())
def package_attention(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention through package backend `backend` (already imported by `bind`), [B, L, H, D] -> [B, Lq, H, Dv]."""
    entry = REGISTRY[backend]
    # contiguous: the layout the fake below promises a compiled graph (a no-op for these kernels' outputs)
    return entry.call(sys.modules[entry.module], q, k, v).contiguous()


@package_attention.register_fake
def _package_attention_shape(backend: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return q.new_empty(*q.shape[:-1], v.shape[-1])


def _flash_attn(module: ModuleType, q, k, v) -> torch.Tensor:
    out = module.flash_attn_func(q, k, v)
    return out[0] if isinstance(out, tuple) else out  # some FlashAttention-3/4 builds add softmax_lse


def _sage_attn(module: ModuleType, q, k, v) -> torch.Tensor:
    # SageAttention's own smoothing (smooth_k=True) subtracts the key mean in place, which would
    # change the caller's k; the same smoothing out of place leaves the inputs as they were.
    k = k - k.mean(dim=1, keepdim=True)
    return module.sageattn(q, k, v, tensor_layout="NHD", is_causal=False, smooth_k=False)


# cuDNN fp8 attention: its handles and built graphs live in this one object (one per process).
_CUDNN_FP8 = CudnnFp8Attention()

Backend = SdpaBackend | PackageBackend | Fa3Fp8Backend

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
        "flash_attn (FlashAttention-2) is not installed: it has no wheels on PyPI; build it from source "
        "(pip install flash-attn --no-build-isolation); a flash_attn holding only flash_attn.cute is "
        "FlashAttention-4: attention 'flash_attn4'",
        _flash_attn, entry_point="flash_attn_func",
    ),
    PackageBackend(
        "flash_attn3", "flash_attn_interface",
        "flash_attn_interface (FlashAttention-3) is not installed: it has no wheels on PyPI; "
        "build it from source (flash-attention/hopper, `python setup.py install`)",
        _flash_attn, min_capability=(9, 0),
    ),
    PackageBackend(
        "flash_attn4", "flash_attn.cute.interface",
        "flash_attn.cute (FlashAttention-4) is not installed: pip install 'flash-attn-4[cu13]' "
        "(its CUTLASS DSL libraries are ~92 MB; bench/fa4_wheels.sh carries them to the GPU machine)",
        _flash_attn, min_capability=(9, 0),
    ),
    PackageBackend(
        "sage", "sageattention", "sageattention is not installed: pip install sageattention",
        _sage_attn, head_dims=(64, 96, 128),
    ),
    PackageBackend(
        "cudnn_fp8", "cudnn", CUDNN_FRONTEND_HOW_TO_GET, _CUDNN_FP8,
        min_capability=CUDNN_FP8_CAPABILITY, check=_CUDNN_FP8.unavailable_reason,
    ),
    Fa3Fp8Backend(),  # FlashAttention-3's fp8 kernel, a library bench/fa3_build.sh builds (WANBENCH_FA3_LIB)
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


__all__ = ["AttentionFn", "AttentionOps", "SdpaBackend", "PackageBackend", "REGISTRY", "BACKENDS", "package_attention",
           "attention", "available_backends", "check_backend", "check_backend_name", "resolve_attention",
           "resolve_ops"]
