"""The speed options on a GPU: compiled blocks (inductor) match eager within bf16 rounding, and so does
FlashAttention-4 (exact attention), eager or compiled; SageAttention,
cuDNN fp8 attention and fp8 compute are lossy, and their drift is printed and kept within a loose bound;
the pinned text encoder gives the resident one's embeddings. Speed is measured by bench/speed.py, never here.

The DiT has A14B's block widths (dim 5120, 40 heads of 128, FFN 13824) and 2 blocks, at 4,680 tokens
(3 x 30 x 52, a 9-frame 480p grid), so one inductor compile (~1 minute) covers the whole test.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch

from wan_runtime.attention import available_backends, resolve_attention
from wan_runtime.block_runner import ResidentBlocks
from wan_runtime.compile import compile_counts, compiled_block_call
from wan_runtime.compute import ComputePlan
from wan_runtime.config import A14B, TINY
from wan_runtime.experts import load_expert
from wan_runtime.fp8 import fp8_matmul_unavailable_reason
from wan_runtime.fp8_attention import HOW_TO_GET as CUDNN_FRONTEND_HOW_TO_GET
from wan_runtime.memory import MemoryPlan
from wan_runtime.observer import NullObserver
from wan_runtime.pipeline import WanI2V

from helpers import tiny_request

pytestmark = pytest.mark.gpu
TWO_BLOCKS = dataclasses.replace(A14B, dit=dataclasses.replace(A14B.dit, num_layers=2))


def _cudnn_fp8_skip_reason() -> str | None:
    """Why cuDNN fp8 attention is not tried here: no frontend installed, or no Hopper GPU (None: try it).

    Only these skip; with the frontend on a Hopper GPU any other refusal (cuDNN too old, a graph cuDNN
    will not build) fails the tests with cuDNN's reason.
    """
    if not torch.cuda.is_available():
        return "needs a CUDA device"
    if importlib.util.find_spec("cudnn") is None:
        return CUDNN_FRONTEND_HOW_TO_GET
    if torch.cuda.get_device_capability() < (9, 0):
        return "cuDNN's fp8 attention needs compute capability 9.0 (Hopper) or newer"
    return None


needs_cudnn_fp8 = pytest.mark.skipif(_cudnn_fp8_skip_reason() is not None, reason=str(_cudnn_fp8_skip_reason()))


def needs_backend(name: str, reason: str) -> pytest.MarkDecorator:
    """Skip unless attention backend `name` (an optional package) runs on this machine's GPU."""
    return pytest.mark.skipif(name not in available_backends("cuda") if torch.cuda.is_available() else True,
                              reason=reason)


needs_flash_attn4 = needs_backend("flash_attn4", "flash-attn-4 is not installed (bench/fa4_wheels.sh carries it "
                                                 "to a GPU machine)")


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.fixture(scope="module")
def setup():
    expert = load_expert("synthetic", TWO_BLOCKS, "high", MemoryPlan(), "cuda", "cudnn").model
    gen = torch.Generator("cuda").manual_seed(0)
    x = torch.randn(1, 16, 3, 60, 104, device="cuda", generator=gen, dtype=torch.bfloat16)
    y = torch.randn(1, 20, 3, 60, 104, device="cuda", generator=gen, dtype=torch.bfloat16)
    ctx = torch.randn(1, 512, A14B.dit.text_dim, device="cuda", generator=gen, dtype=torch.bfloat16)
    inputs = (x, torch.tensor([950.0], device="cuda"), ctx, y)
    with torch.inference_mode():
        eager = expert(*inputs)
    return expert, inputs, eager


def _with_self_attention(setup, backend: str) -> tuple[torch.Tensor, float]:
    """The expert's output with `backend` for self-attention (cuDNN cross), and its rel. L2 from eager cuDNN."""
    expert, inputs, eager = setup
    expert.set_attention(backend, "cudnn")
    try:
        with torch.inference_mode():
            out = expert(*inputs)
    finally:
        expert.set_attention("cudnn")
    return out, _rel_l2(out, eager)


