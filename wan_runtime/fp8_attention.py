"""Self-attention on fp8 tensor cores: cuDNN's fused fp8 flash-attention forward, through cudnn-frontend.

Why: on Hopper a bf16 flash-attention kernel already runs near the bf16 peak (cuDNN: ~577 TFLOP/s
of ~790 on an H200 at 75,600 tokens), and self-attention is ~70% of a Wan block. fp8 tensor cores
have twice the rate; cuDNN exposes a fused fp8 SDPA forward (`sdpa_fp8`, cuDNN >= 9.1, compute
capability >= 9.0), which cudnn-frontend's Python graph API (PyPI `nvidia-cudnn-frontend`) builds.

What one call does (q, k, v bf16 [B, L, H, D] -> bf16 [B, L, H, D]):
1. Quantize q, k - mean_L(k), v to e4m3 with one scale per tensor, computed on the device from the
   tensor's amax (no host sync). Scales are powers of two, so scaling and descaling are exact and the
   only error is e4m3's own rounding (3 mantissa bits: at most 2^-4 relative for normal values).
   Subtracting the keys' mean over the sequence (per head and channel) leaves softmax unchanged, since
   it shifts every score of a query by the same amount, and removes the offset keys share (the
   smoothing SageAttention applies), so the e4m3 range is spent on what differs between keys.
2. Run the cuDNN graph built for this shape (built once, cached with its workspace): S = q k^T *
   descale_q * descale_k / sqrt(D); P = softmax(S) cast to e4m3 with scale_s = 64 and descaled by
   descale_s = 1/64; O = P v * descale_v, written as e4m3 times scale_o. scale_s = 64 is what
   cudnn-frontend's own fp8 SDPA test feeds the kernels (P <= 1, a quarter of e4m3's largest power of
   two: headroom for kernels whose online softmax rescales lazily, letting P exceed 1 before their
   internal correction, as the test allows on Blackwell); emulated, 448 gives the same error (P's
   small values stay normal enough either way), so the headroom costs nothing. cuDNN writes only an fp8 O on Hopper (a bf16 O is
   Blackwell-only), so O is scaled: |O| <= max|v| (O is a convex combination of the rows of v, up to
   the few percent the rounding of P adds to the weights' sum), and scale_o = scale_v / 4 keeps it two
   binades below e4m3's top (the same quarter).
3. Dequantize O to the input dtype (exact: e4m3 fits bf16, the descale is a power of two).

Expected error (emulated on a CPU by tests/test_fp8_attention.py, random N(0, 1) inputs): rel. L2
~0.06 against exact attention, from five e4m3 roundings (q, k, P, v, O, ~2.7% RMS each) adding in
quadrature; bf16 attention is at ~0.003. The harness measures what that costs a video.

Graphs follow cudnn-frontend's own fp8 SDPA sample (test/python/sdpa/fp8.py): q, k, v, O declared
[B, H, S, D] over our [B, S, H, D] memory (strides S*H*D, D, H*D, 1), per-tensor fp32 [1, 1, 1, 1]
scale tensors, Amax_S and Amax_O declared as outputs (which keeps the graph on cuDNN's own engines),
then validate, build_operation_graph, create_execution_plans([A, FALLBACK]), check_support,
build_plans, and execute with the workspace on a cuDNN handle set to torch's current stream.

`CudnnFp8Attention` holds the per-device handles and the per-shape graphs; the attention registry
keeps one instance (wan_runtime/attention.py, backend `cudnn_fp8`), called inside the
`wan_runtime::package_attention` custom op, so compiled blocks see one opaque call.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import torch

from wan_runtime.errors import BackendUnavailableError, first_line
from wan_runtime.fp8 import FP8_DTYPE, FP8_MAX

HOW_TO_GET = ("nvidia-cudnn-frontend is not installed: pip install nvidia-cudnn-frontend "
              "(the project's fp8attn extra; the GPU image's torch brings the cuDNN library itself)")
MIN_CAPABILITY = (9, 0)  # cuDNN's fp8 SDPA forward: Hopper and newer
MIN_CUDNN = 90100  # cudnn-frontend refuses the fp8 SDPA forward below cuDNN 9.1.0 (and on 9.10.0 exactly)
P_SCALE = 64.0  # scale_s, as in cudnn-frontend's fp8 SDPA test: P <= 1 lands at most two binades below e4m3's top
O_HEADROOM = 4.0  # scale_o = scale_v / 4: |O| <= max|v| lands two binades below e4m3's top too
# Scales are capped at 2^15, so they are exact in fp16 and bf16 alike; only an amax below 448 / 2^15 =
# 0.0137 uses less than e4m3's full range (and keeps its 3-bit relative precision).
MAX_SCALE = 2.0 ** 15
PROBE_SHAPE = (1, 256, 256, 2, 128)  # (B, Lq, Lk, H, D): the graph built to ask cuDNN at resolve time

# Tensor uids of the graph (the keys of its variant pack).
Q, K, V, DESCALE_Q, DESCALE_K, DESCALE_V, DESCALE_S, SCALE_S, SCALE_O, O, AMAX_S, AMAX_O = range(1, 13)


# --------------------------------------------------------------------------------------------
# Per-tensor e4m3 quantization (pure torch)
# --------------------------------------------------------------------------------------------

def e4m3_scale(amax: torch.Tensor) -> torch.Tensor:
    """The largest power of two s <= 2^15 with amax * s <= 448, fp32 [1, 1, 1, 1] on amax's device."""
    return e4m3_scales(amax.reshape(1, 1, 1, 1))


