"""Paired effects judged by exact sign-flip tests, with a smallest effect size of interest.

Every claim is reduced to one number per independent unit (a collect run, a paired MBPO seed,
a finite MDP), signed so that the claimed direction is positive. The interval for the mean
effect inverts the one-sided sign-flip (randomisation) test: under H0 "the effects are symmetric
about delta" every pattern of signs of (d - delta) is equally likely. The test rejects
mean <= delta exactly when few subsets F of the units have a mean below delta, so the interval's
ends are order statistics of the 2^n - 1 subset means (Hartigan 1969): exact at every n, with no
resampling noise. Up to `EXACT_UNITS` units every subset is enumerated; beyond, random subsets are
drawn from a seeded generator (the test is then exact up to Monte-Carlo error).

A one-sided test at level a can reject at all only when 2^-n <= a: with a = 2.5 % that needs
n >= 6 units (`min_units_for`). The verdicts (DESIGN §9):
- reproduced: the lower end is above 0;
- not reproduced: the upper end is below the SESOI (a true null, or a reversal, is called);
- inconclusive: enough units but neither ("underpowered" when the interval is wider than 2 SESOI);
- indicative: fewer units than the claim's minimum; the estimate is shown, no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import nct
from scipy.stats import t as student_t

Verdict = Literal[
    "reproduced",
    "not reproduced",
    "inconclusive",
    "indicative",
    "not applicable",
    "sanity check passed",
    "sanity check failed",
]

# 2^16 subsets of 16 units: every subset mean in one (65536, 16) product.
EXACT_UNITS = 16
RANDOM_SUBSETS = 200_000
# Power of the exact test is simulated up to this many units; beyond, the t-test's (the two agree
# closely once the sign-flip test's discreteness is gone).
SIMULATED_POWER_UNITS = 12
POWER_TARGET = 0.8


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its interval, in the effect's own unit."""

    value: float
    low: float
    high: float

    def map(self, f: Callable[[float], float]) -> Estimate:
        """The same estimate through a monotone increasing `f` (e.g. exp of a log ratio)."""
        return Estimate(f(self.value), f(self.low), f(self.high))


def min_units_for(confidence: float) -> int:
    """Fewest units with which a one-sided sign-flip test at (1 - confidence) / 2 can reject."""
    alpha = (1 - confidence) / 2
    return math.ceil(math.log2(1 / alpha))


