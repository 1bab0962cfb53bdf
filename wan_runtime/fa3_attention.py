"""Self-attention on fp8 tensor cores through FlashAttention-3's Hopper kernel (backend `fa3_fp8`).

Why: self-attention is most of a block even in fp8 (a profile of the fastest plan's compiled block at
720p on an H200: 123 of 176 ms), and cuDNN's fp8 attention (`cudnn_fp8`) ran it at 808 TFLOP/s there.
FlashAttention-3's fp8 forward (warp-specialized, a 128 x 224 tile for head dim 128, V transposed in
shared memory) ran it at 885 on the same card, and it writes a bf16 output, so one of cuDNN's five
e4m3 roundings (O) goes away.

The kernel comes as a library, not a package: flash-attn-3 has no wheel and its torch extension links
against one torch build. `csrc/fa3_fp8.cu` is a C entry point to the one kernel Wan needs (e4m3 in,
bf16 out, head dim 128, no mask); `bench/fa3_build.sh` compiles it with FlashAttention-3's and
CUTLASS's headers and the CUDA compiler from PyPI, on any Linux machine (no GPU needed), into a .so
that links against nothing but the CUDA runtime. `WANBENCH_FA3_LIB` names that file; this module loads
it with ctypes when the backend is resolved.

What one call does (q, k, v bf16 [B, L, H, 128] -> bf16 [B, L, H, 128]):
1. Quantize q, k - mean_L(k), v to e4m3 with one power-of-two scale per (batch, head) from that head's
   amax (the kernel reads its descales per (b, h)); the keys' mean is subtracted as in `cudnn_fp8`
   (softmax is unchanged by a shift shared by all of a query's scores).
2. The kernel: S = q k^T * descale_q * descale_k / sqrt(D); online softmax in fp32, P = exp(S - max)
   scaled by 2^8 and rounded to e4m3 (FlashAttention-3's own choice, P <= 256 < 448); O = P v *
   descale_v accumulated in fp32, divided by the fp32 row sum, written in bf16.
Four e4m3 roundings (q, k, P, v): rel. L2 ~0.05 against exact attention on N(0, 1) inputs (emulated
by tests/test_fa3_attention.py); the harness measures what that costs a video.

The sm_90a kernel runs on compute capability 9.0 only (H100, H200, H20), not on Ada or Blackwell.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch

from wan_runtime.errors import BackendUnavailableError, first_line
from wan_runtime.fp8 import FP8_DTYPE
from wan_runtime.fp8_attention import e4m3_scales

LIBRARY_ENV = "WANBENCH_FA3_LIB"
HOW_TO_GET = (f"the FlashAttention-3 fp8 library is not built: run `bash bench/fa3_build.sh` (CPU is enough, "
              f"~2 min) and set {LIBRARY_ENV} to the .so it prints")
CAPABILITY = (9, 0)  # the kernel is compiled for sm_90a, which runs on 9.0 and nothing else
HEAD_DIM = 128  # the one head dim the library instantiates (every Wan2.2 DiT uses 128)
ENTRY = "wan_fa3_fp8_forward"

_i32, _i64, _f32, _ptr = ctypes.c_int, ctypes.c_longlong, ctypes.c_float, ctypes.c_void_p
# wan_fa3_fp8_forward's parameters, in order (csrc/fa3_fp8.cu)
ARGTYPES = ([_ptr] * 8 + [_i64] * 2 + [_i32] * 5 + [_i64] * 12 + [_f32, _i32, _ptr])


def quantize_per_head(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, L, H, D] -> (contiguous e4m3 x8, fp32 descale [B, H]) with x == x8 * descale up to e4m3 rounding."""
    amax = torch.linalg.vector_norm(x, float("inf"), dim=(1, 3))  # [B, H], without an |x| temporary
    scale = e4m3_scales(amax)
    x8 = (x * scale[:, None, :, None].to(x.dtype)).to(FP8_DTYPE).contiguous()
    return x8, scale.reciprocal().contiguous()


