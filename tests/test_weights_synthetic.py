"""Synthetic weights: seeded, made in the target dtype on the target device, order-1 activations at depth."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from wan_runtime.config import TINY
from wan_runtime.errors import WeightsError
from wan_runtime.modules.dit import WanDiT
from wan_runtime.modules.text_encoder import StandInTokenizer
from wan_runtime.weights import load_dit, load_text_encoder, load_vae
from wan_runtime.weights.synthetic import (
    SEED_HIGH_NOISE, SEED_LOW_NOISE, SEED_TEXT_ENCODER, SEED_VAE, materialize_synthetic, tensor_seed,
)

# Residual-stream std after each of 40 blocks of the tiny DiT (measured 1.0 after the first block,
# 1.6-1.9 after the last, for t in {10, 500, 999}; the full A14B expert on a GPU: 1.01 -> 1.47-1.51);
# the band says "order 1, no blow-up".
RESIDUAL_STD_BAND = (0.8, 3.0)
OUTPUT_STD_BAND = (0.3, 3.0)  # measured 1.1-1.2 (A14B: 1.05-1.15)


class OpLog(TorchDispatchMode):
    """Records dtype and device of every tensor an aten op returns."""

    def __init__(self):
        super().__init__()
        self.outputs: list[tuple[str, torch.dtype, torch.device]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            self.outputs.append((str(func), out.dtype, out.device))
        return out


def meta_dit(num_layers: int = TINY.dit.num_layers) -> WanDiT:
    with torch.device("meta"):
        return WanDiT(dataclasses.replace(TINY.dit, num_layers=num_layers))


def dit_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 16, 3, 8, 8, generator=gen)
    y = torch.randn(1, 20, 3, 8, 8, generator=gen)
    context = torch.randn(1, 7, TINY.dit.text_dim, generator=gen)
    return x, y, context


def test_tiny_dit_gives_finite_order_one_output():
    model = materialize_synthetic(meta_dit(), SEED_HIGH_NOISE, torch.float32, "cpu")
    x, y, context = dit_inputs()
    with torch.no_grad():
        out = model(x, torch.tensor([900.0]), context, y)
    assert torch.isfinite(out).all()
    assert OUTPUT_STD_BAND[0] < out.std().item() < OUTPUT_STD_BAND[1]


@pytest.mark.parametrize("t", [999.0, 10.0])
def test_residual_stream_stays_order_one_through_40_blocks(t):
    model = materialize_synthetic(meta_dit(num_layers=40), SEED_HIGH_NOISE, torch.float32, "cpu")
    stds: list[float] = []
    for block in model.blocks:
        block.register_forward_hook(lambda _m, _i, out: stds.append(out.std().item()))
    x, y, context = dit_inputs()
    with torch.no_grad():
        out = model(x, torch.tensor([t]), context, y)
    assert len(stds) == 40
    low, high = RESIDUAL_STD_BAND
    assert all(low < s < high for s in stds), [round(s, 2) for s in stds]
    assert stds[-1] > stds[0] * 1.2  # the blocks do contribute: the stream is not left unchanged
    assert OUTPUT_STD_BAND[0] < out.std().item() < OUTPUT_STD_BAND[1]


def test_distribution_rules():
    model = materialize_synthetic(meta_dit(), SEED_HIGH_NOISE, torch.float32, "cpu")
    block = model.blocks[0]
    assert torch.count_nonzero(block.self_attn.q.bias) == 0
    assert torch.equal(block.norm3.weight, torch.ones_like(block.norm3.weight))
    assert torch.equal(block.self_attn.norm_q.weight, torch.ones_like(block.self_attn.norm_q.weight))
    ffn_in = block.ffn[0].weight  # [ffn_dim, dim]: N(0, 1/dim)
    assert ffn_in.std().item() == pytest.approx(1 / math.sqrt(TINY.dit.dim), rel=0.05)
    patch = model.patch_embedding.weight  # fan_in = 36 * 1 * 2 * 2
    assert patch.std().item() == pytest.approx(1 / math.sqrt(36 * 4), rel=0.1)
    assert block.modulation.std().item() == pytest.approx(1 / math.sqrt(TINY.dit.dim), rel=0.15)


def test_same_seed_gives_the_same_values_and_experts_differ():
    first = load_dit("synthetic", TINY, expert="high", dtype="fp32", device="cpu")
    again = load_dit("synthetic", TINY, expert="high", dtype="fp32", device="cpu")
    other = load_dit("synthetic", TINY, expert="low", dtype="fp32", device="cpu")
    for (name, a), b, c in zip(first.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b), name
        random = a.std().item() > 0 and not torch.all(a == 1)
        assert torch.equal(a, c) != random, name  # random tensors differ between experts, constants agree


def test_every_network_has_its_own_seed():
    assert len({SEED_HIGH_NOISE, SEED_LOW_NOISE, SEED_VAE, SEED_TEXT_ENCODER}) == 4


class Pair(nn.Module):
    """Two linear layers registered in a chosen order, so the same names come in a different order."""

    def __init__(self, order: tuple[str, str]):
        super().__init__()
        for name in order:
            self.add_module(name, nn.Linear(16, 16))


def test_values_do_not_depend_on_materialization_order():
    with torch.device("meta"):
        ab, ba = Pair(("a", "b")), Pair(("b", "a"))
    assert [n for n, _ in ab.named_parameters()] != [n for n, _ in ba.named_parameters()]
    materialize_synthetic(ab, 7, torch.float32, "cpu")
    materialize_synthetic(ba, 7, torch.float32, "cpu")
    assert torch.equal(ab.a.weight, ba.a.weight) and torch.equal(ab.b.weight, ba.b.weight)
    assert not torch.equal(ab.a.weight, ab.b.weight)


def test_tensor_seed_is_a_stable_32_bit_function_of_seed_and_name():
    # A fixed number: a change in the hashing would silently change every synthetic benchmark input.
    assert tensor_seed(220_001, "blocks.0.ffn.0.weight") == 1275699544
    # The CPU generator keeps only 32 bits of a seed: a seed that differs above them is no seed at all.
    assert all(tensor_seed(s, n) < 1 << 32 for s in (0, 1, 2**40) for n in ("a", "b"))
    assert tensor_seed(1, "x") != tensor_seed(2, "x") != tensor_seed(2, "y")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_values_are_made_directly_in_the_target_dtype(dtype):
    model = meta_dit()
    with OpLog() as log:
        materialize_synthetic(model, SEED_HIGH_NOISE, dtype, "cpu")
    assert log.outputs, "no tensor was created"
    assert {d for _, d, _ in log.outputs} == {dtype}
    assert {op.split(".")[1] for op, _, _ in log.outputs} <= {"empty", "normal_", "zeros", "ones"}


def test_every_tensor_of_every_network_has_the_requested_dtype_and_device():
    dit = load_dit("synthetic", TINY, expert="high", dtype="bf16", device="cpu")
    vae = load_vae("synthetic", TINY, dtype="bf16", device="cpu")
    text = load_text_encoder("synthetic", TINY, dtype="bf16", device="cpu")
    for net in (dit, vae, text.model):
        tensors = list(net.parameters()) + list(net.buffers())
        assert {(t.dtype, t.device.type) for t in tensors} == {(torch.bfloat16, "cpu")}


def test_synthetic_text_encoder_has_a_stand_in_tokenizer_and_a_tied_embedding():
    text = load_text_encoder("synthetic", TINY, dtype="fp32", device="cpu")
    assert isinstance(text.tokenizer, StandInTokenizer)
    assert text.model.encoder.embed_tokens.weight is text.model.shared.weight
    embeddings = text.encode(["a red fox jumps"], device="cpu")
    assert torch.isfinite(embeddings[0]).all() and 0.3 < embeddings[0].std().item() < 3.0


def test_synthetic_vae_round_trip_is_finite_and_order_one():
    vae = load_vae("synthetic", TINY, dtype="fp32", device="cpu")
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latent = vae.encode(video)
    decoded = vae.decode(latent, clamp=False)
    for tensor in (latent, decoded):
        assert torch.isfinite(tensor).all() and 0.05 < tensor.std().item() < 5.0


def test_a_tensor_without_a_rule_is_refused_by_name():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.temperature = nn.Parameter(torch.ones(3))

    with torch.device("meta"):
        odd = Odd()
    with pytest.raises(WeightsError, match="no synthetic-weight rule for 'temperature'"):
        materialize_synthetic(odd, 0, torch.float32, "cpu")


@pytest.mark.gpu
def test_values_are_made_on_the_gpu_never_on_the_cpu():
    model = meta_dit()
    with OpLog() as log:
        materialize_synthetic(model, SEED_HIGH_NOISE, torch.bfloat16, "cuda")
    assert {(d, dev.type) for _, d, dev in log.outputs} == {(torch.bfloat16, "cuda")}
