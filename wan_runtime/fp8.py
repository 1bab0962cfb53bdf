"""Scaled float8 (e4m3) weight storage for the Linear layers of the DiT blocks.

A weight W [out, in] is stored as Q = round_e4m3(W / s) with one fp32 scale per output channel,
s[o] = max_i |W[o, i]| / 448 (448 is e4m3's largest value), so every row uses the whole e4m3 range.
A bare cast (s = 1) would flush the small weights of a real network (std ~ 1/sqrt(5120) = 0.014) into
e4m3's subnormals or to zero; the scale is what keeps the relative error at e4m3's 2^-4.

Error bound per element, in units of the scaled value v = W / s: e4m3 has 3 mantissa bits, so a
normal v is rounded with |v - Q| <= 2^-4 |v|; below 2^-6 (subnormals, spacing 2^-9) |v - Q| <= 2^-10.
Hence |W - Q*s| <= max(2^-4 |W|, 2^-10 s). tests/test_fp8.py checks exactly this bound.

Compute, two ways (`FP8Linear.matmul`):
- "native" (the default, storage only): the weight is dequantized per layer call into the
  activations' dtype (bf16 on the GPU), W' = bf16(Q) * bf16(s) (the e4m3 -> bf16 cast is exact; the
  product adds one bf16 rounding, 2^-9, sixteen times smaller than the fp8 error), then a normal bf16
  matmul. The temporary W' lives for one layer (at most 141 MB for A14B's FFN).
- "fp8" (fp8 compute, lossy): the activations are quantized too, per row (per token) with the same
  scaling rule, computed on the fly, and `torch._scaled_mm` multiplies Q_x [M, K] by Q^T with both
  row-wise scales on the fp8 tensor cores (Ada and Hopper: twice the bf16 rate), accumulating in
  fp32 and writing bf16 with the bias added. The activation rounding (2^-4 relative) adds to the
  weight's, so the drift is about twice that of fp8 storage; the harness measures it.
  `torch._scaled_mm` is used directly rather than torchao's float8 inference config: it is one torch
  op that exists in every torch this project runs on (2.11 on the GPU machine, 2.13 in CI, where the
  CPU kernel lets tests check the numerics), and torchao would tie the project to torchao/torch
  version pairs on two machines for the same call.

Only the Linear layers inside the blocks are converted. Norms, modulation, the patch/text/time
embeddings, the time projection and the head keep their dtype (the DiT calls the time MLPs and the
head with `weight.float()` directly, which would bypass a scale).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from wan_runtime.compute import Matmul
from wan_runtime.errors import first_line

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448.0
FP8_COMPUTE_CAPABILITY = (8, 9)  # the first GPUs with fp8 tensor cores: Ada (RTX 4090, L4, L40); Hopper is 9.0



def quantize_fp8(weight: torch.Tensor, per_channel: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """W [out, in] -> (e4m3 Q [out, in], fp32 scale [out, 1] or [1, 1]) with W ~= Q * scale."""
    w = weight.float()
    if per_channel:
        amax = w.abs().amax(dim=1, keepdim=True)  # [out, 1]
    else:
        amax = w.abs().amax().reshape(1, 1)
    # The largest |w| of a row maps to 448; an all-zero row is exact under any scale, 1 is as good as any.
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    # Clamp: w / scale can exceed 448 by one fp32 rounding, and e4m3fn has no inf (overflow is NaN).
    q = (w / scale).clamp_(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Q [out, in] e4m3 and scale [out|1, 1] -> Q * scale in `dtype` (exact cast, one rounding of the product)."""
    return q.to(dtype).mul_(scale.to(dtype))


