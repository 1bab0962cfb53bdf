"""Every key of the real checkpoints maps onto the A14B-shaped modules with equal shapes, in both layouts.

Driven through the loader's own checking path (`check_checkpoint`) with fake shards of `meta`
tensors at the recorded shapes, so the full-size models are built without memory. A pass here means
the released files load with no unexpected, missing or misshapen tensor.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from wan_runtime.config import A14B
from wan_runtime.errors import WeightsError
from wan_runtime.modules.dit import WanDiT
from wan_runtime.modules.text_encoder import build_umt5
from wan_runtime.modules.vae import WanVAE
from wan_runtime.weights.loader import check_checkpoint, module_slots
from wan_runtime.weights.names_dit import diffusers_dit_key_from_official, official_dit_key_from_diffusers
from wan_runtime.weights.names_t5 import hf_t5_key_from_official
from wan_runtime.weights.names_vae import diffusers_vae_key_from_official, official_vae_key_from_diffusers
from wan_runtime.weights.reader import TensorShard

from helpers import diffusers_transformer, diffusers_vae

FIXTURES = Path(__file__).parent / "fixtures" / "official"
README = json.loads((FIXTURES / "README.json").read_text())


def official_keys(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v) for k, v in json.loads((FIXTURES / f"keys_{name}.json").read_text()).items()}


def meta_shards(keys: dict[str, tuple[int, ...]], parts: int = 3) -> list[TensorShard]:
    """The keys spread over several fake shards of meta tensors, as in a sharded checkpoint."""
    names = list(keys)
    return [TensorShard({n: torch.empty(keys[n], device="meta") for n in names[i::parts]}, f"fake shard {i}")
            for i in range(parts)]


def meta(build):
    with torch.device("meta"):
        return build()


def identity(name: str) -> str:
    return name


def test_official_dit_keys_cover_the_a14b_expert():
    keys = official_keys("dit_a14b_official")
    assert len(keys) == README["keys_dit_a14b_official"]["count"]
    check_checkpoint(meta(lambda: WanDiT(A14B.dit)), meta_shards(keys), identity, "DiT expert")


def test_official_vae_keys_cover_the_wan21_vae():
    keys = official_keys("vae_wan21_official")
    assert len(keys) == README["keys_vae_wan21_official"]["count"]
    check_checkpoint(meta(lambda: WanVAE(A14B.vae)), meta_shards(keys), identity, "VAE")


def test_official_t5_keys_cover_the_umt5_xxl_encoder():
    keys = official_keys("t5_umt5xxl_official")
    assert len(keys) == README["keys_t5_umt5xxl_official"]["count"]
    check_checkpoint(meta(lambda: build_umt5(A14B.t5)), meta_shards(keys), hf_t5_key_from_official, "umT5")


def test_diffusers_dit_keys_cover_the_a14b_expert():
    keys = {diffusers_dit_key_from_official(k): s for k, s in official_keys("dit_a14b_official").items()}
    check_checkpoint(meta(lambda: WanDiT(A14B.dit)), meta_shards(keys), official_dit_key_from_diffusers, "DiT")


def test_diffusers_vae_keys_cover_the_wan21_vae():
    keys = {diffusers_vae_key_from_official(k): s for k, s in official_keys("vae_wan21_official").items()}
    check_checkpoint(meta(lambda: WanVAE(A14B.vae)), meta_shards(keys), official_vae_key_from_diffusers, "VAE")


def test_diffusers_text_encoder_keys_are_transformers_own_names():
    keys = {hf_t5_key_from_official(k): s for k, s in official_keys("t5_umt5xxl_official").items()}
    check_checkpoint(meta(lambda: build_umt5(A14B.t5)), meta_shards(keys), identity, "umT5")


def test_diffusers_own_a14b_classes_hold_exactly_the_mapped_names_and_shapes():
    """The name maps agree with what diffusers itself would save for the A14B transformer and VAE."""
    pytest.importorskip("diffusers")
    d, v = A14B.dit, A14B.vae
    transformer = meta(lambda: diffusers_transformer(d))
    vae = meta(lambda: diffusers_vae(v))
    for theirs, keys, to_theirs in (
        (transformer, official_keys("dit_a14b_official"), diffusers_dit_key_from_official),
        (vae, official_keys("vae_wan21_official"), diffusers_vae_key_from_official),
    ):
        saved = {n: tuple(t.shape) for n, t in theirs.state_dict().items()}
        assert saved == {to_theirs(k): s for k, s in keys.items()}


def test_a14b_parameter_counts_match_the_published_totals():
    for build, name in ((lambda: WanDiT(A14B.dit), "dit_a14b_official"), (lambda: WanVAE(A14B.vae), "vae_wan21_official"),
                        (lambda: build_umt5(A14B.t5), "t5_umt5xxl_official")):
        slots = module_slots(meta(build))
        assert sum(math.prod(s) for s in slots.shapes.values()) == README[f"keys_{name}"]["params"], name


def test_the_checking_path_rejects_a_key_set_with_one_shape_changed():
    """The same fake-shard check fails, naming the tensor, when one shape is off: the tests above can fail."""
    keys = official_keys("dit_a14b_official")
    keys["blocks.39.ffn.2.weight"] = (5120, 13823)
    with pytest.raises(WeightsError, match=r"blocks\.39\.ffn\.2\.weight.*found \[5120, 13823\], expected \[5120, 13824\]"):
        check_checkpoint(meta(lambda: WanDiT(A14B.dit)), meta_shards(keys), identity, "DiT expert")
