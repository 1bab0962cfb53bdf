"""Property tests of the suite parser: any document, any values, any overrides give a valid suite or the
project's ConfigError (never another exception), and never more cases than the limit."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.params import catalog
from harness.suite import DEFAULT_MAX_CASES, Suite, parse_suite
from wan_runtime.errors import ConfigError

PARAMS = sorted(catalog())
TOP_KEYS = ["name", "description", "model", "device", "base", "sweep", "reference", "repeats", "warmup",
            "timing", "sampled", "quality", "gates"]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["160*96", "80*48", "480p", "tiny", "a14b", "cpu", "cuda", "bf16",
                                           "swap", "stream", "unipc", "refine", "gpu", "synthetic", "", "-1"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(PARAMS + TOP_KEYS) | st.text(max_size=6), inner, max_size=4), max_leaves=12)
param_values = st.one_of(scalars, st.lists(scalars, max_size=4))
sweeps = st.dictionaries(st.sampled_from(PARAMS + ["exclude", "include"]) | st.text(max_size=6),
                         st.lists(scalars, max_size=5) | values, max_size=4)
documents = st.fixed_dictionaries(
    {"name": st.sampled_from(["p", "smoke-1", "bad name", ""]) | scalars},
    optional={
        "model": st.fixed_dictionaries({}, optional={"preset": st.sampled_from(["tiny", "a14b", "x"]) | scalars,
                                                     "weights": scalars}) | values,
        "device": st.sampled_from(["cpu", "cuda", "cuda:1", "tpu"]) | scalars,
        "base": st.dictionaries(st.sampled_from(PARAMS) | st.text(max_size=6), param_values, max_size=5) | values,
        "sweep": sweeps,
        "reference": st.fixed_dictionaries({"where": st.dictionaries(st.sampled_from(PARAMS), scalars, max_size=2)},
                                           optional={"match": st.lists(st.sampled_from(PARAMS), max_size=2)})
        | values,
        "repeats": scalars, "warmup": scalars, "timing": st.sampled_from(["full", "sampled"]) | scalars,
        "sampled": values, "quality": values, "gates": values, "unknown": values,
    },
)
overrides = st.lists(st.from_regex(r"[a-z_.]{1,20}=[\w\[\], .*:-]{0,20}", fullmatch=True)
                     | st.sampled_from(["steps=2", "repeats=1", "sweep.steps=[1,2,3]", "model=3", "base=[]",
                                        "device=cuda", "size=nan", "x"]), max_size=3)


# Mostly valid values per parameter, so that many generated suites expand (and some do not).
good_values = {
    "steps": st.integers(1, 6), "seed": st.integers(0, 2**31), "prompt": st.text(max_size=8),
    "shift": st.floats(0.5, 10), "guide_scale_high": st.floats(0, 10), "frames": st.sampled_from([1, 5, 9, 4]),
    "text_encoder": st.sampled_from(["gpu", "offload_after", "cpu"]), "experts": st.sampled_from(["resident", "swap"]),
    "solver": st.sampled_from(["unipc", "dpm++", "euler"]), "mode": st.sampled_from(["both", "single_expert"]),
    "size": st.sampled_from(["80*48", "160*96", "48*80", "81*47"]),
}
good_sweeps = st.dictionaries(st.sampled_from(sorted(good_values)), st.just(None), min_size=1, max_size=3).flatmap(
    lambda names: st.fixed_dictionaries({n: st.lists(good_values[n], min_size=1, max_size=4) for n in names}))
good_documents = st.builds(
    lambda sweep, exclude, repeats, reference: {
        "name": "p", "model": {"preset": "tiny"}, "base": {"size": "80*48", "frames": 5}, "repeats": repeats,
        "sweep": {**sweep, **({"exclude": [exclude]} if exclude else {})}, **reference},
    good_sweeps,
    st.none() | st.sampled_from(sorted(good_values)).flatmap(lambda n: st.fixed_dictionaries({n: good_values[n]})),
    st.sampled_from([1, 2, 3, 0]),
    st.just({}) | st.builds(lambda name, value: {"reference": {"where": {name: value}}},
                            st.sampled_from(["steps", "seed"]), st.integers(1, 6)),
)


def _parse_or_config_error(text: str, overrides_: list[str] = (), max_cases: int = DEFAULT_MAX_CASES) -> Suite | None:
    try:
        suite = parse_suite(text, source="prop.yaml", overrides=overrides_, max_cases=max_cases)
    except ConfigError:
        return None
    assert len(suite.cases) <= max_cases
    return suite


@SETTINGS
@given(documents, overrides)
def test_any_document_gives_a_suite_or_a_config_error(doc, overrides_):
    _parse_or_config_error(yaml.safe_dump(doc, allow_unicode=True), overrides_)


@SETTINGS
@given(good_documents, overrides, st.integers(1, 64))
def test_a_suite_that_expands_is_consistent(doc, overrides_, limit):
    suite = _parse_or_config_error(yaml.safe_dump(doc), overrides_, max_cases=limit)
    if suite is None:
        return
    ids = [c.case_id for c in suite.cases]
    assert len(set(ids)) == len(ids)  # every case named once
    assert all(c.reference_id is None or c.reference_id in ids for c in suite.cases)
    assert sorted(c.case_id for _, cases in suite.groups() for c in cases) == sorted(ids)


@SETTINGS
@given(st.dictionaries(st.text(max_size=8) | st.sampled_from(TOP_KEYS), values, max_size=6))
def test_any_mapping_gives_a_suite_or_a_config_error(doc):
    _parse_or_config_error(yaml.safe_dump(doc, allow_unicode=True))


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_gives_a_suite_or_a_config_error(text):
    _parse_or_config_error(text)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["steps", "seed", "frames", "prompt", "shift", "guide_scale_high"]),
                       st.lists(st.integers(1, 60), min_size=1, max_size=12, unique=True), min_size=1, max_size=4),
       st.integers(1, 200))
def test_a_sweep_never_expands_beyond_the_case_limit(axes, limit):
    doc = {"name": "p", "model": {"preset": "tiny"}, "base": {"size": "80*48", "frames": 5}, "sweep": axes}
    suite = _parse_or_config_error(yaml.safe_dump(doc), max_cases=limit)
    product = 1
    for axis in axes.values():
        product *= len(axis)
    if product > limit:
        assert suite is None