def load_library(path: str | os.PathLike) -> Any:
    """The library at `path` with its entry point's argument types set (raises OSError/AttributeError)."""
    library = ctypes.CDLL(str(path))
    forward = getattr(library, ENTRY)
    forward.argtypes, forward.restype = ARGTYPES, _i32
    library.wan_fa3_error_string.argtypes, library.wan_fa3_error_string.restype = [_i32], ctypes.c_char_p
    return library


class Fa3Fp8Backend:
    """The `fa3_fp8` attention backend: the library is loaded once (from `WANBENCH_FA3_LIB` unless given).

    `bind` returns a function whose quantization is plain torch, so a compiled block fuses it with the
    RoPE and norms that produce q and k (a profile of the compiled block showed these passes at ~8 ms
    of 180 at 720p when they ran inside an opaque op); only the kernel itself is one opaque custom op.
    `loader` opens a library path (tests pass a stand-in that runs the kernel's arithmetic in torch).
    """

    name = "fa3_fp8"

    def __init__(self, path: str | os.PathLike | None = None,
                 loader: Callable[[str | os.PathLike], Any] = load_library) -> None:
        self._path, self._loader = path, loader

    def library_path(self) -> Path | None:
        """The library file this backend loads (None when neither given nor named by the environment)."""
        path = self._path or os.environ.get(LIBRARY_ENV)
        return Path(path) if path else None

    def library(self) -> Any:
        """The loaded library (loaded on first use); raises BackendUnavailableError with the reason."""
        path = self.library_path()
        if path is None:
            raise BackendUnavailableError(f"attention backend 'fa3_fp8' is not available: {HOW_TO_GET}")
        key = str(path)
        if key not in _LIBRARIES:
            if not path.is_file():
                raise BackendUnavailableError(
                    f"attention backend 'fa3_fp8' is not available: {LIBRARY_ENV}={path} is not a file; "
                    "run `bash bench/fa3_build.sh` and point it at the .so it prints")
            try:
                _LIBRARIES[key] = self._loader(path)
            except (OSError, AttributeError) as exc:
                raise BackendUnavailableError(
                    f"attention backend 'fa3_fp8' is not available: cannot load {path} "
                    f"({first_line(str(exc)) or type(exc).__name__}); rebuild it with `bash bench/fa3_build.sh`") from None
        return _LIBRARIES[key]

    def unavailable_reason(self, device: torch.device) -> str | None:
        """Why the kernel cannot run on `device`, or None."""
        if device.type != "cuda":
            return f"it needs a CUDA device, and this one is {device.type!r}"
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        capability = torch.cuda.get_device_capability(device)
        if capability != CAPABILITY:
            return (f"its kernel is built for Hopper (sm_90a, compute capability 9.0) only, and this GPU is "
                    f"{capability[0]}.{capability[1]}; use 'cudnn_fp8' or 'flash_attn4' there")
        return self.library_reason()

    def library_reason(self) -> str | None:
        """Why the library cannot be loaded, or None (it is loaded then)."""
        try:
            self.library()
        except BackendUnavailableError as exc:
            return str(exc).split("is not available: ", 1)[-1]
        return None

    def bind(self, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The attention function (the library is loaded here, once)."""
        key = str(self.library_path())
        self.library()

        def fa3_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            check_shapes(q, k, v)
            q8, descale_q = quantize_per_head(q)
            k8, descale_k = quantize_per_head(k - k.mean(dim=1, keepdim=True))
            v8, descale_v = quantize_per_head(v)
            return fa3_fp8_kernel(key, q8, k8, v8, descale_q, descale_k, descale_v).to(q.dtype)

        return fa3_fp8


# Loaded libraries by path: the kernel op below names its library by path (a custom op takes no objects).
_LIBRARIES: dict[str, Any] = {}


def check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """Raise BackendUnavailableError unless q is [B, Lq, H, 128] and k, v are [B, Lk, H, 128]."""
    (b, _, h, d), lk = q.shape, k.shape[1]
    if d != HEAD_DIM or k.shape != (b, lk, h, d) or v.shape != k.shape:
        raise BackendUnavailableError(
            f"attention backend 'fa3_fp8' takes q [B, Lq, H, {HEAD_DIM}] and k, v [B, Lk, H, {HEAD_DIM}]; "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}; use 'cudnn' for this model")


@torch.library.custom_op("wan_runtime::fa3_fp8_attention", mutates_args=())
def fa3_fp8_kernel(library: str, q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, descale_q: torch.Tensor,
                   descale_k: torch.Tensor, descale_v: torch.Tensor) -> torch.Tensor:
    """The kernel on contiguous e4m3 q8 [B, Lq, H, D], k8, v8 [B, Lk, H, D], fp32 descales [B, H] -> bf16 [B, Lq, H, D]."""
    lib = _LIBRARIES[library]
    (b, lq, h, d), lk = q8.shape, k8.shape[1]
    # the library reads all three descales with q's strides: each must be the same contiguous fp32 [B, H]
    if any(t.dtype != FP8_DTYPE or t.stride(-1) != 1 for t in (q8, k8, v8)) or \
            any(t.dtype != torch.float32 or t.shape != (b, h) or not t.is_contiguous()
                for t in (descale_q, descale_k, descale_v)):
        raise BackendUnavailableError("the fa3_fp8 kernel takes e4m3 q8, k8, v8 with the head dim contiguous and "
                                      "contiguous fp32 [B, H] descales; quantize with "
                                      "wan_runtime.fa3_attention.quantize_per_head")
    o = torch.empty((b, lq, h, d), dtype=torch.bfloat16, device=q8.device)
    lse = torch.empty((b, h, lq), dtype=torch.float32, device=q8.device)  # written by the kernel, unused
    on_gpu = q8.device.type == "cuda"
    num_sm = torch.cuda.get_device_properties(q8.device).multi_processor_count if on_gpu else 1
    stream = torch.cuda.current_stream(q8.device).cuda_stream if on_gpu else 0
    strides = [s for t in (q8, k8, v8, o) for s in t.stride()[:3]]  # batch, row, head of each (elements)
    with torch.cuda.device(q8.device) if on_gpu else contextlib.nullcontext():
        code = getattr(lib, ENTRY)(
            q8.data_ptr(), k8.data_ptr(), v8.data_ptr(), o.data_ptr(), lse.data_ptr(),
            descale_q.data_ptr(), descale_k.data_ptr(), descale_v.data_ptr(), descale_q.stride(0), descale_q.stride(1),
            b, lq, lk, h, d, *strides, 1.0 / math.sqrt(d), num_sm, stream)
    if code != 0:
        raise BackendUnavailableError(
            f"attention backend 'fa3_fp8' failed on [B, Lq, Lk, H, D] = {[b, lq, lk, h, d]}: "
            f"{lib.wan_fa3_error_string(code).decode(errors='replace')} (CUDA error {code})")
    return o


@fa3_fp8_kernel.register_fake
def _fa3_fp8_kernel_shape(library: str, q8: torch.Tensor, k8: torch.Tensor, v8: torch.Tensor, descale_q: torch.Tensor,
                          descale_k: torch.Tensor, descale_v: torch.Tensor) -> torch.Tensor:
    return torch.empty(q8.shape, dtype=torch.bfloat16, device=q8.device)


__all__ = ["ARGTYPES", "CAPABILITY", "ENTRY", "HEAD_DIM", "HOW_TO_GET", "LIBRARY_ENV", "Fa3Fp8Backend",
           "check_shapes", "fa3_fp8_kernel", "load_library", "quantize_per_head"]
