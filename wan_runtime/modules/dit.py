"""The Wan2.2 DiT expert (one of the two A14B experts), written after the official `WanModel`.

Parameter names are exactly the official checkpoint's, so `high_noise_model/` and
`low_noise_model/` load with `load_state_dict(strict=True)` and no renaming.

Precision follows the official runtime under bf16 autocast: the residual stream, the timestep
embedding, the AdaLN modulation, the LayerNorms and the output head are float32; the linear layers,
the patch embedding and attention run in the parameters' dtype (bf16 on the GPU, fp32 in tests).

Shape legend: B batch (1, or 2 for a CFG batch), C=dim, F/H/W latent frames/height/width,
f/h/w the patch grid (F, H/2, W/2), L = f*h*w video tokens, T = text_len text tokens,
N heads, D = C/N head dim.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from wan_runtime.attention import AttentionFn, AttentionOps, check_backend_name, resolve_ops
from wan_runtime.block_runner import BlockRunner, ResidentBlocks
from wan_runtime.config import DiTConfig
from wan_runtime.errors import ConfigError

# float32 [L, 1, D/2, 2]: (cos, sin) of one rotation per token and pair of dims. Stored as real
# pairs rather than complex64 so a compiled block can fuse the rotation with the q/k RMSNorm
# (inductor generates no code for complex tensors); eager code views it as complex for free.
RopeTable = torch.Tensor


# --------------------------------------------------------------------------------------------
# Positional and timestep encodings
# --------------------------------------------------------------------------------------------

def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal timestep features [B] -> [B, dim] float32 (cos half first, as the official code)."""
    half = dim // 2
    # float64 like the official code: t is ~1000, and fp32 phases would lose digits.
    position = t.to(torch.float64)
    inv_freq = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    phase = torch.outer(position, inv_freq)  # [B, half]
    return torch.cat([phase.cos(), phase.sin()], dim=1).float()


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """How many of a head's dims rotate with (time, height, width): 44/42/42 for head_dim 128."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def rope_table(grid: tuple[int, int, int], head_dim: int, device: torch.device,
               theta: float = 10000.0) -> RopeTable:
    """Rotations (cos, sin) of every token of an (f, h, w) grid: float32 [L, 1, D/2, 2]."""
    f, h, w = grid
    axis_angles = []
    for size, axis_dim in zip(grid, rope_axis_dims(head_dim)):
        # Each axis has its own frequency ladder theta^(-2i/axis_dim) over its own positions.
        inv_freq = theta ** (-torch.arange(0, axis_dim, 2, dtype=torch.float64) / axis_dim)
        axis_angles.append(torch.outer(torch.arange(size, dtype=torch.float64), inv_freq))
    angles = torch.cat([
        axis_angles[0][:, None, None, :].expand(f, h, w, -1),  # time angles, [f, h, w, 22]
        axis_angles[1][None, :, None, :].expand(f, h, w, -1),  # height angles, [f, h, w, 21]
        axis_angles[2][None, None, :, :].expand(f, h, w, -1),  # width angles, [f, h, w, 21]
    ], dim=-1).reshape(f * h * w, 1, head_dim // 2)  # [L, 1, D/2], broadcast over heads
    return torch.stack([angles.cos(), angles.sin()], dim=-1).to(device=device, dtype=torch.float32)


def apply_rope(x: torch.Tensor, rope: RopeTable) -> torch.Tensor:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of x [B, L, N, D] as complex numbers, in fp32.

    The official code does this in float64; fp32 differs by ~1e-7, far below bf16 rounding.
    Eager: one complex multiply. Compiled: the same product written in real arithmetic, which
    inductor fuses with the surrounding ops (it leaves complex ops to separate eager kernels).
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # [B, L, N, D/2, 2]
    if torch.compiler.is_compiling():
        re, im = pairs.unbind(-1)
        cos, sin = rope.unbind(-1)
        rotated = torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1)
        return rotated.flatten(-2).to(x.dtype)
    product = torch.view_as_complex(pairs) * torch.view_as_complex(rope)  # [B, L, N, D/2] complex64
    return torch.view_as_real(product).flatten(-2).to(x.dtype)


# --------------------------------------------------------------------------------------------
# Norms and float32 helpers
# --------------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """RMSNorm over the last dim (all heads together), normalised in fp32, scaled in x's dtype."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., C] -> [..., C]."""
        # rms_norm accumulates in fp32 and returns x's dtype; the weight multiplies after that cast.
        return F.rms_norm(x, (x.shape[-1],), eps=self.eps) * self.weight


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the dtype of its input or affine parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., C] -> float32 [..., C]."""
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


def fp32_mlp(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a Sequential of Linear/activation layers in float32 (official: autocast to fp32)."""
    x = x.float()
    for layer in layers:
        if isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight.float(), None if layer.bias is None else layer.bias.float())
        else:
            x = layer(x)
    return x


