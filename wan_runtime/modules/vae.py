"""The Wan2.1 causal 3D VAE (the VAE of Wan2.2-I2V-A14B), written after the official `vae2_1.py`.

Parameter names are exactly those of `Wan2.1_VAE.pth` (`encoder.*`, `conv1`, `conv2`, `decoder.*`),
so the official checkpoint loads with `load_state_dict(strict=True)` and no renaming. The module
holds no buffers: built on the `meta` device and materialised from a checkpoint, it needs nothing else.

Causality and chunking. Every 3D convolution pads only the past side in time, so frame t sees
frames <= t. Like the official runtime, encode runs the video through the encoder in chunks (the
first frame, then groups of 4 frames) and decode runs one latent frame at a time. Between chunks
each causal layer keeps the last frames of its own input in a `CausalCache` (2 frames for a
kernel-3 conv), so the chunked pass equals the official `feat_cache` pass while holding at most
one chunk of activations. Two temporal layers have their own rules (as the official ones):
- `downsample3d` (encoder): the first chunk's single frame passes through untouched; later chunks
  are prefixed with the previous chunk's last frame and go through a stride-2 kernel-3 time conv,
  so 1 + 4n frames become 1 + n latent frames.
- `upsample3d` (decoder): the first latent frame is not doubled in time; later chunks go through a
  causal time conv whose history starts at the second chunk (zeros before it) and whose 2C output
  channels are interleaved into two frames, so 1 + n latent frames become 1 + 4n frames.

Latent normalisation: `encode` returns `(mu - latents_mean) / latents_std` (the mean of the
posterior, no sampling) and `decode` takes that normalised latent. Both run in the parameters'
dtype (bf16 on a GPU, fp32 in tests); RMS norms accumulate their sum of squares in float32; the
returned tensors are float32.

Spatial tiling (`tile_px`): the image plane is cut into square tiles of `tile_px` pixels
(`tile_px / 8` latent pixels) that overlap by a quarter of a tile, each tile runs the full chunked
causal pass on its own, and overlaps are blended with linear ramps. A quarter tile (64 px at 256,
128 px at 512) is the overlap diffusers uses by default (256 px tiles at a 192 px stride): wide
enough to hide the zero-padding seam at tile edges. Tiles are spread evenly so every tile is full
size and the overlap is at least a quarter. Measured on an H100 (bf16, 81 frames, 256 px tiles):
480p decode 1.60 s / 4.6 GiB untiled vs 3.63 s / 1.1 GiB tiled; 720p decode 3.75 s / 10.5 GiB vs
8.67 s / 1.5 GiB; 720p encode 2.44 s / 8.5 GiB vs 5.78 s / 1.0 GiB (peaks above the weights).
Tiled results differ from untiled ones (the middle attention and the receptive field see less of
the frame); tests bound that difference.

Shape legend: B batch, C channels, F video frames (4n+1), T = (F-1)/4 + 1 latent frames,
H, W pixels, h = H/8, w = W/8 latent pixels, z = z_dim (16).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from wan_runtime.config import VAEConfig
from wan_runtime.errors import ConfigError

# Tile sizes follow `MemoryPlan.vae_tiling`: pixels, a multiple of 16, at least 64.
TILE_MULTIPLE_PX = 16
MIN_TILE_PX = 64


class CausalCache:
    """What each causal layer remembers between the chunks of one encode or decode pass."""

    def __init__(self) -> None:
        self.history: dict[nn.Module, torch.Tensor] = {}  # layer -> last input frames it saw
        self.started: set[nn.Module] = set()  # upsample3d layers that have seen their first chunk


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------

class CausalConv3d(nn.Conv3d):
    """3D convolution that pads only the past in time ("same" padding in space), streamable by chunks."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: tuple[int, int, int]) -> None:
        kt, kh, kw = kernel_size
        super().__init__(in_dim, out_dim, kernel_size, padding=(0, kh // 2, kw // 2))
        self.past = kt - 1  # frames of history each output frame needs

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """[B, Cin, t, H, W] -> [B, Cout, t, H, W]; history from `cache` (zeros before the stream starts)."""
        if self.past == 0:
            return super().forward(x)
        history = cache.history.get(self) if cache is not None else None
        if history is None:
            b, c, _, h, w = x.shape
            history = x.new_zeros(b, c, self.past, h, w)
        x = torch.cat([history, x], dim=2)
        if cache is not None:
            # clone: a view would keep the whole chunk alive until the next one
            cache.history[self] = x[:, :, -self.past:].clone()
        return super().forward(x)


class RMSNorm(nn.Module):
    """Channel RMS norm of the official VAE: x / ||x||_C * sqrt(C) * gamma (no bias in this model)."""

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        # gamma broadcasts over (T, H, W) for videos and over (H, W) for the attention's frames
        shape = (dim, 1, 1) if images else (dim, 1, 1, 1)
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, ...] -> same shape, in x's dtype."""
        # float32 sum of squares; on CUDA this reads bf16 directly, without a float32 copy of x
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32)
        factor = (self.scale / norm.clamp_min(1e-12)).to(x.dtype)  # [B, 1, ...]
        return x * factor * self.gamma


