"""Suites: a YAML file -> a validated `Suite` -> its expanded list of `Case`s.

A suite (see suites/smoke.yaml for a commented example):

    name: smoke                      # letters, digits, - _ .
    description: ...                 # optional
    model: {preset: tiny, weights: synthetic}   # weights: synthetic or a checkpoint folder
    device: cpu                      # cpu | cuda | cuda:N
    base: {size: 160*96, frames: 5}  # case parameters shared by every case (harness/params.py)
    sweep:                           # cartesian product of the listed values
      steps: [4, 2]
      text_encoder: [gpu, offload_after]
      exclude: [{steps: 2, text_encoder: offload_after}]   # drop product cases matching ALL keys
      include: [{steps: 8}]          # extra cases: base + this row (keys not named take base values)
    reference:                       # which case each case is compared with
      where: {steps: 4, text_encoder: gpu}   # the reference satisfies these...
      match: [size]                  # ...and agrees with the case on these (default: every other
                                     #    parameter that varies in the suite)
    repeats: 5                       # measured repeats per case
    warmup: 1                        # unmeasured generations first (per case)
    timing: full                     # full | sampled
    sampled: {warmup_steps: 1, measured_steps: 1}   # per expert, under timing: sampled
    quality: {resize_filter: bicubic, antialias: true}
    gates: {total_ms: {rel: 0.08, abs: 500}}        # thresholds for `wanbench compare`

Each case must find exactly one reference; a case satisfying `where` is its own reference (it is
run, but has no metrics).

Bounds, checked before anything is built: a suite file is UTF-8 text of at most 1 MiB; its YAML,
aliases expanded, holds at most 100,000 nodes (an alias bomb is refused, not expanded); a suite
expands to at most `max_cases` cases (1000 by default; `--max-cases`), counted as the sweep's
product plus its include rows before any case exists. Overrides (`wanbench run --set key=value`) apply before validation: a case
parameter (`steps=2`) replaces that parameter in every case (its sweep axis collapses); any other
key is a dotted path into the document (`repeats=1`, `model.preset=tiny`, `sweep.steps=[2,4]`).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness import params as P
from harness.results import metric_names
from wan_runtime.config import PRESETS, ModelConfig, get_preset
from wan_runtime.errors import ConfigError

Loc = tuple  # a path into the YAML document: ("sweep", "steps", 1)

DEFAULT_MAX_CASES = 1000  # a suite expanding to more is refused (the caller may allow more)
MAX_SUITE_BYTES = 1 << 20  # suites are short text files
MAX_YAML_NODES = 100_000  # YAML nodes after alias expansion (an alias bomb expands to billions)


# ---------------------------------------------------------------- the document schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    """Which model is loaded: a preset's shapes and where the weights come from."""

    preset: str = "tiny"
    weights: str = "synthetic"


class ReferenceSpec(_Strict):
    """How a case finds its reference: the reference satisfies `where` and agrees on `match`."""

    where: dict[str, Any]
    match: list[str] | None = None


class SampledSpec(_Strict):
    """Under `timing: sampled`, steps executed per expert: warmup ones first, then measured ones."""

    warmup_steps: int = Field(1, ge=0)
    measured_steps: int = Field(1, ge=1)


class QualitySpec(_Strict):
    """How frames of another size are brought to the reference's size before PSNR/SSIM."""

    resize_filter: Literal["bicubic", "bilinear", "lanczos", "area", "nearest"] = "bicubic"
    antialias: bool = True


class GateSpec(_Strict):
    """A regression threshold: worse by more than BOTH `rel` (fraction) and `abs` (field unit) fails."""

    rel: float | None = Field(None, ge=0)
    abs: float | None = Field(None, ge=0)


class SuiteSpec(_Strict):
    """The validated top level of a suite file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    model: ModelSpec = ModelSpec()
    device: str = Field("cpu", pattern=r"^(cpu|cuda(:\d+)?)$")
    base: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    reference: ReferenceSpec | None = None
    repeats: int = Field(3, ge=1)
    warmup: int = Field(1, ge=0)
    timing: Literal["full", "sampled"] = "full"
    sampled: SampledSpec = SampledSpec()
    quality: QualitySpec = QualitySpec()
    gates: dict[str, GateSpec] = {}


# ---------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One measured configuration: every parameter, its reference and its process group."""

    case_id: str
    params: dict[str, Any]
    reference_id: str | None
    group: str  # cases of one group share a worker process and a loaded pipeline

    @property
    def is_reference(self) -> bool:
        """True when this case is the reference of itself (and maybe of others)."""
        return self.reference_id == self.case_id


