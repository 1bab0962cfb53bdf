"""The parameter spec: every parameter of a generation, read from the runtime's own value objects.

wan-generate, the harness's suites and the HTTP service all stand on this one catalog. A parameter
is a field of one of the value objects in VALUE_OBJECTS, declared with `parameter(...)`
(wan_runtime/fields.py); the spec restates nothing the field already says:

    name      flat public name: "steps", "refine.strength", "limits.max_steps", "experts", "threads"
    target    where it goes: request | refine | limits | memory | load (the value object's tag)
    type, default, choices (a Literal), bounds, one-line doc: from the field

Values from JSON or YAML go through `validate(mapping)` (every parameter, checked together) or
`coerce(name, value)` (one); the value objects run the same checks in `__post_init__`, so a library
user gets the same error text. Every error is a ConfigError naming the key, the value and what is
allowed (ParameterError, with `.key`), with "did you mean" for an unknown key.

Extending it:
- a parameter: add a field, declared with `parameter(default, doc, ge=..., check=...)`, to one of
  the value objects below (its __post_init__ already calls `check_fields`).
- a value object: write a frozen dataclass whose `__post_init__` starts with `check_fields(self)`,
  then register it with one line in VALUE_OBJECTS, e.g.
      ValueObject("parallel", ParallelPlan, at_load=True),
  (`at_load=True` when it is fixed for the life of a loaded pipeline: it then joins
  `load_names()`, the harness's process-group key and the report's plan columns.)
- a load option (like `compile`): a field of LoadOptions (wan_runtime/load_options.py).
Field names must stay unique across value objects (a nested one's fields are prefixed with the name
of the field that holds it, given by its PARAM_PREFIX: `refine.`, `limits.`).
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, replace
from types import MappingProxyType
from typing import Any

from wan_runtime.compute import ComputePlan
from wan_runtime.errors import ConfigError, ParameterError
from wan_runtime.fields import Param, nested_objects, params_of, placeholders, show
from wan_runtime.load_options import LoadOptions
from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel.plan import ParallelPlan
from wan_runtime.request import GenerationRequest, Limits, RefineOptions


@dataclass(frozen=True)
class ValueObject:
    """A registered value object: its target tag, its class, and whether it is fixed at load time."""

    target: str
    cls: type
    at_load: bool = False  # fixed when a pipeline loads: part of a worker's process-group key


VALUE_OBJECTS: tuple[ValueObject, ...] = (
    ValueObject("request", GenerationRequest),
    ValueObject("refine", RefineOptions),
    ValueObject("limits", Limits),
    ValueObject("memory", MemoryPlan, at_load=True),
    ValueObject("compute", ComputePlan, at_load=True),
    ValueObject("load", LoadOptions, at_load=True),
    ValueObject("parallel", ParallelPlan, at_load=True),
)

# Devices a pipeline can be placed on (whether this machine has one is checked when loading).
DEVICE_PATTERN = re.compile(r"cpu|cuda(:\d+)?|mps")


@functools.lru_cache(maxsize=None)
def catalog() -> Mapping[str, Param]:
    """Every parameter by name, in registration and field order (read-only)."""
    out: dict[str, Param] = {}
    for entry in VALUE_OBJECTS:
        for param in params_of(entry.cls):
            if param.name in out:  # a runtime change made two value objects share a field name
                raise ConfigError(
                    f"parameter {param.name!r} is defined by both {out[param.name].target} and {entry.target}; "
                    "rename one of the fields so every parameter name stays unambiguous"
                )
            out[param.name] = replace(param, target=entry.target)
        for field_name, nested in nested_objects(entry.cls):
            if not any(e.cls is nested for e in VALUE_OBJECTS) or getattr(nested, "PARAM_PREFIX", "") != f"{field_name}.":
                raise ConfigError(
                    f"{entry.cls.__name__}.{field_name} holds a {nested.__name__}: register it in VALUE_OBJECTS "
                    f"and give it PARAM_PREFIX = {field_name + '.'!r}"
                )
    return MappingProxyType(out)


def names(*targets: str) -> tuple[str, ...]:
    """Names of the parameters of the given targets (all of them without arguments), in catalog order."""
    return tuple(n for n, p in catalog().items() if not targets or p.target in targets)


def load_names() -> tuple[str, ...]:
    """Names of the parameters fixed when a pipeline loads (memory plan, load options, ...)."""
    return names(*(e.target for e in VALUE_OBJECTS if e.at_load))


def defaults() -> dict[str, Any]:
    """The default of every parameter that has one."""
    return {n: p.default for n, p in catalog().items() if not p.required}


def required() -> tuple[str, ...]:
    """Parameters a caller must give (no default): the prompt."""
    return tuple(n for n, p in catalog().items() if p.required)


def unknown_parameter(key: Any, known: Iterable[str]) -> ParameterError:
    """The error for a key no parameter has: "did you mean" the closest, and every allowed name."""
    known = list(known)
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) if isinstance(key, str) else []
    hint = f"did you mean {close[0]!r}? " if close else ""
    return ParameterError(str(key)[:80], f"unknown parameter {show(key)}; {hint}allowed: {', '.join(known)}")


def lookup(name: Any) -> Param:
    """The parameter called `name`, or the unknown-parameter error."""
    specs = catalog()
    if not isinstance(name, str) or name not in specs:
        raise unknown_parameter(name, specs)
    return specs[name]


def coerce(name: Any, value: Any) -> Any:
    """One parameter's value, converted and checked on its own (cross-parameter rules: `validate`)."""
    return lookup(name).coerce(value)


