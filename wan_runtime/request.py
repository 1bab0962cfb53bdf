"""GenerationRequest: everything that defines one video, as plain values, with its documented ceilings.

Each field's type, default, bounds and one-line doc live here (see wan_runtime/fields.py); the
parameter spec (wan_runtime/spec.py), wan-generate, the suites and the service read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, Union

from wan_runtime.errors import ConfigError, ParameterError
from wan_runtime.fields import check_fields, not_a_parameter, parameter, show
from wan_runtime.sizes import SizeRule, parse_size, validate_frames

if TYPE_CHECKING:  # only for the type of `image`: checking a request imports neither
    import numpy as np
    from PIL import Image

Solver = Literal["unipc", "dpm++"]
Mode = Literal["both", "single_expert", "refine"]
ImageInput = Union[str, Path, "Image.Image", "np.ndarray"]

# The largest seed torch.Generator.manual_seed takes (it reads an unsigned 64-bit integer).
MAX_SEED = 2**64 - 1


@dataclass(frozen=True)
class Limits:
    """Ceilings on the work one request may ask for; a caller raises them explicitly.

    They catch typos and runaway requests before anything is allocated (whether a request fits the
    machine is a separate, measured check). Defaults and why:
    max_steps:  1000, the model's number of training timesteps: a schedule cannot have more distinct
                timesteps than that (the official default is 40).
    max_frames: 1001 (4n+1), 62.5 s at 16 fps: twelve times the 81 frames the model was trained on.
    max_side:   4096 px, a multiple of 16 that holds 4K (3840 and 4096 wide); the model was trained at
                up to 1280 px, and a side like 99984 is a typo.
    """

    PARAM_PREFIX: ClassVar[str] = "limits."

    max_steps: int = parameter(1000, "ceiling on steps", ge=1)
    max_frames: int = parameter(1001, "ceiling on frames", ge=1)
    max_side: int = parameter(4096, "ceiling on a side of size, refine.first_size and output_size, in pixels", ge=16)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class RefineOptions:
    """Cross-resolution refine mode: a low-resolution pass, upscale, re-noise, finish with the low-noise expert.

    strength: the upscaled video is re-noised to the timestep where that fraction of the schedule
    starts (0.3 of a 40-step schedule: the last 12 steps run at the target size).
    """

    PARAM_PREFIX: ClassVar[str] = "refine."

    scale_factor: float = parameter(1.5, "expected upscale ratio from the first pass to the size (720/480); "
                                    "a size disagreeing by more than 0.1 is an error", gt=0)
    anti_aliasing: bool = parameter(True, "anti-aliasing filter on the upscale")
    strength: float = parameter(0.3, "fraction of the schedule re-run at the target size", gt=0, le=1)
    first_size: str = parameter("480p", "size of the first pass", check=parse_size)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True)
class GenerationRequest:
    """One image-to-video generation; defaults are the official A14B ones."""

    image: ImageInput = not_a_parameter()
    prompt: str = parameter(doc="what the video shows")
    negative_prompt: str = parameter("", "what to steer away from; empty: the official default negative prompt")
    size: str = parameter("1280*720", "W*H maximum area (1280*720, 720*1280, 832*480, 480*832, custom multiples "
                          "of 16) or 480p/720p; the image's aspect ratio is kept", check=parse_size)
    frames: int = parameter(81, "frame count, 4n+1", ge=1, check=validate_frames)
    steps: int = parameter(40, "denoising steps", ge=1)
    shift: float = parameter(5.0, "noise schedule shift (3.0 is suggested for 480p)", gt=0)
    guide_scale_high: float = parameter(3.5, "classifier-free guidance scale of the high-noise expert")
    guide_scale_low: float = parameter(3.5, "classifier-free guidance scale of the low-noise expert")
    solver: Solver = parameter("unipc", "sampling solver")
    seed: int = parameter(-1, "noise seed; -1 picks a random one (reported in the result)", ge=-1, le=MAX_SEED)
    mode: Mode = parameter("both", "both experts; the low-noise expert only (single_expert); or refine")
    refine: RefineOptions = field(default_factory=RefineOptions)
    output_size: tuple[int, int] | None = parameter(None, "exact [W, H] of the returned frames; null: as generated",
                                                    ge=1)
    output_anti_aliasing: bool = parameter(True, "anti-aliasing filter when resizing to output_size")
    size_rule: SizeRule = parameter("exact", "exact: integer arithmetic (832*480 of an 832x480 picture is 480x832); "
                                    "official: upstream's float formula (464x832), to reproduce its outputs")
    # Sampled timing: execute only these indices of the full schedule (the others are skipped, the
    # latent is left as is), so a long schedule can be timed at its real positions: the model sees the
    # real timestep and expert; the solver's multistep history is that of the executed steps only,
    # which costs the same. The video of such a run is not valid.
    execute_steps: frozenset[int] | None = not_a_parameter(None)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        check_fields(self)
        limits = self.limits
        _ceiling("steps", self.steps, self.steps, limits.max_steps, "max_steps")
        _ceiling("frames", self.frames, self.frames, limits.max_frames, "max_frames")
        for name, text in (("size", self.size), ("refine.first_size", self.refine.first_size)):
            _ceiling(name, text, max(parse_size(text)), limits.max_side, "max_side")
        if self.output_size is not None:
            _ceiling("output_size", list(self.output_size), max(self.output_size), limits.max_side, "max_side")
        if self.execute_steps is not None:
            bad = sorted(i for i in self.execute_steps if not 0 <= i < self.steps)
            if bad:
                raise ConfigError(f"execute_steps {bad} lie outside the {self.steps}-step schedule")


def _ceiling(name: str, value: object, amount: int, ceiling: int, limit: str) -> None:
    """Refuse a value whose `amount` (steps, frames, longest side) is above a Limits ceiling; say how to raise it."""
    if amount > ceiling:
        raise ParameterError(
            name,
            f"{name}={show(value)}: above the ceiling limits.{limit}={ceiling}; "
            f"allowed: up to {ceiling}, or raise limits.{limit} (wan-generate --{limit})",
        )