# --------------------------------------------------------------------------------------------
# Attention layers and the block
# --------------------------------------------------------------------------------------------

class _AttentionLayers(nn.Module):
    """q/k/v/o projections and the q/k RMSNorms shared by self- and cross-attention."""

    def __init__(self, dim: int, num_heads: int, qk_norm: bool, eps: float):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps) if qk_norm else nn.Identity()
        self.norm_k = RMSNorm(dim, eps) if qk_norm else nn.Identity()

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, C] -> [B, L, N, D]."""
        return x.unflatten(-1, (self.num_heads, -1))


class SelfAttention(_AttentionLayers):
    """Self-attention over the video tokens with 3D RoPE on q and k."""

    def forward(self, x: torch.Tensor, rope: RopeTable, attn: AttentionFn) -> torch.Tensor:
        """x [B, L, C] -> [B, L, C]."""
        q = apply_rope(self._heads(self.norm_q(self.q(x))), rope)  # [B, L, N, D]
        k = apply_rope(self._heads(self.norm_k(self.k(x))), rope)  # [B, L, N, D]
        v = self._heads(self.v(x))  # [B, L, N, D]
        return self.o(attn(q, k, v).flatten(2))


class CrossAttention(_AttentionLayers):
    """Attention from the video tokens to the (embedded, zero-padded, unmasked) text tokens."""

    def forward(self, x: torch.Tensor, context: torch.Tensor, attn: AttentionFn) -> torch.Tensor:
        """x [B, L, C], context [B, T, C] -> [B, L, C]."""
        q = self._heads(self.norm_q(self.q(x)))  # [B, L, N, D]
        k = self._heads(self.norm_k(self.k(context)))  # [B, T, N, D]
        v = self._heads(self.v(context))  # [B, T, N, D]
        return self.o(attn(q, k, v).flatten(2))


class WanBlock(nn.Module):
    """One DiT block: AdaLN-modulated self-attention, cross-attention, AdaLN-modulated FFN."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        dim, eps = config.dim, config.eps
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, config.num_heads, config.qk_norm, eps)
        # Official names: norm3 (affine) guards cross-attention, norm2 (no affine) the FFN.
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=True) if config.cross_attn_norm else nn.Identity()
        self.cross_attn = CrossAttention(dim, config.num_heads, config.qk_norm, eps)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(
            nn.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(config.ffn_dim, dim)
        )
        # Learned offsets added to the timestep projection: shift/scale/gate for attn and FFN.
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e0: torch.Tensor, context: torch.Tensor, rope: RopeTable,
                ops: AttentionOps) -> torch.Tensor:
        """x [B, L, C] fp32, e0 [B, 6, C] fp32, context [B, T, C] in the compute dtype -> [B, L, C] fp32.

        x may be a slice of the video tokens (sequence parallelism) as long as rope is the same slice
        and `ops.self_attn` sees the whole sequence; cross-attention works on any slice as it is.
        """
        dtype = context.dtype  # the text embedding ran in the compute dtype
        mod = (self.modulation.float() + e0).unsqueeze(2)  # [B, 6, 1, C] fp32
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mod.unbind(1)  # each [B, 1, C]

        # addcmul fuses each modulation/gated residual into one fp32 pass (bf16 operands promote).
        h = torch.addcmul(shift_sa, self.norm1(x), 1 + scale_sa)
        x = torch.addcmul(x, self.self_attn(h.to(dtype), rope, ops.self_attn), gate_sa)

        x = x + self.cross_attn(self.norm3(x).to(dtype), context, ops.cross_attn)

        h = torch.addcmul(shift_ff, self.norm2(x), 1 + scale_ff)
        x = torch.addcmul(x, self.ffn(h.to(dtype)), gate_ff)
        return x


