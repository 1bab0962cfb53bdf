"""LoadOptions: how a pipeline is loaded and run that is neither the request nor the memory plan.

Like MemoryPlan these are fixed for the life of a loaded pipeline (a suite runs cases that differ in
them in separate worker processes). A new load option is a new field here, declared with
`parameter(...)`: wan-generate, the suites and the service pick it up from wan_runtime.spec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from wan_runtime.fields import check_fields, parameter

# Names of the attention backends (wan_runtime/attention.py implements each of them).
AttentionBackend = Literal["auto", "cudnn", "flash", "efficient", "math", "flash_attn2", "flash_attn3", "flash_attn4",
                           "sage", "cudnn_fp8", "fa3_fp8"]

# A sanity ceiling on CPU threads: more than any machine this runs on has cores.
MAX_THREADS = 4096


@dataclass(frozen=True)
class LoadOptions:
    """Load-time options beside the memory and compute plans (attention backends, CPU threads)."""

    attention: AttentionBackend = parameter(
        "auto", "attention backend of the DiT; auto lets torch pick among its SDPA kernels")
    cross_attention: AttentionBackend | None = parameter(
        None, "attention backend of the DiT's cross-attention (to the text); null: the same as attention")
    threads: int | None = parameter(
        None, "CPU threads torch uses, intra- and inter-op; null: OMP_NUM_THREADS when set, else the usable "
        "cores (a harness worker on a CUDA host splits them among the GPUs)", ge=1, le=MAX_THREADS)

    def __post_init__(self) -> None:
        check_fields(self)
