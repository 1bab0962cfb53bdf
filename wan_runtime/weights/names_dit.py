"""Parameter names of a DiT expert: official checkpoint (`WanDiT`) <-> diffusers `WanTransformer3DModel`.

Both hold the same tensors with the same shapes. Per block `i` (`blocks.{i}.` on both sides):

| official                          | diffusers                          |
|-----------------------------------|------------------------------------|
| `modulation`                      | `scale_shift_table`                |
| `self_attn.{q,k,v}.*`             | `attn1.to_{q,k,v}.*`               |
| `self_attn.o.*`                   | `attn1.to_out.0.*`                 |
| `self_attn.norm_{q,k}.weight`     | `attn1.norm_{q,k}.weight`          |
| `cross_attn.*` (same pattern)     | `attn2.*`                          |
| `norm3.*` (affine, before cross-attention) | `norm2.*`                 |
| `ffn.0.*`                         | `ffn.net.0.proj.*`                 |
| `ffn.2.*`                         | `ffn.net.2.*`                      |

The two libraries swap the names `norm2` and `norm3`: the official `norm2` (before the FFN) is
diffusers' `norm3`, but neither of those has parameters, so only `norm3` -> `norm2` appears in a
state dict. At the top: `time_embedding.{0,2}` <-> `condition_embedder.time_embedder.linear_{1,2}`,
`time_projection.1` <-> `condition_embedder.time_proj`, `text_embedding.{0,2}` <->
`condition_embedder.text_embedder.linear_{1,2}`, `head.head` <-> `proj_out`, `head.modulation` <->
`scale_shift_table`; `patch_embedding` keeps its name.
"""

from __future__ import annotations

import re

from wan_runtime.errors import WeightsError

_WEIGHT_BIAS = ("weight", "bias")

# (official module, diffusers module) pairs of layers that hold a weight and a bias.
_TOP_LAYERS: tuple[tuple[str, str], ...] = (
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
)
_BLOCK_LAYERS: tuple[tuple[str, str], ...] = (
    *((f"{ours}.{p}", f"{theirs}.to_{p}") for ours, theirs in (("self_attn", "attn1"), ("cross_attn", "attn2"))
      for p in ("q", "k", "v")),
    ("self_attn.o", "attn1.to_out.0"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("norm3", "norm2"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
)

# Full parameter names, (official, diffusers).
_TOP_NAMES: tuple[tuple[str, str], ...] = (
    *((f"{ours}.{s}", f"{theirs}.{s}") for ours, theirs in _TOP_LAYERS for s in _WEIGHT_BIAS),
    ("head.modulation", "scale_shift_table"),
)
_BLOCK_NAMES: tuple[tuple[str, str], ...] = (
    *((f"{ours}.{s}", f"{theirs}.{s}") for ours, theirs in _BLOCK_LAYERS for s in _WEIGHT_BIAS),
    ("modulation", "scale_shift_table"),
    ("self_attn.norm_q.weight", "attn1.norm_q.weight"),
    ("self_attn.norm_k.weight", "attn1.norm_k.weight"),
    ("cross_attn.norm_q.weight", "attn2.norm_q.weight"),
    ("cross_attn.norm_k.weight", "attn2.norm_k.weight"),
)

_OFFICIAL_TO_DIFFUSERS = {**dict(_TOP_NAMES), **{f"blocks.*.{o}": f"blocks.*.{d}" for o, d in _BLOCK_NAMES}}
_DIFFUSERS_TO_OFFICIAL = {d: o for o, d in _OFFICIAL_TO_DIFFUSERS.items()}
_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")


def _translate(name: str, table: dict[str, str], source: str) -> str:
    """Look `name` up in `table`, matching any block index; WeightsError when it has no entry."""
    match = _BLOCK.fullmatch(name)
    key = f"blocks.*.{match.group(2)}" if match else name
    if key in table:
        return table[key].replace("*", match.group(1)) if match else table[key]
    raise WeightsError(
        f"cannot map {source} DiT parameter {name!r}: it is not a parameter of a Wan2.2 i2v DiT expert; "
        "check that the folder holds a Wan2.2-I2V-A14B transformer (not T2V/TI2V or a LoRA)"
    )


def diffusers_dit_key_from_official(name: str) -> str:
    """The diffusers `WanTransformer3DModel` name of an official DiT parameter name."""
    return _translate(name, _OFFICIAL_TO_DIFFUSERS, "official")


def official_dit_key_from_diffusers(name: str) -> str:
    """The official DiT parameter name (as `WanDiT` uses) of a diffusers parameter name."""
    return _translate(name, _DIFFUSERS_TO_OFFICIAL, "diffusers")


__all__ = ["diffusers_dit_key_from_official", "official_dit_key_from_diffusers"]
