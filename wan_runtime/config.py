"""Model configurations: the real Wan2.2-I2V-A14B numbers and a tiny preset of the same architecture."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from wan_runtime.errors import ConfigError

# Per-channel statistics of the Wan2.1 VAE latent space (official values, shared by every preset:
# the tiny VAE keeps z_dim 16 so the same normalisation applies).
LATENTS_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
LATENTS_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)

# Used by the pipeline when the request's negative prompt is empty (official default).
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


@dataclass(frozen=True)
class DiTConfig:
    """Shape of one DiT expert (official `WanModel` i2v arguments)."""

    dim: int = 5120
    ffn_dim: int = 13824
    num_layers: int = 40
    num_heads: int = 40
    freq_dim: int = 256
    text_dim: int = 4096
    text_len: int = 512
    in_dim: int = 36
    out_dim: int = 16
    patch_size: tuple[int, int, int] = (1, 2, 2)
    qk_norm: bool = True
    cross_attn_norm: bool = True
    eps: float = 1e-6

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def __post_init__(self) -> None:
        if self.dim % self.num_heads:
            raise ConfigError(f"DiT dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ConfigError(f"DiT head_dim {self.head_dim} must be even for rotary embeddings")


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the Wan2.1 causal 3D VAE."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] = LATENTS_MEAN
    latents_std: tuple[float, ...] = LATENTS_STD

    @property
    def stride(self) -> tuple[int, int, int]:
        """Compression (time, height, width) between pixels and latents."""
        t = 2 ** sum(self.temporal_downsample)
        s = 2 ** (len(self.dim_mult) - 1)
        return (t, s, s)


@dataclass(frozen=True)
class T5Config:
    """Shape of the umT5 encoder (official `T5Encoder` arguments)."""

    vocab: int = 256384
    dim: int = 4096
    dim_attn: int = 4096
    dim_ffn: int = 10240
    num_heads: int = 64
    num_layers: int = 24
    num_buckets: int = 32
    text_len: int = 512


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a Wan2.2-I2V model (sampling defaults live in GenerationRequest)."""

    name: str
    dit: DiTConfig = field(default_factory=DiTConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    t5: T5Config = field(default_factory=T5Config)
    boundary: float = 0.900  # high-noise expert while t >= boundary * num_train_timesteps
    num_train_timesteps: int = 1000
    fps: int = 16

    @property
    def vae_stride(self) -> tuple[int, int, int]:
        return self.vae.stride

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return self.dit.patch_size

    def __post_init__(self) -> None:
        if self.t5.dim != self.dit.text_dim:
            raise ConfigError(
                f"preset {self.name!r}: text encoder dim {self.t5.dim} != DiT text_dim {self.dit.text_dim}"
            )
        if self.vae.z_dim * 2 + self.vae.stride[0] != self.dit.in_dim:
            raise ConfigError(
                f"preset {self.name!r}: DiT in_dim {self.dit.in_dim} must be 2 * z_dim + mask channels"
            )


A14B = ModelConfig(name="a14b")

# Same architecture, tiny widths: every network runs a forward on a laptop CPU in a fraction of a
# second at small sizes. The VAE keeps z_dim 16 and the real strides, so sizes and token counts
# follow the same rules as the real model.
TINY = ModelConfig(
    name="tiny",
    dit=DiTConfig(
        dim=96, ffn_dim=192, num_layers=2, num_heads=2, freq_dim=32, text_dim=64, text_len=32
    ),
    vae=VAEConfig(dim=8),
    t5=T5Config(vocab=300, dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=2, text_len=32),
)

PRESETS: dict[str, ModelConfig] = {"a14b": A14B, "tiny": TINY}


def get_preset(name: str) -> ModelConfig:
    """Return the named preset, or raise with the list of known presets."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


__all__ = [
    "A14B", "TINY", "PRESETS", "DiTConfig", "VAEConfig", "T5Config", "ModelConfig",
    "DEFAULT_NEGATIVE_PROMPT", "LATENTS_MEAN", "LATENTS_STD", "get_preset", "replace",
]