class Upsample2x(nn.Module):
    """Nearest-neighbour 2x spatial upsampling of [N, C, H, W] (equal to 'nearest-exact' at scale 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, 2H, 2W]; a pure copy, exact in any dtype."""
        n, c, h, w = x.shape
        return x[:, :, :, None, :, None].expand(n, c, h, 2, w, 2).reshape(n, c, 2 * h, 2 * w)


def _per_frame(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D layer to every frame: [B, C, t, H, W] -> [B, C', t, H', W']."""
    b, c, t, h, w = x.shape
    y = layer(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
    return y.view(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)


class Resample(nn.Module):
    """Spatial 2x up/down-sampling, optionally with the temporal 2x of the causal VAE."""

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ConfigError(f"Resample mode {mode!r} is unknown; use one of {self.MODES}")
        self.mode = mode
        if mode.startswith("upsample"):
            # every upsample halves the channels
            self.resample = nn.Sequential(Upsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        else:
            # pad right/bottom only, so the stride-2 conv maps an even size to exactly half
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, 2 * dim, (3, 1, 1))  # 2C channels = two output frames
        elif mode == "downsample3d":
            self.time_conv = nn.Conv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))  # no padding: see forward

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """Up: [B, C, t, H, W] -> [B, C/2, t', 2H, 2W]; down: -> [B, C, t', H/2, W/2] (t' per module doc)."""
        if self.mode == "upsample3d":
            if self not in cache.started:
                cache.started.add(self)  # the first latent frame stays one frame
            else:
                b, c, t, h, w = x.shape
                y = self.time_conv(x, cache)  # [B, 2C, t, H, W]
                # channels [0, C) become frame 2i, channels [C, 2C) frame 2i+1
                x = y.view(b, 2, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * t, h, w)
        x = _per_frame(self.resample, x)
        if self.mode == "downsample3d":
            last = x[:, :, -1:].clone()
            previous = cache.history.get(self)
            if previous is not None:
                # windows (prev, 1, 2), (2, 3, 4) of [prev, chunk]: 4 frames -> 2
                x = self.time_conv(torch.cat([previous, x], dim=2))
            cache.history[self] = last  # the first chunk's single frame passes through
        return x


class ResidualBlock(nn.Module):
    """norm-SiLU-conv-norm-SiLU-conv with a (1x1x1 conv) shortcut; slots 1, 4, 5 hold no weights."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        # layout of the checkpoint's nn.Sequential (slot 5 was dropout, 0 in Wan2.1: inference only)
        self.residual = nn.Sequential(
            RMSNorm(in_dim), nn.SiLU(), CausalConv3d(in_dim, out_dim, (3, 3, 3)),
            RMSNorm(out_dim), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, (3, 3, 3)),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, (1, 1, 1)) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """[B, Cin, t, H, W] -> [B, Cout, t, H, W]."""
        norm1, act1, conv1, norm2, act2, _dropout, conv2 = self.residual
        h = conv1(act1(norm1(x)), cache)
        h = conv2(act2(norm2(h)), cache)
        return h + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no attention across time)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        """[B, C, t, H, W] -> same shape (the cache is unused: each frame attends only to itself)."""
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        qkv = self.to_qkv(self.norm(frames)).flatten(2).transpose(1, 2)  # [B*t, H*W, 3C]
        q, k, v = (part.unsqueeze(1) for part in qkv.chunk(3, dim=-1))  # [B*t, 1, H*W, C] each
        out = F.scaled_dot_product_attention(q, k, v)  # [B*t, 1, H*W, C]
        out = out.squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        out = self.proj(out)
        return x + out.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)


# --------------------------------------------------------------------------------------------
# Encoder and decoder
# --------------------------------------------------------------------------------------------

class Encoder3d(nn.Module):
    """Video chunk [B, 3, t, H, W] -> posterior parameters [B, 2z, t', H/8, W/8]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        dims = [cfg.dim * m for m in (1, *cfg.dim_mult)]  # A14B: 96, 96, 192, 384, 384
        self.conv1 = CausalConv3d(3, dims[0], (3, 3, 3))
        blocks: list[nn.Module] = []
        scale = 1.0  # resolution relative to the input, for attn_scales
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim))
                if scale in cfg.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i < len(cfg.dim_mult) - 1:
                blocks.append(Resample(out_dim, "downsample3d" if cfg.temporal_downsample[i] else "downsample2d"))
                scale /= 2.0
        self.downsamples = nn.ModuleList(blocks)
        c = dims[-1]
        self.middle = nn.ModuleList([ResidualBlock(c, c), AttentionBlock(c), ResidualBlock(c, c)])
        self.head = nn.ModuleList([RMSNorm(c), nn.SiLU(), CausalConv3d(c, 2 * cfg.z_dim, (3, 3, 3))])

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """One chunk (1 frame first, then 4) -> its latent frames (1 each)."""
        x = self.conv1(x, cache)
        for block in (*self.downsamples, *self.middle):
            x = block(x, cache)
        norm, act, conv = self.head
        return conv(act(norm(x)), cache)


