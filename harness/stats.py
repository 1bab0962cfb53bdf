"""Small statistics for reports and gates: the Mann-Whitney U test and growth fits, numpy only.

Mann-Whitney U (Wilcoxon rank-sum) answers "do the values of `x` tend to be larger than those of
`y`?" without assuming a distribution, which suits timing repeats (skewed, with outliers). Ties
get midranks. The p-value is exact while the pooled sample is small: the permutation distribution
of x's rank sum over every way of choosing len(x) of the pooled midranks, counted by dynamic
programming (so ties are handled exactly too). Larger samples use the normal approximation with the
tie-corrected variance and a continuity correction. asv gates benchmark changes the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

EXACT_MAX_POOLED = 60  # pooled sizes up to this get the exact distribution (a few ms at most)


@dataclass(frozen=True)
class MannWhitney:
    """Result of a one-sided Mann-Whitney U test."""

    u: float  # U of x: pairs (xi, yj) with xi > yj, ties counting 1/2
    p_value: float
    method: str  # "exact" or "normal approximation"
    n_x: int
    n_y: int


def midranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..N of `values`, tied values sharing the mean of their ranks."""
    a = np.asarray(values, dtype=float)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=float)
    sorted_a = a[order]
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and sorted_a[j + 1] == sorted_a[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0  # mean of ranks i+1 .. j+1
        i = j + 1
    return ranks


def _exact_upper_tail(doubled_ranks: np.ndarray, n: int, observed: int) -> float:
    """P(sum of n ranks drawn without replacement >= observed), ranks and sum doubled to integers."""
    total = int(doubled_ranks.sum())
    # counts[k, s]: number of k-subsets of the ranks seen so far whose doubled sum is s.
    counts = np.zeros((n + 1, total + 1), dtype=np.float64)
    counts[0, 0] = 1.0
    for r in doubled_ranks.astype(int):
        # Adding rank r to every (k-1)-subset gives a k-subset; the right side is copied before
        # the assignment, so each rank is used at most once.
        counts[1:, r:] = counts[1:, r:] + counts[:-1, : total + 1 - r]
    row = counts[n]
    return float(row[observed:].sum() / row.sum())


def mann_whitney_u(
    x: Sequence[float], y: Sequence[float], alternative: Literal["greater", "less"] = "greater"
) -> MannWhitney:
    """One-sided Mann-Whitney U test: is `x` stochastically greater (or less) than `y`?"""
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        raise ValueError("the Mann-Whitney U test needs at least one value on each side")
    ranks = midranks(list(x) + list(y))
    rank_sum_x = float(ranks[:n].sum())
    u = rank_sum_x - n * (n + 1) / 2.0
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    if n + m <= EXACT_MAX_POOLED:
        doubled = np.rint(ranks * 2).astype(int)  # midranks are multiples of 1/2
        if alternative == "greater":
            p = _exact_upper_tail(doubled, n, int(round(2 * rank_sum_x)))
        else:  # "x less than y" is "the negated x greater than the negated y": reflect the ranks
            reflected = (len(ranks) + 1) * 2 - doubled
            p = _exact_upper_tail(reflected, n, int(reflected[:n].sum()))
        return MannWhitney(u, min(1.0, p), "exact", n, m)
    big_n = n + m
    _, tie_counts = np.unique(np.asarray(list(x) + list(y), dtype=float), return_counts=True)
    tie_term = float(((tie_counts**3) - tie_counts).sum()) / (big_n * (big_n - 1))
    variance = n * m / 12.0 * ((big_n + 1) - tie_term)
    mean = n * m / 2.0
    if variance <= 0:  # every value equal: no evidence either way
        return MannWhitney(u, 1.0, "normal approximation", n, m)
    shift = (u - mean - 0.5) if alternative == "greater" else (mean - u - 0.5)
    z = shift / math.sqrt(variance)
    return MannWhitney(u, 0.5 * math.erfc(z / math.sqrt(2.0)), "normal approximation", n, m)


# ---------------------------------------------------------------- growth fits
@dataclass(frozen=True)
class Fit:
    """A fitted curve y = f(x): a power law (coef * x**exponent) or a line (coef + slope * x)."""

    kind: Literal["power", "linear"]
    coef: float
    exponent_or_slope: float
    r2: float | None  # None with two points (any curve of two parameters passes through both)
    points: int

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """The fitted y at x."""
        x = np.asarray(x, dtype=float)
        if self.kind == "power":
            return self.coef * np.power(x, self.exponent_or_slope)
        return self.coef + self.exponent_or_slope * x


def _least_squares(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float | None]:
    """Intercept, slope and R^2 of y ~ a + b x (R^2 None for two points)."""
    slope, intercept = np.polyfit(x, y, 1)
    if len(x) <= 2:
        return float(intercept), float(slope), None
    residual = float(((y - (intercept + slope * x)) ** 2).sum())
    spread = float(((y - y.mean()) ** 2).sum())
    return float(intercept), float(slope), (1.0 - residual / spread) if spread > 0 else None


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> Fit | None:
    """y = coef * x**exponent by least squares in log-log space; None without 2 distinct positive x."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (xa > 0) & (ya > 0) & np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    if len(np.unique(xa)) < 2:
        return None
    intercept, slope, r2 = _least_squares(np.log(xa), np.log(ya))
    return Fit("power", math.exp(intercept), slope, r2, len(xa))


def fit_linear(x: Sequence[float], y: Sequence[float]) -> Fit | None:
    """y = coef + slope * x by least squares; None without 2 distinct x."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    if len(np.unique(xa)) < 2:
        return None
    intercept, slope, r2 = _least_squares(xa, ya)
    return Fit("linear", intercept, slope, r2, len(xa))
