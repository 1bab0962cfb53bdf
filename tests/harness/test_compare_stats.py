"""harness.stats: the Mann-Whitney U test behind the time gates, and the growth fits of the report."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from harness.stats import fit_linear, fit_power_law, mann_whitney_u, midranks


def _brute_force_upper_tail(x, y) -> float:
    """P(rank sum of len(x) values drawn from the pooled midranks >= x's), by listing every draw."""
    ranks = midranks(list(x) + list(y))
    observed = ranks[: len(x)].sum()
    sums = [sum(c) for c in itertools.combinations(ranks, len(x))]
    return sum(s >= observed - 1e-9 for s in sums) / len(sums)


def test_midranks_share_the_mean_rank_between_ties():
    assert midranks([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]


@pytest.mark.parametrize("x, y", [
    ([5.1, 5.3, 5.2, 5.6, 5.4], [5.0, 5.05, 5.2, 4.9, 5.1]),        # one tie across the samples
    ([3, 3, 4, 4, 5, 6], [1, 2, 3, 3, 4]),                           # many ties
    ([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]),                         # x entirely below y
])
def test_exact_p_value_equals_the_enumerated_permutation_distribution(x, y):
    result = mann_whitney_u(x, y, "greater")
    assert result.method == "exact"
    assert result.p_value == pytest.approx(_brute_force_upper_tail(x, y), abs=1e-12)


def test_less_is_greater_on_the_negated_values():
    x, y = [1.0, 2.0, 2.0, 3.5], [2.0, 4.0, 5.0, 6.0, 7.0]
    expected = _brute_force_upper_tail(np.negative(x), np.negative(y))
    assert mann_whitney_u(x, y, "less").p_value == pytest.approx(expected, abs=1e-12)


def test_five_against_five_fully_separated_gives_one_in_252():
    result = mann_whitney_u([11, 12, 13, 14, 15], [1, 2, 3, 4, 5], "greater")
    assert result.u == 25.0 and result.p_value == pytest.approx(1 / math.comb(10, 5))


def test_matches_scipy_without_ties_exact_and_asymptotic():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for n, m in ((6, 7), (40, 35)):  # the second pools 75 values: normal approximation
        x, y = rng.normal(0.3, 1, n), rng.normal(0, 1, m)
        ours = mann_whitney_u(x, y, "greater")
        method = "exact" if n + m <= 60 else "asymptotic"
        theirs = scipy_stats.mannwhitneyu(x, y, alternative="greater", method=method)
        assert ours.u == pytest.approx(theirs.statistic)
        assert ours.p_value == pytest.approx(theirs.pvalue, rel=1e-9)
        assert ours.method == ("exact" if n + m <= 60 else "normal approximation")


def test_an_empty_sample_is_an_error():
    with pytest.raises(ValueError, match="at least one value"):
        mann_whitney_u([], [1.0])


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
