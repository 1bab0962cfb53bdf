"""Suites are bounded before they are expanded: alias bombs, sweeps above the case limit, huge or non-UTF-8 files."""

from __future__ import annotations

import textwrap

import pytest

from harness.suite import load_suite, parse_suite
from wan_runtime.errors import ConfigError

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
