"""The parameter spec: one catalog from the runtime's value objects, one check and one error text per problem."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wan_runtime import spec
from wan_runtime.compute import ComputePlan
from wan_runtime.errors import ConfigError, ParameterError
from wan_runtime.fields import check_fields, parameter
from wan_runtime.load_options import LoadOptions
from wan_runtime.memory import MemoryPlan
from wan_runtime.parallel import ParallelPlan
from wan_runtime.request import MAX_SEED, GenerationRequest, Limits, RefineOptions

NAMES = list(spec.catalog())
FLOAT_PARAMS = [n for n, p in spec.catalog().items() if p.kind is float]


def valid(**values):
    return spec.validate({"prompt": "a cat", **values})


def error_of(**values) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        valid(**values)
    return info.value


# ---------------------------------------------------------------- any input: a valid dict or our error
_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.integers(4301, 5000).map(lambda digits: 10**digits), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["160*96", "480p", "720p", "1280*720", "99984*99984", "swap", "stream", "fp8", "dpm++",
                     "official", "refine", "flash", "nan", "inf", "4"]),
)
_value = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)
_key = st.one_of(st.sampled_from(NAMES), st.text(max_size=20))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_key, _value, max_size=8))
def test_any_mapping_gives_every_parameter_or_the_projects_own_error(mapping):
    try:
        values = spec.validate(mapping, base={"prompt": "p"})
    except ConfigError:
        return
    assert set(values) == set(NAMES)
    assert spec.validate(values) == values  # what passed once passes again unchanged


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NAMES), _value)
def test_any_value_of_a_parameter_is_coerced_or_refused_naming_that_parameter(name, value):
    try:
        spec.coerce(name, value)
    except ParameterError as exc:
        assert exc.key == name and len(str(exc)) < 400


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(NAMES), _value, max_size=6))
def test_the_value_objects_accept_exactly_what_the_spec_accepts(mapping):
    raw = spec.defaults() | {"prompt": "p"} | mapping
    try:
        values = spec.validate(raw)
    except ConfigError:
        with pytest.raises(ConfigError):
            spec.check_together(raw)  # built straight from the raw values: __post_init__ refuses too
        return
    assert spec.build(GenerationRequest, raw, image=None) == spec.build(GenerationRequest, values, image=None)
    assert spec.build(MemoryPlan, raw) == spec.build(MemoryPlan, values)


# ---------------------------------------------------------------- one behaviour each
def test_nan_guidance_is_refused_naming_the_key():
    exc = error_of(guide_scale_high=math.nan)
    assert exc.key == "guide_scale_high"
    assert str(exc) == "guide_scale_high=nan: not a finite number; allowed: a finite number"


@pytest.mark.parametrize("name", FLOAT_PARAMS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_every_number_parameter_refuses_non_finite_values(name, value):
    assert "not a finite number" in str(error_of(**{name: value}))


def test_a_seed_torch_cannot_take_is_refused_with_the_allowed_range():
    exc = error_of(seed=2**70)
    assert exc.key == "seed"
    assert "allowed: an integer from -1 to 18446744073709551615" in str(exc)


def test_the_largest_seed_allowed_is_the_largest_torch_takes():
    import torch

    torch.Generator().manual_seed(MAX_SEED)
    with pytest.raises((RuntimeError, ValueError)):
        torch.Generator().manual_seed(MAX_SEED + 1)
    assert valid(seed=MAX_SEED)["seed"] == MAX_SEED


def test_steps_above_the_ceiling_are_refused_naming_how_to_raise_it():
    exc = error_of(steps=1001)
    assert exc.key == "steps"
    assert "above the ceiling limits.max_steps=1000" in str(exc) and "--max_steps" in str(exc)


def test_steps_above_the_default_ceiling_pass_once_the_limit_is_raised():
    assert valid(steps=5000, **{"limits.max_steps": 5000})["steps"] == 5000


def test_frames_above_the_ceiling_are_refused():
    assert error_of(frames=100001).key == "frames"


def test_a_side_above_the_ceiling_is_refused_before_anything_is_allocated():
    exc = error_of(size="99984*99984")
    assert "above the ceiling limits.max_side=4096" in str(exc)


def test_an_output_size_above_the_ceiling_is_refused():
    assert error_of(output_size=[8192, 64]).key == "output_size"


def test_an_unknown_key_suggests_the_closest_and_lists_the_allowed():
    message = str(error_of(stesp=4))
    assert message.startswith("unknown parameter 'stesp'; did you mean 'steps'? allowed: prompt, ")


def test_a_missing_prompt_is_named():
    with pytest.raises(ParameterError, match="prompt is missing"):
        spec.validate({})


def test_text_is_not_taken_for_a_number():
    assert "text is not allowed here" in str(error_of(steps="4"))


def test_a_json_list_becomes_the_output_size_pair():
    assert valid(output_size=[64, 32])["output_size"] == (64, 32)


def test_an_unknown_choice_suggests_the_closest():
    assert "did you mean 'dpm++'?" in str(error_of(solver="dpm"))


def test_a_library_user_gets_the_same_text_as_the_spec():
    with pytest.raises(ParameterError) as direct:
        GenerationRequest(image=None, prompt="p", guide_scale_high=math.nan)
    assert str(direct.value) == str(error_of(guide_scale_high=math.nan))


def test_refine_fields_are_named_with_their_prefix_in_library_errors():
    with pytest.raises(ParameterError, match=r"^refine\.strength=1\.5: too large"):
        RefineOptions(strength=1.5)


def test_a_raised_ceiling_reaches_a_library_request():
    request = GenerationRequest(image=None, prompt="p", steps=2000, limits=Limits(max_steps=2000))
    assert request.steps == 2000


def test_a_nested_value_object_of_the_wrong_type_is_refused():
    with pytest.raises(ConfigError, match="GenerationRequest.refine must be a RefineOptions"):
        GenerationRequest(image=None, prompt="p", refine={"strength": 0.5})


def test_catalog_defaults_are_the_value_objects_defaults():
    assert spec.defaults()["steps"] == GenerationRequest(image=None, prompt="p").steps
    assert spec.defaults()["experts"] == MemoryPlan().experts
    assert spec.defaults()["attention"] == LoadOptions().attention


def test_every_parameter_says_where_it_goes_and_has_a_doc():
    for name, param in spec.catalog().items():
        assert param.target in {e.target for e in spec.VALUE_OBJECTS}, name
        assert param.doc, name


def test_load_names_are_the_memory_compute_and_parallel_plan_and_load_option_fields():
    plan = [f.name for f in dataclasses.fields(MemoryPlan)]
    compute = [f.name for f in dataclasses.fields(ComputePlan)]
    parallel = [f.name for f in dataclasses.fields(ParallelPlan)]
    assert spec.load_names() == (*plan, *compute, "attention", "cross_attention", "threads", *parallel)


def test_fp8_compute_without_fp8_storage_is_refused_by_the_spec():
    with pytest.raises(ConfigError, match="matmul='fp8'.*needs weight_dtype='fp8'"):
        spec.validate({"prompt": "p", "matmul": "fp8", "weight_dtype": "bf16"})
    assert spec.validate({"prompt": "p", "matmul": "fp8", "weight_dtype": "fp8"})["matmul"] == "fp8"


def test_a_value_object_joins_the_catalog_with_one_registration(monkeypatch):
    @dataclass(frozen=True)
    class ExamplePlan:
        example_degree: int = parameter(1, "an example degree", ge=1)

        def __post_init__(self) -> None:
            check_fields(self)

    monkeypatch.setattr(spec, "VALUE_OBJECTS", (*spec.VALUE_OBJECTS, spec.ValueObject("example", ExamplePlan, at_load=True)))
    spec.catalog.cache_clear()
    try:
        assert spec.lookup("example_degree").target == "example"
        assert "example_degree" in spec.load_names()
        assert spec.build(ExamplePlan, valid(example_degree=4)) == ExamplePlan(4)
        assert error_of(example_degree=0).key == "example_degree"
    finally:
        monkeypatch.undo()
        spec.catalog.cache_clear()


def test_two_value_objects_with_one_field_name_are_refused(monkeypatch):
    @dataclass(frozen=True)
    class Clash:
        steps: int = parameter(1, "a second meaning of steps")

    monkeypatch.setattr(spec, "VALUE_OBJECTS", (*spec.VALUE_OBJECTS, spec.ValueObject("clash", Clash)))
    spec.catalog.cache_clear()
    try:
        with pytest.raises(ConfigError, match="'steps' is defined by both request and clash"):
            spec.catalog()
    finally:
        monkeypatch.undo()
        spec.catalog.cache_clear()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "xla", ""])
def test_a_device_the_runtime_does_not_run_on_is_refused(device):
    with pytest.raises(ParameterError, match="allowed: cpu, cuda, cuda:N"):
        spec.check_device_name(device)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:3", "mps"])
def test_device_names_the_runtime_runs_on_pass(device):
    assert spec.check_device_name(device) == device


def test_checking_parameters_imports_neither_torch_nor_numpy():
    code = ("import sys; from wan_runtime import spec; spec.validate({'prompt': 'p', 'steps': 4}); "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