def validate(mapping: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every parameter, coerced and checked together: `mapping` over `base` over the runtime's defaults.

    Takes JSON-like values (the service passes parsed JSON); returns a new dict of every parameter,
    or raises ConfigError for the first problem, naming the key.
    """
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"parameters are a mapping of name to value; got {show(mapping)}")
    specs = catalog()
    for key in mapping:
        lookup(key)
    merged = {**defaults(), **(base or {}), **mapping}
    values: dict[str, Any] = {}
    for name, param in specs.items():
        if name not in merged:
            raise ParameterError(name, f"{name} is missing: a value is required; allowed: {param.allowed()}")
        values[name] = param.coerce(merged[name])
    check_together(values)
    return values


def check_together(values: Mapping[str, Any]) -> None:
    """Build every value object from coerced `values`, so their cross-parameter rules run (ceilings, stream
    needs swap, ...)."""
    nested = {cls for e in VALUE_OBJECTS for _, cls in nested_objects(e.cls)}
    built = {entry.cls: build(entry.cls, values, **placeholders(entry.cls))
             for entry in VALUE_OBJECTS if entry.cls not in nested}  # a nested one is built inside its holder
    # Rules between value objects.
    built[ComputePlan].check_memory(built[MemoryPlan])


def build(cls: type, values: Mapping[str, Any], **given: Any) -> Any:
    """A value object from flat parameter values (nested ones built alike); `given` sets other fields
    (`build(GenerationRequest, values, image=picture)`)."""
    kwargs = dict(given)
    for param in params_of(cls):
        if param.name in values and param.field not in kwargs:
            kwargs[param.field] = values[param.name]
    for field_name, nested in nested_objects(cls):
        if field_name not in kwargs:
            kwargs[field_name] = build(nested, values)
    return cls(**kwargs)


def check_device_name(device: str) -> str:
    """`device` when it names a device a pipeline can use (cpu, cuda, cuda:N, mps), else ConfigError."""
    if not isinstance(device, str) or not DEVICE_PATTERN.fullmatch(device):
        raise ParameterError("device", f"device={show(device)}: not a device this runtime runs on; "
                             "allowed: cpu, cuda, cuda:N (a GPU index) or mps")
    return device


__all__ = [
    "ValueObject", "VALUE_OBJECTS", "Param", "catalog", "names", "load_names", "defaults", "required", "lookup",
    "coerce", "validate", "check_together", "build", "unknown_parameter", "check_device_name", "DEVICE_PATTERN",
    "MISSING",
]
