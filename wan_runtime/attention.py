"""One attention entry point for the whole runtime, with an explicit backend switch.

Every attention in the DiT goes through `attention(q, k, v, backend)`. A backend is either one of
torch's scaled-dot-product kernels (restricted with `sdpa_kernel`, so torch cannot quietly pick
another one) or an optional package (flash-attn 2/3, SageAttention). Asking for a backend this
machine cannot run raises `BackendUnavailableError`; nothing ever falls back silently.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import get_args

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from wan_runtime.errors import BackendUnavailableError
from wan_runtime.load_options import AttentionBackend, LoadOptions

# torch SDPA backends by name; "auto" lets torch choose among all of them.
_SDPA_BACKENDS: dict[str, SDPBackend] = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}

# Optional packages: backend name -> (module to import, how to get it when it is missing).
_PACKAGE_BACKENDS: dict[str, tuple[str, str]] = {
    "flash_attn2": (
        "flash_attn",
        "flash_attn is not installed: it has no wheels on PyPI; build it from source "
        "(pip install flash-attn --no-build-isolation)",
    ),
    "flash_attn3": (
        "flash_attn_interface",
        "flash_attn_interface (FlashAttention-3) is not installed: it has no wheels on PyPI; "
        "build it from source (flash-attention/hopper, `python setup.py install`)",
    ),
    "sage": (
        "sageattention",
        "sageattention is not installed: pip install sageattention",
    ),
}

# The names are the load option's vocabulary; every one of them is implemented above (a test checks it).
BACKENDS: tuple[str, ...] = get_args(AttentionBackend)


def _import_package(module_name: str) -> ModuleType | None:
    """Import an optional attention package; None when it is missing or broken."""
    try:
        return importlib.import_module(module_name)
    except Exception:  # a broken build (missing CUDA symbols) is as unusable as a missing one
        return None


def _unavailable_reason(name: str, device: torch.device) -> str | None:
    """Why `name` cannot run on `device`, or None when it can."""
    if name in ("auto", "math"):
        return None
    if name in _PACKAGE_BACKENDS:  # a missing package is the first thing to fix
        module_name, how_to_get = _PACKAGE_BACKENDS[name]
        if _import_package(module_name) is None:
            return how_to_get
    if device.type != "cuda":
        return f"it needs a CUDA device, and this one is {device.type!r}"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    if name == "cudnn" and not torch.backends.cudnn.is_available():
        return "this torch build has no cuDNN"
    if name == "flash" and not torch.backends.cuda.is_flash_attention_available():
        return "this torch build has no flash-attention kernel"
    return None


def check_backend_name(name: str) -> None:
    """Raise ConfigError for a backend name that does not exist, suggesting the closest one."""
    LoadOptions(attention=name)  # the parameter spec's own check and error text


def available_backends(device: torch.device | str) -> list[str]:
    """Names of the attention backends this machine can run on `device`."""
    device = torch.device(device)
    return [name for name in BACKENDS if _unavailable_reason(name, device) is None]


def check_backend(name: str, device: torch.device | str) -> None:
    """Raise a clear error if backend `name` is unknown or cannot run on `device`."""
    check_backend_name(name)
    device = torch.device(device)
    reason = _unavailable_reason(name, device)
    if reason is not None:
        raise BackendUnavailableError(
            f"attention backend {name!r} is not available: {reason}; "
            f"pick one of {available_backends(device)} (available on {device.type})"
        )


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: SDPBackend | None,
          key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """torch SDPA on [B, L, H, D] tensors, restricted to one kernel unless `kernel` is None."""
    # SDPA wants [B, H, L, D]; transposed views keep the last dim contiguous, as the kernels need.
    qt, kt, vt = (u.transpose(1, 2) for u in (q, k, v))
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, None, :]  # [B, 1, 1, Lk], True = attend
    if kernel is None:
        out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
    else:
        with sdpa_kernel([kernel]):
            out = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=mask)
    return out.transpose(1, 2)  # [B, Lq, H, D]


def _package_attention(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention through an optional package; all of them take and return [B, L, H, D]."""
    module = _import_package(_PACKAGE_BACKENDS[name][0])
    if module is None or q.device.type != "cuda":
        check_backend(name, q.device)  # raises with the reason and the alternatives
    if q.dtype not in (torch.float16, torch.bfloat16):
        raise BackendUnavailableError(
            f"attention backend {name!r} needs float16 or bfloat16 inputs, got {q.dtype}; "
            "run the model in bf16 or pick a torch SDPA backend"
        )
    if name == "sage":
        return module.sageattn(q, k, v, tensor_layout="NHD", is_causal=False)
    out = module.flash_attn_func(q, k, v)
    # Some FlashAttention-3 builds return (out, softmax_lse).
    return out[0] if isinstance(out, tuple) else out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "auto",
              key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention of q [B, Lq, H, D] over k, v [B, Lk, H, D] -> [B, Lq, H, D].

    `key_padding_mask` is a bool [B, Lk], True for keys to attend to (torch SDPA backends only).
    """
    if backend in _PACKAGE_BACKENDS:
        if key_padding_mask is not None:
            raise BackendUnavailableError(
                f"attention backend {backend!r} does not take a key padding mask here; "
                "use a torch SDPA backend ('auto', 'cudnn', 'efficient', 'math') for masked attention"
            )
        return _package_attention(backend, q, k, v)
    if backend == "auto":
        return _sdpa(q, k, v, None, key_padding_mask)
    if backend not in _SDPA_BACKENDS:
        check_backend_name(backend)
    if backend != "math" and q.device.type != "cuda":
        check_backend(backend, q.device)  # raises: these kernels exist only on CUDA here
    return _sdpa(q, k, v, _SDPA_BACKENDS[backend], key_padding_mask)


__all__ = ["BACKENDS", "attention", "available_backends", "check_backend", "check_backend_name"]
