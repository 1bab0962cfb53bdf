"""Loading the official fixtures through `load_dit`/`load_vae`/`load_text_encoder` from both checkpoint layouts.

The official layout is written the way Wan-AI ships it (2-shard expert folder with index json and
config.json, `.pth` VAE and T5 files, `google/umt5-xxl/` tokenizer); the Diffusers layout is written
by diffusers' and transformers' own `save_pretrained`, holding the fixture weights renamed by the
name maps. Either must reproduce the official outputs.

Tolerances (fixtures/official/README.md, CPU fp32): DiT and T5 max abs error < 1e-4, VAE latent
< 1e-4, decoded video < 1e-3.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from wan_runtime.config import TINY, DiTConfig, ModelConfig
from wan_runtime.errors import WeightsError
from wan_runtime.modules.text_encoder import HFTokenizer, assign_umt5_weights, build_umt5
from wan_runtime.weights import load_dit, load_text_encoder, load_vae
from wan_runtime.weights.names_dit import diffusers_dit_key_from_official
from wan_runtime.weights.names_t5 import hf_t5_key_from_official
from wan_runtime.weights.names_vae import diffusers_vae_key_from_official

from helpers import diffusers_transformer, diffusers_vae

FIXTURES = Path(__file__).parent / "fixtures" / "official"
DIT_TOL = 1e-4
T5_TOL = 1e-4
LATENT_TOL = 1e-4
DECODED_TOL = 1e-3
# The low-noise folder holds the fixture DiT with 1 added to the output bias, so its output is the
# fixture's plus one: proof that each expert comes from its own folder.
LOW_NOISE_OFFSET = 1.0

README = json.loads((FIXTURES / "README.json").read_text())


def fixture_dit_config() -> DiTConfig:
    """The fixture DiT's config from README.json (official key names)."""
    official = README["dit_tiny"]["config"]
    fields = {f.name for f in dataclasses.fields(DiTConfig)}
    return DiTConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in official.items() if k in fields})


# The fixture DiT (text_dim 48) and the fixture T5 (dim 64) cannot share one ModelConfig, which
# requires t5.dim == dit.text_dim; TINY's VAE and T5 are exactly the fixtures' shapes.
DIT_CFG = ModelConfig(
    name="fixture-dit", dit=fixture_dit_config(),
    t5=dataclasses.replace(TINY.t5, dim=48, dim_attn=48),
)
CFG = TINY

WORDS = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4, "on": 5, "mat": 6}


