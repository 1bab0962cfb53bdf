"""Weights from three sources behind one interface: `"synthetic"`, the official layout, the Diffusers layout.

    dit = load_dit("synthetic", A14B, expert="high", dtype="bf16", device="cuda")
    dit = load_dit(Path("/ckpt/Wan2.2-I2V-A14B"), A14B, expert="low", dtype="bf16", device="cuda")
    vae = load_vae(Path("/ckpt/Wan2.2-I2V-A14B-Diffusers"), A14B, dtype="bf16", device="cuda")
    text = load_text_encoder(source, A14B, dtype="bf16", device="cuda")

Each network is built on the `meta` device (no memory), then either materialized with seeded random
values directly in `dtype` on `device` (`synthetic.py`) or filled from the checkpoint one tensor at a
time with every name and shape checked (`reader.py`, `loader.py`). The layout of a folder is
detected from its contents (`layout.py`); the Diffusers layout is read through the name maps
(`names_dit.py`, `names_vae.py`, `names_t5.py`). A folder literally named `synthetic` is passed as
`Path("synthetic")`; the string `"synthetic"` always means seeded random weights.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Union

import torch
from torch import nn

from wan_runtime.config import ModelConfig
from wan_runtime.errors import BackendUnavailableError, ConfigError, WeightsError
from wan_runtime.memory import torch_dtypes
from wan_runtime.observer import Expert
from wan_runtime.weights.layout import CheckpointLayout, detect_layout
from wan_runtime.weights.loader import check_checkpoint, load_weights
from wan_runtime.weights.reader import open_checkpoint
from wan_runtime.weights.synthetic import (
    SEED_HIGH_NOISE, SEED_LOW_NOISE, SEED_TEXT_ENCODER, SEED_VAE, materialize_synthetic,
)

if TYPE_CHECKING:  # the modules import the name maps of this package, so they are imported lazily
    from wan_runtime.modules.dit import WanDiT
    from wan_runtime.modules.text_encoder import TextEncoder
    from wan_runtime.modules.vae import WanVAE

SYNTHETIC = "synthetic"
Source = Union[Literal["synthetic"], Path]
DTypeLike = Union[str, torch.dtype]

# The memory plan's names (bf16, fp16, fp32) and the spellings torch and configs use for them.
DTYPES: dict[str, torch.dtype] = {
    **torch_dtypes(),
    "bfloat16": torch.bfloat16, "float16": torch.float16, "half": torch.float16,
    "float32": torch.float32, "float": torch.float32,
}


def resolve_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device, or BackendUnavailableError if this machine lacks it."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r} ({exc}); use e.g. 'cuda', 'cuda:1' or 'cpu'") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailableError(
                f"device {device} requested but CUDA is not available to this torch "
                f"({torch.__version__}); install a CUDA build of torch or use device 'cpu'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BackendUnavailableError(
                f"device {device} requested but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise BackendUnavailableError(f"device {device} requested but MPS is not available on this machine")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"weights cannot be placed on device {device}; use 'cuda' or 'cpu'")
    return device


def resolve_dtype(dtype: DTypeLike, device: str | torch.device) -> torch.dtype:
    """The torch dtype for "bf16" | "fp16" | "fp32" (or a torch.dtype), checked against `device`."""
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif isinstance(dtype, str) and dtype.lower() in DTYPES:
        resolved = DTYPES[dtype.lower()]
    elif isinstance(dtype, str) and "fp8" in dtype.lower():
        raise ConfigError(
            "fp8 is a storage format of the memory plan (weight_dtype: fp8), applied after loading: "
            "load the weights in bf16"
        )
    else:
        raise ConfigError(f"unknown dtype {dtype!r}; use one of 'bf16', 'fp16', 'fp32'")
    if resolved not in (torch.bfloat16, torch.float16, torch.float32):
        raise ConfigError(f"weights are loaded in bf16, fp16 or fp32, not {resolved}")
    device = resolve_device(device)
    if resolved == torch.bfloat16 and device.type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            name = torch.cuda.get_device_name(device)
            raise BackendUnavailableError(
                f"{name} has no native bf16 (needs compute capability 8.0, Ampere or newer); use dtype 'fp16'"
            )
    if device.type == "mps" and resolved == torch.bfloat16:
        try:
            torch.ones(1, dtype=resolved, device=device)
        except (RuntimeError, TypeError) as exc:
            raise BackendUnavailableError(f"this MPS device has no bf16 ({exc}); use dtype 'fp16'") from None
    return resolved


def _is_synthetic(source: Source | str) -> bool:
    return isinstance(source, str) and source == SYNTHETIC


def _layout(source: Source | str) -> CheckpointLayout:
    if not isinstance(source, (str, Path)):
        raise ConfigError(f"weights source must be 'synthetic' or a checkpoint folder, not {type(source).__name__}")
    return detect_layout(Path(source))


def _check_config(path: Path, expected: Mapping[str, object], component: str) -> None:
    """Compare the `config.json` next to the weights with the model config; missing files or keys are skipped.

    Some settings (heads, text length, eps) change no tensor shape, so the shape checks cannot
    catch a mismatch in them; the config file can.
    """
    file = path / "config.json"
    if not file.is_file():
        return
    try:
        found = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {file} ({exc}); download it again") from None
    wrong = []
    for key, ours in expected.items():
        if key not in found or found[key] is None:
            continue
        theirs = found[key]
        if isinstance(ours, float):
            same = isinstance(theirs, (int, float)) and math.isclose(theirs, ours, rel_tol=1e-6)
        elif isinstance(ours, (tuple, list)):
            same = isinstance(theirs, (tuple, list)) and list(theirs) == list(ours)
        else:
            same = theirs == ours
        if not same:
            wrong.append(f"{key}={theirs!r} (model config: {ours!r})")
    if wrong:
        raise WeightsError(
            f"the {component} in {path} was made for another configuration: {file.name} has "
            f"{', '.join(wrong)}; pick the preset that matches these weights (a14b for Wan2.2-I2V-A14B)"
        )


def _load_into(module: nn.Module, path: Path, rename: Callable[[str], str], dtype: torch.dtype,
               device: torch.device, component: str) -> None:
    load_weights(module, open_checkpoint(path), rename, dtype, device, component)


def _identity(name: str) -> str:
    return name


def _finish(module: nn.Module) -> nn.Module:
    """Inference mode for a loaded network: eval, no gradients."""
    module.eval()
    module.requires_grad_(False)
    return module


def load_dit(source: Source | str, cfg: ModelConfig, expert: Expert, dtype: DTypeLike,
             device: str | torch.device, attention: str = "auto") -> "WanDiT":
    """One DiT expert ("high" = high-noise, "low" = low-noise) from `source`, in `dtype` on `device`."""
    from wan_runtime.modules.dit import WanDiT

    if expert not in ("high", "low"):
        raise ConfigError(f"expert must be 'high' (high-noise) or 'low' (low-noise), not {expert!r}")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    layout = None if _is_synthetic(source) else _layout(source)  # fail on a bad folder before building
    with torch.device("meta"):
        model = WanDiT(cfg.dit, attention=attention)
    component = f"{expert}-noise DiT expert"
    if layout is None:
        seed = SEED_HIGH_NOISE if expert == "high" else SEED_LOW_NOISE
        return _finish(materialize_synthetic(model, seed, dtype, device))
    folder = layout.require("high_noise" if expert == "high" else "low_noise")
    d = cfg.dit
    if layout.kind == "official":
        _check_config(folder, {
            "dim": d.dim, "ffn_dim": d.ffn_dim, "freq_dim": d.freq_dim, "in_dim": d.in_dim,
            "out_dim": d.out_dim, "num_heads": d.num_heads, "num_layers": d.num_layers,
            "text_len": d.text_len, "text_dim": d.text_dim, "eps": d.eps, "patch_size": d.patch_size,
            "qk_norm": d.qk_norm, "cross_attn_norm": d.cross_attn_norm, "model_type": "i2v",
        }, component)
        rename = _identity
    else:
        from wan_runtime.weights.names_dit import official_dit_key_from_diffusers

        _check_config(folder, {
            "num_attention_heads": d.num_heads, "attention_head_dim": d.head_dim, "in_channels": d.in_dim,
            "out_channels": d.out_dim, "text_dim": d.text_dim, "freq_dim": d.freq_dim, "ffn_dim": d.ffn_dim,
            "num_layers": d.num_layers, "eps": d.eps, "patch_size": d.patch_size,
            "cross_attn_norm": d.cross_attn_norm,
        }, component)
        rename = official_dit_key_from_diffusers
    _load_into(model, folder, rename, dtype, device, component)
    return _finish(model)


def load_vae(source: Source | str, cfg: ModelConfig, dtype: DTypeLike, device: str | torch.device) -> "WanVAE":
    """The Wan2.1 VAE from `source`, in `dtype` on `device`."""
    from wan_runtime.modules.vae import WanVAE

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    layout = None if _is_synthetic(source) else _layout(source)
    with torch.device("meta"):
        model = WanVAE(cfg.vae)
    if layout is None:
        return _finish(materialize_synthetic(model, SEED_VAE, dtype, device))
    path = layout.require("vae")
    if layout.kind == "official":
        rename = _identity
    else:
        from wan_runtime.weights.names_vae import official_vae_key_from_diffusers

        v = cfg.vae
        _check_config(path, {
            "base_dim": v.dim, "z_dim": v.z_dim, "dim_mult": v.dim_mult, "num_res_blocks": v.num_res_blocks,
            "temperal_downsample": v.temporal_downsample,
        }, "VAE")
        def rename(name: str) -> str:
            return official_vae_key_from_diffusers(name, v.num_res_blocks)
    _load_into(model, path, rename, dtype, device, "VAE")
    return _finish(model)


def load_text_encoder(source: Source | str, cfg: ModelConfig, dtype: DTypeLike,
                      device: str | torch.device) -> "TextEncoder":
    """The umT5 encoder and its tokenizer from `source` (synthetic: a stand-in tokenizer), in `dtype` on `device`."""
    from wan_runtime.modules.text_encoder import StandInTokenizer, TextEncoder, build_umt5, load_tokenizer

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    layout = None if _is_synthetic(source) else _layout(source)
    with torch.device("meta"):
        model = build_umt5(cfg.t5)
    if layout is None:
        materialize_synthetic(model, SEED_TEXT_ENCODER, dtype, device)
        return TextEncoder(_finish(model), StandInTokenizer(cfg.t5.vocab), cfg.t5.text_len)
    path = layout.require("text_encoder")
    tokenizer_dir = layout.require("tokenizer")  # checked before minutes of loading, not after
    if layout.kind == "official":
        from wan_runtime.weights.names_t5 import hf_t5_key_from_official

        rename = hf_t5_key_from_official
    else:
        t = cfg.t5
        _check_config(path, {
            "vocab_size": t.vocab, "d_model": t.dim, "d_kv": t.dim_attn // t.num_heads, "d_ff": t.dim_ffn,
            "num_heads": t.num_heads, "num_layers": t.num_layers,
            "relative_attention_num_buckets": t.num_buckets,
        }, "umT5 text encoder")
        rename = _identity
    _load_into(model, path, rename, dtype, device, "umT5 text encoder")
    return TextEncoder(_finish(model), load_tokenizer(tokenizer_dir), cfg.t5.text_len)


__all__ = [
    "Source", "SYNTHETIC", "Expert", "DTYPES", "resolve_device", "resolve_dtype",
    "load_dit", "load_vae", "load_text_encoder",
    "CheckpointLayout", "detect_layout", "open_checkpoint", "load_weights", "check_checkpoint",
    "materialize_synthetic", "SEED_HIGH_NOISE", "SEED_LOW_NOISE", "SEED_VAE", "SEED_TEXT_ENCODER",
]
