"""A submission checked before it is queued: its parameters by the runtime's spec, its upload by content.

Every refusal is a ConfigError (a ParameterError with `.key` for a parameter) whose one-line text is
what wan-generate and the suites print for the same value; the app answers it with a 4xx.
- `params` is JSON text naming the spec's parameters (prompt, size, frames, steps, guide_scale_high,
  refine.strength, ...). The parameters fixed when the service started (memory plan, load options,
  limits.*) may be repeated with the service's value, never changed per request.
- The upload is decoded by its content (wan_runtime.images: PNG, JPEG, WebP, ...; its name and
  content type are ignored), with the service's pixel cap checked from the header before decoding.
- Its file name is never used (files are named by job id); one that holds a path or control
  characters is refused all the same: no client of good faith sends one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from PIL import Image

from wan_runtime import spec
from wan_runtime.config import ModelConfig
from wan_runtime.errors import ConfigError, ParameterError
from wan_runtime.fields import show
from wan_runtime.images import load_image
from wan_runtime.compute import ComputePlan
from wan_runtime.memory import MemoryPlan
from wan_runtime.request import GenerationRequest
from wan_runtime.parallel.plan import ParallelPlan
from wan_runtime.resources import open_request

PARAMS_EXAMPLE = '{"prompt": "a cat surfing", "size": "832*480", "frames": 81}'


def fixed_names() -> tuple[str, ...]:
    """Parameters a service fixes when it starts: those fixed at load, and the ceilings (limits.*)."""
    return spec.load_names() + spec.names("limits")


def fixed_values(given: Mapping[str, Any]) -> dict[str, Any]:
    """The fixed parameters of a service: `given` (JSON-like, by name) over the spec's defaults, each value
    object built so its own rules run (stream needs swap, ...), and the rule between the plans."""
    names = fixed_names()
    for key in given:
        if key not in names:
            raise spec.unknown_parameter(key, names)
    defaults = spec.defaults()
    values = {name: spec.coerce(name, given[name]) if name in given else defaults[name] for name in names}
    for entry in spec.VALUE_OBJECTS:
        if entry.at_load or entry.target == "limits":
            spec.build(entry.cls, values)
    memory = spec.build(MemoryPlan, values)
    spec.build(ComputePlan, values).check_memory(memory)
    ranks = spec.build(ParallelPlan, values).world_size(memory)
    if ranks > 1:  # the service is one process on one device; a plan over several ranks needs torchrun
        raise ConfigError(
            f"this plan runs on {ranks} ranks (ulysses_size, cfg_parallel, experts=split): wanbench serve runs one "
            "process on one device; drop the multi-GPU settings, or run multi-GPU videos with torchrun wan-generate"
        )
    return values


def read_params(text: str, fixed: Mapping[str, Any]) -> dict[str, Any]:
    """Every parameter of a request: the JSON object `text` over the service's `fixed` values, checked by the spec."""
    try:
        given = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError covers JSONDecodeError and over-long integers
        raise ConfigError(f"params is not valid JSON ({str(exc)[:100]}); send a JSON object of parameter "
                          f"names and values, e.g. {PARAMS_EXAMPLE}") from None
    if isinstance(given, Mapping):
        for key, value in given.items():
            if key in fixed and spec.coerce(key, value) != fixed[key]:
                raise ParameterError(
                    key, f"{key}={show(value)}: fixed by this service at {show(fixed[key])} when it started; it "
                    "cannot change per request: leave it out of params (or start a service with another value)")
    return spec.validate(given, base=fixed)


def request_params(values: Mapping[str, Any], fixed: Mapping[str, Any]) -> dict[str, Any]:
    """The request's own parameters (what a job record keeps), in the spec's order."""
    return {name: values[name] for name in spec.names() if name not in fixed}


def check_filename(name: str | None) -> None:
    """Refuse an upload name holding a path or control characters (the name itself is never used)."""
    if not name:
        return
    if "/" in name or "\\" in name or name in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ConfigError(
            f"the uploaded file's name {show(name)} holds a path or control characters; send the picture's base "
            "name (e.g. cat.png): the service stores files under names it chooses and never uses this one")


def read_image(data: bytes, max_pixels: int) -> Image.Image:
    """The uploaded picture decoded by content as 8-bit RGB, at most `max_pixels` (refused from the header)."""
    return load_image(bytes(data), max_pixels=max_pixels)


def checked_request(values: Mapping[str, Any], picture: Image.Image, cfg: ModelConfig) -> GenerationRequest:
    """The request built from `values` and the picture, its video geometry checked against the model's rules."""
    request = spec.build(GenerationRequest, values, image=picture)
    open_request(request, cfg)
    return request