def save_word_tokenizer(folder: Path) -> None:
    """A word-level tokenizer in transformers' format: pad 0, EOS 1 appended (as umT5's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(WORDS, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    wrapped = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    wrapped.save_pretrained(str(folder))


def low_noise_weights(dit: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    shifted = dict(dit)
    shifted["head.head.bias"] = dit["head.head.bias"] + LOW_NOISE_OFFSET
    return shifted


def write_official(root: Path) -> Path:
    """The official layout from the fixtures."""
    dit = load_file(FIXTURES / "dit_tiny.safetensors")
    high = root / "high_noise_model"
    high.mkdir(parents=True)
    names = sorted(dit)
    halves = {"diffusion_pytorch_model-00001-of-00002.safetensors": names[: len(names) // 2],
              "diffusion_pytorch_model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for file, part in halves.items():
        save_file({n: dit[n] for n in part}, str(high / file))
    weight_map = {n: file for file, part in halves.items() for n in part}
    (high / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = {"_class_name": "WanModel", **README["dit_tiny"]["config"]}
    (high / "config.json").write_text(json.dumps(config))
    low = root / "low_noise_model"
    low.mkdir()
    save_file(low_noise_weights(dit), str(low / "diffusion_pytorch_model.safetensors"))
    (low / "config.json").write_text(json.dumps(config))
    torch.save(load_file(FIXTURES / "vae_tiny.safetensors"), root / "Wan2.1_VAE.pth")
    torch.save(load_file(FIXTURES / "t5_tiny.safetensors"), root / "models_t5_umt5-xxl-enc-bf16.pth")
    save_word_tokenizer(root / "google" / "umt5-xxl")
    return root


def write_diffusers(root: Path) -> Path:
    """The Diffusers layout, saved by diffusers/transformers themselves from the renamed fixtures."""
    pytest.importorskip("diffusers")
    d, v = DIT_CFG.dit, CFG.vae
    dit = load_file(FIXTURES / "dit_tiny.safetensors")
    for folder, weights in (("transformer", dit), ("transformer_2", low_noise_weights(dit))):
        model = diffusers_transformer(d)
        model.load_state_dict({diffusers_dit_key_from_official(k): t for k, t in weights.items()}, strict=True)
        model.save_pretrained(str(root / folder), max_shard_size="400KB")  # several shards + index
    vae = diffusers_vae(v)
    vae_weights = load_file(FIXTURES / "vae_tiny.safetensors")
    vae.load_state_dict({diffusers_vae_key_from_official(k): t for k, t in vae_weights.items()}, strict=True)
    vae.save_pretrained(str(root / "vae"))
    t5 = build_umt5(CFG.t5)
    t5_weights = load_file(FIXTURES / "t5_tiny.safetensors")
    assign_umt5_weights(t5, {hf_t5_key_from_official(k): t for k, t in t5_weights.items()})
    t5.save_pretrained(str(root / "text_encoder"))
    save_word_tokenizer(root / "tokenizer")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9,
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "transformer_2": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"], "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
    }))
    return root


@pytest.fixture(scope="module")
def official_root(tmp_path_factory) -> Path:
    return write_official(tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="module")
def diffusers_root(tmp_path_factory) -> Path:
    return write_diffusers(tmp_path_factory.mktemp("diffusers"))


@pytest.fixture(params=["official", "diffusers"])
def root(request) -> Path:
    return request.getfixturevalue(f"{request.param}_root")


def dit_output(model, io: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(io["x"][None], io["t"], io["context"][None], io["y"][None])[0]


# ----------------------------------------------------------------------------------------------

def test_tiny_preset_vae_and_t5_have_the_fixture_shapes():
    vae, t5 = README["vae_tiny"]["config"], README["t5_tiny"]["config"]
    assert (CFG.vae.dim, CFG.vae.z_dim, list(CFG.vae.dim_mult), CFG.vae.num_res_blocks) == (
        vae["dim"], vae["z_dim"], vae["dim_mult"], vae["num_res_blocks"])
    assert list(CFG.vae.temporal_downsample) == vae["temperal_downsample"]
    assert (CFG.t5.vocab, CFG.t5.dim, CFG.t5.dim_attn, CFG.t5.dim_ffn, CFG.t5.num_heads, CFG.t5.num_layers,
            CFG.t5.num_buckets) == (t5["vocab"], t5["dim"], t5["dim_attn"], t5["dim_ffn"], t5["num_heads"],
                                    t5["num_layers"], t5["num_buckets"])


def test_written_diffusers_transformer_is_sharded_with_an_index(diffusers_root):
    shards = sorted((diffusers_root / "transformer").glob("*.safetensors"))
    assert len(shards) >= 2
    assert (diffusers_root / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()


def test_high_noise_expert_reproduces_official_fixture(root):
    io = load_file(FIXTURES / "dit_tiny_io.safetensors")
    model = load_dit(root, DIT_CFG, expert="high", dtype="fp32", device="cpu")
    assert (dit_output(model, io) - io["out"]).abs().max().item() < DIT_TOL


def test_low_noise_expert_is_read_from_its_own_folder(root):
    io = load_file(FIXTURES / "dit_tiny_io.safetensors")
    model = load_dit(root, DIT_CFG, expert="low", dtype="fp32", device="cpu")
    assert (dit_output(model, io) - (io["out"] + LOW_NOISE_OFFSET)).abs().max().item() < DIT_TOL


def test_vae_reproduces_official_fixture(root):
    io = load_file(FIXTURES / "vae_tiny_io.safetensors")
    vae = load_vae(root, CFG, dtype="fp32", device="cpu")
    assert (vae.encode(io["video"]) - io["latent"]).abs().max().item() < LATENT_TOL
    assert (vae.decode(io["latent"], clamp=False) - io["decoded"]).abs().max().item() < DECODED_TOL


def test_text_encoder_reproduces_official_fixture(root):
    io = load_file(FIXTURES / "t5_tiny_io.safetensors")
    encoder = load_text_encoder(root, CFG, dtype="fp32", device="cpu")
    with torch.no_grad():
        hidden = encoder.model(input_ids=io["ids"], attention_mask=io["mask"]).last_hidden_state
    assert (hidden - io["hidden"]).abs().max().item() < T5_TOL
    assert encoder.model.encoder.embed_tokens.weight is encoder.model.shared.weight


def test_text_encoder_uses_the_tokenizer_of_the_layout(root):
    encoder = load_text_encoder(root, CFG, dtype="fp32", device="cpu")
    assert isinstance(encoder.tokenizer, HFTokenizer)
    ids, mask = encoder.tokenizer(["a cat on a mat"], max_length=8)
    assert ids.tolist() == [[3, 4, 5, 3, 6, 1, 0, 0]]


def test_bf16_load_casts_every_tensor_and_stays_close_to_fp32(official_root):
    io = load_file(FIXTURES / "dit_tiny_io.safetensors")
    model = load_dit(official_root, DIT_CFG, expert="high", dtype="bf16", device="cpu")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    error = (dit_output(model, io) - io["out"]).abs().max().item()
    assert error < 0.02 * io["out"].abs().max().item()  # bf16 keeps ~3 digits; measured 5.2e-3 of 1.74


def test_loaded_networks_are_in_inference_mode(official_root):
    model = load_dit(official_root, DIT_CFG, expert="high", dtype="fp32", device="cpu")
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_config_json_disagreeing_in_a_shape_free_setting_is_caught(official_root):
    """num_heads changes no tensor shape, so only config.json can tell that the preset is wrong."""
    wrong = dataclasses.replace(DIT_CFG, dit=dataclasses.replace(DIT_CFG.dit, num_heads=4))
    with pytest.raises(WeightsError, match="num_heads=2 .model config: 4."):
        load_dit(official_root, wrong, expert="high", dtype="fp32", device="cpu")


def test_checkpoint_of_another_preset_is_refused_naming_the_differences(official_root):
    with pytest.raises(WeightsError, match="another configuration") as info:
        load_dit(official_root, TINY, expert="high", dtype="fp32", device="cpu")
    assert "text_dim=48 (model config: 64)" in str(info.value)


def test_missing_expert_folder_names_it(tmp_path):
    root = write_official(tmp_path / "ckpt")
    for file in (root / "low_noise_model").iterdir():
        file.unlink()
    (root / "low_noise_model").rmdir()
    with pytest.raises(WeightsError, match="low-noise DiT expert") as info:
        load_dit(root, DIT_CFG, expert="low", dtype="fp32", device="cpu")
    assert str(root / "low_noise_model") in str(info.value)
