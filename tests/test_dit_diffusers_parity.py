"""WanDiT vs diffusers' WanTransformer3DModel holding the same (fixture) weights, and the name mapping."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from wan_runtime.config import DiTConfig
from wan_runtime.errors import WeightsError
from wan_runtime.modules.dit import WanDiT
from wan_runtime.weights.names_dit import diffusers_dit_key_from_official, official_dit_key_from_diffusers

from helpers import diffusers_transformer

diffusers = pytest.importorskip("diffusers")

DIFFUSERS_TOLERANCE = 1e-4  # max abs error, fp32 CPU (FACTS.md measured 6e-7 for diffusers vs official)


def _fixture_dit_config(fixtures_dir: Path) -> DiTConfig:
    """The DiT config the official fixture was made with (README.json `dit_tiny.config`)."""
    official = json.loads((fixtures_dir / "README.json").read_text())["dit_tiny"]["config"]
    names = {f.name for f in dataclasses.fields(DiTConfig)}  # drops model_type, window_size
    return DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in official.items() if k in names})


def _tiny_diffusers_model(fixtures_dir: Path):
    """diffusers' transformer shaped like the fixture DiT (i2v, no image embedder)."""
    return diffusers_transformer(_fixture_dit_config(fixtures_dir)).eval()


def test_diffusers_transformer_with_mapped_fixture_weights_matches_wandit(fixtures_dir: Path):
    official_weights = load_file(fixtures_dir / "dit_tiny.safetensors")
    io = load_file(fixtures_dir / "dit_tiny_io.safetensors")

    ours = WanDiT(_fixture_dit_config(fixtures_dir)).eval()
    ours.load_state_dict(official_weights, strict=True)
    theirs = _tiny_diffusers_model(fixtures_dir)
    diffusers_weights = {diffusers_dit_key_from_official(k): v for k, v in official_weights.items()}
    theirs.load_state_dict(diffusers_weights, strict=True)

    x, y, t = io["x"][None], io["y"][None], io["t"]
    context_padded = F.pad(io["context"][None], (0, 0, 0, 32 - 7))  # diffusers does not pad to text_len
    with torch.no_grad():
        out_ours = ours(x, t, io["context"][None], y)
        out_theirs = theirs(torch.cat([x, y], dim=1), t, context_padded, return_dict=False)[0]

    assert (out_ours - out_theirs).abs().max().item() < DIFFUSERS_TOLERANCE
    assert (out_theirs[0] - io["out"]).abs().max().item() < DIFFUSERS_TOLERANCE


def test_name_mapping_round_trips_every_a14b_key(fixtures_dir: Path):
    official = list(json.loads((fixtures_dir / "keys_dit_a14b_official.json").read_text()))
    mapped = [diffusers_dit_key_from_official(name) for name in official]
    assert len(set(mapped)) == len(official) == 1095
    assert [official_dit_key_from_diffusers(name) for name in mapped] == official


def test_name_mapping_covers_exactly_the_diffusers_parameters(fixtures_dir: Path):
    official = set(load_file(fixtures_dir / "dit_tiny.safetensors"))
    diffusers_names = set(_tiny_diffusers_model(fixtures_dir).state_dict())
    assert {official_dit_key_from_diffusers(name) for name in diffusers_names} == official


def test_official_norm3_is_diffusers_norm2():
    assert diffusers_dit_key_from_official("blocks.3.norm3.weight") == "blocks.3.norm2.weight"
    assert official_dit_key_from_diffusers("blocks.3.norm2.bias") == "blocks.3.norm3.bias"
    assert diffusers_dit_key_from_official("head.modulation") == "scale_shift_table"
    assert diffusers_dit_key_from_official("blocks.0.modulation") == "blocks.0.scale_shift_table"


@pytest.mark.parametrize(
    "name", ["blocks.0.self_attn.rope.weight", "img_emb.proj.0.weight", "blocks.0.norm1.weight"]
)
def test_unmappable_official_name_raises_weights_error(name):
    with pytest.raises(WeightsError, match="cannot map official DiT parameter"):
        diffusers_dit_key_from_official(name)


def test_unmappable_diffusers_name_raises_weights_error():
    with pytest.raises(WeightsError, match="cannot map diffusers DiT parameter"):
        official_dit_key_from_diffusers("condition_embedder.image_embedder.ff.net.0.proj.weight")
