"""Full-size A14B on the GPU: one expert with synthetic bf16 weights against diffusers holding the same tensors.

Prints s/forward and peak memory for the issue notes; set WANBENCH_GPU_REPORT to a folder to also get
them as JSON. The assertions are about agreement, never about speed.

Both bf16 implementations are also compared with an fp32-compute forward of the same weights. Ours
keeps the residual stream in fp32 like the official model under autocast; diffusers keeps it in
bf16, which adds rounding at each of the 80 residual additions. Measured on an H100 at 480p/81f:
ours vs diffusers relative L2 1.4e-2 (cosine 0.9999), so the gap is bounded at 2e-2, and the test
requires ours to be within 1e-2 of the fp32 reference and closer to it than diffusers is.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from wan_runtime.attention import resolve_ops
from wan_runtime.config import A14B
from wan_runtime.weights import load_dit

from helpers import cuda_timed, diffusers_sharing

pytestmark = pytest.mark.gpu
diffusers = pytest.importorskip("diffusers")

# (name, latent frames, latent h, latent w): 480p/81 frames and 720p/9 frames
CASES = [("480p_81f", 21, 60, 104), ("720p_9f", 3, 90, 160)]


def _fp32_reference(model: torch.nn.Module, x, t, ctx, y) -> torch.Tensor:
    """The same forward with every block computed in fp32 (weights upcast one block at a time)."""
    backend = "efficient" if x.is_cuda else "math"  # fp32-capable attention
    fp32_ops = resolve_ops(backend, backend, x.device)

    def run_blocks_fp32(model, tokens, e0, context, rope, ops):
        for block in model.blocks:
            block.float()  # bf16 -> fp32 -> bf16 is exact, so the weights come back unchanged
            try:
                tokens = block(tokens, e0, context.float(), rope, fp32_ops)
            finally:
                block.to(torch.bfloat16)
        return tokens

    runner, model.runner = model.runner, run_blocks_fp32
    try:
        return model(x, t, ctx, y)
    finally:
        model.runner = runner


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()



def test_a14b_expert_agrees_with_diffusers_at_full_size():
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    start = time.perf_counter()
    ours = load_dit("synthetic", A14B, "high", "bf16", "cuda")
    torch.cuda.synchronize()
    build_s = time.perf_counter() - start
    resident_gib = torch.cuda.memory_allocated() / 2**30
    theirs = diffusers_sharing(ours, A14B.dit, "cuda")
    figures = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "diffusers": diffusers.__version__,
               "build_s": round(build_s, 2), "resident_gib": round(resident_gib, 2), "cases": {}}
    gen = torch.Generator("cuda").manual_seed(0)
    for name, f, h, w in CASES:
        x = torch.randn(1, 16, f, h, w, device="cuda", generator=gen, dtype=torch.bfloat16)
        y = torch.randn(1, 20, f, h, w, device="cuda", generator=gen, dtype=torch.bfloat16)
        ctx = torch.randn(1, A14B.dit.text_len, A14B.dit.text_dim, device="cuda", generator=gen, dtype=torch.bfloat16)
        t = torch.tensor([950.0], device="cuda")
        with torch.no_grad():
            torch.cuda.reset_peak_memory_stats()
            a, ours_s = cuda_timed(lambda: ours(x, t, ctx, y))
            ours_peak = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
            b, theirs_s = cuda_timed(lambda: theirs(torch.cat([x, y], 1), t, ctx, return_dict=False)[0].float())
            theirs_peak = torch.cuda.max_memory_allocated() / 2**30
            ref = _fp32_reference(ours, x, t, ctx, y)
        rel_l2 = _rel_l2(a, b)
        cosine = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()
        figures["cases"][name] = {
            "tokens": f * h * w // 4, "ours_s": round(ours_s, 3), "diffusers_s": round(theirs_s, 3),
            "ours_peak_gib": round(ours_peak, 2), "diffusers_peak_gib": round(theirs_peak, 2),
            "rel_l2": rel_l2, "cosine": cosine, "out_std": a.std().item(),
            "ours_vs_fp32_rel_l2": _rel_l2(a, ref), "diffusers_vs_fp32_rel_l2": _rel_l2(b, ref),
        }
        print(name, figures["cases"][name])
        assert torch.isfinite(a).all()
        assert cosine >= 0.999, name
        assert rel_l2 <= 2e-2, name
        assert _rel_l2(a, ref) <= 1e-2, name
        assert _rel_l2(a, ref) <= _rel_l2(b, ref), name
    print(json.dumps(figures))
    if os.environ.get("WANBENCH_GPU_REPORT"):
        out = Path(os.environ["WANBENCH_GPU_REPORT"]) / "a14b_expert.json"
        out.write_text(json.dumps(figures, indent=1))
