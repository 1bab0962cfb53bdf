"""Fill a module built on the `meta` device with checkpoint tensors, checked name by name and shape by shape.

`load_weights` first checks every shard's names and shapes against the module (headers only, so a
wrong preset or a broken download fails in a second with one message listing every problem), then
copies the tensors in, one at a time: read, cast, move to the device, assign; the source tensor is
dropped before the next is read, and a shard is closed before the next is opened. So peak host
memory is about one tensor, never a whole state dict, even for a 57 GB fp32 expert.

Tied weights (the same Parameter under two names, e.g. umT5's `shared.weight` and
`encoder.embed_tokens.weight`) are one slot: a checkpoint may hold either name, and the loaded value
is assigned to every name so the tie survives.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from wan_runtime.errors import WeightsError
from wan_runtime.weights.reader import Shard

Rename = Callable[[str], str]
_SHOW = 5  # names shown per problem before "... and N more"


@dataclass(frozen=True)
class Slots:
    """Every checkpoint-backed tensor of a module: canonical name -> all names it is reachable by."""

    aliases: dict[str, tuple[str, ...]]  # canonical name -> (canonical, *tied aliases)
    canonical: dict[str, str]  # any name -> canonical name
    shapes: dict[str, tuple[int, ...]]  # canonical name -> shape


def module_slots(module: nn.Module) -> Slots:
    """Parameters and persistent buffers of `module`, tied names grouped under the first one."""
    tie = getattr(module, "tie_weights", None)
    if callable(tie):
        tie()  # on a fresh meta module this makes tied names share one tensor, as after loading
    by_id: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    canonical: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    named: list[tuple[str, torch.Tensor]] = list(module.named_parameters(remove_duplicate=False))
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for leaf, buf in sub._buffers.items():
            if buf is not None and leaf not in sub._non_persistent_buffers_set:
                named.append((f"{prefix}.{leaf}" if prefix else leaf, buf))
    for name, tensor in named:
        first = by_id.setdefault(id(tensor), name)
        canonical[name] = first
        if first == name:
            aliases[name] = [name]
            shapes[name] = tuple(tensor.shape)
        elif name not in aliases[first]:
            aliases[first].append(name)
    return Slots({k: tuple(v) for k, v in aliases.items()}, canonical, shapes)


def target_dtype(module: nn.Module, name: str, source: torch.dtype, dtype: torch.dtype) -> torch.dtype:
    """The dtype tensor `name` is stored in: `dtype` for floating tensors, except where the module asks to keep fp32.

    Integer/bool tensors keep their dtype. Hugging Face models list modules that overflow in fp16
    (umT5's feed-forward output `wo`) in `_keep_in_fp32_modules`; as transformers does, those stay
    fp32 when fp16 is requested.
    """
    if not source.is_floating_point:
        return source
    if dtype == torch.float16:
        keep = getattr(module, "_keep_in_fp32_modules", None) or ()
        if any(part in keep for part in name.split(".")):
            return torch.float32
    return dtype


def assign_tensor(module: nn.Module, names: Iterable[str], value: torch.Tensor) -> None:
    """Put `value` under every name in `names` (a tie group), as a Parameter where one was."""
    param: nn.Parameter | None = None
    for name in names:
        owner_path, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        if leaf in owner._parameters:
            old = owner._parameters[leaf]
            if param is None:
                param = nn.Parameter(value, requires_grad=bool(old is not None and old.requires_grad))
            owner._parameters[leaf] = param
        elif leaf in owner._buffers:
            owner._buffers[leaf] = value
        else:
            raise WeightsError(f"internal error: {name!r} is neither a parameter nor a buffer of the model")


@dataclass
class _Problems:
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    map_reason: str | None = None  # why the name map rejected the first name it rejected

    def message(self, component: str, where: str) -> str | None:
        lines = []
        for title, items in (
            ("tensors in the checkpoint that this model has no place for", self.unexpected),
            ("tensors whose shape differs from the model's", self.wrong_shape),
            ("tensors the model needs that no checkpoint file holds", self.missing),
        ):
            if items:
                more = f"; ... and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
                lines.append(f"  {len(items)} {title}: " + "; ".join(items[:_SHOW]) + more)
        if not lines:
            return None
        if self.map_reason:
            lines.append(f"  the name map says: {self.map_reason}")
        return (
            f"the {component} checkpoint{where} does not match the model:\n" + "\n".join(lines) + "\n"
            "Check that the model config (preset) matches these weights and that the right folder "
            "or file is given for this part; if only some tensors are affected, the download may be "
            "incomplete or corrupt."
        )


def _fmt(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _rename(rename: Rename, name: str) -> tuple[str | None, str | None]:
    """(module name, None), or (None, reason) when the name map rejects `name` (it is then unexpected)."""
    try:
        return rename(name), None
    except (KeyError, ValueError, WeightsError) as exc:
        return None, str(exc)


def check_checkpoint(module: nn.Module, shards: Sequence[Shard], rename: Rename, component: str) -> None:
    """Check names and shapes of every shard against `module` (no tensor data read); raise one WeightsError listing all problems."""
    slots = module_slots(module)
    problems = _Problems()
    covered: set[str] = set()
    # Items name the file only; the folder they share is said once, in the first line.
    try:
        folder = os.path.commonpath([str(Path(s.label).parent) for s in shards]) if shards else ""
    except ValueError:  # absolute and relative labels mixed: no common folder to name
        folder = ""
    where = f" in {folder}" if folder not in ("", ".") else ""
    for shard in shards:
        file = Path(shard.label).name
        for ckpt_name, shape in shard.shapes().items():
            name, reason = _rename(rename, ckpt_name)
            if reason and problems.map_reason is None:
                problems.map_reason = reason
            shown = repr(ckpt_name) if name in (None, ckpt_name) else f"{ckpt_name!r} (model name {name!r})"
            if name is None or name not in slots.canonical:
                problems.unexpected.append(f"{shown} in {file}")
                continue
            key = slots.canonical[name]
            expected = slots.shapes[key]
            if tuple(shape) != expected:
                problems.wrong_shape.append(
                    f"{shown} in {file}: found {_fmt(shape)}, expected {_fmt(expected)}"
                )
            covered.add(key)
    problems.missing = [repr(key) for key in slots.aliases if key not in covered]
    message = problems.message(component, where)
    if message:
        raise WeightsError(message)


def load_weights(
    module: nn.Module,
    shards: Sequence[Shard],
    rename: Rename,
    dtype: torch.dtype,
    device: torch.device | str,
    component: str,
) -> nn.Module:
    """Check, then load every tensor of `shards` into `module` (renamed, cast to `dtype`, on `device`); returns `module`."""
    device = torch.device(device)
    check_checkpoint(module, shards, rename, component)
    slots = module_slots(module)
    for shard in shards:
        for ckpt_name, tensor in shard.tensors():
            name = rename(ckpt_name)
            key = slots.canonical[name]
            if tuple(tensor.shape) != slots.shapes[key]:  # the header promised another shape
                raise WeightsError(
                    f"the {component} checkpoint is corrupt: {ckpt_name!r} in {shard.label} holds "
                    f"{_fmt(tensor.shape)} but its header says {_fmt(slots.shapes[key])}; download it again"
                )
            value = _to_target(tensor, device, target_dtype(module, key, tensor.dtype, dtype))
            del tensor
            assign_tensor(module, slots.aliases[key], value)
            del value
    tie = getattr(module, "tie_weights", None)
    if callable(tie):
        tie()
    ensure_no_meta(module, component)
    return module


def _to_target(tensor: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A copy of `tensor` on `device` in `dtype`, never sharing memory with the reader's tensor."""
    if device.type == "cpu":
        # copy=True: the module must not keep a memory-mapped checkpoint file alive.
        return tensor.to(dtype=dtype, copy=True)
    # Move first, then cast: the GPU casts fast, and only this one tensor is briefly in its source dtype.
    return tensor.to(device=device).to(dtype=dtype)


def ensure_no_meta(module: nn.Module, component: str) -> None:
    """Raise if any parameter or buffer of `module` is still on the meta device (never given a value)."""
    left = [n for n, t in module.named_parameters(remove_duplicate=False) if t.is_meta]
    left += [n for n, t in module.named_buffers(remove_duplicate=False) if t.is_meta]
    if left:
        more = f" ... and {len(left) - _SHOW} more" if len(left) > _SHOW else ""
        raise WeightsError(
            f"the {component} has {len(left)} tensors without a value after loading: "
            f"{', '.join(left[:_SHOW])}{more}. A module must compute derived tables lazily or register "
            f"them as checkpoint tensors"
        )


__all__ = [
    "Rename", "Slots", "module_slots", "target_dtype", "assign_tensor", "check_checkpoint",
    "load_weights", "ensure_no_meta",
]