@dataclass(frozen=True)
class Suite:
    """A validated suite with its expanded cases."""

    spec: SuiteSpec
    path: Path | None
    cases: tuple[Case, ...]
    varying: tuple[str, ...]  # parameters that differ between cases (they make up case ids)
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The suite's name."""
        return self.spec.name

    @property
    def config(self) -> ModelConfig:
        """The model preset's configuration."""
        return get_preset(self.spec.model.preset)

    def case(self, case_id: str) -> Case:
        """The case with this id."""
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise KeyError(case_id)

    def groups(self) -> list[tuple[str, list[Case]]]:
        """Cases by process group; groups holding references first, references first within a group,
        so a case's reference frames usually exist by the time the case ends."""
        by_group: dict[str, list[Case]] = {}
        for case in self.cases:
            by_group.setdefault(case.group, []).append(case)
        ordered = sorted(by_group.items(), key=lambda item: not any(c.is_reference for c in item[1]))
        return [(g, sorted(cases, key=lambda c: not c.is_reference)) for g, cases in ordered]

    def fingerprint(self) -> str:
        """Hash of everything that defines the results (not gates or description)."""
        doc = {
            "name": self.spec.name,
            "model": self.spec.model.model_dump(),
            "device": self.spec.device,
            "repeats": self.spec.repeats,
            "warmup": self.spec.warmup,
            "timing": self.spec.timing,
            "sampled": self.spec.sampled.model_dump(),
            "quality": self.spec.quality.model_dump(),
            "cases": [[c.case_id, c.params, c.reference_id] for c in self.cases],
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- errors with file, line and key
class _Problems:
    """Collects problems, each tied to a location in the document, and raises them together."""

    def __init__(self, source: str, lines: dict[Loc, int], origins: dict[Loc, str]):
        self.source = source
        self.lines = lines
        self.origins = origins  # locations set by --set, with the override text
        self.items: list[str] = []

    def add(self, loc: Loc, message: str) -> None:
        self.items.append(f"{self._where(loc)}: {message}")

    def _where(self, loc: Loc) -> str:
        key = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc).replace(".[", "[") or "(top)"
        for n in range(len(loc), 0, -1):
            if loc[:n] in self.origins:
                return f"{key} (from {self.origins[loc[:n]]})"
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return f"line {self.lines[loc[:n]]}, {key}"
        return key

    def raise_if_any(self) -> None:
        if self.items:
            head = f"{self.source}: {len(self.items)} problem{'s' if len(self.items) > 1 else ''}"
            raise ConfigError(head + "\n  " + "\n  ".join(self.items))


def _did_you_mean(word: str, allowed: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(allowed), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}? " if close else ""


