"""Parameter names of the umT5 encoder: official `models_t5_umt5-xxl-enc-bf16.pth` <-> transformers.

The official encoder (`wan/modules/t5.py`) and transformers' `UMT5EncoderModel` hold the same
tensors under different names. Per block `i`:

| official                               | transformers (`encoder.block.{i}.`)            |
|----------------------------------------|------------------------------------------------|
| `blocks.{i}.norm1.weight`              | `layer.0.layer_norm.weight`                    |
| `blocks.{i}.attn.{q,k,v,o}.weight`     | `layer.0.SelfAttention.{q,k,v,o}.weight`       |
| `blocks.{i}.pos_embedding.embedding.weight` | `layer.0.SelfAttention.relative_attention_bias.weight` |
| `blocks.{i}.norm2.weight`              | `layer.1.layer_norm.weight`                    |
| `blocks.{i}.ffn.gate.0.weight` (GELU branch) | `layer.1.DenseReluDense.wi_0.weight`     |
| `blocks.{i}.ffn.fc1.weight` (linear branch)  | `layer.1.DenseReluDense.wi_1.weight`     |
| `blocks.{i}.ffn.fc2.weight`            | `layer.1.DenseReluDense.wo.weight`             |

and at the top `token_embedding.weight` <-> `shared.weight`, `norm.weight` <->
`encoder.final_layer_norm.weight`. transformers also lists `encoder.embed_tokens.weight`, which is
tied to `shared.weight` (one tensor); it maps back to `token_embedding.weight` as well.
"""

from __future__ import annotations

import re

from wan_runtime.errors import WeightsError

# (official name inside a block, transformers name inside `encoder.block.{i}.`)
_BLOCK_NAMES: tuple[tuple[str, str], ...] = (
    ("norm1.weight", "layer.0.layer_norm.weight"),
    ("attn.q.weight", "layer.0.SelfAttention.q.weight"),
    ("attn.k.weight", "layer.0.SelfAttention.k.weight"),
    ("attn.v.weight", "layer.0.SelfAttention.v.weight"),
    ("attn.o.weight", "layer.0.SelfAttention.o.weight"),
    ("pos_embedding.embedding.weight", "layer.0.SelfAttention.relative_attention_bias.weight"),
    ("norm2.weight", "layer.1.layer_norm.weight"),
    ("ffn.gate.0.weight", "layer.1.DenseReluDense.wi_0.weight"),
    ("ffn.fc1.weight", "layer.1.DenseReluDense.wi_1.weight"),
    ("ffn.fc2.weight", "layer.1.DenseReluDense.wo.weight"),
)
_TOP_NAMES: tuple[tuple[str, str], ...] = (
    ("token_embedding.weight", "shared.weight"),
    ("norm.weight", "encoder.final_layer_norm.weight"),
)
# transformers' second name for the shared embedding (tied, not a separate parameter)
HF_TIED_EMBEDDING = "encoder.embed_tokens.weight"

_OFFICIAL_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
_HF_BLOCK = re.compile(r"encoder\.block\.(\d+)\.(.+)")


def hf_t5_key_from_official(name: str) -> str:
    """The `UMT5EncoderModel` parameter name of an official umT5 encoder parameter name."""
    for official, hf in _TOP_NAMES:
        if name == official:
            return hf
    match = _OFFICIAL_BLOCK.fullmatch(name)
    if match:
        index, rest = match.groups()
        for official, hf in _BLOCK_NAMES:
            if rest == official:
                return f"encoder.block.{index}.{hf}"
    raise WeightsError(
        f"cannot map official umT5 parameter {name!r} to transformers: not a name of the umT5-XXL "
        "encoder (expected token_embedding, norm or blocks.<i>.{norm1,norm2,attn.*,ffn.*,pos_embedding.*}); "
        "is this checkpoint models_t5_umt5-xxl-enc-bf16.pth?"
    )


def official_t5_key_from_hf(name: str) -> str:
    """The official umT5 encoder parameter name of a `UMT5EncoderModel` parameter name."""
    if name == HF_TIED_EMBEDDING:
        return "token_embedding.weight"
    for official, hf in _TOP_NAMES:
        if name == hf:
            return official
    match = _HF_BLOCK.fullmatch(name)
    if match:
        index, rest = match.groups()
        for official, hf in _BLOCK_NAMES:
            if rest == hf:
                return f"blocks.{index}.{official}"
    raise WeightsError(
        f"cannot map transformers umT5 parameter {name!r} to an official name: it is not a parameter "
        "of an encoder-only UMT5EncoderModel (decoder or lm_head weights are not used by Wan)"
    )


__all__ = ["hf_t5_key_from_official", "official_t5_key_from_hf", "HF_TIED_EMBEDDING"]
