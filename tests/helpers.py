"""Small helpers shared by several test modules (imported as `helpers`; tests/ is on sys.path)."""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image

from wan_runtime.config import DiTConfig, VAEConfig
from wan_runtime.request import GenerationRequest


def tiny_request(image=None, **overrides) -> GenerationRequest:
    """A small request for the tiny preset: 64x48, 5 frames, 4 steps, seed 1 (a seeded noise picture by default)."""
    if image is None:
        rng = np.random.default_rng(0)
        image = Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    base = dict(image=image, prompt="a cat", size="64*48", frames=5, steps=4, seed=1)
    base.update(overrides)
    return GenerationRequest(**base)


def cuda_timed(fn, repeats: int = 2) -> tuple[torch.Tensor, float]:
    """Run `fn` once to warm up, then `repeats` times; the last output and the mean synchronized seconds."""
    fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    torch.cuda.synchronize()
    return out, (time.perf_counter() - start) / repeats


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-frame PSNR of uint8 videos (data range 1, 100 dB for identical frames)."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2
    per_frame = mse.reshape(a.shape[0], -1).mean(axis=1)
    return float(np.mean([100.0 if m == 0 else min(100.0, -10 * np.log10(m)) for m in per_frame]))


def diffusers_transformer(d: DiTConfig):
    """diffusers' WanTransformer3DModel shaped like `d` (i2v: no image embedder), on the current default device."""
    import diffusers

    return diffusers.WanTransformer3DModel(
        patch_size=d.patch_size, num_attention_heads=d.num_heads, attention_head_dim=d.head_dim,
        in_channels=d.in_dim, out_channels=d.out_dim, text_dim=d.text_dim, freq_dim=d.freq_dim,
        ffn_dim=d.ffn_dim, num_layers=d.num_layers, cross_attn_norm=d.cross_attn_norm,
        qk_norm="rms_norm_across_heads", eps=d.eps, image_dim=None, added_kv_proj_dim=None,
        rope_max_seq_len=1024,
    )


def diffusers_sharing(model: torch.nn.Module, d: DiTConfig, device: torch.device | str) -> torch.nn.Module:
    """diffusers' WanTransformer3DModel whose parameters are the very tensors of `model` (no copy)."""
    from wan_runtime.weights.names_dit import diffusers_dit_key_from_official

    with torch.device("meta"):
        theirs = diffusers_transformer(d)
    state = {diffusers_dit_key_from_official(k): v for k, v in model.state_dict().items()}
    theirs.load_state_dict(state, strict=False, assign=True)
    # The rotary tables are buffers computed at construction: rebuild that one small module for real.
    rope_cls = type(theirs.rope)
    theirs.rope = rope_cls(d.head_dim, d.patch_size, 1024).to(device)
    return theirs.eval()


def diffusers_vae(v: VAEConfig):
    """diffusers' AutoencoderKLWan shaped like `v`, with its latent mean/std, on the current default device."""
    import diffusers

    return diffusers.AutoencoderKLWan(
        base_dim=v.dim, z_dim=v.z_dim, dim_mult=list(v.dim_mult), num_res_blocks=v.num_res_blocks,
        attn_scales=list(v.attn_scales), temperal_downsample=list(v.temporal_downsample),
        latents_mean=list(v.latents_mean), latents_std=list(v.latents_std),
    )
