"""A VAE decode chunk: the Wan2.1 causal decoder on a 2-latent-frame latent (its first frame, then one
4-frame chunk through the causal cache), i.e. 5 video frames.

GPU: the real VAE (base dim 96) at 480p (latent 60x104 -> 480x832 px), fp32 as upstream runs it
(FACTS.md: a whole 81-frame 480p decode is ~1.8 s in bf16 on an H200). CPU: the tiny VAE at 96x160 px.
"""

from __future__ import annotations

import torch

from wan_runtime.modules.vae import WanVAE


def test_vae_decode_chunk(benchmark, synchronized, device, model_config):
    latent_hw = (60, 104) if device.type == "cuda" else (12, 20)
    vae = WanVAE(model_config.vae).to(device).eval()
    generator = torch.Generator(device=device).manual_seed(0)
    z = torch.randn(1, model_config.vae.z_dim, 2, *latent_hw, device=device, generator=generator)
    run = synchronized(lambda: vae.decode(z), device)
    benchmark.extra_info.update({"latent": list(z.shape), "pixels": [latent_hw[0] * 8, latent_hw[1] * 8]})
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
