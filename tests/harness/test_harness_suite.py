"""Suite files: validation errors name the file, line, key and what is allowed; expansion and references."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from harness.cli.list import render
from harness.params import catalog
from harness.registry import available
from harness.suite import load_suite, parse_suite
from wan_runtime.errors import ConfigError
from wan_runtime.memory import MemoryPlan

BASE = """\
name: t
model: {preset: tiny}
base: {size: "160*96", frames: 5}
"""


def parse(body: str, overrides=()):
    return parse_suite(BASE + textwrap.dedent(body), source="suites/t.yaml", overrides=overrides)


def error_of(body: str, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        parse(body, overrides)
    return str(info.value)


def test_smoke_suite_has_six_cases_and_one_reference_per_size():
    suite = load_suite("smoke")
    assert len(suite.cases) == 6
    references = {c.reference_id for c in suite.cases}
    assert references == {"size=48*48,steps=4,text_encoder=gpu", "size=96*64,steps=4,text_encoder=gpu"}
    for case in suite.cases:
        assert suite.case(case.reference_id).params["size"] == case.params["size"]
    assert suite.spec.repeats == 5 and suite.spec.device == "cpu" and suite.spec.model.preset == "tiny"


def test_malformed_yaml_names_the_file_and_line():
    message = error_of("sweep:\n  steps: [4, 2\nrepeats: 1\n")
    assert message.startswith("suites/t.yaml: line ")
    assert "not valid YAML" in message


def test_unknown_top_level_key_suggests_the_closest_and_lists_allowed():
    message = error_of("repeets: 3\n")
    assert "line 4, repeets: unknown key 'repeets'; did you mean 'repeats'?" in message
    assert "allowed: name, description, model" in message


def test_unknown_parameter_suggests_the_closest():
    message = error_of("sweep:\n  stpes: [2, 4]\n")
    assert "line 5, sweep.stpes: unknown parameter 'stpes'; did you mean 'steps'?" in message


def test_wrong_types_name_the_key_and_what_is_allowed():
    message = error_of("repeats: five\nsweep:\n  experts: [resident, everywhere]\n  steps: [4, true]\n")
    assert "3 problems" in message
    assert "line 4, repeats: Input should be a valid integer" in message
    assert "sweep.experts[1]: experts: Input should be 'resident' or 'swap'" in message
    assert "sweep.steps[1]: steps: expected int, got the boolean True" in message


def test_frames_not_4n_plus_1_are_rejected_with_the_runtime_message():
    message = error_of("sweep:\n  frames: [5, 80]\n")
    assert "line 5, sweep.frames[1]: case 'frames=80' cannot run: frames must be 4n+1" in message
    assert "nearest valid counts: 77 or 81" in message


def test_size_of_no_multiple_of_16_is_rejected_with_the_runtime_message():
    message = error_of("sweep:\n  size: ['160*96', '1000*1000']\n")
    assert "case 'size=1000*1000' cannot run" in message
    assert "custom sizes need both sides positive multiples of 16 (nearest: 992*992)" in message


def test_reference_naming_no_case_is_an_error():
    message = error_of("sweep:\n  steps: [2, 4]\nreference:\n  where: {steps: 8}\n")
    assert "reference: no case has steps=8 (the reference of case 'steps=2')" in message


def test_reference_matching_several_cases_is_an_error():
    message = error_of("sweep:\n  steps: [2, 4]\n  seed: [1, 2]\nreference:\n  where: {steps: 4}\n  match: []\n")
    assert "candidate references (steps=4,seed=1, steps=4,seed=2)" in message


def test_reference_defaults_to_matching_every_other_varying_parameter():
    suite = parse("sweep:\n  steps: [2, 4]\n  seed: [1, 2]\nreference:\n  where: {steps: 4}\n")
    assert suite.case("steps=2,seed=2").reference_id == "steps=4,seed=2"
    assert suite.case("steps=4,seed=1").is_reference


def test_exclude_drops_product_cases_matching_all_keys_and_include_adds_rows():
    suite = parse("""
        sweep:
          steps: [2, 4]
          experts: [resident, swap]
          exclude: [{steps: 2, experts: swap}]
          include: [{steps: 8, seed: 7}]
    """)
    ids = [c.case_id for c in suite.cases]
    assert ids == [
        "steps=2,experts=resident,seed=42",
        "steps=4,experts=resident,seed=42",
        "steps=4,experts=swap,seed=42",
        "steps=8,experts=resident,seed=7",  # keys an include row does not name take base values
    ]


def test_cases_that_load_differently_run_in_separate_groups_references_first():
    suite = parse("sweep:\n  experts: [swap, resident]\n  steps: [2, 4]\nreference:\n  where: {steps: 4, experts: resident}\n")
    groups = suite.groups()
    assert [g for g, _ in groups] == ["experts=resident", "experts=swap"]
    assert groups[0][1][0].case_id == "experts=resident,steps=4"


def test_set_override_fixes_a_swept_parameter_and_keeps_references_resolvable():
    suite = load_suite("smoke", overrides=["steps=2", "repeats=1"])
    assert len(suite.cases) == 2 and suite.spec.repeats == 1  # the 2-step offload_after cases are excluded
    assert all(c.params["steps"] == 2 for c in suite.cases)
    assert {c.reference_id for c in suite.cases} == {"size=48*48", "size=96*64"}


def test_set_override_with_an_invalid_value_names_the_override():
    with pytest.raises(ConfigError, match=r"base.frames \(from --set frames=80\): case 'base' cannot run: frames must be 4n\+1"):
        load_suite("smoke", overrides=["frames=80", "size=160*96", "steps=4", "text_encoder=gpu"])


def test_preset_option_overrides_the_model_and_unknown_presets_are_named():
    assert load_suite("smoke", preset="a14b").spec.model.preset == "a14b"
    with pytest.raises(ConfigError, match="unknown preset 'tinny'; did you mean 'tiny'"):
        load_suite("smoke", preset="tinny")


def test_every_memory_plan_field_can_be_swept():
    plan_fields = {f.name for f in dataclasses.fields(MemoryPlan)}
    assert plan_fields <= set(catalog())
    suite = parse("sweep:\n  vae_dtype: [fp32, bf16]\n")  # a field added to MemoryPlan after the harness
    assert [c.group for c in suite.cases] == ["vae_dtype=fp32", "vae_dtype=bf16"]


def test_gates_must_name_a_result_metric():
    message = error_of("gates:\n  total_s: {rel: 0.1}\n")
    assert "unknown metric 'total_s'; did you mean 'total_ms'?" in message


def test_fingerprint_changes_when_cases_or_repeats_change():
    plain = load_suite("smoke")
    assert plain.fingerprint() == load_suite("smoke").fingerprint()
    assert load_suite("smoke", overrides=["repeats=1"]).fingerprint() != plain.fingerprint()
    assert load_suite("smoke", overrides=["steps=2"]).fingerprint() != plain.fingerprint()


@pytest.mark.parametrize("name", sorted(available()))
def test_every_shipped_suite_lists_its_cases(name: str):
    suite = load_suite(name)
    text = render(suite)
    assert f"{len(suite.cases)} cases" in text
    assert all(c.case_id in text for c in suite.cases)


def test_unknown_suite_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="unknown suite 'smok'; did you mean 'smoke'"):
        load_suite("smok")
