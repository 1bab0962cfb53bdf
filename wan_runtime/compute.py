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

    def __post_init__(self) -> None:
        check_fields(self)

    def check_memory(self, memory: MemoryPlan) -> None:
        """Raise ConfigError when this plan cannot go with `memory` (on any device)."""
        if self.matmul == "fp8" and memory.weight_dtype != "fp8":
            raise ConfigError(
                f"matmul='fp8' multiplies the fp8-stored block weights as they are, so it needs "
                f"weight_dtype='fp8' (got {memory.weight_dtype!r}); set weight_dtype=fp8"
            )

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
