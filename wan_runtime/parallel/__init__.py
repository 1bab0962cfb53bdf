"""Many GPUs for one video: sequence parallelism (Ulysses), CFG parallelism, an expert per GPU group, FSDP.

    pipe = WanI2V.load(source, preset, "cuda", memory, parallel=ParallelPlan(ulysses_size=4))  # every rank
    result = pipe.generate(request)  # every rank; result.frames on rank 0 only (pipe.is_output_rank)
    pipe.close()                     # releases its rank groups (load another pipeline, or...)
    shutdown()                       # ...end the process group before the rank exits

Launched with `torchrun --nproc-per-node N`; plan.py (what), launch.py (torchrun and the process
group), context.py (one rank's part), ulysses.py (the block-runner wrapper), groups.py (collectives
with errors instead of hangs), fsdp.py (FSDP2 sharding). Importing the plan imports no torch (the
parameter spec reads it); the rest comes on first use.
"""

from __future__ import annotations

from typing import Any

from wan_runtime.parallel.plan import ParallelPlan


def __getattr__(name: str) -> Any:
    if name == "ParallelContext":
        from wan_runtime.parallel.context import ParallelContext

        return ParallelContext
    if name == "shutdown":
        from wan_runtime.parallel.launch import shutdown

        return shutdown
    raise AttributeError(f"module 'wan_runtime.parallel' has no attribute {name!r}")


__all__ = ["ParallelContext", "ParallelPlan", "shutdown"]
