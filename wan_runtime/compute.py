"""ComputePlan: how the DiT blocks compute (compiled or not, matmul precision), beside the MemoryPlan.

    compile          "none": every block is called as it is (eager).
                     "blocks": regional compilation: one `torch.compile` of the block call, shared by
                     all blocks of both experts (resident or streamed, bf16 or fp8 storage), compiled
                     for each new input shape in its own `compile` stage before the first step
                     (wan_runtime/compile.py). Lossless with exact attention.
    compile_backend  the torch.compile backend: "inductor" generates fused kernels (the speed-up);
                     "aot_eager" only traces (what CPU tests use to check the plumbing quickly).
    matmul           "native": the block matmuls run in the compute dtype (bf16; fp8-stored weights
                     are dequantized first). "fp8": fp8 compute, lossy: the activations are quantized
                     per token and multiplied with the fp8 weights on fp8 tensor cores (Ada, Hopper).
                     It reads the stored fp8 weights as they are, so it needs weight_dtype="fp8":
                     storage and compute stay two named choices (fp8 storage alone is the memory
                     option with bf16 compute; fp8 compute is the speed option on top of it).
    exact_last_blocks with matmul "fp8": the last N blocks of each expert keep their bf16 weights and
                     matmuls. Measured on an H200 (A14B, one forward): fp8's drift comes mostly
                     from the late blocks, and each exact block costs ~0.026 s at 720p (bf16 vs fp8
                     matmuls with FA4: 9.89 - 8.86 s over 40 blocks). The memory
                     floors (wan_runtime/resources.py, `exact_blocks`) count those blocks in bf16.

Attention backends are chosen by name beside the plan (load options `attention`, `cross_attention`).
This module imports no torch: the parameter spec (and so `wan-generate --help`) reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from wan_runtime.errors import BackendUnavailableError, ConfigError
from wan_runtime.fields import check_fields, parameter
from wan_runtime.memory import MemoryPlan

if TYPE_CHECKING:
    import torch

Compile = Literal["none", "blocks"]
CompileBackend = Literal["inductor", "aot_eager", "eager"]
Matmul = Literal["native", "fp8"]


@dataclass(frozen=True)
class ComputePlan:
    """A value object describing how the DiT blocks compute; the loader carries it out."""

    compile: Compile = parameter(
        "none", "blocks: one torch.compile of the DiT block shared by every block of both experts (its "
        "warm-up is the stage `compile`); none: eager")
    compile_backend: CompileBackend = parameter(
        "inductor", "torch.compile backend: inductor fuses kernels (the speed-up); aot_eager only traces")
    matmul: Matmul = parameter(
        "native", "fp8: block matmuls on fp8 tensor cores with per-token activation scales (lossy; needs "
        "weight_dtype=fp8 and an Ada or Hopper GPU); native: in the compute dtype")
    exact_last_blocks: int = parameter(
        0, "with matmul=fp8: the last N DiT blocks of each expert keep bf16 weights and matmuls (the late "
        "blocks carry most of fp8's drift); 0: every block in fp8", ge=0)

    def __post_init__(self) -> None:
        check_fields(self)

    def check_memory(self, memory: MemoryPlan) -> None:
        """Raise ConfigError when this plan cannot go with `memory` (on any device)."""
        if self.matmul == "fp8" and memory.weight_dtype != "fp8":
            raise ConfigError(
                f"matmul='fp8' multiplies the fp8-stored block weights as they are, so it needs "
                f"weight_dtype='fp8' (got {memory.weight_dtype!r}); set weight_dtype=fp8"
            )
        if self.exact_last_blocks and self.matmul != "fp8":
            raise ConfigError(
                f"exact_last_blocks={self.exact_last_blocks} keeps some blocks out of fp8 compute, so it needs "
                f"matmul='fp8' (got {self.matmul!r}); set matmul=fp8 or exact_last_blocks=0")
        if self.exact_last_blocks and memory.dit_blocks == "stream":
            raise ConfigError(
                f"exact_last_blocks={self.exact_last_blocks} mixes bf16 and fp8 blocks, and dit_blocks='stream' "
                "copies every block into buffers of one layout; use dit_blocks=resident or exact_last_blocks=0")

    def fp8_block(self, index: int, num_blocks: int) -> bool:
        """Whether block `index` of `num_blocks` computes in fp8 (False: bf16 weights and matmuls)."""
        return self.matmul == "fp8" and index < num_blocks - self.exact_last_blocks

    def check(self, memory: MemoryPlan, device: "torch.device | str") -> None:
        """Raise a clear error when this plan cannot run with `memory` on `device`."""
        from wan_runtime.fp8 import fp8_matmul_unavailable_reason

        self.check_memory(memory)
        if self.matmul != "fp8":
            return
        reason = fp8_matmul_unavailable_reason(device)
        if reason is not None:
            raise BackendUnavailableError(f"matmul='fp8' cannot run: {reason}; use matmul='native'")

    def to_dict(self) -> dict:
        """Plain dict of the plan's fields (for results and logs)."""
        return asdict(self)


__all__ = ["Compile", "CompileBackend", "Matmul", "ComputePlan"]