class Decoder3d(nn.Module):
    """Latent chunk [B, z, t, h, w] -> video frames [B, 3, t', 8h, 8w]."""

    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        dims = [cfg.dim * m for m in (cfg.dim_mult[-1], *reversed(cfg.dim_mult))]  # A14B: 384, 384, 384, 192, 96
        temporal_upsample = tuple(reversed(cfg.temporal_downsample))
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], (3, 3, 3))
        c = dims[0]
        self.middle = nn.ModuleList([ResidualBlock(c, c), AttentionBlock(c), ResidualBlock(c, c)])
        blocks: list[nn.Module] = []
        scale = 1.0 / 2 ** (len(cfg.dim_mult) - 2)  # resolution relative to the output, for attn_scales
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                in_dim //= 2  # the previous stage's upsample halved the channels
            for _ in range(cfg.num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim))
                if scale in cfg.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if i < len(cfg.dim_mult) - 1:
                blocks.append(Resample(out_dim, "upsample3d" if temporal_upsample[i] else "upsample2d"))
                scale *= 2.0
        self.upsamples = nn.ModuleList(blocks)
        self.head = nn.ModuleList([RMSNorm(dims[-1]), nn.SiLU(), CausalConv3d(dims[-1], 3, (3, 3, 3))])

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """One latent frame -> 1 video frame (first chunk) or 4 (later chunks)."""
        x = self.conv1(x, cache)
        for block in (*self.middle, *self.upsamples):
            x = block(x, cache)
        norm, act, conv = self.head
        return conv(act(norm(x)), cache)


# --------------------------------------------------------------------------------------------
# Spatial tiling
# --------------------------------------------------------------------------------------------

def tile_spans(size: int, tile: int | None) -> list[tuple[int, int]]:
    """[start, stop) of overlapping tiles covering [0, size) on one latent axis, evenly spread."""
    if tile is None or size <= tile:
        return [(0, size)]
    max_stride = tile - tile // 4  # overlap of at least a quarter tile
    count = math.ceil((size - tile) / max_stride) + 1
    starts = [round(k * (size - tile) / (count - 1)) for k in range(count)]
    return [(s, s + tile) for s in starts]


def blend_weights(spans: list[tuple[int, int]], scale: int) -> list[torch.Tensor]:
    """Per-tile 1-D weights at `scale` x latent resolution: linear ramps over overlaps, summing to 1."""
    ramps = []
    for k, (start, stop) in enumerate(spans):
        n = (stop - start) * scale
        pos = torch.arange(n, dtype=torch.float64) + 0.5
        w = torch.ones(n, dtype=torch.float64)
        if k > 0:  # rise across the overlap with the previous tile
            w = torch.minimum(w, pos / ((spans[k - 1][1] - start) * scale))
        if k < len(spans) - 1:  # fall across the overlap with the next tile
            w = torch.minimum(w, (n - pos) / ((stop - spans[k + 1][0]) * scale))
        ramps.append(w)
    # two overlapping ramps already sum to 1; dividing by the total also covers 3-way overlaps
    total = torch.zeros(spans[-1][1] * scale, dtype=torch.float64)
    for (start, stop), w in zip(spans, ramps):
        total[start * scale:stop * scale] += w
    return [(w / total[start * scale:stop * scale]).float() for (start, stop), w in zip(spans, ramps)]


