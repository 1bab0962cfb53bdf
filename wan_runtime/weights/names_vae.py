"""Parameter names of the Wan2.1 VAE: official `Wan2.1_VAE.pth` <-> diffusers `AutoencoderKLWan`.

Both layouts hold the same tensors with the same shapes (RMS-norm `gamma` is [C, 1, 1, 1] in the
residual blocks and heads and [C, 1, 1] in the attention blocks, in both), so converting a state
dict is a pure renaming. The names differ as follows (`R` = `num_res_blocks`, 2 in Wan2.1):

| official                                   | diffusers                                          |
|--------------------------------------------|----------------------------------------------------|
| `conv1.*` / `conv2.*`                      | `quant_conv.*` / `post_quant_conv.*`               |
| `{enc,dec}oder.conv1.*`                    | `{enc,dec}oder.conv_in.*`                          |
| `{enc,dec}oder.head.0.gamma`               | `{enc,dec}oder.norm_out.gamma`                     |
| `{enc,dec}oder.head.2.*`                   | `{enc,dec}oder.conv_out.*`                         |
| `{enc,dec}oder.middle.0.*` / `middle.2.*`  | `{enc,dec}oder.mid_block.resnets.0.*` / `resnets.1.*` |
| `{enc,dec}oder.middle.1.*` (attention)     | `{enc,dec}oder.mid_block.attentions.0.*`           |
| `encoder.downsamples.{i}.*`                | `encoder.down_blocks.{i}.*` (same flat index)      |
| `decoder.upsamples.{k}.*`, k = s*(R+2)+j   | `decoder.up_blocks.{s}.resnets.{j}.*` for j <= R,  |
|                                            | `decoder.up_blocks.{s}.upsamplers.0.*` for j = R+1 |

and inside a residual block `residual.0.gamma` <-> `norm1.gamma`, `residual.2.*` <-> `conv1.*`,
`residual.3.gamma` <-> `norm2.gamma`, `residual.6.*` <-> `conv2.*`, `shortcut.*` <->
`conv_shortcut.*`. Resample (`resample.1.*`, `time_conv.*`) and attention (`norm.gamma`,
`to_qkv.*`, `proj.*`) names are the same in both. Wan2.1 has no attention in the decoder's up
blocks (`attn_scales` is empty), which diffusers' layout could not hold anyway.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from wan_runtime.errors import WeightsError

# (official, diffusers) names inside a residual block
_RESIDUAL_NAMES: tuple[tuple[str, str], ...] = (
    ("residual.0.gamma", "norm1.gamma"),
    ("residual.2.weight", "conv1.weight"),
    ("residual.2.bias", "conv1.bias"),
    ("residual.3.gamma", "norm2.gamma"),
    ("residual.6.weight", "conv2.weight"),
    ("residual.6.bias", "conv2.bias"),
    ("shortcut.weight", "conv_shortcut.weight"),
    ("shortcut.bias", "conv_shortcut.bias"),
)
# names that are the same in both layouts
_RESAMPLE_NAMES = ("resample.1.weight", "resample.1.bias", "time_conv.weight", "time_conv.bias")
_ATTENTION_NAMES = ("norm.gamma", "to_qkv.weight", "to_qkv.bias", "proj.weight", "proj.bias")
# (official, diffusers) top-level and per-network names
_FIXED_NAMES: tuple[tuple[str, str], ...] = (
    ("conv1.weight", "quant_conv.weight"),
    ("conv1.bias", "quant_conv.bias"),
    ("conv2.weight", "post_quant_conv.weight"),
    ("conv2.bias", "post_quant_conv.bias"),
    *(
        (f"{net}.{official}", f"{net}.{diffusers}")
        for net in ("encoder", "decoder")
        for official, diffusers in (
            ("conv1.weight", "conv_in.weight"),
            ("conv1.bias", "conv_in.bias"),
            ("head.0.gamma", "norm_out.gamma"),
            ("head.2.weight", "conv_out.weight"),
            ("head.2.bias", "conv_out.bias"),
        )
    ),
)

_OFFICIAL_MIDDLE = re.compile(r"(encoder|decoder)\.middle\.(\d+)\.(.+)")
_OFFICIAL_DOWN = re.compile(r"encoder\.downsamples\.(\d+)\.(.+)")
_OFFICIAL_UP = re.compile(r"decoder\.upsamples\.(\d+)\.(.+)")
_DIFFUSERS_MID_RESNET = re.compile(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)")
_DIFFUSERS_MID_ATTN = re.compile(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)")
_DIFFUSERS_DOWN = re.compile(r"encoder\.down_blocks\.(\d+)\.(.+)")
_DIFFUSERS_UP_RESNET = re.compile(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)")
_DIFFUSERS_UP_SAMPLER = re.compile(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)")


def _unmappable(name: str, source: str) -> WeightsError:
    return WeightsError(
        f"VAE parameter {name!r} is not a Wan2.1 VAE name in the {source} layout; check that the "
        f"checkpoint is the Wan2.1 VAE (Wan2.1_VAE.pth or a diffusers AutoencoderKLWan folder) and "
        f"not the Wan2.2 VAE of TI2V-5B"
    )


def _residual_to_diffusers(rest: str) -> str | None:
    for official, diffusers in _RESIDUAL_NAMES:
        if rest == official:
            return diffusers
    return None


def _residual_to_official(rest: str) -> str | None:
    for official, diffusers in _RESIDUAL_NAMES:
        if rest == diffusers:
            return official
    return None


def diffusers_vae_key_from_official(name: str, num_res_blocks: int = 2) -> str:
    """The `AutoencoderKLWan` parameter name of an official Wan2.1 VAE parameter name."""
    for official, diffusers in _FIXED_NAMES:
        if name == official:
            return diffusers
    if match := _OFFICIAL_MIDDLE.fullmatch(name):
        net, index, rest = match.groups()
        if index in ("0", "2") and (mapped := _residual_to_diffusers(rest)):
            return f"{net}.mid_block.resnets.{int(index) // 2}.{mapped}"
        if index == "1" and rest in _ATTENTION_NAMES:
            return f"{net}.mid_block.attentions.0.{rest}"
    elif match := _OFFICIAL_DOWN.fullmatch(name):
        index, rest = match.groups()
        if mapped := _residual_to_diffusers(rest):
            return f"encoder.down_blocks.{index}.{mapped}"
        if rest in _RESAMPLE_NAMES or rest in _ATTENTION_NAMES:
            return name.replace("encoder.downsamples.", "encoder.down_blocks.", 1)
    elif match := _OFFICIAL_UP.fullmatch(name):
        index, rest = match.groups()
        # each decoder stage is R+1 residual blocks then one resample (the last stage has none)
        stage, slot = divmod(int(index), num_res_blocks + 2)
        if slot <= num_res_blocks and (mapped := _residual_to_diffusers(rest)):
            return f"decoder.up_blocks.{stage}.resnets.{slot}.{mapped}"
        if slot == num_res_blocks + 1 and rest in _RESAMPLE_NAMES:
            return f"decoder.up_blocks.{stage}.upsamplers.0.{rest}"
    raise _unmappable(name, "official")


def official_vae_key_from_diffusers(name: str, num_res_blocks: int = 2) -> str:
    """The official Wan2.1 VAE parameter name of an `AutoencoderKLWan` parameter name."""
    for official, diffusers in _FIXED_NAMES:
        if name == diffusers:
            return official
    if match := _DIFFUSERS_MID_RESNET.fullmatch(name):
        net, index, rest = match.groups()
        if index in ("0", "1") and (mapped := _residual_to_official(rest)):
            return f"{net}.middle.{int(index) * 2}.{mapped}"
    elif match := _DIFFUSERS_MID_ATTN.fullmatch(name):
        net, rest = match.groups()
        if rest in _ATTENTION_NAMES:
            return f"{net}.middle.1.{rest}"
    elif match := _DIFFUSERS_DOWN.fullmatch(name):
        index, rest = match.groups()
        if mapped := _residual_to_official(rest):
            return f"encoder.downsamples.{index}.{mapped}"
        if rest in _RESAMPLE_NAMES or rest in _ATTENTION_NAMES:
            return name.replace("encoder.down_blocks.", "encoder.downsamples.", 1)
    elif match := _DIFFUSERS_UP_RESNET.fullmatch(name):
        stage, slot, rest = match.groups()
        if int(slot) <= num_res_blocks and (mapped := _residual_to_official(rest)):
            return f"decoder.upsamples.{int(stage) * (num_res_blocks + 2) + int(slot)}.{mapped}"
    elif match := _DIFFUSERS_UP_SAMPLER.fullmatch(name):
        stage, rest = match.groups()
        if rest in _RESAMPLE_NAMES:
            return f"decoder.upsamples.{int(stage) * (num_res_blocks + 2) + num_res_blocks + 1}.{rest}"
    raise _unmappable(name, "diffusers")


def official_vae_state_to_diffusers(
    state: Mapping[str, torch.Tensor], num_res_blocks: int = 2
) -> dict[str, torch.Tensor]:
    """Rename an official VAE state dict to diffusers names (shapes are the same in both layouts)."""
    return {diffusers_vae_key_from_official(k, num_res_blocks): v for k, v in state.items()}


def diffusers_vae_state_to_official(
    state: Mapping[str, torch.Tensor], num_res_blocks: int = 2
) -> dict[str, torch.Tensor]:
    """Rename a diffusers `AutoencoderKLWan` state dict to official names (shapes are the same)."""
    return {official_vae_key_from_diffusers(k, num_res_blocks): v for k, v in state.items()}


__all__ = [
    "diffusers_vae_key_from_official", "official_vae_key_from_diffusers",
    "official_vae_state_to_diffusers", "diffusers_vae_state_to_official",
]
