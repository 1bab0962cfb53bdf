"""One DiT block (self-attention with RoPE, cross-attention, FFN, AdaLN) at the token counts of real runs.

GPU: the A14B block (dim 5120, 40 heads) at 480p/81 frames (21x30x52 = 32,760 tokens) and 720p/81
frames (21x45x80 = 75,600 tokens), bf16, with every attention backend this machine has (FACTS.md:
~313 ms per block at 720p eager with cuDNN on an H100), then compiled (the call all blocks share)
and with fp8 compute. CPU: the tiny block at small grids.
"""

from __future__ import annotations

import pytest
import torch

from wan_runtime.attention import BACKENDS, resolve_ops
from wan_runtime.compile import compiled_block_call
from wan_runtime.fp8 import fp8_matmul_unavailable_reason, quantize_linears
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


def _block_inputs(cfg, grid, device, dtype):
    tokens = grid[0] * grid[1] * grid[2]
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(1, tokens, cfg.dim, device=device, generator=generator)
    e0 = torch.randn(1, 6, cfg.dim, device=device, generator=generator) * 0.1
    context = torch.randn(1, cfg.text_len, cfg.dim, device=device, dtype=dtype, generator=generator)
    return x, e0, context, rope_table(grid, cfg.head_dim, device)


@pytest.mark.parametrize("grid", _grids())
def test_compiled_dit_block_forward(benchmark, synchronized, device, model_config, dtype, grid):
    """The block through the compiled call every block shares (inductor; the compile is the warmup round)."""
    cfg = model_config.dit
    block = WanBlock(cfg).to(device=device, dtype=dtype).eval().requires_grad_(False)
    x, e0, context, rope = _block_inputs(cfg, grid, device, dtype)
    exact = "cudnn" if device.type == "cuda" else "auto"
    ops = resolve_ops(exact, exact, device)
    call = compiled_block_call()
    run = synchronized(lambda: call(block, x, e0, context, rope, ops), device)
    benchmark.extra_info.update({"tokens": x.shape[1], "dim": cfg.dim, "dtype": str(dtype), "backend": exact,
                                 "compiled": True})
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("grid", _grids())
def test_fp8_compute_dit_block_forward(benchmark, synchronized, device, model_config, grid):
    """The block with fp8-stored weights multiplied in fp8 (matmul: fp8), eager, bf16 activations."""
    reason = fp8_matmul_unavailable_reason(device)
    if reason is not None:
        pytest.skip(reason)
    cfg = model_config.dit
    block = WanBlock(cfg).to(device=device, dtype=torch.bfloat16).eval().requires_grad_(False)
    quantize_linears(block, matmul="fp8")
    x, e0, context, rope = _block_inputs(cfg, grid, device, torch.bfloat16)
    exact = "cudnn" if device.type == "cuda" else "auto"
    ops = resolve_ops(exact, exact, device)
    run = synchronized(lambda: block(x, e0, context, rope, ops), device)
    benchmark.extra_info.update({"tokens": x.shape[1], "dim": cfg.dim, "backend": exact, "matmul": "fp8"})
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
