"""One round of TOM's weight estimation on a buffer (or prefix) for a given policy.

D^pi is the last `recent_size` transitions. The reward comes from a freshly trained
discriminator (`tom`) or is 1 on D^pi and 0 elsewhere (`tom-nodisc`); the dual-RL estimator then
turns it into one weight per transition, normalised to mean 1. Diagnostics record what a reader
needs to judge the round: losses per step, effective sample size, weight quantiles, and the mean
reward on D^pi against the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from tomrepro.core.errors import TomreproError
from tomrepro.core.learners import DualConvergence, TOMConfig
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.discriminator import discriminator_reward, train_discriminators
from tomrepro.learning.dual_rl import (
    Actor,
    DualFit,
    OccupancyRatioEstimator,
    TransitionTensors,
    fit_estimators,
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


@dataclass
class TOMRound:
    """One TOM round between its checks and its weights: the rows on the device, the reward
    source, the estimator and its policy; `train_tom_rounds` trains many together."""

    cfg: TOMConfig
    use_discriminator: bool
    discriminator_seed: int
    converge: DualConvergence | None
    sas: torch.Tensor  # (N, s + a + s')
    fit: DualFit
    diagnostics: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def estimator(self) -> OccupancyRatioEstimator:
        return self.fit.estimator


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
    they are the rows that start an episode (`episode_steps == 0`), or the first row if none do.
    A population of one: `prepare_tom_round`, `train_tom_rounds`, `finish_tom_round`."""
    tom_round = prepare_tom_round(
        columns,
        actor,
        cfg,
        use_discriminator=use_discriminator,
        seed=seed,
        device=device,
        estimator=estimator,
        discriminator_seed=discriminator_seed,
        converge=converge,
        initial_observations=initial_observations,
    )
    train_tom_rounds([tom_round])
    return finish_tom_round(tom_round), tom_round.estimator


def prepare_tom_round(
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
) -> TOMRound:
    """`estimate_tom_weights`'s checks and tensors, before any training."""
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
    data = TransitionTensors(
        obs,
        act,
        torch.zeros(n, device=device),  # the reward, filled in by `train_tom_rounds`
        next_obs,
        1.0 - torch.as_tensor(columns["terminations"], device=device).float(),
    )
    if estimator is None:
        estimator = OccupancyRatioEstimator(obs_dim, act_dim, cfg, device, seed)
    return TOMRound(
        cfg,
        use_discriminator,
        discriminator_seed,
        converge,
        torch.cat((obs, act, next_obs), dim=1),
        DualFit(estimator, data, initial, actor.to(device)),
        {
            "rows": n,
            "recent_size": k,
            "divergence": cfg.divergence,
            "discriminator": use_discriminator,
        },
    )


def train_tom_rounds(rounds: Sequence[TOMRound]) -> None:
    """The discriminators, then the Q fits, of several rounds: rounds of one network shape and
    device train as one stack, each exactly as it would alone (CPU); rounds that train Q to a
    convergence criterion (one-off estimates) fit theirs alone."""
    tick = time.perf_counter()
    discriminated = [r for r in rounds if r.use_discriminator]
    for group in _groups(discriminated, lambda r: (r.sas.shape[1], r.sas.device, _key(r.cfg))):
        k, obs_dim = group[0].cfg.recent_size, group[0].fit.data.observations.shape[1]
        act_dim = group[0].fit.data.actions.shape[1]
        jobs = [
            (r.sas[-k:], r.sas, torch.Generator().manual_seed(r.discriminator_seed)) for r in group
        ]
        for tom_round, (disc, disc_losses) in zip(
            group, train_discriminators(jobs, group[0].cfg, obs_dim, act_dim), strict=True
        ):
            tom_round.fit.data.rewards.copy_(discriminator_reward(disc, tom_round.sas))
            tom_round.diagnostics["discriminator_loss"] = disc_losses
    for tom_round in rounds:
        if not tom_round.use_discriminator:
            tom_round.fit.data.rewards[-tom_round.cfg.recent_size :] = 1.0
        tom_round.seconds["discriminator"] = (time.perf_counter() - tick) / len(rounds)
    tick = time.perf_counter()
    online = [r for r in rounds if r.converge is None]
    for group in _groups(online, lambda r: (r.sas.shape[1], r.sas.device, _key(r.cfg))):
        for tom_round, losses in zip(group, fit_estimators([r.fit for r in group]), strict=True):
            tom_round.diagnostics["q_loss"] = losses
    for tom_round in rounds:
        if tom_round.converge is not None:
            fit = tom_round.fit
            losses, convergence = fit_to_convergence(
                fit.estimator, fit.data, fit.initial_observations, fit.actor, tom_round.converge
            )
            tom_round.diagnostics["q_loss"], tom_round.diagnostics["q_convergence"] = (
                losses,
                convergence,
            )
    seconds = (time.perf_counter() - tick) / max(1, len(rounds))
    for tom_round in rounds:
        tom_round.seconds["dual_q"] = seconds


def finish_tom_round(tom_round: TOMRound) -> WeightEstimate:
    """The round's weights and diagnostics once `train_tom_rounds` has trained it."""
    fit, k, diagnostics = tom_round.fit, tom_round.cfg.recent_size, tom_round.diagnostics
    reward = fit.data.rewards
    diagnostics["reward_mean_recent"] = float(reward[-k:].mean())
    diagnostics["reward_mean_older"] = float(reward[:-k].mean()) if len(reward) > k else None
    tick = time.perf_counter()
    weights = fit.estimator.weights(fit.data, fit.actor).cpu().numpy().astype(np.float64)
    tom_round.seconds["weights"] = time.perf_counter() - tick
    diagnostics.update(weight_summary(weights))
    diagnostics["seconds"] = tom_round.seconds
    return WeightEstimate(weights, diagnostics)


def _key(cfg: TOMConfig) -> str:
    return cfg.model_dump_json()


def _groups(items: Sequence[TOMRound], key: Callable[[TOMRound], Hashable]) -> list[list[TOMRound]]:
    groups: dict[Hashable, list[TOMRound]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


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
