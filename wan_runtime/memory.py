"""MemoryPlan: where each network lives and in which precision while a video is generated."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch

from wan_runtime.errors import ConfigError

ExpertPlacement = Literal["resident", "swap"]
TextEncoderPlacement = Literal["gpu", "offload_after", "cpu"]
WeightDtype = Literal["bf16", "fp16", "fp32"]

DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class MemoryPlan:
    """A value object describing a memory strategy; the pipeline carries it out.

    experts:      "resident" keeps both experts on the device; "swap" keeps only the active one there
                  and moves the other to CPU memory at the switch (the official --offload_model).
    text_encoder: "gpu" stays on the device; "offload_after" moves to CPU after encoding; "cpu" runs on CPU.
    vae_tiling:   None, or the spatial tile size in pixels for VAE encode/decode.
    weight_dtype: storage and compute dtype of the experts and the text encoder.
    vae_dtype:    dtype of the VAE; upstream runs it in fp32, bf16 halves its activation memory.
    """

    experts: ExpertPlacement = "resident"
    text_encoder: TextEncoderPlacement = "gpu"
    vae_tiling: int | None = None
    weight_dtype: WeightDtype = "bf16"
    vae_dtype: WeightDtype = "fp32"

    def __post_init__(self) -> None:
        _check_choice("experts", self.experts, ("resident", "swap"))
        _check_choice("text_encoder", self.text_encoder, ("gpu", "offload_after", "cpu"))
        _check_choice("weight_dtype", self.weight_dtype, tuple(DTYPES))
        _check_choice("vae_dtype", self.vae_dtype, tuple(DTYPES))
        if self.vae_tiling is not None and (self.vae_tiling < 64 or self.vae_tiling % 16):
            raise ConfigError(
                f"vae_tiling={self.vae_tiling}: the tile size is in pixels, a multiple of 16 and at least 64 "
                "(e.g. 256 or 512), or null for no tiling"
            )

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype of `weight_dtype`."""
        return DTYPES[self.weight_dtype]

    def to_dict(self) -> dict:
        """Plain dict of the plan's fields (for results and logs)."""
        return asdict(self)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"MemoryPlan.{name}={value!r} is not one of {list(allowed)}")
