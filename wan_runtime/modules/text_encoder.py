"""The umT5 text encoder: transformers' `UMT5EncoderModel`, a tokenizer wrapper, and prompt encoding.

The official Wan encoder (`wan/modules/t5.py`) is a umT5 encoder: pre-norm T5 blocks with RMS
layer norms (eps 1e-6), unscaled attention with a relative position bias of its own in every layer
(32 buckets, max distance 128, bidirectional), and a gated-GELU (tanh) feed-forward. transformers'
`UMT5EncoderModel` with `feed_forward_proj="gated-gelu"` is the same network (the parity fixture
agrees to ~2e-6); only the parameter names differ (see `wan_runtime/weights/names_t5.py`).

Loading weights: `UMT5EncoderModel` has two names for one embedding table, `shared.weight` and
`encoder.embed_tokens.weight` (the one the forward reads). Anything that replaces parameter objects
(`load_state_dict(assign=True)`, `to_empty`, materialising a meta model) unties them, and the model
would silently embed tokens with the old table. `assign_umt5_weights` re-ties them with
`model.tie_weights()`; a loader that fills parameters another way must call `tie_weights()` after.
"""

from __future__ import annotations

import html
import logging
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import ftfy
import torch
from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

from wan_runtime.config import T5Config
from wan_runtime.errors import ConfigError, WeightsError

LOGGER = logging.getLogger("wan_runtime")

PAD_ID = 0  # umT5 pad token; padded positions carry mask 0
EOS_ID = 1  # umT5 end-of-sequence token, appended to every prompt
RELATIVE_ATTENTION_MAX_DISTANCE = 128  # official T5RelativeEmbedding max_dist


# ---------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------
def umt5_config(cfg: T5Config) -> UMT5Config:
    """The encoder-only `UMT5Config` equal to the official umT5 encoder of shape `cfg`."""
    if cfg.dim_attn % cfg.num_heads:
        raise ConfigError(f"T5 dim_attn {cfg.dim_attn} is not divisible by num_heads {cfg.num_heads}")
    return UMT5Config(
        vocab_size=cfg.vocab,
        d_model=cfg.dim,
        d_kv=cfg.dim_attn // cfg.num_heads,
        d_ff=cfg.dim_ffn,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        relative_attention_num_buckets=cfg.num_buckets,
        relative_attention_max_distance=RELATIVE_ATTENTION_MAX_DISTANCE,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",  # GELU (tanh) branch times a linear branch
        is_encoder_decoder=False,
        use_cache=False,
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
    )


def build_umt5(cfg: T5Config) -> UMT5EncoderModel:
    """An umT5 encoder of shape `cfg` in eval mode, with initial (not loaded) weights.

    Construct it under `with torch.device("meta"):` to get the shapes without memory, then fill it
    with `assign_umt5_weights`.
    """
    model = UMT5EncoderModel(umt5_config(cfg))
    return model.eval()


def assign_umt5_weights(model: UMT5EncoderModel, state: Mapping[str, torch.Tensor]) -> None:
    """Make `state` (transformers names) the parameters of `model` as they are, then re-tie the embedding.

    The tensors are used as given (dtype and device included), so a meta-device model is filled
    without a copy. Every parameter must be present with its exact shape; `encoder.embed_tokens.weight`
    may be present (Diffusers layout) but is ignored in favour of `shared.weight`, its tied twin.
    """
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}  # tied twin listed once
    tied_twins = {name for name, _ in model.named_parameters(remove_duplicate=False)} - set(expected)
    given = {name: t for name, t in state.items() if name not in tied_twins}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"umT5 weights do not match the model: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; check that the checkpoint "
            "is the umT5-XXL encoder and that the preset's T5 shape is right"
        )
    for name, tensor in given.items():
        if tuple(tensor.shape) != expected[name]:
            raise WeightsError(
                f"umT5 parameter {name} has shape {tuple(tensor.shape)}, the model expects {expected[name]}; "
                "the checkpoint does not belong to this preset"
            )
    model.load_state_dict(dict(given), strict=False, assign=True)
    model.tie_weights()  # assign replaced shared.weight; point encoder.embed_tokens at it again
    if model.encoder.embed_tokens.weight is not model.shared.weight:
        raise WeightsError("umT5 token embedding could not be re-tied after loading; report this as a bug")


