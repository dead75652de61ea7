"""Percentile-bootstrap intervals, vectorised over resamples (no Python loop per resample)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# A statistic of one or two samples, each given as a (resamples, n) array; returns (resamples,).
Statistic = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    def map(self, f: Callable[[float], float]) -> Estimate:
        """The same estimate through a monotone increasing `f` (e.g. exp of a log ratio)."""
        return Estimate(f(self.value), f(self.low), f(self.high))


def bootstrap(
    samples: tuple[np.ndarray, ...],
    statistic: Statistic,
    rng: np.random.Generator,
    resamples: int,
    confidence: float,
) -> Estimate:
    """Resample each sample independently with replacement and take `statistic` on each draw.

    Independent resampling is the right scheme for seeds of two learners (unpaired); for paired
    data pass one sample of per-pair differences.
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    if any(a.ndim != 1 or len(a) == 0 for a in arrays):
        raise ValueError("bootstrap needs non-empty 1-D samples")
    point = float(statistic(*(a[None, :] for a in arrays))[0])
    drawn = [a[rng.integers(0, len(a), size=(resamples, len(a)))] for a in arrays]
    values = statistic(*drawn)
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Estimate(point, float(low), float(high))


def mean_of(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1)


def ratio_of_means(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """mean(b) / mean(a) per resample; 0 / 0 counts as 1 (no difference)."""
    num, den = b.mean(axis=1), a.mean(axis=1)
    both_zero = (num == 0) & (den == 0)
    return np.where(both_zero, 1.0, num / np.where(den == 0, 1e-12, den))


def relative_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(mean(b) - mean(a)) / |mean(a)| per resample."""
    base = a.mean(axis=1)
    return (b.mean(axis=1) - base) / np.maximum(np.abs(base), 1e-12)
