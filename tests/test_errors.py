"""first_line: what a one-line report shows of an error message."""

from __future__ import annotations

import pytest

from wan_runtime.errors import first_line


@pytest.mark.parametrize(("message", "expected"), [
    (RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"), "CUDA out of memory."),
    ("\n  leading blank lines are skipped  \nrest", "leading blank lines are skipped"),
    (RuntimeError(), ""),
    (None, ""),
])
def test_the_first_line_of_a_message_is_its_first_non_blank_line_stripped(message, expected):
    assert first_line(message) == expected


def test_a_limit_cuts_the_first_line():
    assert first_line(ValueError("x" * 500 + "\nmore"), 300) == "x" * 300
