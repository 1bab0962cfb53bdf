"""WanI2V against diffusers' WanImageToVideoPipeline holding the same tiny weights (CPU, fp32)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wan_runtime.memory import MemoryPlan
from wan_runtime.pipeline import WanI2V
from wan_runtime.request import GenerationRequest
from wan_runtime.scheduler import official_sigmas
from wan_runtime.weights.names_dit import diffusers_dit_key_from_official
from wan_runtime.weights.names_vae import official_vae_state_to_diffusers

from helpers import diffusers_transformer, diffusers_vae

diffusers = pytest.importorskip("diffusers")

# Frames are compared in [0, 1]: ours are rounded to uint8 (at most half a level, 0.5/255, away) and
# the two implementations may drift by float error over the 8 steps. Measured max: 0.500/255, i.e.
# the rounding alone; the bound allows 2e-4 of drift on top.
FRAME_TOL = 0.5 / 255 + 2e-4


class OfficialGridUniPC(diffusers.UniPCMultistepScheduler):
    """UniPC that ignores diffusers' own grid and uses the official unshifted sigmas (it applies the shift)."""

    def set_timesteps(self, num_inference_steps=None, device=None, **kwargs):
        sigmas = official_sigmas("unipc", num_inference_steps)
        super().set_timesteps(sigmas=sigmas, device=device)


def _diffusers_transformer(cfg, state):
    model = diffusers_transformer(cfg.dit)
    model.load_state_dict({diffusers_dit_key_from_official(k): v for k, v in state.items()}, strict=True)
    return model.eval()


def _diffusers_vae(cfg, state):
    model = diffusers_vae(cfg.vae)
    model.load_state_dict(official_vae_state_to_diffusers(state), strict=True)
    return model.eval()


def test_video_matches_diffusers_wan_image_to_video_pipeline():
    ours = WanI2V.load("synthetic", "tiny", "cpu", MemoryPlan(weight_dtype="fp32", vae_dtype="fp32"))
    cfg = ours.cfg
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    req = GenerationRequest(image=image, prompt="a red kite", negative_prompt="blurry", size="48*32",
                            frames=5, steps=8, shift=5.0, guide_scale_high=4.0, guide_scale_low=3.0, seed=5)
    result = ours.generate(req)

    # The same inputs for diffusers: prompt embeddings zero-padded to text_len (as the DiT does), and
    # the initial noise our pipeline drew from the seeded generator.
    cond, uncond = ours.text_encoder.encode([req.prompt, req.negative_prompt], torch.device("cpu"))
    pad = lambda e: torch.nn.functional.pad(e, (0, 0, 0, cfg.dit.text_len - e.shape[0]))[None]  # noqa: E731
    noise, _ = ours._noise(result.geometry, req.seed)

    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, image_encoder=None, image_processor=None,
        transformer=_diffusers_transformer(cfg, ours.experts["high"].state_dict()),
        transformer_2=_diffusers_transformer(cfg, ours.experts["low"].state_dict()),
        vae=_diffusers_vae(cfg, ours.vae.state_dict()),
        scheduler=OfficialGridUniPC(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=req.shift,
                                    num_train_timesteps=1000),
        boundary_ratio=cfg.boundary,
    )
    theirs = pipe(
        image=image, prompt_embeds=pad(cond), negative_prompt_embeds=pad(uncond),
        height=32, width=48, num_frames=5, num_inference_steps=req.steps,
        guidance_scale=req.guide_scale_high, guidance_scale_2=req.guide_scale_low,
        latents=noise, output_type="np",
    ).frames[0]  # [F, H, W, 3] in [0, 1]

    diff = np.abs(result.frames.astype(np.float64) / 255 - theirs.astype(np.float64)).max()
    assert theirs.shape == result.frames.shape
    assert diff < FRAME_TOL, f"max abs frame difference {diff * 255:.3f}/255"
