"""harness.stats: the shift test behind the time gates and the report's speed-ups, and the growth fits.

The test itself is scipy's; what the project adds is the choice of method (exact with ties for small
samples) and the rule "one-sided, in the direction of the medians, at least 5 repeats a side".
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from harness.stats import fit_linear, fit_power_law, mann_whitney_u, shift_test


def _enumerated_upper_tail(x, y) -> float:
    """P(rank sum of len(x) values drawn from the pooled midranks >= x's), by listing every draw."""
    ranks = stats.rankdata(list(x) + list(y))
    observed = ranks[: len(x)].sum()
    sums = [sum(c) for c in itertools.combinations(ranks, len(x))]
    return sum(s >= observed - 1e-9 for s in sums) / len(sums)


@pytest.mark.parametrize("x, y", [
    ([5.1, 5.3, 5.2, 5.6, 5.4], [5.0, 5.05, 5.2, 4.9, 5.1]),        # one tie across the samples
    ([3, 3, 4, 4, 5, 6], [1, 2, 3, 3, 4]),                           # many ties
])
def test_small_samples_with_ties_get_the_exact_permutation_p_value(x, y):
    result = mann_whitney_u(x, y, "greater")
    assert result.method == "exact permutation"
    assert result.p_value == pytest.approx(_enumerated_upper_tail(x, y), abs=1e-12)


def test_without_ties_the_p_value_is_scipys_exact_one():
    x, y = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]
    result = mann_whitney_u(x, y, "less")
    assert result.method == "exact"
    assert result.p_value == pytest.approx(stats.mannwhitneyu(x, y, alternative="less", method="exact").pvalue)
    assert result.p_value == pytest.approx(_enumerated_upper_tail(np.negative(x), np.negative(y)), abs=1e-12)


def test_large_samples_use_scipys_normal_approximation_with_continuity():
    rng = np.random.default_rng(3)
    x, y = rng.normal(0.3, 1, 40).round(1), rng.normal(0, 1, 35).round(1)  # rounded: ties
    result = mann_whitney_u(x, y, "greater")
    expected = stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic", use_continuity=True)
    assert result.method == "normal approximation"
    assert result.u == pytest.approx(expected.statistic) and result.p_value == pytest.approx(expected.pvalue)


def test_five_against_five_fully_separated_gives_one_in_252():
    result = mann_whitney_u([11, 12, 13, 14, 15], [1, 2, 3, 4, 5], "greater")
    assert result.u == 25.0 and result.p_value == pytest.approx(1 / math.comb(10, 5))


def test_all_equal_values_give_no_evidence():
    assert mann_whitney_u([3.0] * 5, [3.0] * 5, "less").p_value == 1.0


def test_an_empty_sample_is_an_error():
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney_u([], [1.0])


def test_clearly_separated_repeats_are_a_significant_shift_down():
    shift = shift_test([9.7, 10.1, 9.9, 10.4, 9.8], [20.5, 22.0, 28.5, 21.3, 24.9])
    assert shift.direction == "less" and shift.significant
    assert shift.p_value == pytest.approx(1 / 252)


def test_overlapping_repeats_are_not_a_significant_shift():
    shift = shift_test([9.7, 15.2, 12.0, 21.0, 14.1], [20.5, 12.5, 28.5, 14.0, 11.0])
    assert shift.tested and not shift.significant and shift.p_value > 0.05


def test_fewer_than_five_repeats_a_side_are_not_tested():
    shift = shift_test([1.0, 1.1, 1.2], [5.0, 5.1, 5.2, 5.3, 5.4])
    assert not shift.tested and shift.p_value is None and not shift.significant


def test_power_law_fit_recovers_a_planted_exponent():
    tokens = np.array([1_000, 4_000, 16_000, 64_000])
    fit = fit_power_law(tokens, 0.02 * tokens**1.7)
    assert fit.exponent_or_slope == pytest.approx(1.7, abs=1e-9) and fit.coef == pytest.approx(0.02, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0) and fit.points == 4


def test_linear_fit_recovers_intercept_and_slope_and_two_points_have_no_r2():
    fit = fit_linear([1_000, 3_000], [2_500.0, 3_500.0])
    assert fit.coef == pytest.approx(2_000.0) and fit.exponent_or_slope == pytest.approx(0.5)
    assert fit.r2 is None


def test_one_distinct_x_gives_no_fit():
    assert fit_power_law([120, 120], [5.0, 6.0]) is None
    assert fit_linear([120], [5.0]) is None
