from __future__ import annotations

import math

import pytest

from hubtransfer.stats import summarize, t_quantile, welch_interval


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.7062),
        (0.975, 4, 2.7764),
        (0.975, 10, 2.2281),
        (0.995, 3, 5.8409),
        (0.95, 20, 1.7247),
        (0.975, 1e7, 1.9600),
        (0.025, 4, -2.7764),
    ],
)
def test_t_quantiles_match_tables(p: float, df: float, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-3)


def test_summary_by_hand() -> None:
    # values 0.80, 0.82, 0.81, 0.79, 0.83: mean 0.81, s = sqrt(0.001/4) = 0.0158114,
    # half-width = 2.7764 * 0.0158114 / sqrt(5) = 0.019632
    s = summarize([0.80, 0.82, 0.81, 0.79, 0.83])
    assert s.mean == pytest.approx(0.81)
    assert s.std == pytest.approx(math.sqrt(0.001 / 4))
    assert s.half_width == pytest.approx(0.019632, abs=1e-5)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.81 - 0.019632, 0.81 + 0.019632), abs=1e-5)


def test_single_value_has_no_interval() -> None:
    s = summarize([0.9])
    assert (s.mean, s.std, s.ci_low, s.half_width, s.n) == (0.9, None, None, None, 1)


def test_welch_by_hand() -> None:
    # a: mean 0.81, var 1e-4 (n=3); b: mean 0.7233, var 6.333e-4 (n=3)
    a, b = [0.80, 0.82, 0.81], [0.70, 0.72, 0.75]
    va, vb = 1e-4 / 3, (sum((x - 0.723333) ** 2 for x in b) / 2) / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    half = t_quantile(0.975, df) * math.sqrt(va + vb)
    interval = welch_interval(a, b)
    assert interval.difference == pytest.approx(0.086667, abs=1e-5)
    assert (interval.low, interval.high) == pytest.approx(
        (0.086667 - half, 0.086667 + half), abs=1e-4
    )
    assert interval.excludes_zero
    assert not welch_interval([0.8, 0.9], [0.85, 0.84]).excludes_zero
    assert welch_interval([0.8], [0.7]).low is None