class Head(nn.Module):
    """Output head: 2-way modulated LayerNorm, then a linear layer to the patch pixels (fp32)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        dim = config.dim
        self.norm = FP32LayerNorm(dim, config.eps, elementwise_affine=False)
        self.head = nn.Linear(dim, math.prod(config.patch_size) * config.out_dim)
        self.modulation = nn.Parameter(torch.randn(1, 2, dim) / dim**0.5)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """x [B, L, C] fp32, e [B, C] fp32 (time embedding) -> [B, L, prod(patch)*out_dim] fp32."""
        shift, scale = (self.modulation.float() + e.unsqueeze(1)).unsqueeze(2).unbind(1)  # [B, 1, C]
        x = self.norm(x) * (1 + scale) + shift
        return F.linear(x, self.head.weight.float(), self.head.bias.float())


# --------------------------------------------------------------------------------------------
# The expert
# --------------------------------------------------------------------------------------------

class WanDiT(nn.Module):
    """One Wan2.2 i2v DiT expert with the official parameter names.

    `attention` / `cross_attention` name the backends of self- and cross-attention (cross defaults
    to the self-attention one); they are resolved to functions once per device. `runner` runs the
    block stack (wan_runtime/block_runner.py): resident blocks called eagerly unless the loader
    hands in another.
    """

    def __init__(self, config: DiTConfig, attention: str = "auto", cross_attention: str | None = None,
                 runner: BlockRunner | None = None):
        super().__init__()
        self.config = config
        self.set_attention(attention, cross_attention)
        self.runner: BlockRunner = runner or ResidentBlocks()
        dim = config.dim

        self.patch_embedding = nn.Conv3d(config.in_dim, dim, config.patch_size, stride=config.patch_size)
        self.text_embedding = nn.Sequential(
            nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim)
        )
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList([WanBlock(config) for _ in range(config.num_layers)])
        self.head = Head(config)

        # RoPE tables per (grid, device), computed on first use. Not buffers: the checkpoint has
        # none, and a model built on `meta` and materialized later must need nothing else.
        self._rope_cache: dict[tuple[tuple[int, int, int], torch.device], RopeTable] = {}

    @property
    def attention_backends(self) -> tuple[str, str]:
        """Names of the (self-attention, cross-attention) backends."""
        return self._attention_names

    def set_attention(self, attention: str, cross_attention: str | None = None) -> None:
        """Choose the attention backends (cross_attention None: the same as self-attention)."""
        cross_attention = cross_attention or attention
        check_backend_name(attention)
        check_backend_name(cross_attention)
        self._attention_names = (attention, cross_attention)
        self._ops: dict[torch.device, AttentionOps] = {}

    def attention_ops(self, device: torch.device) -> AttentionOps:
        """The attention functions on `device`, resolved on first use (raises when one cannot run there)."""
        if device not in self._ops:
            self._ops[device] = resolve_ops(*self._attention_names, device)
        return self._ops[device]

    @property
    def compute_dtype(self) -> torch.dtype:
        """dtype of the matmuls: the parameters' dtype (fp8 storage computes in bf16)."""
        dtype = self.patch_embedding.weight.dtype
        return torch.bfloat16 if dtype.itemsize == 1 else dtype

    def rope(self, grid: tuple[int, int, int], device: torch.device) -> RopeTable:
        """RoPE rotations for a patch grid, cached per grid and device."""
        key = (grid, device)
        if key not in self._rope_cache:
            self._rope_cache[key] = rope_table(grid, self.config.head_dim, device)
        return self._rope_cache[key]

    def _check_inputs(self, x: torch.Tensor, context: torch.Tensor, y: torch.Tensor) -> None:
        """Raise ConfigError for inputs the model cannot take."""
        cfg = self.config
        if x.dim() != 5 or y.dim() != 5 or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
            raise ConfigError(
                "DiT expects x [B, C, F, H, W] and y of the same B, F, H, W; "
                f"got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        if x.shape[1] + y.shape[1] != cfg.in_dim:
            raise ConfigError(
                f"DiT in_dim is {cfg.in_dim} but x has {x.shape[1]} and y {y.shape[1]} channels"
            )
        if any(s % p for s, p in zip(x.shape[2:], cfg.patch_size)):
            raise ConfigError(f"latent size {tuple(x.shape[2:])} is not a multiple of the patch {cfg.patch_size}")
        if context.dim() != 3 or context.shape[0] != x.shape[0] or context.shape[2] != cfg.text_dim:
            raise ConfigError(
                f"context must be [B={x.shape[0]}, L, {cfg.text_dim}]; got {tuple(context.shape)}"
            )
        if context.shape[1] > cfg.text_len:
            raise ConfigError(
                f"context has {context.shape[1]} tokens, more than text_len {cfg.text_len}; truncate the prompt"
            )

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Predict the flow for x [B, 16, F, H, W] at timesteps t [B] -> float32 [B, 16, F, H, W].

        context [B, L<=text_len, text_dim] is the text encoder output (zero rows past each prompt);
        y [B, 20, F, H, W] is the 4-channel frame mask followed by the 16-channel image latent.
        """
        tokens, e, e0, context, grid = self._prepare(x, t, context, y)
        device = tokens.device
        tokens = self.runner(self, tokens, e0, context, self.rope(grid, device), self.attention_ops(device))
        out = self.head(tokens, e)  # [B, L, pt*ph*pw*16]

        # Unpatchify: [B, L, pt*ph*pw*c] -> [B, c, f*pt, h*ph, w*pw]; c is the fastest index.
        cfg = self.config
        pt, ph, pw = cfg.patch_size
        f, h, w = grid
        batch = x.shape[0]
        out = out.view(batch, f, h, w, pt, ph, pw, cfg.out_dim)
        out = out.permute(0, 7, 1, 4, 2, 5, 3, 6)  # [B, c, f, pt, h, ph, w, pw]
        return out.reshape(batch, cfg.out_dim, f * pt, h * ph, w * pw).float()

    def warm_up(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor) -> None:
        """Run one block on the inputs' shapes, so a compiled block call compiles now (output discarded)."""
        tokens, _, e0, context, grid = self._prepare(x, t, context, y)
        device = tokens.device
        self.runner.warm_up(self, tokens, e0, context, self.rope(grid, device), self.attention_ops(device))

    def _prepare(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, y: torch.Tensor):
        """Embed the inputs: (tokens [B, L, C] fp32, e [B, C], e0 [B, 6, C], context [B, T, C], grid)."""
        self._check_inputs(x, context, y)
        cfg, dtype = self.config, self.compute_dtype
        batch = x.shape[0]

        # Patchify: [B, 36, F, H, W] -> [B, C, f, h, w] -> [B, L, C]; residual stream in fp32.
        tokens = self.patch_embedding(torch.cat([x, y], dim=1).to(dtype))
        grid = tuple(tokens.shape[2:])  # (f, h, w)
        tokens = tokens.flatten(2).transpose(1, 2).float().contiguous()  # row-major, for every later op

        # Timestep: [B] -> e [B, C] -> e0 [B, 6, C], all fp32. One t per sample, so one
        # embedding per sample (the official code repeats it for every token).
        t = t.to(tokens.device).reshape(-1).expand(batch)
        e = fp32_mlp(self.time_embedding, sinusoidal_embedding(t, cfg.freq_dim))
        e0 = fp32_mlp(self.time_projection, e).unflatten(1, (6, cfg.dim))

        # Text: zero-pad to text_len *before* the MLP, as the official model; the padded rows
        # become real (unmasked) keys of cross-attention. [B, L, text_dim] -> [B, T, C].
        context = F.pad(context.to(dtype), (0, 0, 0, cfg.text_len - context.shape[1]))
        context = self.text_embedding(context)
        return tokens, e, e0, context, grid


__all__ = ["WanDiT", "WanBlock", "Head", "RMSNorm", "apply_rope", "rope_table", "rope_axis_dims",
           "sinusoidal_embedding"]
