"""Which checkpoint layout a folder holds (official Wan2.2 or Diffusers) and where each part lives.

Official (`Wan-AI/Wan2.2-I2V-A14B`)          Diffusers (`Wan-AI/Wan2.2-I2V-A14B-Diffusers`)
  high_noise_model/   sharded safetensors       transformer/     (high-noise expert)
  low_noise_model/    sharded safetensors       transformer_2/   (low-noise expert)
  Wan2.1_VAE.pth                                vae/
  models_t5_umt5-xxl-enc-bf16.pth               text_encoder/
  google/umt5-xxl/    tokenizer                 tokenizer/
                                                model_index.json (marks the layout)

`detect_layout` only decides the kind and records the expected paths; a part is checked when it is
needed (`CheckpointLayout.require`), so a download holding only the low-noise expert can still
serve a single-expert run, and the error for a missing part names that part and its path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wan_runtime.errors import WeightsError

LayoutKind = Literal["official", "diffusers"]
Part = Literal["high_noise", "low_noise", "vae", "text_encoder", "tokenizer"]

# Relative path of each part, and whether it is a folder (True) or a single file (False).
OFFICIAL_PARTS: dict[str, tuple[str, bool]] = {
    "high_noise": ("high_noise_model", True),
    "low_noise": ("low_noise_model", True),
    "vae": ("Wan2.1_VAE.pth", False),
    "text_encoder": ("models_t5_umt5-xxl-enc-bf16.pth", False),
    "tokenizer": ("google/umt5-xxl", True),
}
DIFFUSERS_PARTS: dict[str, tuple[str, bool]] = {
    "high_noise": ("transformer", True),
    "low_noise": ("transformer_2", True),
    "vae": ("vae", True),
    "text_encoder": ("text_encoder", True),
    "tokenizer": ("tokenizer", True),
}
DIFFUSERS_MARKER = "model_index.json"

PART_TITLES: dict[str, str] = {
    "high_noise": "high-noise DiT expert",
    "low_noise": "low-noise DiT expert",
    "vae": "VAE",
    "text_encoder": "umT5 text encoder",
    "tokenizer": "umT5 tokenizer",
}


@dataclass(frozen=True)
class CheckpointLayout:
    """Where the parts of one checkpoint folder are expected to be (paths may not exist yet)."""

    kind: LayoutKind
    root: Path
    high_noise: Path  # folder
    low_noise: Path  # folder
    vae: Path  # official: file, diffusers: folder
    text_encoder: Path  # official: file, diffusers: folder
    tokenizer: Path  # folder

    def require(self, part: Part) -> Path:
        """Return the path of `part`, or raise a WeightsError naming the part and where it should be."""
        parts = OFFICIAL_PARTS if self.kind == "official" else DIFFUSERS_PARTS
        if part not in parts:
            raise WeightsError(f"unknown checkpoint part {part!r}; known parts: {sorted(parts)}")
        path: Path = getattr(self, part)
        is_dir = parts[part][1]
        if is_dir and path.is_dir():
            return path
        if not is_dir and path.is_file():
            return path
        what = "folder" if is_dir else "file"
        found = "" if not path.exists() else f" ({path} exists but is not a {what})"
        raise WeightsError(
            f"the {PART_TITLES[part]} is missing from the {self.kind} checkpoint in {self.root}: "
            f"expected the {what} {path}{found}. Download it (it is part of the "
            f"{'Wan-AI/Wan2.2-I2V-A14B' if self.kind == 'official' else 'Wan-AI/Wan2.2-I2V-A14B-Diffusers'} "
            f"repository) or point --ckpt_dir at the complete folder."
        )


def _layout(kind: LayoutKind, root: Path) -> CheckpointLayout:
    parts = OFFICIAL_PARTS if kind == "official" else DIFFUSERS_PARTS
    return CheckpointLayout(kind=kind, root=root, **{p: root / rel for p, (rel, _) in parts.items()})


def _describe_needs() -> str:
    official = ", ".join(rel + ("/" if d else "") for rel, d in OFFICIAL_PARTS.values())
    diffusers = ", ".join([DIFFUSERS_MARKER] + [rel + "/" for rel, _ in DIFFUSERS_PARTS.values()])
    return f"the official layout needs {official}; the Diffusers layout needs {diffusers}"


def detect_layout(path: str | Path) -> CheckpointLayout:
    """Decide whether `path` holds the official or the Diffusers layout and return its part paths."""
    root = Path(path).expanduser()
    if not root.exists():
        raise WeightsError(
            f"checkpoint folder {root} does not exist; pass the folder you downloaded the weights to, "
            f"or 'synthetic' for seeded random weights"
        )
    if not root.is_dir():
        raise WeightsError(
            f"{root} is a file, but weights are read from a checkpoint folder; pass its parent folder "
            f"({_describe_needs()})"
        )
    official_found = sorted(
        rel for rel, is_dir in OFFICIAL_PARTS.values()
        if rel != "google/umt5-xxl" and ((root / rel).is_dir() if is_dir else (root / rel).is_file())
    )
    is_diffusers = (root / DIFFUSERS_MARKER).is_file()
    if is_diffusers and official_found:
        raise WeightsError(
            f"{root} holds both layouts ({DIFFUSERS_MARKER} and {', '.join(official_found)}); "
            f"keep the official and the Diffusers download in separate folders"
        )
    if is_diffusers:
        return _layout("diffusers", root)
    if official_found:
        return _layout("official", root)
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    shown = ", ".join(entries[:12]) + (f", ... ({len(entries)} entries)" if len(entries) > 12 else "")
    raise WeightsError(
        f"{root} is neither an official nor a Diffusers Wan2.2 checkpoint: it holds "
        f"{shown or 'nothing'}; {_describe_needs()}"
    )


__all__ = ["CheckpointLayout", "LayoutKind", "Part", "detect_layout", "OFFICIAL_PARTS", "DIFFUSERS_PARTS"]
