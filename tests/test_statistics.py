"""The statistics under every verdict, against brute force: the sign-flip interval is the
inversion of the randomisation test over all sign vectors, its p-value is that test's, and
power, Holm and slopes agree with independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from tomrepro.analysis.statistics import (
    POWER_TARGET,
    decide,
    decide_equivalence,
    holm,
    min_units_for,
    power,
    sign_flip_interval,
    slope_per_step,
    units_needed,
)


def _signs(n: int) -> np.ndarray:
    """Every sign vector of length n, (2^n, n)."""
    return np.array(list(itertools.product((1.0, -1.0), repeat=n)))


def _brute_p_values(d: np.ndarray, delta: float) -> tuple[float, float]:
    """One-sided randomisation p-values of "mean <= delta" and "mean >= delta": the share of
    sign vectors whose flipped sum of (d - delta) is at least (at most) the observed one."""
    x = d - delta
    flipped = _signs(len(d)) @ x
    observed = x.sum()
    return float(np.mean(flipped >= observed)), float(np.mean(flipped <= observed))


def _probe_points(d: np.ndarray) -> np.ndarray:
    """Deltas between and beside the subset means, where membership cannot hang on a tie."""
    members = ((1 - _signs(len(d))) / 2)[1:]  # the flipped units; row 0 flips none
    means = np.unique(members @ d / members.sum(axis=1))
    mids = (means[1:] + means[:-1]) / 2
    return np.concatenate([mids, [means[0] - 1.0, means[-1] + 1.0]])


@pytest.mark.parametrize("n", [6, 7, 9])
def test_interval_is_the_inversion_of_the_sign_flip_test(n):
    rng = np.random.default_rng(n)
    d = rng.normal(0.3, 1.0, n)
    confidence = 0.9
    alpha = (1 - confidence) / 2
    low, high, _ = sign_flip_interval(d, confidence)
    for delta in _probe_points(d):
        p_above, p_below = _brute_p_values(d, delta)
        kept = p_above > alpha and p_below > alpha
        assert kept == (low <= delta <= high), delta


def test_interval_ends_are_attained_subset_means():
    d = np.random.default_rng(3).normal(0, 1, 8)
    low, high, _ = sign_flip_interval(d, 0.95)
    subsets = [np.mean(c) for k in range(1, 9) for c in itertools.combinations(d, k)]
    assert min(abs(np.asarray(subsets) - low)) < 1e-12
    assert min(abs(np.asarray(subsets) - high)) < 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_p_value_is_the_randomisation_p_value_with_ties(seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(-4, 9, size=9).astype(np.float64)  # small integers: many exact ties
    _, _, p = sign_flip_interval(d, 0.95)
    assert p == pytest.approx(_brute_p_values(d, 0.0)[0], abs=1e-15)


def test_fewer_than_six_units_can_never_reproduce_at_95_percent():
    assert min_units_for(0.95) == 6
    for n in range(2, 6):
        d = np.linspace(10.0, 20.0, n)  # all far above 0
        assert math.isinf(sign_flip_interval(d, 0.95)[0])
        assert decide(d, 50.0, 0.95, min_units=2).verdict == "inconclusive"
    six = decide(np.linspace(0.01, 0.02, 6), 50.0, 0.95, min_units=6)
    assert six.verdict == "reproduced" and six.p_value == pytest.approx(1 / 64)


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_min_units_is_the_first_n_whose_all_positive_sample_rejects(confidence):
    finite = [
        n
        for n in range(1, 12)
        if math.isfinite(sign_flip_interval(np.ones(n) + np.arange(n), confidence)[0])
    ]
    assert finite[0] == min_units_for(confidence)


def test_decide_names_each_verdict_by_its_interval():
    sesoi = 0.5
    above = decide(np.linspace(1.0, 2.0, 8), sesoi, 0.95, 6)
    below = decide(np.linspace(-0.3, 0.2, 8), sesoi, 0.95, 6)
    wide = decide(np.array([-3.0, 3.5, -2.0, 2.5, 0.5, 1.0, -1.0, 1.5]), sesoi, 0.95, 6)
    few = decide(np.linspace(1.0, 2.0, 8), sesoi, 0.95, 10)
    assert above.verdict == "reproduced" and above.estimate.low > 0
    assert below.verdict == "not reproduced" and below.estimate.high < sesoi
    assert wide.verdict == "inconclusive" and wide.underpowered
    assert few.verdict == "indicative" and few.estimate == above.estimate
    assert few.units_needed >= 10  # below the claim's minimum no number of units decides


def test_equivalence_uses_the_90_percent_interval_against_the_margin():
    margin = 0.5
    inside = np.linspace(-0.2, 0.2, 10)
    outside = np.linspace(0.8, 1.2, 10)
    straddle = np.linspace(0.1, 0.9, 10)
    result = decide_equivalence(inside, margin, 0.95, 10)
    low, high, _ = sign_flip_interval(inside, 0.9)
    assert result.verdict == "reproduced"
    assert (result.estimate.low, result.estimate.high) == (low, high)
    assert decide_equivalence(outside, margin, 0.95, 10).verdict == "not reproduced"
    assert decide_equivalence(-outside, margin, 0.95, 10).verdict == "not reproduced"
    assert decide_equivalence(straddle, margin, 0.95, 10).verdict == "inconclusive"
    assert decide_equivalence(inside, margin, 0.95, 11).verdict == "indicative"
    # 90 %, not 95 %: an interval inside the margin at 90 % but not at 95 % is equivalent.
    d = np.random.default_rng(0).normal(0.0, 0.35, 10)
    low95, high95, _ = sign_flip_interval(d, 0.95)
    low90, high90, _ = sign_flip_interval(d, 0.9)
    between = max(abs(low90), abs(high90)) * 1.01
    assert between < max(abs(low95), abs(high95))
    assert decide_equivalence(d, between, 0.95, 10).verdict == "reproduced"


def test_holm_matches_a_hand_computation():
    # sorted: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4*0.005, 3*0.01, 2*0.03, max(1*0.04, 0.06)
    assert holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx([0.03, 0.06, 0.06, None, 0.02])
    # capped at 1 and kept monotone: 2*0.5 = 1, then max(1, 0.6)
    assert holm([0.6, 0.5]) == [1.0, 1.0]
    assert holm([None]) == [None]


def test_slope_per_step_matches_polyfit():
    rng = np.random.default_rng(5)
    steps = np.array([1000.0, 2500.0, 3000.0, 4500.0, 7000.0])
    values = rng.normal(0, 10, (4, 5)) + np.outer(rng.normal(0, 1, 4), steps)
    expected = [np.polyfit(steps, row, 1)[0] for row in values]
    np.testing.assert_allclose(slope_per_step(steps, values), expected, rtol=1e-10)


def test_power_grows_with_units_and_effect():
    by_units = np.array([power(n, 0.5, 1.0, 0.95) for n in range(5, 21)])
    by_effect = np.array([power(10, e, 1.0, 0.95) for e in np.linspace(0.0, 1.5, 7)])
    for values in (by_units, by_effect):
        assert np.all(np.diff(values) >= -0.01)  # its own Monte-Carlo noise: ~0.01 at 2000 draws
        assert values[-1] - values[0] > 0.4
    assert by_units[0] == 0.0  # 5 units cannot reject at 95 %


@pytest.mark.parametrize("n, allowance", [(6, 0.0), (10, 0.0), (14, 0.03)])
def test_power_is_the_simulated_reproduced_rate(n, allowance):
    """An independent simulation of the exact rule; beyond 12 units `power` is the t-test's,
    allowed `allowance` for the sign-flip test's discreteness."""
    effect, sd, draws = 0.6, 1.0, 600
    rng = np.random.default_rng(n)
    lows = [sign_flip_interval(rng.normal(effect, sd, n), 0.95)[0] for _ in range(draws)]
    rate = float(np.mean(np.asarray(lows) > 0))
    expected = power(n, effect, sd, 0.95)
    se = math.sqrt(expected * (1 - expected) * (1 / draws + 1 / 2000))
    assert abs(rate - expected) <= 4 * se + allowance, (rate, expected)


def test_units_needed_is_the_first_n_reaching_the_target_power():
    n = units_needed(0.8, 1.0, 0.95)
    assert n is not None and n > min_units_for(0.95)
    assert power(n, 0.8, 1.0, 0.95) >= POWER_TARGET > power(n - 1, 0.8, 1.0, 0.95)
    assert units_needed(1e-4, 1.0, 0.95, most=50) is None
