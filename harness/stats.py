"""Statistics for reports and gates, on scipy: is one set of timing repeats shifted from another, and growth fits.

Mann-Whitney U (Wilcoxon rank-sum) answers "do the values of `x` tend to be lower (or higher) than
those of `y`?" without assuming a distribution, which suits timing repeats (skewed, with outliers).
`shift_test` is THE significance rule of the project: `wanbench compare` gates a time change with
it and the report marks a speed-up with it, so the two never disagree.

What scipy does not choose for us is the method: its `exact` distribution ignores ties, and its
exact permutation distribution with ties enumerates every split (slow beyond ~10 000 splits). So:
no ties and a small pooled sample -> `exact`; ties and few splits -> the exact permutation
distribution; otherwise the normal approximation with the tie-corrected variance and a continuity
correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

ALPHA = 0.05  # significance level of shift_test (and of `wanbench compare --alpha`)
MIN_REPEATS = 5  # fewer repeats a side: no test (one-sided p cannot fall below 1/C(2n, n) = 0.05 at 3 a side)
EXACT_MAX_POOLED = 60  # no ties: scipy's exact distribution up to this pooled size
PERMUTATION_MAX_SPLITS = 10_000  # ties: exact permutation distribution up to this many splits (5 vs 5: 252)

Alternative = Literal["greater", "less"]


@dataclass(frozen=True)
class MannWhitney:
    """Result of a one-sided Mann-Whitney U test."""

    u: float  # U of x: pairs (xi, yj) with xi > yj, ties counting 1/2
    p_value: float
    method: str  # "exact", "exact permutation" or "normal approximation"
    n_x: int
    n_y: int


def mann_whitney_u(x: Sequence[float], y: Sequence[float], alternative: Alternative = "greater") -> MannWhitney:
    """One-sided Mann-Whitney U test (scipy): is `x` stochastically greater (or less) than `y`?"""
    n, m = len(x), len(y)
    if n == 0 or m == 0:
        raise ValueError("the Mann-Whitney U test needs at least one value on each side")
    if alternative not in ("greater", "less"):
        raise ValueError(f"alternative must be 'greater' or 'less', got {alternative!r}")
    from scipy import stats  # a second's import: only when a test runs (not for `wanbench --help`)

    pooled = np.asarray(list(x) + list(y), dtype=float)
    if len(np.unique(pooled)) == 1:  # every value equal: no evidence either way (scipy would divide by 0)
        return MannWhitney(n * m / 2.0, 1.0, "all values equal", n, m)
    ties = len(np.unique(pooled)) < len(pooled)
    if not ties and n + m <= EXACT_MAX_POOLED:
        method, name = "exact", "exact"
    elif ties and math.comb(n + m, n) <= PERMUTATION_MAX_SPLITS:
        method, name = stats.PermutationMethod(n_resamples=np.inf), "exact permutation"
    else:
        method, name = "asymptotic", "normal approximation"
    result = stats.mannwhitneyu(x, y, alternative=alternative, method=method, use_continuity=True)
    return MannWhitney(float(result.statistic), min(1.0, float(result.pvalue)), name, n, m)


@dataclass(frozen=True)
class Shift:
    """Whether repeats `x` are significantly lower or higher than repeats `y` (see shift_test)."""

    n_x: int
    n_y: int
    direction: Alternative | None  # "less" when x's median is below y's, "greater" above, None when equal
    p_value: float | None  # None: not tested (too few repeats, or equal medians)
    alpha: float
    min_repeats: int

    @property
    def tested(self) -> bool:
        """True when both sides had enough repeats for the test."""
        return min(self.n_x, self.n_y) >= self.min_repeats

    @property
    def significant(self) -> bool:
        """True when the test rejects 'no shift' at alpha."""
        return self.p_value is not None and self.p_value < self.alpha


def shift_test(x: Sequence[float], y: Sequence[float], alpha: float = ALPHA,
               min_repeats: int = MIN_REPEATS) -> Shift:
    """Is `x` shifted from `y` in the direction of their medians? One-sided Mann-Whitney U at `alpha`.

    Not tested (p None) when either side has fewer than `min_repeats` values or the medians are equal."""
    n_x, n_y = len(x), len(y)
    if min(n_x, n_y) < min_repeats:
        return Shift(n_x, n_y, None, None, alpha, min_repeats)
    mx, my = float(np.median(x)), float(np.median(y))
    if mx == my:
        return Shift(n_x, n_y, None, None, alpha, min_repeats)
    direction: Alternative = "less" if mx < my else "greater"
    return Shift(n_x, n_y, direction, mann_whitney_u(x, y, direction).p_value, alpha, min_repeats)


# ---------------------------------------------------------------- growth fits
@dataclass(frozen=True)
class Fit:
    """A fitted curve y = f(x): a power law (coef * x**exponent) or a line (coef + slope * x)."""

    kind: Literal["power", "linear"]
    coef: float
    exponent_or_slope: float
    r2: float | None  # None with two points (any curve of two parameters passes through both) or constant y
    points: int

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        """The fitted y at x."""
        x = np.asarray(x, dtype=float)
        if self.kind == "power":
            return self.coef * np.power(x, self.exponent_or_slope)
        return self.coef + self.exponent_or_slope * x


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float | None]:
    """Intercept, slope and R^2 of the least-squares line y ~ a + b x (scipy.stats.linregress)."""
    if np.all(y == y[0]):  # a flat line: R^2 is undefined (no variance to explain)
        return float(y[0]), 0.0, None
    from scipy import stats

    fit = stats.linregress(x, y)
    return float(fit.intercept), float(fit.slope), float(fit.rvalue) ** 2 if len(x) > 2 else None


def _finite_with_two_x(x: Sequence[float], y: Sequence[float], positive: bool) -> tuple[np.ndarray, np.ndarray] | None:
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xa) & np.isfinite(ya)
    if positive:
        keep &= (xa > 0) & (ya > 0)
    xa, ya = xa[keep], ya[keep]
    return (xa, ya) if len(np.unique(xa)) >= 2 else None


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> Fit | None:
    """y = coef * x**exponent by least squares in log-log space; None without 2 distinct positive x."""
    points = _finite_with_two_x(x, y, positive=True)
    if points is None:
        return None
    xa, ya = points
    intercept, slope, r2 = _line(np.log(xa), np.log(ya))
    return Fit("power", math.exp(intercept), slope, r2, len(xa))


def fit_linear(x: Sequence[float], y: Sequence[float]) -> Fit | None:
    """y = coef + slope * x by least squares; None without 2 distinct x."""
    points = _finite_with_two_x(x, y, positive=False)
    if points is None:
        return None
    xa, ya = points
    intercept, slope, r2 = _line(xa, ya)
    return Fit("linear", intercept, slope, r2, len(xa))
