"""Kernel profile of one block of the fastest plan (compiled, fp8 compute, fa3_fp8 self-attention) at 720p/81f.

    WANBENCH_FA3_LIB=... python3 bench/profile_fastest_block.py   # on an H200, ~30 s; writes $OUT/profile.json

The 25 costliest device kernels with their times. Run while fa3_fp8 quantized q, k and v inside its
opaque op, it showed those passes at ~8 ms of a 176 ms block (baselines/h200-speed/profile-fastest-block.json),
which is why the quantization now runs in the compiled graph.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
from torch.profiler import ProfilerActivity, profile
from wan_runtime.attention import resolve_ops
from wan_runtime.compile import compiled_block_call
from wan_runtime.config import A14B
from wan_runtime.fp8 import quantize_linears
from wan_runtime.modules.dit import WanBlock, rope_table  # noqa: E402

dev = torch.device("cuda", 0)
cfg = A14B.dit
grid = (21, 45, 80)  # 720p, 81 frames: 21 latent frames of 45 x 80 patches
tokens = 21 * 45 * 80
with torch.device(dev):
    block = WanBlock(cfg).to(torch.bfloat16).eval().requires_grad_(False)
quantize_linears(block, matmul="fp8")
block.to(dev)
gen = torch.Generator(dev).manual_seed(0)
x = torch.randn(1, tokens, cfg.dim, device=dev, generator=gen)
e0 = torch.randn(1, 6, cfg.dim, device=dev, generator=gen) * 0.1
context = torch.randn(1, cfg.text_len, cfg.dim, device=dev, generator=gen, dtype=torch.bfloat16)
rope = rope_table(grid, cfg.head_dim, dev)
ops = resolve_ops("fa3_fp8", "cudnn", dev)
call = compiled_block_call("inductor")
out = {}
with torch.inference_mode():
    call(block, x, e0, context, rope, ops)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        call(block, x, e0, context, rope, ops)
    torch.cuda.synchronize()
    out["block_s"] = (time.perf_counter() - t0) / 3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call(block, x, e0, context, rope, ops)
        torch.cuda.synchronize()
events = sorted(prof.key_averages(), key=lambda e: e.self_device_time_total, reverse=True)[:25]
out["total_ms"] = sum(e.self_device_time_total for e in prof.key_averages()) / 1e3
out["top"] = [(e.key[:110], round(e.self_device_time_total / 1e3, 3), e.count) for e in events]
print(json.dumps(out, indent=1))
Path(os.environ.get("OUT", "/tmp"), "profile.json").write_text(json.dumps(out, indent=1))
