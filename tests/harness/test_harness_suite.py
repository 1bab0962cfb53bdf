"""Suite files: bounded before they are expanded; validation errors name the file, line, key and what is allowed;
expansion and references."""

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


# ---------------------------------------------------------------- bounds, checked before anything is built
def _alias_bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"  a0: &a0 [{', '.join(['x'] * width)}]"]
    lines += [f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return "anchors:\n" + "\n".join(lines) + f"\nsweep:\n  prompt: *a{levels}\n"


def test_a_yaml_alias_bomb_is_refused_without_being_expanded():
    message = error_of(_alias_bomb())
    assert "the YAML expands to more than 100,000 nodes once its aliases (*name) are expanded" in message


def test_a_recursive_yaml_alias_is_refused():
    assert "a YAML alias refers to a node that contains it" in error_of("sweep: &loop\n  prompt: [*loop]\n")


def test_a_bomb_in_an_override_value_is_refused_too():
    nested = "".join(f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 10 if i else ["x"] * 10) + "], " for i in range(7))
    message = error_of("", overrides=[f"sweep.prompt=[{nested}*l6]"])
    assert "--set sweep.prompt=" in message and "more than 100,000 nodes" in message


def test_a_sweep_above_the_case_limit_is_refused_before_its_cases_are_built():
    axes = "\n".join(f"  {name}: [{', '.join(str(i) for i in range(1, 11))}]"
                     for name in ("steps", "seed", "shift", "guide_scale_high", "guide_scale_low", "prefetch_blocks"))
    message = error_of(f"sweep:\n{axes}\n")
    assert message == ("suites/t.yaml: the sweep makes 1,000,000 cases (10 steps x 10 seed x 10 shift x "
                       "10 guide_scale_high x 10 guide_scale_low x 10 prefetch_blocks, before exclude), more than the "
                       "limit of 1,000; narrow the sweep, or raise the limit with --max-cases")


def test_the_case_limit_can_be_raised_or_lowered():
    body = BASE + "sweep:\n  steps: [1, 2, 3]\n  seed: [1, 2]\n  include: [{steps: 8}]\n"
    with pytest.raises(ConfigError, match=r"makes 7 cases \(3 steps x 2 seed \+ 1 include, before exclude\)"):
        parse_suite(body, max_cases=6)
    assert len(parse_suite(body, max_cases=7).cases) == 7


@pytest.mark.parametrize("content, what", [
    ("name: caf\xe9\n".encode("latin-1"), "is not UTF-8: byte 0xe9 at line 1 is not valid UTF-8 (Latin-1 or "
                                          "Windows-1252 text?); save the file as UTF-8"),
    ("name: t\n".encode("utf-16"), "is UTF-16 text (it starts with a UTF-16 byte-order mark); a suite is UTF-8"),
    ("name: t\n".encode("utf-16-le"), "looks like UTF-16 text without a byte-order mark, not a YAML suite"),
    (b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x03\x00>\x00", "looks like a binary file (it holds NUL bytes)"),
], ids=["latin-1", "utf-16", "utf-16-no-bom", "binary"])
def test_a_suite_file_that_is_not_utf8_is_named_for_what_it_is(tmp_path, content, what):
    path = tmp_path / "s.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    assert str(info.value) == f"{path} {what}" or str(info.value).startswith(f"{path} {what}")


def test_a_utf8_suite_with_a_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes((BASE + "repeats: 1\n").encode("utf-8-sig"))
    assert load_suite(path).spec.repeats == 1


def test_a_huge_suite_file_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(BASE + "#" * (2 << 20))
    with pytest.raises(ConfigError, match=r"is 2.0 MiB; a suite is a short YAML text \(at most 1 MiB\)"):
        load_suite(path)


# ---------------------------------------------------------------- validation
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
    assert "sweep.experts[1]: experts='everywhere': not a known value; allowed: one of 'resident', 'swap'" in message
    assert "sweep.steps[1]: steps=True: a boolean is not allowed here; allowed: an integer >= 1" in message


def test_frames_not_4n_plus_1_are_rejected_with_the_runtime_message():
    message = error_of("sweep:\n  frames: [5, 80]\n")
    assert "line 5, sweep.frames[1]: frames must be 4n+1" in message
    assert "nearest valid counts: 77 or 81" in message


def test_size_of_no_multiple_of_16_is_rejected_with_the_runtime_message():
    message = error_of("sweep:\n  size: ['160*96', '1000*1000']\n")
    assert "line 5, sweep.size[1]: size '1000*1000'" in message
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
    with pytest.raises(ConfigError, match=r"base.frames \(from --set frames=80\): frames must be 4n\+1"):
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


def test_every_case_names_its_size_rule():
    suite = parse("sweep:\n  size_rule: [exact, official]\n")
    assert [c.params["size_rule"] for c in suite.cases] == ["exact", "official"]
    assert all("size_rule" in c.params for c in load_suite("smoke").cases)


def test_threads_are_a_load_option_and_part_of_the_process_group():
    suite = parse("sweep:\n  threads: [1, 2]\n")
    assert [g for g, _ in suite.groups()] == ["threads=1", "threads=2"]


def test_non_finite_guidance_in_a_sweep_is_refused_naming_each_value():
    message = error_of("sweep:\n  guide_scale_high: [.nan, .inf]\n")
    assert "sweep.guide_scale_high[0]: guide_scale_high=nan: not a finite number" in message
    assert "sweep.guide_scale_high[1]: guide_scale_high=inf: not a finite number" in message


def test_a_raised_ceiling_lets_a_suite_run_more_steps():
    with pytest.raises(ConfigError, match="above the ceiling limits.max_steps=1000"):
        parse("sweep:\n  steps: [1200]\n")
    raised = parse("sweep:\n  steps: [1200]\n", overrides=["limits.max_steps=1200"])
    assert raised.cases[0].params["steps"] == 1200
