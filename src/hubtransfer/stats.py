"""Small-sample statistics for seed repeats: Student-t intervals, no SciPy needed.

Intervals are two-sided t-intervals: for one result, ``mean ± t(level, n-1) * s/sqrt(n)``;
for a difference of two results, Welch's interval with Welch-Satterthwaite degrees of
freedom (the seeds of two backbones are independent runs, not pairs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Interval", "Summary", "summarize", "t_quantile", "welch_interval"]


def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction of the incomplete beta function (Numerical Recipes, Lentz).
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-14:
            break
    return h


def _regularized_beta(a: float, b: float, x: float) -> float:
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def _t_cdf(t: float, df: float) -> float:
    tail = 0.5 * _regularized_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` (> 0, may be fractional) degrees of freedom."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0; got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while _t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if _t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and a two-sided t-interval of a few values.

    ``std``, ``ci_low`` and ``ci_high`` are None with a single value.
    """

    mean: float
    std: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    level: float = 0.95

    @property
    def half_width(self) -> float | None:
        """Half the width of the interval (the "±" figure)."""
        if self.ci_high is None:
            return None
        return self.ci_high - self.mean


def summarize(values: Sequence[float], level: float = 0.95) -> Summary:
    """The :class:`Summary` of ``values`` (at least one)."""
    n = len(values)
    if n == 0:
        raise ValueError("summarize() needs at least one value")
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(mean, None, None, None, 1, level)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(mean, std, mean - half, mean + half, n, level)


@dataclass(frozen=True)
class Interval:
    """A difference and its two-sided confidence interval."""

    difference: float
    low: float | None
    high: float | None
    level: float

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely on one side of zero."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def welch_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Welch's t-interval for ``mean(a) - mean(b)``; no interval with fewer than 2 each."""
    sa, sb = summarize(a, level), summarize(b, level)
    difference = sa.mean - sb.mean
    if sa.std is None or sb.std is None:
        return Interval(difference, None, None, level)
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(difference, difference, difference, level)
    df = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    half = t_quantile(0.5 + level / 2.0, df) * se
    return Interval(difference, difference - half, difference + half, level)
