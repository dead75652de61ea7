"""Weights that need no estimation: uniform (MLE) and PMAC's geometric recency decay."""

from __future__ import annotations

import numpy as np


def uniform_weights(rows: int) -> np.ndarray:
    return np.ones(rows)


def pmac_weights(
    policy_versions: np.ndarray, current_version: int, decay: float = 0.9
) -> np.ndarray:
    """decay ** (current_version - version), normalised to mean 1 (Wang et al. 2023, `litm`)."""
    age = current_version - policy_versions.astype(np.int64)
    if (age < 0).any():
        raise ValueError("a transition is newer than the current policy version")
    weights = np.power(decay, age.astype(np.float64))
    return weights / weights.mean()