def e4m3_scales(amax: torch.Tensor) -> torch.Tensor:
    """`e4m3_scale` of every element of `amax` (fp32, amax's shape)."""
    amax = amax.float()
    scale = torch.exp2(torch.floor(torch.log2(FP8_MAX / amax))).clamp(max=MAX_SCALE)  # amax 0: inf, clamped
    # log2 of the quotient can round up across a power of two; step down where the product overflows
    return torch.where(amax * scale > FP8_MAX, scale * 0.5, scale)


def quantize_e4m3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x -> (contiguous e4m3 q, fp32 descale [1, 1, 1, 1]) with x == q * descale up to e4m3 rounding.

    wan_runtime.fp8.quantize_fp8 scales weights (amax / 448, through an fp32 copy); here the tensor is a
    0.8 GB activation per call, so the power-of-two scale multiplies x in its own dtype (exactly) and
    the cast to e4m3 is the only rounding.
    """
    scale = e4m3_scale(torch.linalg.vector_norm(x, float("inf")))  # max |x|, without an |x| temporary
    return (x * scale.to(x.dtype)).to(FP8_DTYPE).contiguous(), scale.reciprocal()


# --------------------------------------------------------------------------------------------
# The cuDNN graph
# --------------------------------------------------------------------------------------------

def _bshd(b: int, s: int, h: int, d: int) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """cuDNN's logical [B, H, S, D] dims and the strides of a contiguous [B, S, H, D] tensor."""
    return (b, h, s, d), (s * h * d, d, h * d, 1)


