"""Regional compilation: one `torch.compile` of the DiT block call, shared by every block.

All 40 blocks of both experts have the same structure, so compiling the call of ONE block
(`eager_call(block, x, e0, context, rope, ops)`) gives a graph that every block reuses: torch.compile
treats a module passed in as a set of input tensors (torch._dynamo inlines built-in nn.Modules), so
blocks differ only in their weights, which are inputs, not guards. Compiling the whole expert would
unroll 40 blocks into one graph (40x the compile time) for no extra fusion.

Shapes are static (`dynamic=False`): a video's token count is fixed, and a static graph lets inductor
pick kernels for it. A new shape (another size or frame count) compiles once more; the pipeline runs
that compile in its own `compile` stage before the first step (`WanDiT.warm_up`), so no step pays for
it. `compile_counts()` reads torch._dynamo's counters, which tests use to prove that the second
block and the other expert reuse the first compile.
"""

from __future__ import annotations

import torch

from wan_runtime.block_runner import BlockCall, eager_call
from wan_runtime.compute import ComputePlan


def compiled_block_call(backend: str = "inductor") -> BlockCall:
    """`eager_call` under torch.compile (static shapes); one per pipeline, handed to both experts."""
    return torch.compile(eager_call, backend=backend, dynamic=False)


def block_call(plan: ComputePlan) -> BlockCall:
    """The per-block call a compute plan asks for: eager, or compiled."""
    if plan.compile == "blocks":
        return compiled_block_call(plan.compile_backend)
    return eager_call


def compile_counts() -> dict[str, int]:
    """torch._dynamo's running totals: frames compiled ("frames") and distinct graphs ("graphs")."""
    from torch._dynamo.utils import counters

    return {"frames": int(counters["frames"]["ok"]), "graphs": int(counters["stats"]["unique_graphs"])}


__all__ = ["block_call", "compiled_block_call", "compile_counts"]
