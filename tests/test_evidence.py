"""The evidence rules on distributions with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sarssl.evidence import (
    Estimate, binomial_ci, bootstrap_ci, compare, label_saving, paired_difference, seed_interval, tiles_to_reach,
)


def test_bootstrap_interval_covers_the_mean_at_the_expected_width():
    x = np.random.default_rng(0).normal(0.0, 1.0, 400)
    est = bootstrap_ci(x, seed=1)
    assert est.low < x.mean() < est.high
    assert est.high - est.low == pytest.approx(2 * 1.96 / 20, rel=0.15)  # 2 z sigma / sqrt(n)
    assert est.n == 400 and est.value == pytest.approx(x.mean())


def test_bootstrap_coverage_is_near_95_percent():
    rng = np.random.default_rng(3)
    inside = 0
    for i in range(200):
        e = bootstrap_ci(rng.normal(2.0, 1.0, 60), n_boot=400, seed=i)
        inside += e.low < 2.0 < e.high
    assert 0.89 <= inside / 200 <= 0.99


def test_nan_units_are_dropped_not_counted():
    est = bootstrap_ci([1.0, np.nan, 3.0, np.nan], seed=0)
    assert est.n == 2 and est.value == 2.0
    with pytest.raises(ValueError, match="no finite values"):
        bootstrap_ci([np.nan])


def test_seed_interval_is_student_t():
    est = seed_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.303 -> half width 4.303 / sqrt(3)
    assert est.value == 2.0 and est.high - 2.0 == pytest.approx(4.3027 / math.sqrt(3), rel=1e-3)
    assert seed_interval([5.0]).ci == (5.0, 5.0)


def test_wilson_interval_known_values():
    est = binomial_ci(50, 100)
    assert est.value == 0.5 and est.low == pytest.approx(0.4038, abs=1e-3) and est.high == pytest.approx(0.5962, abs=1e-3)
    assert binomial_ci(0, 10).low == 0.0
    with pytest.raises(ValueError):
        binomial_ci(11, 10)


def test_compare_needs_separated_intervals_or_a_paired_difference():
    a, b = Estimate(0.86, 0.83, 0.89, 119), Estimate(0.85, 0.82, 0.88, 119)
    v = compare(a, b, higher_is_better=True)
    assert v.outcome == "tie" and not v.holds
    assert compare(Estimate(0.9, 0.885, 0.92, 100), b, True).holds
    assert compare(b, Estimate(0.9, 0.885, 0.92, 100), True).outcome == "worse"
    # lower is better (RMSE)
    assert compare(Estimate(3.0, 2.8, 3.2, 50), Estimate(4.0, 3.7, 4.3, 50), higher_is_better=False).holds
    # overlapping intervals, but the paired difference is consistent
    assert compare(a, b, True, paired=Estimate(0.01, 0.004, 0.016, 119)).holds
    assert compare(a, b, True, paired=Estimate(0.01, -0.004, 0.024, 119)).outcome == "tie"
    assert compare(a, b, False, paired=Estimate(0.01, 0.004, 0.016, 119)).outcome == "worse"
    # a paired interval that straddles 0 is a tie in either direction
    assert compare(a, b, False, paired=Estimate(0.01, -0.004, 0.024, 119)).outcome == "tie"


def test_paired_difference_finds_a_small_consistent_gain():
    rng = np.random.default_rng(0)
    base = rng.normal(0.0, 1.0, 300)
    a, b = base + 0.05 + rng.normal(0, 0.02, 300), base
    unpaired = compare(bootstrap_ci(a), bootstrap_ci(b), True)
    paired = paired_difference(a, b)
    assert unpaired.outcome == "tie" and paired.low > 0
    assert compare(bootstrap_ci(a), bootstrap_ci(b), True, paired=paired).holds
    with pytest.raises(ValueError, match="same units"):
        paired_difference([1, 2], [1, 2, 3])


def test_tiles_to_reach_interpolates_in_log_tiles():
    tiles, scores = [10, 100, 1000], [1.0, 2.0, 3.0]  # score = log10(tiles)
    assert tiles_to_reach(tiles, scores, 2.5, higher_is_better=True) == pytest.approx(10 ** 2.5)
    assert tiles_to_reach(tiles, scores, 0.5, True) == 10  # already there: the first point
    assert tiles_to_reach(tiles, scores, 4.0, True) == math.inf
    assert tiles_to_reach(tiles, [3.0, 2.0, 1.0], 1.5, higher_is_better=False) == pytest.approx(10 ** 2.5)
    with pytest.raises(ValueError, match="increasing"):
        tiles_to_reach([10, 5], [1, 2], 1.5, True)


def test_label_saving_of_a_curve_shifted_by_one_decade_is_ten():
    tiles = [4, 8, 16, 32, 64, 128, 256, 512]
    control = {t: [math.log10(t) + d for d in (-0.01, 0.0, 0.01)] for t in tiles}
    method = {t: [math.log10(t) + 1.0 + d for d in (-0.01, 0.0, 0.01)] for t in tiles}
    s = label_saving(method, control, higher_is_better=True, target=2.0, n_boot=200)
    assert s.value == pytest.approx(10.0, rel=1e-6) and s.low <= 10.0 <= s.high and not s.censored
    # default target: the control with every label (log10 512); the method reaches it at 51.2 tiles
    d = label_saving(method, control, higher_is_better=True, n_boot=200)
    assert d.value == pytest.approx(10.0, rel=1e-3) and d.target == pytest.approx(math.log10(512))


def test_label_saving_of_identical_noisy_curves_covers_one():
    """Two curves from the same law: the interval holds 1 in most repeats (5 seeds per label count)."""
    rng = np.random.default_rng(0)
    tiles = [4, 8, 16, 32, 64, 128]
    inside = 0
    for r in range(60):
        mk = lambda: {t: list(-np.log(t) + rng.normal(0, 0.05, 5)) for t in tiles}  # RMSE-like: lower is better
        s = label_saving(mk(), mk(), higher_is_better=False, target=-np.log(20.0), n_boot=150, seed=r)
        assert 0.5 < s.value < 2.0
        inside += s.low < 1.0 < s.high
    assert inside / 60 >= 0.8  # percentile bootstrap over 5 seeds covers about 91 % (measured on 100 repeats)


def test_label_saving_censored_when_the_method_starts_past_the_target():
    tiles = [10, 100]
    s = label_saving({10: [5.0], 100: [6.0]}, {10: [1.0], 100: [2.0]}, True, n_boot=10)
    assert s.censored and s.value == pytest.approx(10.0)
