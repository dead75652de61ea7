"""Cross-task aggregates of per-run scores as rliable recommends (Agarwal et al., 2021).

The point metrics (interquartile mean, probability of improvement) are rliable's own
(`rliable.metrics`). Its interval code (`rliable.library`) is not used: it needs `arch` < 8,
whose 7.x releases fail to import under pandas 3 (a `deprecate_kwarg` signature change), and
arch 8 no longer accepts the `random_state` rliable passes. The stratified bootstrap here is the
same scheme: runs are resampled with replacement within each task, vectorised over resamples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from rliable import metrics

RESAMPLES = 2000
POI_RESAMPLES = 200
PROFILE_POINTS = 21


def _stratified(
    scores: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES
) -> np.ndarray:
    """(resamples, runs, tasks): runs redrawn with replacement inside each task."""
    runs, tasks = scores.shape
    idx = rng.integers(0, runs, size=(resamples, runs, tasks))
    return np.take_along_axis(scores[None], idx, axis=1)


def _interval(values: np.ndarray, confidence: float) -> list[float]:
    tail = (1 - confidence) / 2
    return [float(v) for v in np.quantile(values, [tail, 1 - tail])]


def aggregate_scores(
    scores: dict[str, list[np.ndarray]], confidence: float, seed: int
) -> dict[str, Any]:
    """IQM per learner, P(TOM > MLE) and performance profiles, with stratified-bootstrap
    intervals; `scores[learner]` holds one array of per-run scores per task (MLE's mean is 1)."""
    runs = min(len(a) for per_task in scores.values() for a in per_task)
    matrices = {m: np.stack([a[:runs] for a in per_task], axis=1) for m, per_task in scores.items()}
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"runs_per_task": runs, "tasks": matrices["mle"].shape[1]}
    for learner, matrix in matrices.items():
        drawn = _stratified(matrix, rng)
        flat = drawn.reshape(RESAMPLES, -1)
        lo, hi = np.quantile(flat, [0.25, 0.75], axis=1)
        inner = np.where((flat >= lo[:, None]) & (flat <= hi[:, None]), flat, np.nan)
        out[f"iqm_{learner}"] = {
            "value": float(metrics.aggregate_iqm(matrix.ravel())),
            "interval": _interval(np.nanmean(inner, axis=1), confidence),
        }
    tom, mle = matrices["tom"], matrices["mle"]
    # Each resample costs one Mann-Whitney test per task (rliable's loop), so fewer of them.
    drawn_tom, drawn_mle = (
        _stratified(tom, rng, POI_RESAMPLES),
        _stratified(mle, rng, POI_RESAMPLES),
    )
    poi = [
        metrics.probability_of_improvement(t, m) for t, m in zip(drawn_tom, drawn_mle, strict=True)
    ]
    out["probability_of_improvement"] = {
        "value": float(metrics.probability_of_improvement(tom, mle)),
        "interval": _interval(np.asarray(poi), confidence),
    }
    grid = np.linspace(
        min(float(m.min()) for m in matrices.values()),
        max(float(m.max()) for m in matrices.values()),
        PROFILE_POINTS,
    )
    out["performance_profile"] = {
        "tau": grid.tolist(),
        **{
            m: (matrix.ravel()[None, :] > grid[:, None]).mean(axis=1).tolist()
            for m, matrix in matrices.items()
        },
    }
    return out