def _line_map(root: yaml.Node | None) -> dict[Loc, int]:
    """1-based line of every key and list item of a composed YAML document."""
    lines: dict[Loc, int] = {}

    def walk(node: yaml.Node, loc: Loc) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                lines[loc + (key.value,)] = key.start_mark.line + 1
                walk(value, loc + (key.value,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[loc + (i,)] = item.start_mark.line + 1
                walk(item, loc + (i,))

    if root is not None:
        walk(root, ())
    return lines


class _NotYaml(ConfigError):
    """Text that does not parse as YAML."""


def _load_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """(document, its composed node tree) of a YAML text, refusing one that expands beyond MAX_YAML_NODES."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses characters YAML does not allow
        root = loader.get_single_node()
        if root is not None:
            _check_expanded_size(root, source)
        return (loader.construct_document(root) if root is not None else None), root
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise _NotYaml(f"{source}: {where}not valid YAML ({problem})") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply to be a suite") from None
    finally:
        if loader is not None:
            loader.dispose()


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    """Count the nodes the document has once its aliases are expanded, without expanding them."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else node.value if isinstance(node, yaml.SequenceNode) else [])
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_NODES:
                line = node.start_mark.line + 1
                raise ConfigError(f"{source}: line {line}: the YAML expands to more than {MAX_YAML_NODES:,} nodes "
                                  "once its aliases (*name) are expanded; a suite is refused at that size "
                                  "(an alias bomb?)")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise ConfigError(f"{source}: line {node.start_mark.line + 1}: a YAML alias refers to a node that "
                              "contains it (a recursive document cannot be a suite)")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)


def decode_suite(data: bytes, source: str) -> str:
    """The text of a suite file, or a one-line ConfigError saying what the file is when it is not UTF-8."""
    boms = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16",
            b"\xfe\xff": "UTF-16"}
    for bom, name in boms.items():
        if data.startswith(bom):
            raise ConfigError(f"{source} is {name} text (it starts with a {name} byte-order mark); "
                              "a suite is UTF-8: save it as UTF-8")
    if b"\x00" in data:
        # ASCII as UTF-16 puts a NUL in every other byte and none between; binary files have NULs anywhere.
        even, odd = (half.count(0) / max(1, len(half)) for half in (data[0::2], data[1::2]))
        utf16 = max(even, odd) > 0.3 and min(even, odd) < 0.02
        what = "UTF-16 text without a byte-order mark" if utf16 else "a binary file (it holds NUL bytes)"
        raise ConfigError(f"{source} looks like {what}, not a YAML suite; a suite is UTF-8 text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        controls = sum(1 for b in data if b < 0x20 and b not in b"\t\n\r")
        if controls > len(data) // 100:
            raise ConfigError(f"{source} looks like a binary file (byte 0x{data[exc.start]:02x} at line {line} is "
                              "not UTF-8, and it holds control bytes), not a YAML suite") from None
        raise ConfigError(f"{source} is not UTF-8: byte 0x{data[exc.start]:02x} at line {line} is not valid UTF-8 "
                          "(Latin-1 or Windows-1252 text?); save the file as UTF-8") from None


def _allowed_keys(loc: Loc) -> list[str] | None:
    """Field names of the schema model at `loc` (for "did you mean"), or None when it is free-form."""
    model: Any = SuiteSpec
    for part in loc:
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            if typing.get_origin(model) is dict:  # dict[str, X]: any key, then X
                model = typing.get_args(model)[1]
                continue
            return None
        model = model.model_fields[part].annotation
        args = [a for a in typing.get_args(model) if a is not type(None)]
        if typing.get_origin(model) in (typing.Union, types.UnionType) and len(args) == 1:
            model = args[0]
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return None


# ---------------------------------------------------------------- loading
def load_suite(
    suite: str | Path,
    overrides: typing.Sequence[str] = (),
    preset: str | None = None,
    max_cases: int = DEFAULT_MAX_CASES,
) -> Suite:
    """Read, override, validate and expand a suite file (a path or a name in suites/)."""
    from harness.registry import find_suite

    path = find_suite(suite)
    try:
        size = path.stat().st_size
        if size > MAX_SUITE_BYTES:
            raise ConfigError(f"suite {path} is {size / 2**20:.1f} MiB; a suite is a short YAML text "
                              f"(at most {MAX_SUITE_BYTES // 2**20} MiB)")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read suite {path}: {exc.strerror or exc}") from None
    all_overrides = ([f"model.preset={preset}"] if preset else []) + list(overrides)
    return parse_suite(decode_suite(data, str(path)), source=str(path), overrides=all_overrides, path=path,
                       max_cases=max_cases)


def parse_suite(
    text: str,
    source: str = "<suite>",
    overrides: typing.Sequence[str] = (),
    path: Path | None = None,
    max_cases: int = DEFAULT_MAX_CASES,
) -> Suite:
    """Validate and expand a suite given as YAML text; every error names `source`, the line and the key."""
    if len(text) > MAX_SUITE_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters; a suite is a short YAML text "
                          f"(at most {MAX_SUITE_BYTES:,})")
    doc, root = _load_yaml(text, source)
    lines = _line_map(root)
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: a suite is a YAML mapping (name:, model:, base:, sweep:, ...); got {type(doc).__name__}")

    origins: dict[Loc, str] = {}
    problems = _Problems(source, lines, origins)
    collapsed = _apply_overrides(doc, overrides, origins, problems)
    problems.raise_if_any()

    spec = None
    try:
        spec = SuiteSpec.model_validate(doc)
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(loc[:-1]) or []
                problems.add(loc, f"unknown key {loc[-1]!r}; {_did_you_mean(loc[-1], allowed)}allowed: {', '.join(allowed)}")
            else:
                problems.add(loc, f"{err['msg']} (got {_short(err.get('input'))})")
    # Parameters are checked even when the structure has problems, so one run reports them all.
    base = _check_params(doc.get("base") or {}, ("base",), problems) if isinstance(doc.get("base"), (dict, type(None))) else {}
    sweep = doc.get("sweep") or {}
    if isinstance(sweep, dict):
        _check_case_count(sweep, source, max_cases)
    axes, excludes, includes = _check_sweep(sweep, problems) if isinstance(sweep, dict) else ([], [], [])
    if spec is None:
        problems.raise_if_any()
    _check_model(spec, problems)
    if spec.reference is not None:
        _check_reference(spec.reference, problems)
    _check_gates(spec.gates, problems)
    problems.raise_if_any()

    cases_params = _expand(P.defaults() | base, axes, excludes, includes)
    if not cases_params:
        problems.add(("sweep",), "the sweep leaves no case (every product case is excluded)")
        problems.raise_if_any()
    varying = _varying(cases_params, [k for k, _ in axes] + [k for row in includes for k in row])

    config = get_preset(spec.model.preset)
    ids = [_case_id(p, varying) for p in cases_params]
    seen_messages: set[str] = set()
    for case_id, p in zip(ids, cases_params):
        try:
            P.check_case(p, config)
        except ConfigError as exc:
            if str(exc) not in seen_messages:
                seen_messages.add(str(exc))
                problems.add(_origin_of(p, str(exc), axes, base), f"case {case_id!r} cannot run: {exc}")
        if spec.timing == "sampled" and p["mode"] == "refine":
            problems.add(("timing",), f"case {case_id!r}: timing sampled does not support mode 'refine' "
                         "(two schedules); use timing: full")
    problems.raise_if_any()

    references = _resolve_references(spec.reference, ids, cases_params, varying, collapsed, problems)
    problems.raise_if_any()

    groups = _group_labels(cases_params)
    cases = tuple(
        Case(case_id=i, params={k: P.jsonable(v) for k, v in p.items()}, reference_id=r, group=g)
        for i, p, r, g in zip(ids, cases_params, references, groups)
    )
    return Suite(spec=spec, path=path, cases=cases, varying=tuple(varying), overrides=tuple(overrides))


