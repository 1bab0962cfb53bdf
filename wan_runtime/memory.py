"""MemoryPlan: where each network lives and in which precision while a video is generated."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from wan_runtime.errors import ConfigError

ExpertPlacement = Literal["resident", "swap", "split"]
BlockPlacement = Literal["resident", "stream"]
TextEncoderPlacement = Literal["gpu", "offload_after", "cpu"]
WeightDtype = Literal["bf16", "fp16", "fp32", "fp8"]
VaeDtype = Literal["bf16", "fp16", "fp32"]
HostMemory = Literal["pinned", "pageable"]

# dtypes a network is loaded and computed in (fp8 is a storage format of the expert blocks only).
DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class MemoryPlan:
    """A value object describing a memory strategy; the pipeline carries it out.

    experts:         "resident" keeps both experts on the device; "swap" keeps only the active one there
                     (the official --offload_model): each denoise stage brings its expert in, and after
                     the last one no expert stays on the device (the VAE decodes with the memory free);
                     "split" puts each expert, resident, on GPUs of its own (wan_runtime/parallel: the
                     high-noise expert on one group of ranks, the low-noise one on another, no swap);
                     it needs a ParallelPlan run under torchrun with twice the ranks.
    text_encoder:    "gpu" stays on the device; "offload_after" moves to CPU after encoding; "cpu" runs on CPU.
    vae_tiling:      None, or the spatial tile size in pixels for VAE encode/decode.
    weight_dtype:    storage and compute dtype of the experts and the text encoder. "fp8" stores the
                     Linear weights of the expert blocks as float8 e4m3 with a per-output-channel scale
                     (wan_runtime/fp8.py) and computes in bf16; everything else (embeddings, norms,
                     modulation, time embedding/projection, head, text encoder) is bf16.
    vae_dtype:       dtype of the VAE; upstream runs it in fp32, bf16 halves its activation memory.
    dit_blocks:      "resident" keeps the active expert's blocks on the device; "stream" keeps them in
                     pinned host memory and copies them into a ring of `prefetch_blocks + 1` device
                     buffers on a side stream, `prefetch_blocks` ahead of the compute
                     (wan_runtime/block_stream.py). Lossless. Needs experts="swap".
    prefetch_blocks: how many blocks ahead of the compute the stream copies (>= 1; only used by "stream").
    host_memory:     how weights parked on the host are held. "pinned": one page-locked copy of each
                     expert made at load (host cost: both experts, 2 x 28.6 GB for A14B in bf16,
                     2 x 14.5 GB in fp8), so bringing an expert in is one fast copy and parking it is
                     free; "pageable": the official way (`.to("cpu")` / `.to("cuda")` at every switch,
                     ~34 s per A14B switch on an H100; host cost one expert). "stream" needs "pinned".
    vram_budget_gib: cap on this process's GPU memory, CUDA context included (wan_runtime/budget.py),
                     to make a large card behave like a smaller one (24 for an RTX 4090); None: no cap.
    """

    experts: ExpertPlacement = "resident"
    text_encoder: TextEncoderPlacement = "gpu"
    vae_tiling: int | None = None
    weight_dtype: WeightDtype = "bf16"
    vae_dtype: VaeDtype = "fp32"
    dit_blocks: BlockPlacement = "resident"
    prefetch_blocks: int = 2
    host_memory: HostMemory = "pinned"
    vram_budget_gib: float | None = None

    def __post_init__(self) -> None:
        _check_choice("experts", self.experts, ("resident", "swap", "split"))
        _check_choice("text_encoder", self.text_encoder, ("gpu", "offload_after", "cpu"))
        _check_choice("weight_dtype", self.weight_dtype, (*DTYPES, "fp8"))
        _check_choice("vae_dtype", self.vae_dtype, tuple(DTYPES))
        _check_choice("dit_blocks", self.dit_blocks, ("resident", "stream"))
        _check_choice("host_memory", self.host_memory, ("pinned", "pageable"))
        if self.vae_tiling is not None and (self.vae_tiling < 64 or self.vae_tiling % 16):
            raise ConfigError(
                f"vae_tiling={self.vae_tiling}: the tile size is in pixels, a multiple of 16 and at least 64 "
                "(e.g. 256 or 512), or null for no tiling"
            )
        if isinstance(self.prefetch_blocks, bool) or not isinstance(self.prefetch_blocks, int) \
                or self.prefetch_blocks < 1:
            raise ConfigError(
                f"MemoryPlan.prefetch_blocks={self.prefetch_blocks!r}: give how many blocks ahead of the "
                "compute the stream copies, an integer >= 1 (1 hides a copy behind one block's compute)"
            )
        if self.dit_blocks == "stream" and self.experts != "swap":
            raise ConfigError(
                "dit_blocks='stream' implies experts='swap': streamed blocks live in host memory and only "
                f"the active expert's ring of buffers is on the device; got experts={self.experts!r}. "
                "Set experts='swap' (or dit_blocks='resident' to keep both experts on the device)"
            )
        if self.dit_blocks == "stream" and self.host_memory != "pinned":
            raise ConfigError(
                "dit_blocks='stream' needs host_memory='pinned': copies from pageable memory cannot run "
                "beside the compute, so nothing would overlap. Set host_memory='pinned'"
            )
        if self.vram_budget_gib is not None:
            budget = self.vram_budget_gib
            if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) \
                    or budget <= 0:
                raise ConfigError(
                    f"MemoryPlan.vram_budget_gib={budget!r}: give the GPU memory to emulate in GiB "
                    "(e.g. 24 for an RTX 4090), or null for no cap"
                )

    @property
    def torch_dtype(self) -> torch.dtype:
        """The compute dtype of the experts and the text encoder (bf16 for fp8 storage)."""
        return DTYPES[self.load_dtype]

    @property
    def vae_torch_dtype(self) -> torch.dtype:
        """The torch dtype of `vae_dtype`."""
        return DTYPES[self.vae_dtype]

    @property
    def load_dtype(self) -> str:
        """The dtype name networks are loaded in; fp8 blocks are quantized from bf16 after loading."""
        return "bf16" if self.weight_dtype == "fp8" else self.weight_dtype

    def to_dict(self) -> dict:
        """Plain dict of the plan's fields (for results and logs)."""
        return asdict(self)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"MemoryPlan.{name}={value!r} is not one of {list(allowed)}")