def _subset_means(d: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Means of every non-empty subset of `d` (or of random ones, for many units), sorted."""
    n = len(d)
    if n <= EXACT_UNITS:
        codes = np.arange(1, 2**n, dtype=np.int64)
        members = ((codes[:, None] >> np.arange(n)) & 1).astype(np.float64)
    else:
        if rng is None:
            raise ValueError(f"more than {EXACT_UNITS} units need a generator for random subsets")
        members = (rng.random((RANDOM_SUBSETS, n)) < 0.5).astype(np.float64)
        members = members[members.sum(axis=1) > 0]
    return np.sort(members @ d / members.sum(axis=1))


def sign_flip_interval(
    d: np.ndarray, confidence: float, rng: np.random.Generator | None = None
) -> tuple[float, float, float]:
    """(low, high, p): the two-sided `confidence` interval for the mean from the sign-flip test,
    and the one-sided p-value of H0 "mean <= 0". An end the test cannot reach is infinite."""
    d = np.asarray(d, dtype=np.float64)
    means = _subset_means(d, rng)
    total = len(means) + 1  # subsets including the empty one
    k = math.floor((1 - confidence) / 2 * total)
    low = float(means[k - 1]) if k >= 1 else -math.inf
    high = float(means[len(means) - k]) if k >= 1 else math.inf
    p = (1 + np.count_nonzero(means <= 0.0)) / total
    return low, high, float(p)


def _simulated_power(n: int, effect: float, sd: float, confidence: float, rng) -> float:
    """Share of normal samples (mean `effect`, sd `sd`) whose exact lower end is above 0."""
    draws = rng.normal(effect, sd, size=(2000, n))
    codes = np.arange(1, 2**n, dtype=np.int64)
    members = ((codes[:, None] >> np.arange(n)) & 1).astype(np.float64)
    means = draws @ (members / members.sum(axis=1, keepdims=True)).T  # (draws, subsets)
    k = math.floor((1 - confidence) / 2 * 2**n)
    if k < 1:
        return 0.0
    low = np.partition(means, k - 1, axis=1)[:, k - 1]
    return float(np.mean(low > 0))


def power(n: int, effect: float, sd: float, confidence: float, seed: int = 0) -> float:
    """Chance that n units with true mean `effect` (> 0) and spread `sd` give "reproduced"."""
    if n < min_units_for(confidence):
        return 0.0
    if sd <= 0 or not math.isfinite(sd):
        return 1.0 if effect > 0 else 0.0
    if n <= SIMULATED_POWER_UNITS:
        return _simulated_power(n, effect, sd, confidence, np.random.default_rng(seed))
    crit = student_t.ppf(1 - (1 - confidence) / 2, df=n - 1)
    return float(nct.sf(crit, df=n - 1, nc=effect * math.sqrt(n) / sd))


def units_needed(effect: float, sd: float, confidence: float, most: int = 1000) -> int | None:
    """Fewest units that reach `POWER_TARGET` at a true effect of `effect`; None past `most`."""
    n = max(min_units_for(confidence), 2)
    while n <= most:
        if power(n, effect, sd, confidence) >= POWER_TARGET:
            return n
        n += 1 if n < 64 else max(1, n // 8)
    return None


@dataclass(frozen=True)
class Decision:
    """A verdict on paired effects, with everything a reader needs to check it."""

    verdict: Verdict
    estimate: Estimate | None
    units: int
    sesoi: float
    p_value: float | None = None
    power: float | None = None
    units_needed: int | None = None
    underpowered: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["estimate"] = asdict(self.estimate) if self.estimate else None
        return out


def decide(
    effects: np.ndarray,
    sesoi: float,
    confidence: float,
    min_units: int,
    seed: int = 0,
) -> Decision:
    """The four-way verdict on per-unit effects (claimed direction positive)."""
    d = np.asarray(effects, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return Decision("indicative", None, 0, sesoi, note="no units with a finite effect")
    rng = np.random.default_rng(seed)
    if n < 2:
        est = Estimate(float(d.mean()), -math.inf, math.inf)
        return Decision("indicative", est, n, sesoi, note=f"fewer than {min_units} units")
    low, high, p = sign_flip_interval(d, confidence, rng)
    est = Estimate(float(d.mean()), low, high)
    sd = float(d.std(ddof=1))
    pw = power(n, sesoi, sd, confidence, seed) if sesoi > 0 else None
    needed = units_needed(sesoi, sd, confidence) if sesoi > 0 else None
    if needed is not None:
        needed = max(needed, min_units)  # below the claim's minimum no verdict is given at all
    if n < min_units:
        return Decision(
            "indicative", est, n, sesoi, p, pw, needed, note=f"fewer than {min_units} units"
        )
    if low > 0:
        verdict: Verdict = "reproduced"
    elif high < sesoi:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    wide = sesoi > 0 and high - low > 2 * sesoi
    note = ""
    if verdict == "reproduced" and high < sesoi:
        note = "the effect is real but smaller than the SESOI"
    return Decision(verdict, est, n, sesoi, p, pw, needed, underpowered=wide, note=note)


def decide_equivalence(
    effects: np.ndarray, margin: float, confidence: float, min_units: int, seed: int = 0
) -> Decision:
    """Two one-sided tests: the (2 confidence - 1) interval, e.g. 90 % for 95 %, inside
    (-margin, margin) is "reproduced" (equivalent); wholly outside it, "not reproduced"."""
    d = np.asarray(effects, dtype=np.float64)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        est = Estimate(float(d.mean()), -math.inf, math.inf) if n else None
        return Decision("indicative", est, n, margin, note=f"fewer than {min_units} units")
    low, high, _ = sign_flip_interval(d, 2 * confidence - 1, np.random.default_rng(seed))
    est = Estimate(float(d.mean()), low, high)
    if n < min_units:
        return Decision("indicative", est, n, margin, note=f"fewer than {min_units} units")
    if -margin < low and high < margin:
        verdict: Verdict = "reproduced"
    elif low >= margin or high <= -margin:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return Decision(verdict, est, n, margin, underpowered=high - low > 2 * margin)


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm-adjusted p-values (None stays None), for several rows of one claim."""
    known = [(p, i) for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(known)):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


def slope_per_step(steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of `values` (runs, evaluations) against `steps`."""
    x = steps - steps.mean()
    y = values - values.mean(axis=1, keepdims=True)
    return (y @ x) / (x @ x)