def test_compiled_blocks_match_eager_within_bf16_rounding(setup):
    expert, inputs, eager = setup
    torch._dynamo.reset()
    runner = expert.runner
    expert.runner = ResidentBlocks(compiled_block_call())
    try:
        before = compile_counts()
        with torch.inference_mode():
            compiled = expert(*inputs)
            again = expert(*inputs)
        frames = compile_counts()["frames"] - before["frames"]
    finally:
        expert.runner = runner
    drift = _rel_l2(compiled, eager)
    print(f"compiled vs eager: rel L2 {drift:.2e}")
    assert frames == 1  # block 2 reused block 1's compile
    assert torch.equal(compiled, again)
    assert drift < 4e-3  # fused kernels round differently; bf16 itself is 2^-8 = 3.9e-3


@needs_flash_attn4
def test_flash_attention_4_gives_the_cudnn_output_within_bf16_rounding(setup):
    out, drift = _with_self_attention(setup, "flash_attn4")
    print(f"FlashAttention-4 (self) vs cuDNN: rel L2 {drift:.2e}")
    assert drift < 4e-3  # exact attention: only the kernels' bf16 rounding differs


def _eager_and_compiled(setup, backend: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The expert's output with `backend` for self-attention (cuDNN cross), eager then compiled, and the frames compiled."""
    expert, inputs, _ = setup
    torch._dynamo.reset()
    runner = expert.runner
    expert.set_attention(backend, "cudnn")
    try:
        with torch.inference_mode():
            eager = expert(*inputs)
            expert.runner = ResidentBlocks(compiled_block_call())
            before = compile_counts()
            compiled = expert(*inputs)
            frames = compile_counts()["frames"] - before["frames"]
    finally:
        expert.runner = runner
        expert.set_attention("cudnn")
    return eager, compiled, frames


@needs_flash_attn4
def test_compiled_blocks_with_flash_attention_4_match_its_eager_blocks(setup):
    eager, compiled, frames = _eager_and_compiled(setup, "flash_attn4")
    drift = _rel_l2(compiled, eager)
    print(f"compiled vs eager, FlashAttention-4: rel L2 {drift:.2e}")
    assert frames == 1 and drift < 4e-3  # FA4 is one opaque op in the compiled block


@needs_backend("sage", "sageattention is not installed")
def test_sage_attention_drift_is_reported_and_bounded(setup):
    out, drift = _with_self_attention(setup, "sage")
    print(f"SageAttention (self) vs cuDNN: rel L2 {drift:.2e}")
    assert torch.isfinite(out).all() and drift < 0.1


def _fp8_and_exact_attention(backend: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """fp8 backend `backend` and cuDNN bf16 on the same seeded q, k, v of `shape` ([B, L, H, D])."""
    gen = torch.Generator("cuda").manual_seed(0)
    q, k, v = (torch.randn(*shape, device="cuda", generator=gen, dtype=torch.bfloat16) for _ in range(3))
    with torch.inference_mode():
        return resolve_attention(backend, "cuda")(q, k, v), resolve_attention("cudnn", "cuda")(q, k, v)


@needs_cudnn_fp8
@pytest.mark.parametrize("shape", [(1, 4680, 40, 128), (2, 2048, 40, 128)])  # [B, L, H, D]
def test_cudnn_fp8_attention_drift_against_cudnn_bf16_is_reported_and_bounded(shape):
    fp8, exact = _fp8_and_exact_attention("cudnn_fp8", shape)
    drift = _rel_l2(fp8, exact)
    cosine = torch.nn.functional.cosine_similarity(fp8.float().flatten(), exact.float().flatten(), dim=0).item()
    print(f"cuDNN fp8 vs bf16 attention {list(shape)}: rel L2 {drift:.3e}, cosine {cosine:.5f}, "
          f"norm ratio {(fp8.float().norm() / exact.float().norm()).item():.4f}")
    assert fp8.shape == exact.shape and fp8.dtype == torch.bfloat16 and torch.isfinite(fp8).all()
    # e4m3 keeps 3 mantissa bits: q, k, P, v and O each rounded (~2.7% RMS) add up in quadrature to ~0.06,
    # as the CPU emulation in tests/test_fp8_attention.py measures; bf16 attention differs by ~0.003, so
    # a drift under 0.01 would mean the fp8 path did not run.
    assert 0.01 < drift < 0.1


@needs_cudnn_fp8
def test_cudnn_fp8_self_attention_drift_in_the_blocks_is_reported_and_bounded(setup):
    out, drift = _with_self_attention(setup, "cudnn_fp8")
    print(f"cuDNN fp8 attention (self) vs cuDNN bf16, 2 blocks: rel L2 {drift:.2e}")
    assert torch.isfinite(out).all() and drift < 0.1


needs_fa3_fp8 = needs_backend("fa3_fp8", "the FlashAttention-3 fp8 library is not built or not on a Hopper GPU "
                                         "(bash bench/fa3_build.sh, WANBENCH_FA3_LIB)")


@needs_fa3_fp8
@pytest.mark.parametrize("shape", [(1, 4680, 40, 128), (2, 2048, 40, 128), (1, 1000, 3, 128)])  # [B, L, H, D]
def test_fa3_fp8_attention_drift_against_cudnn_bf16_is_reported_and_bounded(shape):
    fp8, exact = _fp8_and_exact_attention("fa3_fp8", shape)
    drift = _rel_l2(fp8, exact)
    print(f"FlashAttention-3 fp8 vs cuDNN bf16 attention {list(shape)}: rel L2 {drift:.3e}")
    assert fp8.shape == exact.shape and fp8.dtype == torch.bfloat16 and torch.isfinite(fp8).all()
    # four e4m3 roundings (q, k, P, v; O is written in bf16): ~0.05, as tests/test_fa3_attention.py emulates;
    # under 0.01 the fp8 kernel did not run, over 0.08 a scale or stride is wrong (1000 tokens: a partial tile)
    assert 0.01 < drift < 0.08


@needs_fa3_fp8
def test_compiled_blocks_with_fa3_fp8_match_its_eager_blocks(setup):
    eager, compiled, frames = _eager_and_compiled(setup, "fa3_fp8")
    eager_cudnn = setup[2]
    drift, fp8_drift = _rel_l2(compiled, eager), _rel_l2(eager, eager_cudnn)
    print(f"compiled vs eager, fa3_fp8: rel L2 {drift:.2e} (fa3_fp8 vs cuDNN, 2 blocks: {fp8_drift:.2e})")
    # The quantization is fused into the compiled block. Its power-of-two scales are exact, but the fused
    # RoPE rounds q and k to bf16 a little differently, and e4m3's 2^-4 steps turn some of those 2^-9
    # differences into one-step flips: a few 1e-3 up to ~1e-2, still far below fa3_fp8's own drift.
    assert frames == 1 and drift < 0.03 and fp8_drift < 0.1


@pytest.mark.skipif(not torch.cuda.is_available() or fp8_matmul_unavailable_reason("cuda") is not None,
                    reason="no fp8 tensor cores")
def test_fp8_compute_drift_is_reported_and_bounded(setup):
    _, inputs, eager = setup
    fp8 = load_expert("synthetic", TWO_BLOCKS, "high", MemoryPlan(weight_dtype="fp8"), "cuda", "cudnn",
                      compute=ComputePlan(matmul="fp8")).model
    storage = load_expert("synthetic", TWO_BLOCKS, "high", MemoryPlan(weight_dtype="fp8"), "cuda", "cudnn").model
    with torch.inference_mode():
        out, stored = fp8(*inputs), storage(*inputs)
    compute_drift, storage_drift = _rel_l2(out, eager), _rel_l2(stored, eager)
    print(f"fp8 compute vs bf16: rel L2 {compute_drift:.2e} (fp8 storage alone: {storage_drift:.2e})")
    assert torch.isfinite(out).all() and storage_drift < compute_drift < 0.1


def test_pinned_text_encoder_gives_the_resident_embeddings():
    request = tiny_request()
    resident = WanI2V.load("synthetic", TINY, "cuda", MemoryPlan(weight_dtype="bf16"))
    offloaded = WanI2V.load("synthetic", TINY, "cuda", MemoryPlan(weight_dtype="bf16", text_encoder="offload_after"))
    assert offloaded.text_weights.pinned and offloaded.text_weights.device is None  # parked after load
    a = resident._encode_text(request, NullObserver())
    b = offloaded._encode_text(request, NullObserver())
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert offloaded.text_weights.device is None  # parked again after encoding