def tile_grid(h: int, w: int, tile: int | None, scale: int) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Latent-space tiles (rows, cols) of an h x w latent and their 2-D blend weights at `scale`."""
    rows, cols = tile_spans(h, tile), tile_spans(w, tile)
    for (y0, y1), wy in zip(rows, blend_weights(rows, scale)):
        for (x0, x1), wx in zip(cols, blend_weights(cols, scale)):
            yield slice(y0, y1), slice(x0, x1), wy[:, None] * wx[None, :]


def _scaled(s: slice, scale: int) -> slice:
    """A latent slice in pixel units."""
    return slice(s.start * scale, s.stop * scale)


# --------------------------------------------------------------------------------------------
# The VAE
# --------------------------------------------------------------------------------------------

class WanVAE(nn.Module):
    """Wan2.1 causal 3D VAE: video [B, 3, F, H, W] in [-1, 1] <-> normalised latent [B, z, T, h, w]."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        if len(config.temporal_downsample) != len(config.dim_mult) - 1:
            raise ConfigError(
                f"VAEConfig.temporal_downsample has {len(config.temporal_downsample)} entries; it needs one "
                f"per downsample, len(dim_mult) - 1 = {len(config.dim_mult) - 1}"
            )
        if not len(config.latents_mean) == len(config.latents_std) == config.z_dim:
            raise ConfigError(
                f"VAEConfig.latents_mean/std have {len(config.latents_mean)}/{len(config.latents_std)} "
                f"values; give one per latent channel (z_dim = {config.z_dim})"
            )
        self.config = config
        self.encoder = Encoder3d(config)
        self.conv1 = CausalConv3d(2 * config.z_dim, 2 * config.z_dim, (1, 1, 1))  # -> (mu, log_var)
        self.conv2 = CausalConv3d(config.z_dim, config.z_dim, (1, 1, 1))
        self.decoder = Decoder3d(config)

    @property
    def spatial_stride(self) -> int:
        """Pixels per latent pixel along H and W (8)."""
        return self.config.stride[1]

    def _stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel latent mean and std [1, z, 1, 1, 1] float32 (built on the fly: no buffers)."""
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latents_mean, dtype=torch.float32, device=device).view(shape)
        std = torch.tensor(self.config.latents_std, dtype=torch.float32, device=device).view(shape)
        return mean, std

    # ---- validation ------------------------------------------------------------------------

    def _latent_tile(self, tile_px: int | None) -> int | None:
        """Tile edge in latent pixels, or None for no tiling."""
        if tile_px is None:
            return None
        if isinstance(tile_px, bool) or not isinstance(tile_px, int):
            raise ConfigError(f"tile_px={tile_px!r} must be an int number of pixels (e.g. 256) or None")
        if tile_px < MIN_TILE_PX or tile_px % TILE_MULTIPLE_PX:
            raise ConfigError(
                f"tile_px={tile_px} is not a valid VAE tile: use a multiple of {TILE_MULTIPLE_PX} pixels "
                f"of at least {MIN_TILE_PX} (e.g. 256 or 512), or None to disable tiling"
            )
        return tile_px // self.spatial_stride

    def _check_video(self, video: torch.Tensor) -> None:
        """Raise ConfigError unless video is a float [B, 3, 4n+1, 8a, 8b] tensor."""
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
            raise ConfigError(
                f"VAE encode expects a video tensor [B, 3, F, H, W], got {shape}; "
                "add the batch dimension (video.unsqueeze(0)) or the frame dimension (image[:, :, None])"
            )
        _, c, f, h, w = video.shape
        if c != 3:
            raise ConfigError(f"VAE encode expects 3 RGB channels in dim 1, got {c}; pass [B, 3, F, H, W]")
        if not video.is_floating_point():
            raise ConfigError(f"VAE encode expects a float video in [-1, 1], got {video.dtype}; use x / 127.5 - 1")
        if f < 1 or (f - 1) % 4:
            n = max(0, (f - 1) // 4)
            raise ConfigError(
                f"VAE encode got {f} frames; the causal VAE needs 4n+1 frames (e.g. {4 * n + 1} or {4 * n + 5})"
            )
        s = self.spatial_stride
        if h < s or w < s or h % s or w % s:
            raise ConfigError(
                f"VAE encode got {h}x{w} pixels (HxW); both must be positive multiples of {s} "
                f"(e.g. {max(s, h // s * s)}x{max(s, w // s * s)}): resize or crop the video"
            )

    def _check_latent(self, z: torch.Tensor) -> None:
        """Raise ConfigError unless z is a float [B, z_dim, T, h, w] tensor."""
        z_dim = self.config.z_dim
        if not isinstance(z, torch.Tensor) or z.dim() != 5:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ConfigError(
                f"VAE decode expects a latent tensor [B, {z_dim}, T, h, w], got {shape}; "
                "add the batch dimension with z.unsqueeze(0)"
            )
        b, c, t, h, w = z.shape
        if c != z_dim:
            raise ConfigError(
                f"VAE decode expects {z_dim} latent channels in dim 1, got {c}; pass [B, {z_dim}, T, h, w]"
            )
        if not z.is_floating_point():
            raise ConfigError(f"VAE decode expects a float latent, got {z.dtype}; convert it with z.float()")
        if min(b, t, h, w) < 1:
            raise ConfigError(f"VAE decode got an empty latent {tuple(z.shape)}; every dimension must be >= 1")

    # ---- chunked passes --------------------------------------------------------------------

    def _encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior mean of one (tile of a) video: [B, 3, F, H, W] -> [B, z, T, H/8, W/8], compute dtype."""
        cache = CausalCache()
        chunks = [x[:, :, :1]] + [x[:, :, i:i + 4] for i in range(1, x.shape[2], 4)]
        latent = torch.cat([self.encoder(chunk, cache) for chunk in chunks], dim=2)  # [B, 2z, T, h, w]
        mu, _log_var = self.conv1(latent).chunk(2, dim=1)
        return mu

    def _decode_chunks(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        """Frames of one (tile of a) raw latent, in order: 1 frame, then 4 per further latent frame."""
        x = self.conv2(z)
        cache = CausalCache()
        for t in range(x.shape[2]):
            yield self.decoder(x[:, :, t:t + 1], cache)

    # ---- public API ------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, video: torch.Tensor, tile_px: int | None = None) -> torch.Tensor:
        """Video [B, 3, F, H, W] in [-1, 1] -> normalised mean latent [B, z, (F-1)/4+1, H/8, W/8] float32."""
        self._check_video(video)
        tile = self._latent_tile(tile_px)
        param = next(self.parameters())
        x = video.to(device=param.device, dtype=param.dtype)
        b, _, f, h_px, w_px = x.shape
        s = self.spatial_stride
        h, w = h_px // s, w_px // s
        mu = torch.zeros(b, self.config.z_dim, (f - 1) // 4 + 1, h, w, dtype=torch.float32, device=x.device)
        for ys, xs, weight in tile_grid(h, w, tile, scale=1):
            tile_mu = self._encode_mean(x[:, :, :, _scaled(ys, s), _scaled(xs, s)])
            mu[:, :, :, ys, xs] += tile_mu.float() * weight.to(x.device)
        mean, std = self._stats(x.device)
        return (mu - mean) / std

    @torch.no_grad()
    def decode(self, z: torch.Tensor, tile_px: int | None = None, *, clamp: bool = True) -> torch.Tensor:
        """Normalised latent [B, z, T, h, w] -> video [B, 3, 4(T-1)+1, 8h, 8w] float32 clamped to [-1, 1].

        `clamp=False` returns the raw decoder output (what the official `WanVAE_.decode` returns; its
        `Wan2_1_VAE.decode` wrapper clamps).
        """
        self._check_latent(z)
        tile = self._latent_tile(tile_px)
        param = next(self.parameters())
        mean, std = self._stats(param.device)
        x = (z.to(device=param.device, dtype=torch.float32) * std + mean).to(param.dtype)
        b, _, t, h, w = x.shape
        s = self.spatial_stride
        out = torch.zeros(b, 3, 4 * (t - 1) + 1, h * s, w * s, dtype=torch.float32, device=x.device)
        for ys, xs, weight in tile_grid(h, w, tile, scale=s):
            weight = weight.to(x.device)
            frame = 0
            # accumulate chunk by chunk: a tile's whole video never has to exist at once
            for chunk in self._decode_chunks(x[:, :, :, ys, xs]):
                n = chunk.shape[2]
                out[:, :, frame:frame + n, _scaled(ys, s), _scaled(xs, s)] += chunk.float() * weight
                frame += n
        return out.clamp_(-1.0, 1.0) if clamp else out


__all__ = [
    "WanVAE", "Encoder3d", "Decoder3d", "CausalCache", "CausalConv3d", "RMSNorm", "Resample",
    "ResidualBlock", "AttentionBlock", "Upsample2x", "TILE_MULTIPLE_PX", "MIN_TILE_PX",
    "tile_spans", "blend_weights", "tile_grid",
]