def build_graph(cudnn: ModuleType, handle: Any, b: int, lq: int, lk: int, h: int, d: int) -> Any:
    """The built fp8 SDPA forward graph for one shape (raises what cudnn-frontend raises)."""
    dt = cudnn.data_type
    graph = cudnn.pygraph(io_data_type=dt.FP8_E4M3, intermediate_data_type=dt.FLOAT,
                          compute_data_type=dt.FLOAT, handle=handle)
    q_dim, q_stride = _bshd(b, lq, h, d)
    kv_dim, kv_stride = _bshd(b, lk, h, d)
    q = graph.tensor(uid=Q, dim=q_dim, stride=q_stride, data_type=dt.FP8_E4M3)
    k = graph.tensor(uid=K, dim=kv_dim, stride=kv_stride, data_type=dt.FP8_E4M3)
    v = graph.tensor(uid=V, dim=kv_dim, stride=kv_stride, data_type=dt.FP8_E4M3)
    scalars = {uid: graph.tensor(uid=uid, dim=(1, 1, 1, 1), stride=(1, 1, 1, 1), data_type=dt.FLOAT)
               for uid in (DESCALE_Q, DESCALE_K, DESCALE_V, DESCALE_S, SCALE_S, SCALE_O)}
    o, _stats, amax_s, amax_o = graph.sdpa_fp8(
        q=q, k=k, v=v,
        descale_q=scalars[DESCALE_Q], descale_k=scalars[DESCALE_K], descale_v=scalars[DESCALE_V],
        descale_s=scalars[DESCALE_S], scale_s=scalars[SCALE_S], scale_o=scalars[SCALE_O],
        generate_stats=False, attn_scale=1.0 / math.sqrt(d), use_causal_mask=False,
    )
    o.set_uid(O).set_output(True).set_dim(q_dim).set_stride(q_stride).set_data_type(dt.FP8_E4M3)
    for amax, uid in ((amax_s, AMAX_S), (amax_o, AMAX_O)):
        amax.set_uid(uid).set_output(True).set_dim((1, 1, 1, 1)).set_stride((1, 1, 1, 1)).set_data_type(dt.FLOAT)
    graph.validate()
    graph.build_operation_graph()
    graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    graph.check_support()
    graph.build_plans()
    return graph


@dataclass
class Fp8Graph:
    """One built graph with its workspace and the buffers every call shares."""

    graph: Any
    workspace: torch.Tensor
    constants: dict[int, torch.Tensor]  # scale_s, descale_s, and the amax outputs nobody reads

    @classmethod
    def build(cls, cudnn: ModuleType, handle: Any, device: torch.device, shape: tuple[int, ...]) -> "Fp8Graph":
        """Build the graph of `shape` (B, Lq, Lk, H, D) and allocate its buffers on `device`."""
        graph = build_graph(cudnn, handle, *shape)
        one = dict(dtype=torch.float32, device=device)
        constants = {SCALE_S: torch.full((1, 1, 1, 1), P_SCALE, **one),
                     DESCALE_S: torch.full((1, 1, 1, 1), 1.0 / P_SCALE, **one),
                     AMAX_S: torch.zeros(1, 1, 1, 1, **one), AMAX_O: torch.zeros(1, 1, 1, 1, **one)}
        workspace = torch.empty(graph.get_workspace_size(), dtype=torch.uint8, device=device)
        return cls(graph, workspace, constants)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """A cudnn-frontend error as one line: the backend's own reason when the message has one."""
    text = str(exc).strip()
    # pygraph's "no engine proposed a plan (the backend declined: WHY; python engines declined: ...)"
    if "the backend declined: " in text:
        text = text.split("the backend declined: ", 1)[1].split("; python engines", 1)[0]
    return (first_line(text) or type(exc).__name__)[:limit]


def _indexed(device: torch.device) -> torch.device:
    """`cuda` as `cuda:N` (the current device), so one GPU has one handle and one set of graphs."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _on(device: torch.device) -> contextlib.AbstractContextManager:
    """Make `device` current while cuDNN works (a handle belongs to the device current at its creation)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _stream(device: torch.device) -> int:
    """torch's current stream on `device` (0 off CUDA)."""
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


