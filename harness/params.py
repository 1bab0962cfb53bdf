"""The case parameters a suite may set or sweep, derived from the runtime's own value objects.

A case parameter is one of:
- a `GenerationRequest` field (size, frames, steps, shift, solver, seed, ...), except `image`
  (the harness prepares the picture, see inputs.py), `execute_steps` (set by `timing`) and
  `refine` (offered field by field as `refine.<field>`);
- a `MemoryPlan` field (experts, text_encoder, vae_tiling, weight_dtype, ... whatever the runtime
  defines: the list is read from `dataclasses.fields(MemoryPlan)`, never written down here);
- a `ComputePlan` field (compile, compile_backend, matmul: read from `dataclasses.fields(ComputePlan)`);
- `attention` and `cross_attention`, the backend names handed to `WanI2V.load` (cross null: the same);
- `image`, the benchmark picture: a scikit-image sample name (`astronaut`, `chelsea`, ...) or a path.

Parameters are flat names, shared verbatim by suites, results and reports.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional

from pydantic import TypeAdapter, ValidationError

from wan_runtime.compute import ComputePlan
from wan_runtime.config import ModelConfig
from wan_runtime.errors import ConfigError
from wan_runtime.memory import MemoryPlan
from wan_runtime.request import GenerationRequest, RefineOptions
from wan_runtime.sizes import geometry, parse_size

Target = Literal["request", "refine", "memory", "compute", "load", "input"]

# Request fields the harness owns instead of the suite (see the module docstring).
_REQUEST_FIELDS_NOT_PARAMETERS = ("image", "execute_steps", "refine")

# Harness defaults that differ from the runtime's: a benchmark must be reproducible, so the seed is
# fixed instead of random, and every case has the same picture and prompt unless the suite says otherwise.
HARNESS_DEFAULTS: dict[str, Any] = {
    "image": "astronaut",
    "prompt": "An astronaut waves at the camera while the flag behind her moves in the wind",
    "seed": 42,
    "attention": "auto",
    "cross_attention": None,
}


@dataclass(frozen=True)
class ParamSpec:
    """One case parameter: its name, where it goes, its type and its default."""

    name: str
    target: Target
    annotation: Any
    default: Any

    def validate(self, value: Any) -> Any:
        """Return `value` coerced to this parameter's type, or raise ValueError saying what is allowed."""
        if isinstance(value, bool) and not _admits_bool(self.annotation):
            raise ValueError(f"expected {describe_type(self.annotation)}, got the boolean {value!r}")
        try:
            return TypeAdapter(self.annotation).validate_python(value)
        except ValidationError as exc:
            messages = "; ".join(err["msg"] for err in exc.errors())
            raise ValueError(f"{messages} (got {value!r})") from None


def describe_type(annotation: Any) -> str:
    """A short human description of a type annotation ("one of 'a', 'b'", "int or null")."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe_type(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _admits_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    return any(_admits_bool(a) for a in typing.get_args(annotation))


def _dataclass_params(cls: type, target: Target, prefix: str = "", skip: tuple[str, ...] = ()) -> list[ParamSpec]:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        specs.append(ParamSpec(prefix + f.name, target, hints[f.name], default))
    return specs


def catalog() -> dict[str, ParamSpec]:
    """Every case parameter by name, read from GenerationRequest, RefineOptions and MemoryPlan."""
    specs = [
        ParamSpec("image", "input", str, HARNESS_DEFAULTS["image"]),
        ParamSpec("attention", "load", str, HARNESS_DEFAULTS["attention"]),
        ParamSpec("cross_attention", "load", Optional[str], HARNESS_DEFAULTS["cross_attention"]),
        *_dataclass_params(GenerationRequest, "request", skip=_REQUEST_FIELDS_NOT_PARAMETERS),
        *_dataclass_params(RefineOptions, "refine", prefix="refine."),
        *_dataclass_params(MemoryPlan, "memory"),
        *_dataclass_params(ComputePlan, "compute"),
    ]
    out: dict[str, ParamSpec] = {}
    for spec in specs:
        if spec.name in out:  # a runtime change made two value objects share a field name
            raise ConfigError(
                f"case parameter {spec.name!r} is defined by both {out[spec.name].target} and {spec.target}; "
                "rename one of the runtime fields so suites stay unambiguous"
            )
        if spec.name in HARNESS_DEFAULTS:
            spec = dataclasses.replace(spec, default=HARNESS_DEFAULTS[spec.name])
        out[spec.name] = spec
    return out


def defaults() -> dict[str, Any]:
    """The value of every parameter a suite leaves out (MISSING ones must be set: none today)."""
    return {name: spec.default for name, spec in catalog().items() if spec.default is not dataclasses.MISSING}


def required() -> list[str]:
    """Parameters without a default (the runtime's required request fields other than image)."""
    return [name for name, spec in catalog().items() if spec.default is dataclasses.MISSING]


def memory_param_names() -> tuple[str, ...]:
    """Names of the MemoryPlan fields, in the runtime's order."""
    return tuple(f.name for f in dataclasses.fields(MemoryPlan))


def compute_param_names() -> tuple[str, ...]:
    """Names of the ComputePlan fields, in the runtime's order."""
    return tuple(f.name for f in dataclasses.fields(ComputePlan))


def load_param_names() -> tuple[str, ...]:
    """Parameters fixed when a pipeline loads: the attention backends, the memory and compute plans."""
    return ("attention", "cross_attention", *memory_param_names(), *compute_param_names())


def build_memory_plan(params: dict[str, Any]) -> MemoryPlan:
    """The MemoryPlan of a case (its constructor checks the values)."""
    return MemoryPlan(**{name: params[name] for name in memory_param_names() if name in params})


def build_compute_plan(params: dict[str, Any]) -> ComputePlan:
    """The ComputePlan of a case (its constructor checks the values)."""
    return ComputePlan(**{name: params[name] for name in compute_param_names() if name in params})


def build_request(params: dict[str, Any], image: Any, execute_steps: frozenset[int] | None = None) -> GenerationRequest:
    """The GenerationRequest of a case, with the prepared picture and the steps to execute."""
    specs = catalog()
    request_kw = {n: v for n, v in params.items() if n in specs and specs[n].target == "request"}
    refine_kw = {n.split(".", 1)[1]: v for n, v in params.items() if n in specs and specs[n].target == "refine"}
    return GenerationRequest(
        image=image, refine=RefineOptions(**refine_kw), execute_steps=execute_steps, **request_kw
    )


def check_case(params: dict[str, Any], config: ModelConfig) -> None:
    """Raise ConfigError (the runtime's own message) when a parameter combination cannot run."""
    from wan_runtime.attention import check_backend_name

    check_backend_name(params["attention"])
    if params.get("cross_attention") is not None:
        check_backend_name(params["cross_attention"])
    build_compute_plan(params).check_memory(build_memory_plan(params))
    width, height = parse_size(params["size"])  # the benchmark picture has the size's own aspect
    request = build_request(params, image=None)
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
