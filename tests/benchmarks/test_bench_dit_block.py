"""One DiT block (self-attention with RoPE, cross-attention, FFN, AdaLN) at the token counts of real runs.

GPU: the A14B block (dim 5120, 40 heads) at 480p/81 frames (21x30x52 = 32,760 tokens) and 720p/81
frames (21x45x80 = 75,600 tokens), bf16, with every attention backend this machine has (FACTS.md:
~313 ms per block at 720p eager with cuDNN on an H100). CPU: the tiny block at small grids.
"""

from __future__ import annotations

import pytest
import torch

from wan_runtime.attention import BACKENDS, resolve_ops
from wan_runtime.modules.dit import WanBlock, rope_table

# (name, latent patch grid f x h x w) per device type
GRIDS = {
    "cuda": [("480p-81f", (21, 30, 52)), ("720p-81f", (21, 45, 80))],
    "cpu": [("tiny-160x96-5f", (2, 6, 10)), ("tiny-320x192-9f", (3, 12, 20))],
}


def _grids():
    kind = "cuda" if torch.cuda.is_available() else "cpu"
    return [pytest.param(grid, id=name) for name, grid in GRIDS[kind]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("grid", _grids())
def test_dit_block_forward(benchmark, synchronized, skip_unless_runnable, device, model_config, dtype, grid, backend):
    cfg = model_config.dit
    skip_unless_runnable(backend, device, cfg.num_heads, grid[0] * grid[1] * grid[2])
    block = WanBlock(cfg).to(device=device, dtype=dtype).eval()
    tokens = grid[0] * grid[1] * grid[2]
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1, tokens, cfg.dim, device=device, generator=generator)  # residual stream, fp32
    e0 = torch.randn(1, 6, cfg.dim, device=device, generator=generator) * 0.1
    context = torch.randn(1, cfg.text_len, cfg.dim, device=device, dtype=dtype, generator=generator)
    rope = rope_table(grid, cfg.head_dim, device)
    ops = resolve_ops(backend, backend, device)
    run = synchronized(lambda: block(x, e0, context, rope, ops), device)
    benchmark.extra_info.update({"tokens": tokens, "dim": cfg.dim, "dtype": str(dtype), "backend": backend})
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
