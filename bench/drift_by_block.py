"""Where does the fastest plan's drift come from? One A14B expert forward with fp8 compute and fa3_fp8
self-attention, with the last N blocks kept exact (bf16 matmuls and/or cuDNN attention), against the
all-exact forward: rel. L2 and PSNR per variant, at the short quality case's shape (480p, 17 frames,
7,800 tokens) and at 480p/81f, at two timesteps.

    WANBENCH_FA3_LIB=... python3 bench/drift_by_block.py     # on an H200, ~1.5 min; writes $OUT/exp_blocks2.json

Measured this way (baselines/h200-speed/drift-by-block.json): the late blocks carry most of the drift,
which is what ComputePlan.exact_last_blocks acts on. A quick experiment script: the blocks are run by a
hand-written loop that picks each block from a bf16 or an fp8 copy of the expert.
"""
import json
import os
import sys
from pathlib import Path

import torch

import measure  # bench/measure.py

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
from wan_runtime.attention import resolve_ops
from wan_runtime.compute import ComputePlan
from wan_runtime.config import A14B
from wan_runtime.experts import load_expert
from wan_runtime.memory import MemoryPlan
from wan_runtime.weights import load_dit


def drift(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """(rel. L2, PSNR in dB with the reference's range as peak) of a against b, rounded."""
    measured = measure.drift(a, b)
    return round(measured["rel_l2"], 4), round(measured["psnr_db"], 2)


dev = torch.device("cuda", 0)
model = load_dit("synthetic", A14B, "high", "bf16", dev, "cudnn")
fp8model = load_expert("synthetic", A14B, "high", MemoryPlan(weight_dtype="fp8"), dev, "cudnn",
                       compute=ComputePlan(matmul="fp8")).model
exact = resolve_ops("cudnn", "cudnn", dev)
fa3 = resolve_ops("fa3_fp8", "cudnn", dev)


class Mixed:
    """A block runner: block i from the bf16 expert if i is in bf16_mm (else the fp8 one), cuDNN attention if in exact_att."""

    def __init__(self, bf16_mm: set[int], exact_att: set[int]) -> None:
        self.bf16_mm, self.exact_att = bf16_mm, exact_att

    def __call__(self, m, x, e0, context, rope, ops):
        for i in range(40):
            block = (model if i in self.bf16_mm else fp8model).blocks[i]
            x = block(x, e0, context, rope, exact if i in self.exact_att else fa3)
        return x


ALL = set(range(40))


def last(n: int) -> set[int]:
    """The indices of the last n blocks."""
    return set(range(40 - n, 40))


# (label, blocks with bf16 matmuls, blocks with cuDNN self-attention)
variants = [("fp8mm only", set(), ALL), ("fp8mm last4 bf16", last(4), ALL), ("fp8mm last8 bf16", last(8), ALL),
            ("fp8mm last12 bf16", last(12), ALL),
            ("fastest", set(), set()), ("fastest mm-last8", last(8), set()), ("fastest mm-last12", last(12), set()),
            ("fastest att-last4", set(), last(4)), ("fastest mm-last8 att-last4", last(8), last(4)),
            ("fastest mm-last12 att-last2", last(12), last(2))]
out = {}
for name, latent in (("short", (5, 60, 104)), ("480p", (21, 60, 104))):
    gen = torch.Generator(dev).manual_seed(0)
    x = torch.randn(1, 16, *latent, device=dev, generator=gen, dtype=torch.bfloat16)
    y = torch.randn(1, 20, *latent, device=dev, generator=gen, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, 4096, device=dev, generator=gen, dtype=torch.bfloat16)
    for tval in (950.0, 500.0):
        t = torch.tensor([tval], device=dev)
        with torch.inference_mode():
            model.runner = Mixed(ALL, ALL)
            ref = model(x, t, ctx, y)
            for label, mm, att in variants:
                model.runner = Mixed(mm, att)
                o = model(x, t, ctx, y)
                out[f"{name} t={tval:.0f} {label}"] = drift(o, ref)
                print(name, tval, label, out[f"{name} t={tval:.0f} {label}"], flush=True)
Path(os.environ.get("OUT", "/tmp"), "exp_blocks2.json").write_text(json.dumps(out, indent=1))
