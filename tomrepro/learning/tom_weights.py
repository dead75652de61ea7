"""One round of TOM's weight estimation on a buffer (or prefix) for a given policy.

D^pi is the last `recent_size` transitions. The reward comes from a freshly trained
discriminator (`tom`) or is 1 on D^pi and 0 elsewhere (`tom-nodisc`); the dual-RL estimator then
turns it into one weight per transition, normalised to mean 1. Diagnostics record what a reader
needs to judge the round: losses per step, effective sample size, weight quantiles, and the mean
reward on D^pi against the rest.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from tomrepro.core.errors import TomreproError
from tomrepro.core.learners import DualConvergence, TOMConfig
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.discriminator import discriminator_reward, train_discriminator
from tomrepro.learning.dual_rl import (
    Actor,
    OccupancyRatioEstimator,
    TransitionTensors,
    fit_to_convergence,
)

QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


@dataclass(frozen=True)
class WeightEstimate:
    weights: np.ndarray  # (N,), mean 1
    diagnostics: dict[str, Any]


def weight_summary(weights: np.ndarray) -> dict[str, Any]:
    """Effective sample size (as a share of N) and quantiles of a weight vector."""
    ess = float(weights.sum() ** 2 / np.square(weights).sum())
    return {
        "effective_sample_size": ess,
        "effective_sample_share": ess / len(weights),
        "quantiles": {
            str(q): float(v)
            for q, v in zip(QUANTILES, np.quantile(weights, QUANTILES), strict=True)
        },
    }


def estimate_tom_weights(
    columns: Mapping[str, np.ndarray],
    actor: Actor,
    cfg: TOMConfig,
    *,
    use_discriminator: bool,
    seed: int,
    device: torch.device,
    estimator: OccupancyRatioEstimator | None = None,
    discriminator_seed: int | None = None,
    converge: DualConvergence | None = None,
    initial_observations: np.ndarray | None = None,
) -> tuple[WeightEstimate, OccupancyRatioEstimator]:
    """Weights for every row of `columns` under `actor`; pass `estimator` back in to keep Q.

    `seed` seeds a new estimator; the discriminator's seed defaults to round 0's of `seed`.
    With `converge`, Q trains in windows until that criterion holds (a one-off estimate)
    instead of `cfg.q_steps` steps (an online round, whose Q persists).
    `initial_observations` (M, obs) are draws s0 ~ mu0 for the dual's initial term; by default
    they are the rows that start an episode (`episode_steps == 0`), or the first row if none do."""
    if discriminator_seed is None:
        discriminator_seed = derive_seed(seed, "tom/discriminator", 0)
    n, k = len(columns["rewards"]), cfg.recent_size
    if n < k:
        raise TomreproError(
            f"the buffer prefix holds {n} transitions, fewer than the "
            f"{k} that D^pi needs (tom.recent_size)"
        )
    obs = torch.as_tensor(columns["observations"], device=device)
    act = torch.as_tensor(columns["actions"], device=device)
    next_obs = torch.as_tensor(columns["next_observations"], device=device)
    obs_dim, act_dim = obs.shape[1], act.shape[1]
    if initial_observations is not None:
        initial = torch.as_tensor(initial_observations, device=device, dtype=obs.dtype)
        if initial.ndim != 2 or initial.shape[1] != obs_dim or len(initial) == 0:
            raise TomreproError(
                f"initial observations must be a non-empty (M, {obs_dim}) array, "
                f"not {tuple(initial.shape)}"
            )
    else:
        starts = columns["episode_steps"] == 0
        initial = obs[torch.as_tensor(starts, device=device)] if starts.any() else obs[:1]
    actor = actor.to(device)
    diagnostics: dict[str, Any] = {
        "rows": n,
        "recent_size": k,
        "divergence": cfg.divergence,
        "discriminator": use_discriminator,
    }
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    if use_discriminator:
        sas = torch.cat((obs, act, next_obs), dim=1)
        disc, disc_losses = train_discriminator(
            sas[-k:], sas, cfg, obs_dim, act_dim, torch.Generator().manual_seed(discriminator_seed)
        )
        reward = discriminator_reward(disc, sas)
        diagnostics["discriminator_loss"] = disc_losses
    else:
        reward = torch.zeros(n, device=device)
        reward[-k:] = 1.0
    seconds["discriminator"] = time.perf_counter() - tick
    diagnostics["reward_mean_recent"] = float(reward[-k:].mean())
    diagnostics["reward_mean_older"] = float(reward[:-k].mean()) if n > k else None
    data = TransitionTensors(
        obs,
        act,
        reward,
        next_obs,
        1.0 - torch.as_tensor(columns["terminations"], device=device).float(),
    )
    if estimator is None:
        estimator = OccupancyRatioEstimator(obs_dim, act_dim, cfg, device, seed)
    tick = time.perf_counter()
    if converge is None:
        diagnostics["q_loss"] = estimator.fit(data, initial, actor)
    else:
        diagnostics["q_loss"], diagnostics["q_convergence"] = fit_to_convergence(
            estimator, data, initial, actor, converge
        )
    seconds["dual_q"] = time.perf_counter() - tick
    tick = time.perf_counter()
    weights = estimator.weights(data, actor).cpu().numpy().astype(np.float64)
    seconds["weights"] = time.perf_counter() - tick
    diagnostics.update(weight_summary(weights))
    diagnostics["seconds"] = seconds
    return WeightEstimate(weights, diagnostics), estimator


def recency_statistics(weights: np.ndarray, env_steps: np.ndarray, bins: int) -> dict[str, Any]:
    """How weight depends on a transition's age (claim C1).

    Rows are split into `bins` equal-count bins by age (bin 0 oldest, last bin newest); reported
    are the mean weight per bin, the newest-bin / oldest-bin ratio, and Spearman's rank
    correlation of weight with recency (NaN when the weights are constant, as for MLE).
    """
    from scipy.stats import spearmanr

    order = np.argsort(env_steps, kind="stable")
    edges = np.linspace(0, len(weights), bins + 1).astype(np.int64)
    by_age = np.array([weights[order[a:b]].mean() for a, b in pairwise(edges)])
    constant = np.ptp(weights) == 0
    return {
        "weight_by_age": by_age,
        "newest_oldest_ratio": float(by_age[-1] / by_age[0]) if by_age[0] > 0 else float("inf"),
        "spearman_recency": float("nan")
        if constant
        else float(spearmanr(weights, env_steps).statistic),
    }