def _apply_overrides(doc: dict, overrides: typing.Sequence[str], origins: dict[Loc, str], problems: _Problems) -> set[str]:
    """Apply `key=value` overrides to the raw document; return the case parameters they fixed."""
    specs = P.catalog()
    fixed: set[str] = set()
    for text in overrides:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.add(("--set",), f"{text!r} is not key=value (e.g. steps=2, repeats=1, model.preset=tiny)")
            continue
        try:
            value = _load_yaml(raw, f"--set {text}")[0] if raw.strip() else ""
        except _NotYaml:
            value = raw
        name = key[len("base."):] if key.startswith("base.") else key
        if name in specs:
            _fix_parameter(doc, name, value)
            origins[("base", name)] = f"--set {text}"
            fixed.add(name)
            continue
        parts = key.split(".")
        node = doc
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.add(tuple(parts[: depth + 1]), f"--set {text}: {'.'.join(parts[: depth + 1])} is not a mapping")
                break
            node = child
        else:
            node[parts[-1]] = value
            origins[tuple(parts)] = f"--set {text}"
    return fixed


def _fix_parameter(doc: dict, name: str, value: Any) -> None:
    """Give parameter `name` the value `value` in every case: base, sweep rows and reference."""
    if doc.get("base") is None:
        doc["base"] = {}
    if isinstance(doc["base"], dict):  # otherwise validation reports base's type
        doc["base"][name] = value
    sweep = doc.get("sweep")
    if isinstance(sweep, dict):
        sweep.pop(name, None)
        if isinstance(sweep.get("exclude"), list):  # a row naming another value can no longer match
            sweep["exclude"] = [row for row in sweep["exclude"]
                                if not (isinstance(row, dict) and name in row and row[name] != value)]
        if isinstance(sweep.get("include"), list):
            sweep["include"] = [dict(row, **{name: value}) if isinstance(row, dict) else row for row in sweep["include"]]
    ref = doc.get("reference")
    if isinstance(ref, dict):
        if isinstance(ref.get("where"), dict):
            ref["where"].pop(name, None)
        if isinstance(ref.get("match"), list):
            ref["match"] = [m for m in ref["match"] if m != name]


