"""Attention alone through the runtime's backend switch, for each backend this machine has.

GPU: 40 heads x head dim 128 at the 480p and 720p token counts, bf16 (FACTS.md: at 75,600 tokens on
an H100, cuDNN ~578 TFLOP/s, flash ~361, memory-efficient ~184). CPU: 2 heads x 48 at small counts.
"""

from __future__ import annotations

import pytest
import torch

from wan_runtime.attention import BACKENDS, attention

TOKENS = {"cuda": [32760, 75600], "cpu": [120, 720]}


def _token_counts():
    return TOKENS["cuda" if torch.cuda.is_available() else "cpu"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tokens", _token_counts())
def test_self_attention(benchmark, synchronized, skip_unless_runnable, device, model_config, dtype, tokens, backend):
    heads, head_dim = model_config.dit.num_heads, model_config.dit.head_dim
    skip_unless_runnable(backend, device, heads, tokens)
    generator = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, head_dim, device=device, dtype=dtype, generator=generator)
               for _ in range(3))
    run = synchronized(lambda: attention(q, k, v, backend), device)
    flops = 4 * tokens * tokens * heads * head_dim  # QK^T and PV, 2 FLOPs per multiply-add
    benchmark.extra_info.update({"tokens": tokens, "heads": heads, "head_dim": head_dim, "flops": flops})
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)
