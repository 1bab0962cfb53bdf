"""Read a checkpoint shard by shard, one tensor at a time, without running code from pickles.

A checkpoint is a list of `Shard`s. A shard tells its tensor names and shapes cheaply (safetensors:
the header; `.pth`: the pickle, with the tensor data memory-mapped, not read) and then yields its
tensors one at a time, so a loader never holds more than one tensor of the file it reads, and never
a whole state dict.

Accepted inputs (`open_checkpoint`):
- a folder with `*.safetensors.index.json` (sharded: the index names the shard files), or with one
  `*.safetensors` file (unsharded), as in `high_noise_model/`, `transformer/`, `vae/`, `text_encoder/`;
- a single `.safetensors` file;
- a `.pth`/`.pt`/`.bin` file (`Wan2.1_VAE.pth`, `models_t5_umt5-xxl-enc-bf16.pth`), read with
  `torch.load(weights_only=True, mmap=True)`: a pickle that references anything but tensors and
  plain containers is refused before any of it runs.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open

from wan_runtime.errors import WeightsError, first_line

PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
INDEX_SUFFIX = ".safetensors.index.json"

_REDOWNLOAD = "the file is truncated or corrupt; delete it and download it again"


class Shard(Protocol):
    """One file of a checkpoint: names and shapes first (cheap), then tensors one at a time."""

    label: str  # shown in error messages (usually the file path)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of every tensor in the shard, without reading tensor data."""
        ...

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield (name, tensor) pairs; each tensor is owned by the caller once yielded."""
        ...


class SafetensorsShard:
    """A `.safetensors` file; the header gives the shapes, tensors are read one by one."""

    def __init__(self, path: Path):
        self.path = path
        self.label = str(path)

    def _open(self):
        try:
            return safe_open(str(self.path), framework="pt", device="cpu")
        except FileNotFoundError:
            raise WeightsError(f"checkpoint file {self.path} does not exist") from None
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"cannot read {self.path} ({exc}): {_REDOWNLOAD}") from None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Read the header only."""
        with self._open() as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield each tensor as a fresh CPU tensor (safetensors copies it out of the file)."""
        with self._open() as f:
            for name in f.keys():
                try:
                    tensor = f.get_tensor(name)
                except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
                    raise WeightsError(f"cannot read tensor {name!r} of {self.path} ({exc}): {_REDOWNLOAD}") from None
                yield name, tensor
                del tensor  # drop our reference before reading the next tensor


class PickleShard:
    """A `torch.save` file read with `weights_only=True` (memory-mapped when the format allows)."""

    def __init__(self, path: Path):
        self.path = path
        self.label = str(path)

    def _load(self) -> dict[str, torch.Tensor]:
        if not self.path.is_file():
            raise WeightsError(f"checkpoint file {self.path} does not exist")
        try:
            try:
                obj = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap can only be used" not in str(exc):
                    raise
                # Legacy (pre-zip) torch.save format cannot be memory-mapped; still weights-only.
                obj = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            if "Weights only load failed" in str(exc):
                found = re.search(r"GLOBAL (\S+)", str(exc))
                what = f" (it references {found.group(1)})" if found else ""
                raise WeightsError(
                    f"refused to load {self.path}: the pickle holds code or objects other than tensors"
                    f"{what}, and loading it could run that code. Nothing from it was executed. Get the "
                    f"checkpoint from its official source, or convert it to safetensors where you trust it"
                ) from None
            raise WeightsError(f"cannot read {self.path} ({exc}): {_REDOWNLOAD}") from None
        except (RuntimeError, EOFError, OSError, ValueError) as exc:
            raise WeightsError(f"cannot read {self.path} ({first_line(exc) or type(exc).__name__}): {_REDOWNLOAD}") from None
        if not isinstance(obj, Mapping):
            raise WeightsError(
                f"{self.path} holds a {type(obj).__name__}, not a state dict (name -> tensor); "
                f"is this the right file?"
            )
        bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            raise WeightsError(
                f"{self.path} is not a flat state dict: entries {bad[:5]} are not tensors "
                f"(a nested or training checkpoint?); export the model's state_dict() instead"
            )
        return dict(obj)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Unpickle (tensor data stays memory-mapped) and report shapes."""
        return {name: tuple(t.shape) for name, t in self._load().items()}

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield each tensor; its data is paged in from the file only when the caller copies it."""
        state = self._load()
        for name in list(state):
            yield name, state.pop(name)  # pop: a yielded tensor is not kept alive by the dict


class TensorShard:
    """Tensors already in memory (tests, converted weights); `meta` tensors allowed for checks."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], label: str = "<in-memory shard>"):
        self._tensors = dict(tensors)
        self.label = label

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the held tensors."""
        return {name: tuple(t.shape) for name, t in self._tensors.items()}

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Yield the held tensors."""
        yield from self._tensors.items()


def _shard_for_file(path: Path) -> Shard:
    if path.name.endswith(".safetensors"):
        return SafetensorsShard(path)
    if path.suffix in PICKLE_SUFFIXES:
        return PickleShard(path)
    raise WeightsError(
        f"{path} is neither a .safetensors file nor a torch.save file ({', '.join(PICKLE_SUFFIXES)})"
    )


def _shards_from_index(index: Path) -> list[Shard]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(
            f"cannot read the shard index {index} ({exc}): it must be JSON with a 'weight_map'; "
            f"{_REDOWNLOAD}"
        ) from None
    files = list(dict.fromkeys(weight_map.values()))  # unique, in index order
    missing = [f for f in files if not (index.parent / f).is_file()]
    if missing:
        raise WeightsError(
            f"shard {missing[0]} listed in {index} is missing from {index.parent}"
            + (f" (and {len(missing) - 1} more: {', '.join(missing[1:4])})" if len(missing) > 1 else "")
            + "; the download is incomplete, fetch the missing shard files"
        )
    return [_shard_for_file(index.parent / f) for f in files]


def _prefer_plain(paths: list[Path], suffix: str) -> list[Path]:
    """Files without a variant tag (`model.safetensors` over `model.fp16.safetensors`), if any."""
    plain = [p for p in paths if "." not in p.name[: -len(suffix)]]
    return plain or paths


def open_checkpoint(path: str | Path) -> list[Shard]:
    """The shards of a checkpoint file or folder, checked to exist; no tensor data is read yet."""
    path = Path(path)
    if path.is_file():
        return [_shard_for_file(path)]
    if not path.is_dir():
        raise WeightsError(f"checkpoint {path} does not exist")
    # Diffusers may also ship variants (`name.fp16.safetensors`); prefer the plain files.
    indexes = _prefer_plain(sorted(path.glob("*" + INDEX_SUFFIX)), INDEX_SUFFIX)
    if indexes:
        return _shards_from_index(indexes[0])
    singles = _prefer_plain(sorted(path.glob("*.safetensors")), ".safetensors")
    if len(singles) == 1:
        return [SafetensorsShard(singles[0])]
    found = ", ".join(sorted(p.name for p in path.iterdir())[:12]) or "nothing"
    if singles:
        raise WeightsError(
            f"{path} holds {len(singles)} .safetensors files but no *{INDEX_SUFFIX} saying which belong "
            f"together ({found}); restore the index file from the download"
        )
    raise WeightsError(
        f"{path} holds no weights: expected *{INDEX_SUFFIX} with its shards or one .safetensors file, "
        f"found {found}"
    )


__all__ = ["Shard", "SafetensorsShard", "PickleShard", "TensorShard", "open_checkpoint"]
