"""MemoryPlan: where each network lives and in which precision while a video is generated."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from wan_runtime.errors import ConfigError
from wan_runtime.fields import check_fields, parameter

if TYPE_CHECKING:
    import torch

ExpertPlacement = Literal["resident", "swap", "split"]
BlockPlacement = Literal["resident", "stream"]
TextEncoderPlacement = Literal["gpu", "offload_after", "cpu"]
VaeDtype = Literal["bf16", "fp16", "fp32"]
WeightDtype = Literal[VaeDtype, "fp8"]
HostMemory = Literal["pinned", "pageable"]


def torch_dtypes() -> dict[str, torch.dtype]:
    """The dtypes a network is loaded and computed in, by name (fp8 is a storage format of expert blocks only)."""
    import torch  # here, so reading or checking a plan does not import torch (seconds)

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _check_tile(tile: int) -> None:
    if tile < 64 or tile % 16:
        raise ConfigError(
            f"vae_tiling={tile}: the tile size is in pixels, a multiple of 16 and at least 64 "
            "(e.g. 256 or 512), or null for no tiling"
        )


@dataclass(frozen=True)
class MemoryPlan:
    """A value object describing a memory strategy; the pipeline carries it out.

    experts "swap" is the official --offload_model: each denoise stage brings its expert in, and after
    the last one no expert stays on the device (the VAE decodes with the memory free). "split" puts
    each expert, resident, on GPUs of its own: the high-noise expert on one half of the ranks of a
    torchrun job, the low-noise one on the other (wan_runtime/parallel; twice the ranks, no swap).
    weight_dtype "fp8" stores the Linear weights of the expert blocks as float8 e4m3 with a
    per-output-channel scale (wan_runtime/fp8.py) and computes in bf16; everything else (embeddings,
    norms, modulation, time embedding/projection, head, text encoder) is bf16.
    dit_blocks "stream" keeps the blocks in pinned host memory and copies them into a ring of
    `prefetch_blocks + 1` device buffers on a side stream, `prefetch_blocks` ahead of the compute
    (wan_runtime/block_stream.py). Lossless.
    host_memory "pinned" makes one page-locked copy of each expert at load (host cost: both experts,
    2 x 28.6 GB for A14B in bf16, 2 x 14.5 GB in fp8), so bringing an expert in is one fast copy and
    parking it is free; "pageable" is the official way (`.to("cpu")` / `.to("cuda")` at every switch,
    ~34 s per A14B switch on an H100; host cost one expert).
    vram_budget_gib caps this process's GPU memory, CUDA context included (wan_runtime/budget.py).
    """

    experts: ExpertPlacement = parameter(
        "resident", "resident: both experts on the device; swap: only the active one (official --offload_model); "
        "split: each on GPUs of its own (torchrun, twice the ranks)")
    text_encoder: TextEncoderPlacement = parameter(
        "gpu", "gpu: stays on the device; offload_after: to the CPU after encoding; cpu: runs on the CPU")
    vae_tiling: int | None = parameter(
        None, "VAE spatial tile in pixels (a multiple of 16, >= 64); null: no tiling", check=_check_tile)
    weight_dtype: WeightDtype = parameter(
        "bf16", "storage and compute dtype of the experts and the text encoder; fp8: scaled e4m3 block weights")
    vae_dtype: VaeDtype = parameter("fp32", "dtype of the VAE (upstream: fp32; bf16 halves its activations)")
    dit_blocks: BlockPlacement = parameter(
        "resident", "stream: the active expert's blocks stay in pinned host memory and are copied ahead of "
        "the compute (needs experts=swap)")
    prefetch_blocks: int = parameter(2, "blocks copied ahead of the compute under dit_blocks=stream", ge=1)
    host_memory: HostMemory = parameter(
        "pinned", "how weights parked on the host are held: pinned (fast switches, both experts in RAM) or "
        "pageable (as upstream); stream needs pinned")
    vram_budget_gib: float | None = parameter(
        None, "cap on this process's GPU memory in GiB (24 behaves like an RTX 4090); null: no cap", gt=0)

    def __post_init__(self) -> None:
        check_fields(self)
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

    @property
    def torch_dtype(self) -> torch.dtype:
        """The compute dtype of the experts and the text encoder (bf16 for fp8 storage)."""
        return torch_dtypes()[self.load_dtype]

    @property
    def vae_torch_dtype(self) -> torch.dtype:
        """The torch dtype of `vae_dtype`."""
        return torch_dtypes()[self.vae_dtype]

    @property
    def load_dtype(self) -> str:
        """The dtype name networks are loaded in; fp8 blocks are quantized from bf16 after loading."""
        return "bf16" if self.weight_dtype == "fp8" else self.weight_dtype

    def to_dict(self) -> dict:
        """Plain dict of the plan's fields (for results and logs)."""
        return asdict(self)