def _check_model(spec: SuiteSpec, problems: _Problems) -> None:
    if spec.model.preset not in PRESETS:
        problems.add(("model", "preset"), f"unknown preset {spec.model.preset!r}; "
                     f"{_did_you_mean(spec.model.preset, PRESETS)}allowed: {', '.join(sorted(PRESETS))}")


def _check_param(name: Any, value: Any, loc: Loc, problems: _Problems) -> tuple[bool, Any]:
    """Validate one parameter name and value (the runtime spec's checks and texts); (ok, coerced value)."""
    try:
        return True, P.coerce(name, value)
    except ConfigError as exc:
        problems.add(loc, str(exc))
        return False, None


def _check_params(mapping: dict[str, Any], loc: Loc, problems: _Problems) -> dict[str, Any]:
    out = {}
    for name, value in mapping.items():
        ok, coerced = _check_param(name, value, loc + (name,), problems)
        if ok:
            out[name] = coerced
    return out


def _check_rows(rows: Any, loc: Loc, problems: _Problems) -> list[dict[str, Any]]:
    if not isinstance(rows, list):
        problems.add(loc, f"must be a list of mappings (parameter: value), got {type(rows).__name__}")
        return []
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row:
            problems.add(loc + (i,), f"each row is a non-empty mapping of parameter: value, got {row!r}")
            continue
        out.append(_check_params(row, loc + (i,), problems))
    return out


def _check_sweep(sweep: dict[str, Any], problems: _Problems):
    axes: list[tuple[str, list[Any]]] = []
    for name, values in sweep.items():
        if name in ("exclude", "include"):
            continue
        loc = ("sweep", name)
        if name not in P.catalog():
            _check_param(name, None, loc, problems)  # reports the unknown name
            continue
        if not isinstance(values, list) or not values:
            problems.add(loc, f"a sweep axis is a non-empty list of values, got {values!r} "
                         "(put a single value in base:)")
            continue
        coerced = []
        for i, value in enumerate(values):
            ok, v = _check_param(name, value, loc + (i,), problems)
            if ok:
                coerced.append(v)
        if len(coerced) == len(values):
            axes.append((name, coerced))
    excludes = _check_rows(sweep.get("exclude", []), ("sweep", "exclude"), problems)
    includes = _check_rows(sweep.get("include", []), ("sweep", "include"), problems)
    return axes, excludes, includes


def _check_case_count(sweep: dict[str, Any], source: str, max_cases: int) -> None:
    """Refuse a sweep whose product (plus include rows) exceeds `max_cases`, before any case is built."""
    lengths = {name: len(values) for name, values in sweep.items()
               if name not in ("exclude", "include") and isinstance(values, list)}
    include = sweep.get("include")
    extra = len(include) if isinstance(include, list) else 0
    count = math.prod(lengths.values()) + extra
    if count > max_cases:
        product = " x ".join(f"{n} {name}" for name, n in lengths.items()) or "no axes"
        raise ConfigError(f"{source}: the sweep makes {count:,} cases ({product}{f' + {extra} include' if extra else ''}"
                          f", before exclude), more than the limit of {max_cases:,}; narrow the sweep, or raise the "
                          "limit with --max-cases")


