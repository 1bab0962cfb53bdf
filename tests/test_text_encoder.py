"""The umT5 text encoder computes what the official Wan encoder computes and reads its checkpoint names."""

from __future__ import annotations

import json
import logging
import zlib

import pytest
import torch
from safetensors.torch import load_file

from wan_runtime.config import A14B, T5Config
from wan_runtime.errors import ConfigError, WeightsError
from wan_runtime.modules.text_encoder import (
    EOS_ID,
    HFTokenizer,
    StandInTokenizer,
    TextEncoder,
    assign_umt5_weights,
    build_umt5,
    clean_prompt,
    load_tokenizer,
    umt5_config,
)
from wan_runtime.weights.names_t5 import hf_t5_key_from_official, official_t5_key_from_hf

# Shape of the official tiny encoder in t5_tiny.safetensors (README.json), with the fixture's 16 tokens.
TINY_T5 = T5Config(vocab=300, dim=64, dim_attn=64, dim_ffn=128, num_heads=4, num_layers=2, num_buckets=32, text_len=16)
HIDDEN_TOLERANCE = 1e-4  # max abs error vs the official encoder, CPU fp32 (measured ~2e-6)
A14B_T5_PARAMS = 5_680_910_336


def _tiny_encoder_from_fixture(fixtures_dir) -> torch.nn.Module:
    """build_umt5 holding the official tiny weights, loaded on the meta device path a real loader takes."""
    official = load_file(fixtures_dir / "t5_tiny.safetensors")
    with torch.device("meta"):
        model = build_umt5(TINY_T5)
    assign_umt5_weights(model, {hf_t5_key_from_official(k): v for k, v in official.items()})
    return model


def zlib_id(token: str, vocab: int = 300) -> int:
    """The stand-in id of one token, written out independently of the implementation."""
    return zlib.crc32(token.encode("utf-8")) % (vocab - 2) + 2


