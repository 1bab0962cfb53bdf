"""Parameter fields: how a value object's field carries its doc and bounds, and how a value is checked.

The runtime's value objects (GenerationRequest, RefineOptions, Limits, MemoryPlan, LoadOptions) declare
each field with `parameter(default, doc, ge=..., check=...)`; the type annotation gives the type and, for
a Literal, the choices. `check_fields(obj)`, called first in every value object's `__post_init__`,
checks and coerces each field with `Param.coerce`, the same function wan_runtime.spec applies to
JSON-like values: a library call, wan-generate, a suite and the service give one text per problem.
Every number must be finite; an error names the parameter, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import reprlib
import sys
import types
import typing
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Literal

from pydantic import TypeAdapter, ValidationError

from wan_runtime.errors import ConfigError, ParameterError

_NOT_A_PARAMETER = "not_a_parameter"


def parameter(
    default: Any = MISSING,
    doc: str = "",
    *,
    default_factory: Any = MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    check: Callable[[Any], object] | None = None,
) -> Any:
    """A dataclass field that is a generation parameter: one-line doc, bounds and an extra check ride along.

    `check(value)` raises ConfigError (its text is kept) for what a type and bounds cannot say
    (a size string, 4n+1 frames); bounds apply to every number of the value (both sides of a pair).
    """
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"doc": doc, "bounds": Bounds(ge, gt, le, lt), "check": check})


def not_a_parameter(default: Any = MISSING) -> Any:
    """A dataclass field set in code, never through the parameter spec (the picture, a subset of steps)."""
    return dataclasses.field(default=default, metadata={_NOT_A_PARAMETER: True})


@dataclass(frozen=True)
class Bounds:
    """Inclusive (ge, le) and exclusive (gt, lt) limits of a number; None: no limit on that side."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def problem(self, value: float) -> str | None:
        """Why `value` lies outside the bounds, or None."""
        if (self.ge is not None and value < self.ge) or (self.gt is not None and value <= self.gt):
            return "too small"
        if (self.le is not None and value > self.le) or (self.lt is not None and value >= self.lt):
            return "too large"
        return None

    def describe(self) -> str:
        """`from 1 to 1000`, `> 0`, `> 0 and <= 1`, or '' without bounds."""
        if self.ge is not None and self.le is not None:
            return f"from {self.ge} to {self.le}"
        parts = [f"{op} {v}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                 if v is not None]
        return " and ".join(parts)


class _Shown(reprlib.Repr):
    """Short reprs for error texts: long strings and lists cut, huge integers summarised."""

    def __init__(self) -> None:
        super().__init__()
        self.maxstring = self.maxother = 60
        self.maxlevel = 3

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr() refuses integers over 4300 digits; nobody reads 40 anyway
            return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return repr(x)


_SHOWN = _Shown()


def show(value: Any) -> str:
    """`value` as an error text quotes it (never raises, never long)."""
    try:
        text = _SHOWN.repr(value)
    except Exception:  # a hostile __repr__ or a recursion: name the type instead
        return f"<{type(value).__name__}>"
    return text if len(text) <= 100 else text[:97] + "..."  # nested values: each part short, the whole too


def describe_type(annotation: Any) -> str:
    """A short human description of a type annotation ("an integer", "one of 'a', 'b'", "text or null")."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return " or ".join(describe_type(a) for a in args if a is not type(None)) + \
            (" or null" if type(None) in args else "")
    if origin is tuple:
        args = typing.get_args(annotation)
        if args and all(a == args[0] for a in args):
            return f"a list of {len(args)} {_PLURAL.get(args[0], describe_type(args[0]))}"
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


_NAMES = {int: "an integer", float: "a finite number", bool: "true or false", str: "text"}
_PLURAL = {int: "integers", float: "finite numbers"}


def _admits(annotation: Any, kind: type) -> bool:
    return annotation is kind or any(_admits(a, kind) for a in typing.get_args(annotation))


def _admits_text(annotation: Any) -> bool:
    if annotation is str:
        return True
    if typing.get_origin(annotation) is Literal:
        return any(isinstance(a, str) for a in typing.get_args(annotation))
    return any(_admits_text(a) for a in typing.get_args(annotation))


@functools.lru_cache(maxsize=None)
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation)


def _numbers(value: Any) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, tuple):
        return [n for item in value for n in _numbers(item)]
    return []


@dataclass(frozen=True)
class Param:
    """One parameter: its public name, the field that holds it, type, default, doc, bounds and check."""

    name: str  # flat public name: "steps", "refine.strength", "experts"
    field: str  # the field's name in its value object
    owner: type  # the value object holding the field
    annotation: Any
    default: Any  # dataclasses.MISSING when a caller must give it
    doc: str = ""
    bounds: Bounds = Bounds()
    check: Callable[[Any], object] | None = None
    target: str = ""  # where it goes (request, refine, limits, memory, load); set by wan_runtime.spec

    @property
    def required(self) -> bool:
        """True when the parameter has no default."""
        return self.default is MISSING

    @property
    def choices(self) -> tuple | None:
        """The allowed values of a Literal parameter (None excluded), else None."""
        for candidate in (self.annotation, *typing.get_args(self.annotation)):
            if typing.get_origin(candidate) is Literal:
                return typing.get_args(candidate)
        return None

    @property
    def nullable(self) -> bool:
        """True when null (None) is an allowed value."""
        return type(None) in typing.get_args(self.annotation)

    @property
    def kind(self) -> type:
        """The Python type a value has (int, float, bool, str, tuple), null aside."""
        args = [a for a in typing.get_args(self.annotation) if a is not type(None)]
        base = args[0] if typing.get_origin(self.annotation) in (typing.Union, types.UnionType) else self.annotation
        if typing.get_origin(base) is Literal:
            return type(typing.get_args(base)[0])
        return typing.get_origin(base) or base

    def allowed(self) -> str:
        """What the parameter allows, in words ("an integer from 1 to 1000 or null")."""
        text = describe_type(self.annotation)
        bounds = self.bounds.describe()
        if bounds:
            head, null, _ = text.partition(" or null")
            text = f"{head} {bounds}" + (" or null" if null else "")
        return text

    def error(self, value: Any, problem: str) -> ParameterError:
        """The one error text of a problem: the key, the value, the problem and what is allowed."""
        return ParameterError(self.name, f"{self.name}={show(value)}: {problem}; allowed: {self.allowed()}")

    def coerce(self, value: Any) -> Any:
        """`value` converted to this parameter's type (JSON-like input welcome), or ParameterError."""
        if value is None:
            if self.nullable:
                return None
            raise self.error(value, "a value is required")
        if isinstance(value, bool) and not _admits(self.annotation, bool):
            raise self.error(value, "a boolean is not allowed here")
        if isinstance(value, str) and not _admits_text(self.annotation):  # "4" is text; YAML/JSON 4 is a number
            raise self.error(value, "text is not allowed here")
        choices = self.choices
        if choices is not None and not _is_choice(value, choices):
            close = difflib.get_close_matches(show(value).strip("'\""), [str(c) for c in choices], n=1)
            raise self.error(value, "not a known value" + (f" (did you mean {close[0]!r}?)" if close else ""))
        try:
            out = _adapter(self.annotation).validate_python(value)
        except ValidationError as exc:
            raise self.error(value, exc.errors()[0]["msg"]) from None
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # e.g. an integer too long to read
            raise self.error(value, f"not understood ({type(exc).__name__})") from None
        numbers = _numbers(out)
        if any(isinstance(n, float) and not math.isfinite(n) for n in numbers):
            raise self.error(value, "not a finite number")
        if any(isinstance(n, int) and n.bit_length() > 64 for n in numbers):  # torch, numpy, parquet: 64 bits
            raise self.error(value, "too large (more than 64 bits)")
        for number in numbers:
            problem = self.bounds.problem(number)
            if problem:
                raise self.error(value, problem)
        if self.check is not None and out is not None:
            try:
                self.check(out)
            except ParameterError:
                raise
            except ConfigError as exc:
                raise ParameterError(self.name, str(exc)) from None
            except Exception as exc:  # a check that cannot read this value refuses it all the same
                raise self.error(value, f"not understood ({type(exc).__name__})") from None
        return out


def _is_choice(value: Any, choices: tuple) -> bool:
    try:  # a str Literal takes only str (so 1 is not '1'); a foreign __eq__ must not get in the way
        return any(isinstance(value, type(c)) and bool(value == c) for c in choices)
    except Exception:
        return False


def is_value_object(annotation: Any) -> bool:
    """True for a dataclass type (a value object nested in another, like GenerationRequest.refine)."""
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """Evaluated annotations of the fields that are parameters or nested value objects; a field set in code
    is left out, so its type (an image array) needs no import."""
    namespace = vars(sys.modules[cls.__module__])
    return {f.name: eval(f.type, namespace) if isinstance(f.type, str) else f.type  # noqa: S307 (own source)
            for f in dataclasses.fields(cls) if not f.metadata.get(_NOT_A_PARAMETER)}


@functools.lru_cache(maxsize=None)
def nested_objects(cls: type) -> tuple[tuple[str, type], ...]:
    """(field, class) of the value objects nested in `cls` (GenerationRequest: refine, limits)."""
    return tuple((name, kind) for name, kind in _hints(cls).items() if is_value_object(kind))


@functools.lru_cache(maxsize=None)
def params_of(cls: type) -> tuple[Param, ...]:
    """The parameters of a value object, in field order; a class attribute PARAM_PREFIX prefixes their names."""
    hints = _hints(cls)
    prefix = getattr(cls, "PARAM_PREFIX", "")
    out = []
    for f in dataclasses.fields(cls):
        if f.name not in hints or is_value_object(hints[f.name]):
            continue
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        out.append(Param(prefix + f.name, f.name, cls, hints[f.name], default, f.metadata.get("doc", ""),
                         f.metadata.get("bounds", Bounds()), f.metadata.get("check")))
    return tuple(out)


def placeholders(cls: type) -> dict[str, None]:
    """None for each field set in code that has no default (GenerationRequest.image), to check the rest."""
    return {f.name: None for f in dataclasses.fields(cls)
            if f.metadata.get(_NOT_A_PARAMETER) and f.default is MISSING and f.default_factory is MISSING}


def check_fields(obj: Any) -> None:
    """Check and coerce every parameter field of a frozen value object; call it first in __post_init__."""
    cls = type(obj)
    for param in params_of(cls):
        value = getattr(obj, param.field)
        coerced = param.coerce(value)
        if coerced is not value:
            object.__setattr__(obj, param.field, coerced)
    for name, kind in nested_objects(cls):
        if not isinstance(getattr(obj, name), kind):
            raise ConfigError(f"{cls.__name__}.{name} must be a {kind.__name__}, got {show(getattr(obj, name))}")