class CudnnFp8Attention:
    """cuDNN fp8 attention: one handle per device, one built graph per (device, shape), reused by every call.

    Called as `runner(cudnn_module, q, k, v)` (the package-backend call signature). Not thread-safe:
    a loaded pipeline runs its forwards from one thread.
    """

    def __init__(self) -> None:
        self._handles: dict[torch.device, Any] = {}
        self._graphs: dict[tuple[torch.device, tuple[int, ...]], Fp8Graph] = {}
        self._probed: dict[torch.device, str | None] = {}

    def unavailable_reason(self, cudnn: ModuleType, device: torch.device) -> str | None:
        """Why cuDNN cannot run this fp8 graph on `device` (asked once per device), or None."""
        device = _indexed(device)
        if device not in self._probed:
            self._probed[device] = self._probe(cudnn, device)
        return self._probed[device]

    def _probe(self, cudnn: ModuleType, device: torch.device) -> str | None:
        try:
            version = cudnn.backend_version()
        except Exception as exc:  # noqa: BLE001 - a frontend that finds no cuDNN library says so here
            return f"cudnn-frontend {cudnn.__version__} found no usable cuDNN library ({one_line(exc)})"
        if version < MIN_CUDNN:
            return f"cuDNN's fp8 attention needs cuDNN 9.1 or newer, and this one is {cudnn.backend_version_string()}"
        try:
            self.graph(cudnn, device, PROBE_SHAPE)
        except Exception as exc:  # noqa: BLE001 - the graph's own verdict is the reason
            return (f"cuDNN {cudnn.backend_version_string()} (cudnn-frontend {cudnn.__version__}) cannot build "
                    f"its fp8 attention graph for head dim {PROBE_SHAPE[-1]} here: {one_line(exc)}")
        return None

    def _handle(self, cudnn: ModuleType, device: torch.device) -> Any:
        if device not in self._handles:
            with _on(device):
                self._handles[device] = cudnn.create_handle()
        return self._handles[device]

    def graph(self, cudnn: ModuleType, device: torch.device, shape: tuple[int, ...]) -> Fp8Graph:
        """The built graph of `shape` (B, Lq, Lk, H, D) on `device`, built on first use."""
        device = _indexed(device)
        key = (device, shape)
        if key not in self._graphs:
            handle = self._handle(cudnn, device)
            with _on(device):
                self._graphs[key] = Fp8Graph.build(cudnn, handle, device, shape)
        return self._graphs[key]

    def __call__(self, cudnn: ModuleType, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Softmax attention of q [B, Lq, H, D] over k, v [B, Lk, H, D] -> q.dtype [B, Lq, H, D]."""
        (b, lq, h, d), lk = q.shape, k.shape[1]
        if k.shape != (b, lk, h, d) or v.shape != k.shape:
            raise BackendUnavailableError(
                f"attention backend 'cudnn_fp8' takes q [B, Lq, H, D] and k, v [B, Lk, H, D] of one head dim; "
                f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
        device = q.device
        try:
            entry = self.graph(cudnn, device, (b, lq, lk, h, d))
        except torch.cuda.OutOfMemoryError:
            raise  # the pipeline names the stage and the memory options
        except Exception as exc:  # noqa: BLE001 - one line naming the shape and cuDNN's reason
            raise BackendUnavailableError(
                f"attention backend 'cudnn_fp8' cannot run [B, Lq, Lk, H, D] = {[b, lq, lk, h, d]} on cuDNN "
                f"{cudnn.backend_version_string()}: {one_line(exc)}; use attention 'cudnn' for this shape") from None
        q8, descale_q = quantize_e4m3(q)
        k8, descale_k = quantize_e4m3(k - k.mean(dim=1, keepdim=True))
        v8, descale_v = quantize_e4m3(v)
        descale_o = descale_v * O_HEADROOM
        o8 = torch.empty((b, lq, h, d), dtype=FP8_DTYPE, device=device)
        pack = {Q: q8, K: k8, V: v8, DESCALE_Q: descale_q, DESCALE_K: descale_k, DESCALE_V: descale_v,
                SCALE_O: descale_o.reciprocal(), O: o8, **entry.constants}
        handle = self._handle(cudnn, device)
        with _on(device):
            cudnn.set_stream(handle, _stream(device))
            entry.graph.execute(pack, entry.workspace, handle=handle)
        return o8.to(q.dtype) * descale_o.to(q.dtype)


__all__ = ["HOW_TO_GET", "MIN_CAPABILITY", "MIN_CUDNN", "O_HEADROOM", "P_SCALE", "CudnnFp8Attention", "Fp8Graph", "build_graph",
           "e4m3_scale", "e4m3_scales", "one_line", "quantize_e4m3"]
