"""PMAC's sampling probabilities ("live in the moment", Wang et al. 2023; `litm` in TOM's code).

The official `update_litm_prob` keeps transitions in groups, one per policy version: the newest
group holds probability mass 1 - decay (0.1), shared equally by its members, and each time a new
group begins every older probability is multiplied by decay (0.9); the first group (the
exploration data) starts with mass 1. So with G the newest group, group g >= 1 has mass
(1 - decay) * decay^(G - g) and group 0 has decay^G, split equally among each group's rows.
The probabilities are never clipped. A group is a policy version at some granularity: after
every SAC burst (the official code), every model round, or every saved snapshot.
"""

from __future__ import annotations

import numpy as np


def pmac_weights(groups: np.ndarray, decay: float = 0.9) -> np.ndarray:
    """Per-row PMAC probabilities for rows in policy-version `groups` (0 = oldest), as weights
    of mean 1 (N times the probabilities)."""
    groups = np.asarray(groups, dtype=np.int64)
    if len(groups) == 0:
        return np.ones(0)
    if (groups < 0).any():
        raise ValueError("policy-version groups are non-negative")
    newest = int(groups.max())
    counts = np.bincount(groups, minlength=newest + 1)
    age = newest - np.arange(newest + 1)
    mass = (1.0 - decay) * np.power(decay, age.astype(np.float64))
    mass[0] = decay**newest
    per_row = np.divide(mass, counts, out=np.zeros_like(mass), where=counts > 0)[groups]
    return per_row * (len(groups) / per_row.sum())
