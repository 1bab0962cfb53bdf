"""WanVAE against diffusers' AutoencoderKLWan, and the official <-> diffusers VAE parameter names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wan_runtime.config import VAEConfig
from wan_runtime.errors import WeightsError
from wan_runtime.modules.vae import WanVAE
from wan_runtime.weights.names_vae import (
    diffusers_vae_key_from_official,
    diffusers_vae_state_to_official,
    official_vae_key_from_diffusers,
    official_vae_state_to_diffusers,
)

from helpers import diffusers_vae

diffusers = pytest.importorskip("diffusers")

FIXTURES = Path(__file__).parent / "fixtures" / "official"
# CPU fp32; both models run the same chunked causal pass, so only summation order differs.
PARITY_TOL = 5e-5  # measured max abs: latent 2.2e-6, decoded 5.9e-6 (both inputs)


def _diffusers_vae(cfg: VAEConfig) -> torch.nn.Module:
    return diffusers_vae(cfg).eval()


@pytest.fixture(scope="module")
def models() -> tuple[WanVAE, torch.nn.Module]:
    cfg = VAEConfig(dim=8)
    state = load_file(FIXTURES / "vae_tiny.safetensors")
    ours = WanVAE(cfg).eval()
    ours.load_state_dict(state, strict=True)
    theirs = _diffusers_vae(cfg)
    theirs.load_state_dict(official_vae_state_to_diffusers(state), strict=True)
    return ours, theirs


def _stats(cfg: VAEConfig) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1)
    return mean, std


def _videos() -> list[torch.Tensor]:
    fixture = load_file(FIXTURES / "vae_tiny_io.safetensors")["video"]  # 9 frames, 2 chunks after the first
    longer = torch.rand(1, 3, 13, 32, 48, generator=torch.Generator().manual_seed(3)) * 2 - 1  # 3 chunks
    return [fixture, longer]


@pytest.mark.parametrize("index", [0, 1], ids=["fixture_9_frames", "random_13_frames"])
def test_encode_matches_diffusers(models, index):
    ours, theirs = models
    video = _videos()[index]
    mean, std = _stats(ours.config)
    with torch.no_grad():
        expected = (theirs.encode(video).latent_dist.mode() - mean) / std
    assert (ours.encode(video) - expected).abs().max().item() < PARITY_TOL


@pytest.mark.parametrize("index", [0, 1], ids=["fixture_9_frames", "random_13_frames"])
def test_decode_matches_diffusers(models, index):
    ours, theirs = models
    latent = ours.encode(_videos()[index])
    mean, std = _stats(ours.config)
    with torch.no_grad():
        expected = theirs.decode(latent * std + mean).sample  # diffusers clamps to [-1, 1] too
    decoded = ours.decode(latent)
    assert decoded.shape == expected.shape
    assert (decoded - expected).abs().max().item() < PARITY_TOL


def test_every_official_a14b_key_maps_to_a_diffusers_key_of_the_same_shape(fixtures_dir):
    official = json.loads((fixtures_dir / "keys_vae_wan21_official.json").read_text())
    with torch.device("meta"):
        theirs = _diffusers_vae(VAEConfig())
    expected = {name: list(p.shape) for name, p in theirs.state_dict().items()}
    mapped = {diffusers_vae_key_from_official(name): shape for name, shape in official.items()}
    assert mapped == expected  # one-to-one, nothing missing, nothing extra, shapes unchanged


def test_names_round_trip_in_both_directions(fixtures_dir):
    official = json.loads((fixtures_dir / "keys_vae_wan21_official.json").read_text())
    for name in official:
        assert official_vae_key_from_diffusers(diffusers_vae_key_from_official(name)) == name


def test_state_dict_conversion_round_trips_and_keeps_tensors():
    state = load_file(FIXTURES / "vae_tiny.safetensors")
    back = diffusers_vae_state_to_official(official_vae_state_to_diffusers(state))
    assert back.keys() == state.keys()
    assert all(back[name] is state[name] for name in state)


@pytest.mark.parametrize(
    "name",
    [
        "encoder.downsamples.0.residual.1.gamma",  # slot 1 is the SiLU
        "decoder.upsamples.3.residual.0.gamma",  # slot 3 of a stage is its resample
        "decoder.upsamples.2.time_conv.weight",  # ... and slot 2 a residual block
        "encoder.middle.1.residual.0.gamma",  # middle.1 is the attention
        "encoder.post_quant_conv.weight",
        "model.conv1.weight",
    ],
)
def test_unmappable_official_names_raise(name):
    with pytest.raises(WeightsError, match="Wan2.1 VAE"):
        diffusers_vae_key_from_official(name)


@pytest.mark.parametrize(
    "name",
    [
        "decoder.up_blocks.0.resnets.3.norm1.gamma",  # only R+1 = 3 resnets per up block
        "decoder.up_blocks.0.upsamplers.0.norm1.gamma",
        "decoder.mid_block.attentions.1.proj.weight",
        "encoder.down_blocks.0.avg_shortcut.weight",  # Wan2.2 VAE (TI2V-5B) residual down block
        "conv1.weight",
    ],
)
def test_unmappable_diffusers_names_raise(name):
    with pytest.raises(WeightsError, match="Wan2.1 VAE"):
        official_vae_key_from_diffusers(name)