class FixtureTokenizer:
    """Returns the fixture's token ids and mask whatever the text (the official tokenizer's output)."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor) -> None:
        self.ids, self.mask = ids, mask

    def __call__(self, texts, max_length):
        assert len(texts) == 1 and max_length == self.ids.shape[1]
        return self.ids, self.mask


# --- parity -----------------------------------------------------------------------------------
def test_umt5_matches_official_fixture_including_padding_rows(fixtures_dir):
    io = load_file(fixtures_dir / "t5_tiny_io.safetensors")
    model = _tiny_encoder_from_fixture(fixtures_dir)
    with torch.no_grad():
        hidden = model(input_ids=io["ids"], attention_mask=io["mask"]).last_hidden_state
    error = (hidden - io["hidden"]).abs().max().item()
    assert error < HIDDEN_TOLERANCE, f"max abs error {error:.2e}"


def test_encode_returns_official_rows_cut_to_real_length(fixtures_dir):
    io = load_file(fixtures_dir / "t5_tiny_io.safetensors")
    encoder = TextEncoder(_tiny_encoder_from_fixture(fixtures_dir), FixtureTokenizer(io["ids"], io["mask"]), 16)
    (embedding,) = encoder.encode(["any prompt"], device="cpu")
    real = int(io["mask"].sum())  # 11
    assert embedding.shape == (real, 64)
    assert (embedding - io["hidden"][0, :real]).abs().max().item() < HIDDEN_TOLERANCE


# --- names and shapes ---------------------------------------------------------------------------
def test_every_official_umt5_xxl_key_maps_to_a_parameter_of_the_same_shape(fixtures_dir):
    official = json.loads((fixtures_dir / "keys_t5_umt5xxl_official.json").read_text())
    with torch.device("meta"):
        model = build_umt5(A14B.t5)
    params = {name: tuple(p.shape) for name, p in model.named_parameters()}
    mapped = {hf_t5_key_from_official(name): tuple(shape) for name, shape in official.items()}
    assert mapped == params  # same names, same shapes, nothing left over on either side
    assert sum(p.numel() for p in model.parameters()) == A14B_T5_PARAMS


def test_names_round_trip_and_the_tied_embedding_maps_back_to_token_embedding(fixtures_dir):
    official = json.loads((fixtures_dir / "keys_t5_umt5xxl_official.json").read_text())
    for name in official:
        assert official_t5_key_from_hf(hf_t5_key_from_official(name)) == name
    assert official_t5_key_from_hf("encoder.embed_tokens.weight") == "token_embedding.weight"
    assert hf_t5_key_from_official("blocks.3.ffn.gate.0.weight") == "encoder.block.3.layer.1.DenseReluDense.wi_0.weight"


@pytest.mark.parametrize("name", ["pos_embedding.embedding.weight", "blocks.0.ffn.gate.1.weight", "head.weight"])
def test_unmappable_official_name_is_a_weights_error(name):
    with pytest.raises(WeightsError, match="cannot map"):
        hf_t5_key_from_official(name)


def test_unmappable_hf_name_is_a_weights_error():
    with pytest.raises(WeightsError, match="cannot map"):
        official_t5_key_from_hf("decoder.block.0.layer.0.SelfAttention.q.weight")


def test_umt5_config_follows_the_official_encoder():
    config = umt5_config(A14B.t5)
    assert (config.d_model, config.d_kv, config.num_heads, config.d_ff) == (4096, 64, 64, 10240)
    assert (config.relative_attention_num_buckets, config.relative_attention_max_distance) == (32, 128)
    assert config.is_gated_act and config.dense_act_fn == "gelu_new"  # GELU tanh, as the official
    assert config.layer_norm_epsilon == 1e-6 and config.dropout_rate == 0.0


def test_heads_that_do_not_divide_dim_attn_are_a_config_error():
    with pytest.raises(ConfigError, match="num_heads"):
        umt5_config(T5Config(dim=64, dim_attn=64, num_heads=5))


# --- loading ------------------------------------------------------------------------------------
def test_loaded_embedding_is_tied_to_the_one_the_forward_reads(fixtures_dir):
    model = _tiny_encoder_from_fixture(fixtures_dir)
    official = load_file(fixtures_dir / "t5_tiny.safetensors")
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert torch.equal(model.encoder.embed_tokens.weight, official["token_embedding.weight"])
    assert not any(p.is_meta for p in model.parameters())


def test_assigned_weights_keep_their_dtype(fixtures_dir):
    official = load_file(fixtures_dir / "t5_tiny.safetensors")
    with torch.device("meta"):
        model = build_umt5(TINY_T5)
    assign_umt5_weights(model, {hf_t5_key_from_official(k): v.to(torch.bfloat16) for k, v in official.items()})
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_missing_or_misshapen_weights_are_weights_errors(fixtures_dir):
    state = {hf_t5_key_from_official(k): v for k, v in load_file(fixtures_dir / "t5_tiny.safetensors").items()}
    with torch.device("meta"):
        model = build_umt5(TINY_T5)
    without_norm = {k: v for k, v in state.items() if k != "encoder.final_layer_norm.weight"}
    with pytest.raises(WeightsError, match="final_layer_norm"):
        assign_umt5_weights(model, without_norm)
    wrong_shape = dict(state, **{"shared.weight": torch.zeros(301, 64)})
    with pytest.raises(WeightsError, match="shared.weight"):
        assign_umt5_weights(model, wrong_shape)


# --- prompt cleaning ----------------------------------------------------------------------------
def test_clean_prompt_unescapes_html_twice():
    # ftfy leaves entities alone when the text holds markup; the two html.unescape passes then
    # turn the double-escaped ampersand into "&".
    assert clean_prompt("<p>Tom &amp;amp; Jerry</p>") == "<p>Tom & Jerry</p>"


def test_clean_prompt_collapses_and_strips_whitespace():
    assert clean_prompt("  a cat \n\t on  a\u3000mat  ") == "a cat on a mat"


def test_clean_prompt_fixes_mojibake():
    assert clean_prompt("caf\u00c3\u00a9 au lait") == "café au lait"
    assert clean_prompt("doesn\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2t") == "doesn't"


# --- stand-in tokenizer -------------------------------------------------------------------------
def test_stand_in_tokenizer_is_deterministic_and_in_vocabulary():
    tokenizer = StandInTokenizer(vocab=300)
    ids_a, _ = tokenizer(["a red fox jumps", "一只猫"], max_length=8)
    ids_b, _ = StandInTokenizer(vocab=300)(["a red fox jumps", "一只猫"], max_length=8)
    assert torch.equal(ids_a, ids_b)
    # literal values: crc32 does not depend on PYTHONHASHSEED, the process or the platform
    assert tokenizer.token_ids("a red fox") == [139, 275, 18]
    words = ids_a[ids_a > EOS_ID]
    assert words.min() >= 2 and words.max() < 300


def test_stand_in_tokenizer_appends_eos_and_pads_with_a_mask():
    ids, mask = StandInTokenizer(vocab=300)(["a red fox", ""], max_length=6)
    assert ids.dtype == mask.dtype == torch.long and ids.shape == mask.shape == (2, 6)
    assert ids[0].tolist() == [zlib_id("a"), zlib_id("red"), zlib_id("fox"), EOS_ID, 0, 0]
    assert mask[0].tolist() == [1, 1, 1, 1, 0, 0]
    assert ids[1].tolist() == [EOS_ID, 0, 0, 0, 0, 0] and mask[1].tolist() == [1, 0, 0, 0, 0, 0]


def test_stand_in_tokenizer_splits_text_without_spaces_into_characters():
    assert len(StandInTokenizer(vocab=300).token_ids("色调艳丽，过曝")) == 7


def test_stand_in_tokenizer_truncates_keeping_eos():
    ids, mask = StandInTokenizer(vocab=300)([" ".join(["word"] * 20)], max_length=5)
    assert ids[0].tolist() == [zlib_id("word")] * 4 + [EOS_ID]
    assert mask.sum().item() == 5


def test_stand_in_tokenizer_logs_a_warning(caplog):
    with torch.device("meta"):
        model = build_umt5(TINY_T5)
    with caplog.at_level(logging.WARNING, logger="wan_runtime"):
        TextEncoder(model, StandInTokenizer(TINY_T5.vocab), TINY_T5.text_len)
    assert any(r.name == "wan_runtime" and "stand-in tokenizer" in r.message for r in caplog.records)


def test_encode_returns_one_embedding_per_prompt_cut_to_its_token_count():
    torch.manual_seed(0)
    model = build_umt5(TINY_T5)
    tokenizer = StandInTokenizer(TINY_T5.vocab)
    encoder = TextEncoder(model, tokenizer, TINY_T5.text_len)
    prompts = ["a cat", "a dog runs in the  park", "", "w " * 40]
    embeddings = encoder.encode(prompts, device="cpu")
    _, mask = tokenizer([clean_prompt(p) for p in prompts], TINY_T5.text_len)
    assert [e.shape[0] for e in embeddings] == mask.sum(1).tolist() == [3, 7, 1, 16]
    assert all(e.shape[1] == TINY_T5.dim for e in embeddings)


# --- real tokenizer wrapper ---------------------------------------------------------------------
def _save_word_tokenizer(folder) -> None:
    """A tiny word-level tokenizer saved like a transformers tokenizer, EOS appended like umT5."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4, "on": 5, "mat": 6}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    ).save_pretrained(folder)


def test_loaded_tokenizer_pads_truncates_and_appends_eos(tmp_path):
    _save_word_tokenizer(tmp_path)
    tokenizer = load_tokenizer(tmp_path)
    assert isinstance(tokenizer, HFTokenizer)
    ids, mask = tokenizer(["a cat on a mat", "a dog"], max_length=5)
    assert ids.dtype == mask.dtype == torch.long
    assert ids.tolist() == [[3, 4, 5, 3, 1], [3, 2, 1, 0, 0]]  # truncated with EOS kept; padded with 0
    assert mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]


def test_missing_tokenizer_folder_is_a_weights_error_naming_it(tmp_path):
    with pytest.raises(WeightsError, match="nowhere"):
        load_tokenizer(tmp_path / "nowhere")


def test_folder_without_tokenizer_files_is_a_weights_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="empty"):
        load_tokenizer(tmp_path / "empty")