def _short(value: Any, limit: int = 200) -> str:
    """repr of a value, cut to `limit` characters (a huge input must not make a huge message)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_reference(ref: ReferenceSpec, problems: _Problems) -> None:
    ref.where.update(_check_params(ref.where, ("reference", "where"), problems))
    for i, name in enumerate(ref.match or []):
        if name not in P.catalog():
            _check_param(name, None, ("reference", "match", i), problems)


def _check_gates(gates: dict[str, GateSpec], problems: _Problems) -> None:
    names = metric_names()
    for name, gate in gates.items():
        if name not in names:
            problems.add(("gates", name), f"unknown metric {name!r}; {_did_you_mean(name, names)}allowed: {', '.join(names)}")
        elif gate.rel is None and gate.abs is None:
            problems.add(("gates", name), "a gate needs rel, abs or both")


# ---------------------------------------------------------------- expansion
def _expand(base: dict[str, Any], axes, excludes, includes) -> list[dict[str, Any]]:
    """Base x cartesian product of the axes, minus excluded rows, plus included rows; duplicates dropped."""
    names = [name for name, _ in axes]
    cases = []
    for combo in itertools.product(*[values for _, values in axes]):
        params = dict(base, **dict(zip(names, combo)))
        if not any(all(params[k] == v for k, v in row.items()) for row in excludes):
            cases.append(params)
    cases += [dict(base, **row) for row in includes]
    unique: dict[str, dict[str, Any]] = {}
    for params in cases:
        unique.setdefault(json.dumps({k: P.jsonable(v) for k, v in params.items()}, sort_keys=True), params)
    return list(unique.values())


def _varying(cases: list[dict[str, Any]], order: list[str]) -> list[str]:
    """Parameters whose value differs between cases, in sweep order."""
    names = list(dict.fromkeys(order + sorted(cases[0])))
    return [n for n in names if len({json.dumps(P.jsonable(c[n])) for c in cases}) > 1]


def _case_id(params: dict[str, Any], varying: list[str]) -> str:
    return ",".join(f"{k}={P.format_value(params[k])}" for k in varying) or "base"


def _origin_of(params: dict[str, Any], message: str, axes, base: dict[str, Any]) -> Loc:
    """Best guess of the value a case error is about (for its line): a parameter whose value the
    runtime's message quotes, located in its sweep axis or in base; else the sweep as a whole."""
    for name, values in axes:
        if P.format_value(params[name]) in message:
            return ("sweep", name, values.index(params[name]))
    for name in base:
        if P.format_value(params[name]) in message:
            return ("base", name)
    return ("sweep",) if axes else ("base",)


def _resolve_references(
    ref: ReferenceSpec | None,
    ids: list[str],
    cases: list[dict[str, Any]],
    varying: list[str],
    fixed: set[str],
    problems: _Problems,
) -> list[str | None]:
    if ref is None:
        return [None] * len(cases)
    match = ref.match if ref.match is not None else [n for n in varying if n not in ref.where]
    match = [m for m in match if m not in fixed]

    def key(params: dict[str, Any]) -> str:
        return json.dumps([P.jsonable(params[k]) for k in match])

    candidates: dict[str, list[str]] = {}  # references by their values of `match` (linear, not n^2)
    for other_id, other in zip(ids, cases):
        if all(other[k] == v for k, v in ref.where.items()):
            candidates.setdefault(key(other), []).append(other_id)
    out: list[str | None] = []
    for case_id, params in zip(ids, cases):
        found = candidates.get(key(params), [])
        if len(found) == 1:
            out.append(found[0])
            continue
        wanted = ", ".join([f"{k}={P.format_value(v)}" for k, v in ref.where.items()]
                           + [f"{k}={P.format_value(params[k])}" for k in match])
        if not found:
            problems.add(("reference",), f"no case has {wanted} (the reference of case {case_id!r}); "
                         "add that case to the sweep or change reference.where")
        else:
            problems.add(("reference",), f"case {case_id!r} has {len(found)} candidate references ({', '.join(found)}); "
                         "name more parameters in reference.where or reference.match")
        out.append(None)
    return out


def _group_labels(cases: list[dict[str, Any]]) -> list[str]:
    """Label of each case's process group: the load-time parameters (memory plan, load options) that vary."""
    load_names = P.load_param_names()
    keys = [tuple(P.format_value(c[n]) for n in load_names) for c in cases]
    varying = [i for i in range(len(load_names)) if len({key[i] for key in keys}) > 1]
    return [",".join(f"{load_names[i]}={key[i]}" for i in varying) or "all" for key in keys]
