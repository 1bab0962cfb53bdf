"""The case parameters a suite may set or sweep: the runtime's parameter spec plus the benchmark picture.

Every parameter but one is the runtime's (wan_runtime.spec: GenerationRequest fields, `refine.*`,
`limits.*`, MemoryPlan and LoadOptions fields, whatever the runtime defines), with its checks and
error texts. The harness adds only what is its own:
- `image`, the benchmark picture (the harness prepares it, see inputs.py);
- HARNESS_DEFAULTS: a benchmark must be reproducible, so the seed is fixed instead of random, and
  every case has the same prompt unless the suite says otherwise.
`threads` left null runs a worker with the usable cores split among the workers a host may run at
once (harness.environment.set_threads).

Parameters are flat names, shared verbatim by suites, results and reports.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

from wan_runtime import spec
from wan_runtime.compute import ComputePlan
from wan_runtime.config import ModelConfig
from wan_runtime.fields import Param, parameter, params_of
from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel.plan import ParallelPlan, check_guidance, check_launch
from wan_runtime.request import GenerationRequest
from wan_runtime.sizes import geometry, parse_size


@dataclass(frozen=True)
class BenchmarkInput:
    """What the harness feeds a case beside the runtime's parameters."""

    image: str = parameter("astronaut", "the benchmark picture: a scikit-image sample name (astronaut, chelsea, "
                           "...) or a path; it is resized to the case's size")


# Harness defaults that differ from the runtime's (see the module docstring).
HARNESS_DEFAULTS: dict[str, Any] = {
    "prompt": "An astronaut waves at the camera while the flag behind her moves in the wind",
    "seed": 42,
}


@functools.lru_cache(maxsize=None)
def _catalog() -> dict[str, Param]:
    out = {p.name: dataclasses.replace(p, target="input") for p in params_of(BenchmarkInput)}
    for name, param in spec.catalog().items():
        out[name] = dataclasses.replace(param, default=HARNESS_DEFAULTS[name]) if name in HARNESS_DEFAULTS else param
    return out


def catalog() -> dict[str, Param]:
    """Every case parameter by name: `image`, then the runtime's spec with the harness's defaults."""
    return dict(_catalog())


def defaults() -> dict[str, Any]:
    """The value of every parameter a suite leaves out."""
    return {name: p.default for name, p in _catalog().items() if not p.required}


def coerce(name: Any, value: Any) -> Any:
    """One parameter's value converted and checked, or a ConfigError with the runtime's text."""
    if not isinstance(name, str) or name not in _catalog():
        raise spec.unknown_parameter(name, _catalog())
    return _catalog()[name].coerce(value)


def load_param_names() -> tuple[str, ...]:
    """Parameters fixed when a pipeline loads (memory plan, attention, threads, ...): a process group's key."""
    return spec.load_names()


def build_memory_plan(params: dict[str, Any]) -> MemoryPlan:
    """The MemoryPlan of a case (its constructor checks the values)."""
    return spec.build(MemoryPlan, params)


def build_compute_plan(params: dict[str, Any]) -> ComputePlan:
    """The ComputePlan of a case (compiled blocks, matmul precision)."""
    return spec.build(ComputePlan, params)


def build_parallel_plan(params: dict[str, Any]) -> ParallelPlan:
    """The ParallelPlan of a case (sequence and CFG parallelism, FSDP)."""
    return spec.build(ParallelPlan, params)


def case_ranks(params: dict[str, Any]) -> int:
    """GPUs (torchrun ranks) a case runs on: its ParallelPlan's world size under its memory plan."""
    return build_parallel_plan(params).world_size(build_memory_plan(params))


def build_request(params: dict[str, Any], image: Any, execute_steps: frozenset[int] | None = None) -> GenerationRequest:
    """The GenerationRequest of a case, with the prepared picture and the steps to execute."""
    return spec.build(GenerationRequest, params, image=image, execute_steps=execute_steps)


def check_case(params: dict[str, Any], config: ModelConfig) -> None:
    """Raise ConfigError (the runtime's own message) when a parameter combination cannot run."""
    spec.check_together(params)
    plan, memory = build_parallel_plan(params), build_memory_plan(params)
    ranks = plan.world_size(memory)  # the ranks it will be launched with: the plan's own rules apply
    check_launch(plan, memory, config.dit.num_heads, ranks, ranks, None)
    width, height = parse_size(params["size"])  # the benchmark picture has the size's own aspect
    request = build_request(params, image=None)
    if ranks > 1:
        check_guidance(plan, [request.guide_scale_high, request.guide_scale_low])
    geometry(request.size, request.frames, width, height, config.vae_stride, config.patch_size, request.size_rule)
    if request.mode == "refine":
        first_w, first_h = parse_size(request.refine.first_size)
        geometry(request.refine.first_size, request.frames, first_w, first_h,
                 config.vae_stride, config.patch_size, request.size_rule)


def format_value(value: Any) -> str:
    """A parameter value as it appears in case ids and tables."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "x".join(format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def jsonable(value: Any) -> Any:
    """A parameter value as a JSON-friendly value (tuples become lists)."""
    if isinstance(value, tuple):
        return [jsonable(v) for v in value]
    return value