# ---------------------------------------------------------------------------------------------
# prompts and tokenizers
# ---------------------------------------------------------------------------------------------
def clean_prompt(text: str) -> str:
    """The official prompt cleaning: ftfy fix, HTML unescape twice, whitespace collapsed and stripped."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return re.sub(r"\s+", " ", text).strip()


class PromptTokenizer(Protocol):
    """What TextEncoder needs from a tokenizer."""

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids [B, max_length] (long, EOS-terminated, 0-padded) and attention mask [B, max_length] (long)."""
        ...


class HFTokenizer:
    """A transformers tokenizer called the official way: special tokens, max-length padding, truncation."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both [B, max_length] long."""
        batch = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=max_length,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return batch["input_ids"].long(), batch["attention_mask"].long()


def load_tokenizer(folder: Path) -> HFTokenizer:
    """The tokenizer saved in `folder` (e.g. the checkpoint's `google/umt5-xxl/`), wrapped as HFTokenizer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightsError(
            f"tokenizer folder {folder} does not exist; the official checkpoint has it at google/umt5-xxl/, "
            "the Diffusers layout at tokenizer/"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(
            f"cannot load the tokenizer from {folder}: {error}; the folder needs the files of "
            "google/umt5-xxl (tokenizer.json or spiece.model, tokenizer_config.json)"
        ) from error
    return HFTokenizer(tokenizer)


# ASCII words and numbers are one token each; every other visible character (CJK, punctuation)
# is a token of its own, so prompts without spaces still give several tokens.
_STAND_IN_TOKEN = re.compile(r"[A-Za-z0-9]+|\S")
_FIRST_WORD_ID = 2  # below are pad (0) and EOS (1)


class StandInTokenizer:
    """A deterministic tokenizer for runs without a real one (synthetic weights).

    Each token maps to `crc32(token) % (vocab - 2) + 2`: stable across processes (unlike `hash`,
    which PYTHONHASHSEED salts) and never the pad or EOS id. Prompts get EOS (1) appended, are
    truncated to `max_length` (EOS kept) and padded with 0. The ids mean nothing to a real model.
    """

    def __init__(self, vocab: int) -> None:
        if vocab <= _FIRST_WORD_ID:
            raise ConfigError(f"stand-in tokenizer needs a vocabulary larger than {_FIRST_WORD_ID}, got {vocab}")
        self.vocab = vocab

    def token_ids(self, text: str) -> list[int]:
        """Ids of the tokens of `text`, without EOS."""
        span = self.vocab - _FIRST_WORD_ID
        return [zlib.crc32(tok.encode("utf-8")) % span + _FIRST_WORD_ID for tok in _STAND_IN_TOKEN.findall(text)]

    def __call__(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both [B, max_length] long."""
        if max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        ids = torch.full((len(texts), max_length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(texts), max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = self.token_ids(text)[: max_length - 1] + [EOS_ID]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = 1
        return ids, mask


# ---------------------------------------------------------------------------------------------
# encoder
# ---------------------------------------------------------------------------------------------
class TextEncoder:
    """Prompts -> per-prompt umT5 embeddings [L_i, dim], cut to each prompt's real token count."""

    def __init__(self, model: UMT5EncoderModel, tokenizer: PromptTokenizer, text_len: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.text_len = text_len
        if isinstance(tokenizer, StandInTokenizer):
            LOGGER.warning(
                "text encoder uses a stand-in tokenizer (no real tokenizer was loaded): text embeddings "
                "are not meaningful; timings and memory are still representative"
            )

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], device: torch.device | str) -> list[torch.Tensor]:
        """Embeddings of `prompts`, one [L_i, dim] tensor each, computed where the model is, returned on `device`."""
        texts = [clean_prompt(p) for p in prompts]
        ids, mask = self.tokenizer(texts, self.text_len)  # [B, text_len] each
        model_device = self.model.device
        hidden = self.model(
            input_ids=ids.to(model_device), attention_mask=mask.to(model_device)
        ).last_hidden_state  # [B, text_len, dim]
        lengths = mask.sum(dim=1).tolist()
        # The DiT zero-pads these back to text_len; the padded rows computed here are dropped.
        return [row[:n].to(device) for row, n in zip(hidden, lengths)]


__all__ = [
    "umt5_config", "build_umt5", "assign_umt5_weights", "clean_prompt", "PromptTokenizer",
    "HFTokenizer", "load_tokenizer", "StandInTokenizer", "TextEncoder", "PAD_ID", "EOS_ID",
]
