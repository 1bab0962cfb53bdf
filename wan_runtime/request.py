"""GenerationRequest: everything that defines one video, as plain values."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

import numpy as np
from PIL import Image

from wan_runtime.errors import ConfigError

Solver = Literal["unipc", "dpm++"]
Mode = Literal["both", "single_expert", "refine"]
ImageInput = Union[str, Path, Image.Image, np.ndarray]


@dataclass(frozen=True)
class RefineOptions:
    """Cross-resolution refine mode: a low-resolution pass, upscale, re-noise, finish with the low-noise expert.

    scale_factor:  expected upscale ratio from the first pass to the requested size (720/480 = 1.5);
                   a size that disagrees by more than 0.1 is an error.
    anti_aliasing: anti-aliasing filter on the upscale.
    strength:      fraction of the schedule re-run at the target size; the upscaled video is re-noised
                   to the timestep where that fraction starts (0.3 of a 40-step schedule: last 12 steps).
    first_size:    size of the first pass.
    """

    scale_factor: float = 1.5
    anti_aliasing: bool = True
    strength: float = 0.3
    first_size: str = "480p"


@dataclass(frozen=True)
class GenerationRequest:
    """One image-to-video generation; defaults are the official A14B ones."""

    image: ImageInput
    prompt: str
    negative_prompt: str = ""  # empty -> the official default negative prompt
    size: str = "1280*720"
    frames: int = 81
    steps: int = 40
    shift: float = 5.0
    guide_scale_high: float = 3.5
    guide_scale_low: float = 3.5
    solver: Solver = "unipc"
    seed: int = -1  # -1 -> a random seed, reported in the result
    mode: Mode = "both"
    refine: RefineOptions = field(default_factory=RefineOptions)
    output_size: tuple[int, int] | None = None  # exact (W, H) of the returned frames
    output_anti_aliasing: bool = True
    size_rule: Literal["exact", "official"] = "exact"
    # Sampled timing: execute only these indices of the full schedule (the others are skipped, the
    # latent is left as is), so a long schedule can be timed at its real positions: the model sees the
    # real timestep and expert; the solver's multistep history is that of the executed steps only,
    # which costs the same. The video of such a run is not valid.
    execute_steps: frozenset[int] | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1; got {self.steps}")
        if self.shift <= 0:
            raise ConfigError(f"shift must be > 0; got {self.shift}")
        if self.mode not in ("both", "single_expert", "refine"):
            raise ConfigError(f"mode {self.mode!r} is not one of 'both', 'single_expert', 'refine'")
        if self.execute_steps is not None:
            bad = sorted(i for i in self.execute_steps if not 0 <= i < self.steps)
            if bad:
                raise ConfigError(f"execute_steps {bad} lie outside the {self.steps}-step schedule")
        if not 0.0 < self.refine.strength <= 1.0:
            raise ConfigError(f"refine strength must be in (0, 1]; got {self.refine.strength}")