class FP8Linear(nn.Module):
    """A Linear layer whose weight is stored as scaled float8 e4m3; `matmul` says how it multiplies.

    "native": dequantize the weight to the input's dtype, then a normal matmul (storage only);
    "fp8": quantize the input per row and multiply in fp8 (`torch._scaled_mm`, bf16 out).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, per_channel: bool = True,
                 bias_dtype: torch.dtype = torch.bfloat16, device: torch.device | str | None = None,
                 matmul: Matmul = "native"):
        super().__init__()
        if matmul not in ("native", "fp8"):
            raise ValueError(f"FP8Linear matmul must be 'native' or 'fp8', not {matmul!r}")
        if matmul == "fp8" and not per_channel:
            raise ValueError("fp8 compute needs a scale per output channel (per_channel=True): "
                             "torch._scaled_mm takes row-wise scales for both operands")
        self.in_features = in_features
        self.out_features = out_features
        self.per_channel = per_channel
        self.matmul = matmul
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, dtype=FP8_DTYPE, device=device), requires_grad=False
        )
        self.register_buffer(
            "weight_scale", torch.ones(out_features if per_channel else 1, 1, dtype=torch.float32, device=device)
        )
        self.bias = (
            nn.Parameter(torch.zeros(out_features, dtype=bias_dtype, device=device), requires_grad=False)
            if bias else None
        )

    @classmethod
    def from_linear(cls, linear: nn.Linear, per_channel: bool = True, matmul: Matmul = "native") -> "FP8Linear":
        """Quantize an nn.Linear (on any device, meta included); the bias keeps its dtype."""
        weight = linear.weight
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, per_channel,
                    bias_dtype=weight.dtype, device="meta", matmul=matmul)
        q, scale = quantize_fp8(weight.detach(), per_channel)
        layer.weight = nn.Parameter(q, requires_grad=False)
        layer.weight_scale = scale
        if linear.bias is not None:
            layer.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        return layer

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight as `dtype` [out, in]."""
        return dequantize_fp8(self.weight, self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out] in x's dtype (bf16 for fp8 compute)."""
        if self.matmul == "fp8":
            return self._fp8_forward(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def _fp8_forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])  # [M, in]
        q, scale = quantize_fp8(rows)  # per-row (per-token) scales [M, 1], computed on the fly
        out = torch._scaled_mm(
            q, self.weight.t(),  # [in, out] column-major, as the kernel wants
            scale_a=scale, scale_b=self.weight_scale.view(1, -1),
            bias=None if self.bias is None else self.bias.to(torch.bfloat16),
            out_dtype=torch.bfloat16, use_fast_accum=True,
        )
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        per = "output channel" if self.per_channel else "tensor"
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, scale per {per}, matmul={self.matmul}"


def quantize_linears(module: nn.Module, per_channel: bool = True, matmul: Matmul = "native") -> int:
    """Replace every nn.Linear inside `module` by an FP8Linear, in place; returns how many were replaced."""
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:  # exact type: subclasses may rely on their own forward
                setattr(parent, name, FP8Linear.from_linear(child, per_channel, matmul))
                replaced += 1
    return replaced


def fp8_matmul_unavailable_reason(device: torch.device | str) -> str | None:
    """Why fp8 compute (`torch._scaled_mm` with row-wise scales) cannot run on `device`, or None.

    A GPU needs fp8 tensor cores (compute capability 8.9+); then, as on the CPU, a small product is
    tried, because whether this torch build has the row-wise kernel for the device is only known by
    calling it.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_COMPUTE_CAPABILITY:
            return (f"this GPU (compute capability {capability[0]}.{capability[1]}) has no fp8 tensor cores; "
                    "they start at 8.9 (Ada: RTX 4090, L4, L40) and 9.0 (Hopper: H100, H200)")
    elif device.type != "cpu":
        return f"fp8 compute runs on CUDA GPUs (and the CPU), not on {device.type!r}"
    try:
        probe = FP8Linear.from_linear(nn.Linear(32, 16).to(device=device, dtype=torch.bfloat16), matmul="fp8")
        probe(torch.ones(2, 32, device=device, dtype=torch.bfloat16))
    except Exception as exc:  # noqa: BLE001 - whatever the build says is the reason
        return f"torch {torch.__version__} cannot run a row-wise scaled fp8 matmul here ({first_line(exc)})"
    return None


__all__ = ["FP8_DTYPE", "FP8_MAX", "FP8_COMPUTE_CAPABILITY", "Matmul", "quantize_fp8", "dequantize_fp8", "FP8Linear",
           "quantize_linears", "fp8_matmul_unavailable_reason"]
