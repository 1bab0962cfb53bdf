"""Synthetic weights: seeded random values at the real shapes, made directly in the target dtype on the target device.

Latency and memory do not depend on weight values, so the full-size model can be benchmarked on any
machine without downloading 100 GB; quality metrics on synthetic weights measure numerical drift only.

How a tensor is made: `torch.empty(shape, dtype, device)` filled in place by a generator on that
device, so a 14B expert in bf16 never exists in fp32 or on the CPU. Each tensor's generator is seeded
from (seed, tensor name) with a stable hash (crc32), so values do not depend on the order tensors
are made in; they do depend on the device type (CPU and CUDA generators differ) and the dtype.

The distribution keeps activations of order 1 through every layer (measured, see
tests/test_weights_synthetic.py):
- linear and conv weights ~ N(0, 1/fan_in): a layer keeps the RMS of its input. Output projections
  are not scaled down by depth. Measured on the full A14B expert (bf16, H100, 768 video tokens,
  synthetic umT5 context): the residual-stream std grows from 1.01 after block 1 to 1.47-1.51 after
  block 40 for t in {10, 500, 900, 999}, and the output std is 1.05-1.15 (max |x| ~5). So the blocks
  contribute visibly, which keeps drift measurements on synthetic weights meaningful; a
  1/sqrt(2*depth) scaling (tried on the tiny DiT) held the stream at 1.01, i.e. the blocks did
  next to nothing;
- biases 0, norm weights (`weight` of a norm layer, VAE `gamma`) 1;
- AdaLN `modulation` ~ N(0, 1/dim), the official initialisation: the timestep projection dominates;
- embedding tables (umT5 tokens and relative-position buckets) ~ N(0, 1).
A tensor no rule covers raises a WeightsError naming it, rather than receiving a guess.

Each network gets its own seed (constants below), so a mix-up of the two experts is visible.
"""

from __future__ import annotations

import math
import zlib

import torch
from torch import nn

from wan_runtime.errors import WeightsError
from wan_runtime.weights.loader import assign_tensor, ensure_no_meta, module_slots, target_dtype

SEED_HIGH_NOISE = 220_001
SEED_LOW_NOISE = 220_002
SEED_VAE = 210_003
SEED_TEXT_ENCODER = 50_004


def tensor_seed(seed: int, name: str) -> int:
    """The generator seed of tensor `name`: stable across runs, processes and creation order.

    32 bits on purpose: the CPU generator (mt19937) keeps only the low 32 bits of its seed, so
    `seed` must be mixed into those bits rather than placed above them.
    """
    return zlib.crc32(f"{seed}:{name}".encode("utf-8"))


def _is_norm(owner: nn.Module) -> bool:
    return isinstance(owner, (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)) or "norm" in type(owner).__name__.lower()


def _rule(module: nn.Module, name: str, shape: tuple[int, ...]) -> tuple[str, float]:
    """(kind, std) for tensor `name`: kind is 'zeros', 'ones' or 'normal'."""
    owner_path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    if leaf == "bias":
        return "zeros", 0.0
    if leaf == "gamma" or (leaf == "weight" and _is_norm(owner)):
        return "ones", 0.0
    if leaf in ("modulation", "scale_shift_table"):  # AdaLN offsets [1, k, dim]
        return "normal", 1.0 / math.sqrt(shape[-1])
    if isinstance(owner, nn.Embedding):
        return "normal", 1.0
    if leaf == "weight" and isinstance(owner, (nn.Linear, nn.modules.conv._ConvNd)):
        fan_in = math.prod(shape[1:])  # in_features, or in_channels/groups * kernel volume
        return "normal", 1.0 / math.sqrt(fan_in)
    raise WeightsError(
        f"no synthetic-weight rule for {name!r} (shape {list(shape)}, in a {type(owner).__name__}); "
        f"add one to wan_runtime/weights/synthetic.py"
    )


def materialize_synthetic(
    module: nn.Module, seed: int, dtype: torch.dtype, device: torch.device | str
) -> nn.Module:
    """Give every meta parameter/buffer of `module` a seeded random value made on `device` in `dtype`; returns `module`."""
    device = torch.device(device)
    slots = module_slots(module)
    for key, names in slots.aliases.items():
        current = module.get_parameter(key) if _is_param(module, key) else module.get_buffer(key)
        if not current.is_meta:
            continue  # already has a value (e.g. a module built partly off meta)
        shape = slots.shapes[key]
        # Integer buffers (counters, index tables) start at zero; floats follow the rules above.
        kind, std = _rule(module, key, shape) if current.dtype.is_floating_point else ("zeros", 0.0)
        out_dtype = target_dtype(module, key, current.dtype, dtype)
        if kind == "zeros":
            value = torch.zeros(shape, dtype=out_dtype, device=device)
        elif kind == "ones":
            value = torch.ones(shape, dtype=out_dtype, device=device)
        else:
            generator = torch.Generator(device=device)
            generator.manual_seed(tensor_seed(seed, key))
            value = torch.empty(shape, dtype=out_dtype, device=device).normal_(0.0, std, generator=generator)
        assign_tensor(module, names, value)
    tie = getattr(module, "tie_weights", None)
    if callable(tie):
        tie()
    ensure_no_meta(module, f"synthetic {type(module).__name__}")
    return module


def _is_param(module: nn.Module, name: str) -> bool:
    owner_path, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_path) if owner_path else module
    return leaf in owner._parameters


__all__ = [
    "materialize_synthetic", "tensor_seed", "SEED_HIGH_NOISE", "SEED_LOW_NOISE", "SEED_VAE", "SEED_TEXT_ENCODER",
]
