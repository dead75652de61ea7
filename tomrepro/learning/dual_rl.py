"""f-DICE for a fixed policy: the Q network whose residuals give TOM's occupancy-ratio weights.

    L(Q) = (1 - gamma) E_{s0 ~ mu0, a0 ~ pi}[Q(s0, a0)] + E_{(s,a,s') ~ D^R}[f*(e)],
    e = R(s, a, s') + gamma (1 - terminated) Q(s', a') - Q(s, a),   a' ~ pi(s')

chi2 (default): f*(x) = x + x^2 / 2 and w = max(0, e + 1); KL: the second term is
log E[exp(e)] and w = exp(e). Weights are normalised to mean 1 over the buffer. The Q network has
no target network and is kept across rounds when the caller keeps the estimator (an online loop
should; the offline study starts afresh per cell); only the optimiser's L2 (weight decay)
regularises it, as in the official code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from tomrepro.core.learners import DualConvergence, TOMConfig
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.networks import BatchedMLP, alias_into, detach_views, step_members

WEIGHT_CHUNK = 65_536


class Actor(Protocol):
    """What the estimator needs of pi: actions (B, act) and log-probabilities (B,) drawn for
    observations (B, obs) on its device (the SAC actor; a tabular policy on a finite MDP)."""

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]: ...

    def to(self, device: torch.device) -> Any: ...


@dataclass(frozen=True)
class TransitionTensors:
    """Buffer rows on the estimator's device: obs (N, o), actions (N, a), rewards R (N,),
    next_obs (N, o), not_terminal (N,) = 1 - terminated."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    not_terminal: torch.Tensor

    def __len__(self) -> int:
        return self.observations.shape[0]


class OccupancyRatioEstimator:
    """The dual-RL Q network and its optimiser; `fit` runs one round, `weights` reads it out."""

    def __init__(
        self, obs_dim: int, act_dim: int, cfg: TOMConfig, device: torch.device, seed: int
    ) -> None:
        self.cfg, self.device = cfg, device
        self.q = BatchedMLP(1, obs_dim + act_dim, cfg.q_hidden_sizes, 1)
        self.q.reset_parameters(torch.Generator().manual_seed(derive_seed(seed, "tom/q")))
        self.q.to(device)
        self.optimizer = torch.optim.Adam(
            self.q.parameters(), lr=cfg.q_lr, weight_decay=cfg.q_weight_decay
        )
        self.generator = torch.Generator(device=device).manual_seed(
            derive_seed(seed, "tom/q_batches")
        )

    def _value(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return self.q(torch.cat((obs, act), dim=-1).unsqueeze(0))[0, :, 0]

    def _residual(
        self,
        data: TransitionTensors,
        idx: torch.Tensor | slice,
        actor: Actor,
        generator: torch.Generator,
    ) -> torch.Tensor:
        next_obs = data.next_observations[idx]
        with torch.no_grad():
            next_action, _ = actor.sample(next_obs, generator)
        bootstrap = self.cfg.gamma * data.not_terminal[idx] * self._value(next_obs, next_action)
        return (
            data.rewards[idx] + bootstrap - self._value(data.observations[idx], data.actions[idx])
        )

    def fit(
        self,
        data: TransitionTensors,
        initial_observations: torch.Tensor,
        actor: Actor,
        steps: int | None = None,
    ) -> list[float]:
        """`steps` (default `cfg.q_steps`) Adam steps on the dual loss; the loss per step. A
        population of one (`fit_estimators`)."""
        return fit_estimators([DualFit(self, data, initial_observations, actor)], steps)[0]

    @torch.no_grad()
    def weights(
        self,
        data: TransitionTensors,
        actor: Actor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """w = f*'(e) for every row (a' drawn once per row, from `generator` or the
        estimator's own stream), normalised to mean 1: (N,)."""
        generator = self.generator if generator is None else generator
        e = torch.cat(
            [
                self._residual(data, slice(start, start + WEIGHT_CHUNK), actor, generator)
                for start in range(0, len(data), WEIGHT_CHUNK)
            ]
        )
        if self.cfg.divergence == "chi2":
            w = torch.clamp_min(e + 1, 0.0)
        else:
            w = torch.exp(e - e.max())
        if not bool((w > 0).any()):
            # Every residual fell below -1: the chi2 weights carry no information this round.
            return torch.ones_like(w)
        return w / w.mean()


@dataclass(frozen=True)
class DualFit:
    """One estimator's round: its rows, initial observations and policy."""

    estimator: OccupancyRatioEstimator
    data: TransitionTensors
    initial_observations: torch.Tensor
    actor: Actor


def fit_estimators(fits: Sequence[DualFit], steps: int | None = None) -> list[list[float]]:
    """Adam steps of several estimators (one config, one device) on their own dual losses as one
    stacked Q network: each estimator draws its own minibatches and actions from its own stream
    and steps its own optimiser, so it ends exactly where it would alone (CPU); the losses per
    step of each."""
    if not fits:
        return []
    first = fits[0].estimator
    cfg, device, b = first.cfg, first.device, first.cfg.q_batch
    qs = [fit.estimator.q for fit in fits]
    layers = qs[0].layers
    widths = [layers[0].weight.shape[1], *(layer.weight.shape[2] for layer in layers)]
    stack = BatchedMLP(len(fits), widths[0], widths[1:-1], widths[-1], group=1).to(device)
    alias_into(stack, qs)
    losses: list[list[torch.Tensor]] = [[] for _ in fits]
    try:
        for _ in range(cfg.q_steps if steps is None else steps):
            rows = []
            for fit in fits:
                est, data = fit.estimator, fit.data
                idx = torch.randint(0, len(data), (b,), generator=est.generator, device=device)
                pick = torch.randint(
                    0, len(fit.initial_observations), (b,), generator=est.generator, device=device
                )
                starts, next_obs = fit.initial_observations[pick], data.next_observations[idx]
                # One actor pass for a0 ~ pi(s0) and a' ~ pi(s'), one Q pass for all three values.
                with torch.no_grad():
                    sampled, _ = fit.actor.sample(torch.cat((starts, next_obs)), est.generator)
                obs = torch.cat((starts, next_obs, data.observations[idx]))
                act = torch.cat((sampled, data.actions[idx]))
                rows.append((idx, torch.cat((obs, act), dim=-1)))
            values = stack(torch.stack([x for _, x in rows]))[..., 0]  # (R, 3B)
            total = []
            for r, (fit, (idx, _)) in enumerate(zip(fits, rows, strict=True)):
                q0, q_next, q_here = values[r].split(b)
                data = fit.data
                e = data.rewards[idx] + cfg.gamma * data.not_terminal[idx] * q_next - q_here
                if cfg.divergence == "chi2":
                    divergence_term = (e + 0.5 * e.square()).mean()
                else:
                    divergence_term = torch.logsumexp(e, dim=0) - math.log(b)
                loss = (1 - cfg.gamma) * q0.mean() + divergence_term
                total.append(loss)
                losses[r].append(loss.detach())
            stack.zero_grad(set_to_none=False)
            torch.stack(total).sum().backward()
            step_members(stack, qs, [fit.estimator.optimizer for fit in fits])
    finally:
        detach_views(qs)
    return [torch.stack(each).tolist() for each in losses]


def fit_to_convergence(
    estimator: OccupancyRatioEstimator,
    data: TransitionTensors,
    initial_observations: torch.Tensor,
    actor: Actor,
    rule: DualConvergence,
) -> tuple[list[float], dict[str, Any]]:
    """Windows of Q steps until the weights' rank order and the dual loss have settled (or the
    cap): the loss per step, and the criterion's values after every window."""
    from scipy.stats import spearmanr

    losses: list[float] = []
    spearman: list[float] = []
    change: list[float] = []
    previous: tuple[np.ndarray, list[float]] | None = None
    check_seed = derive_seed(int(estimator.generator.initial_seed()), "tom/q_readout")
    converged = False
    while len(losses) < rule.max_steps and not converged:
        window = estimator.fit(data, initial_observations, actor, steps=rule.window)
        # The same a' draws at every check, so that the comparison sees Q change, not the
        # read-out's sampling noise.
        readout = torch.Generator(device=estimator.device).manual_seed(check_seed)
        weights = estimator.weights(data, actor, readout).cpu().numpy()
        if previous is not None:
            if np.ptp(weights) == 0 or np.ptp(previous[0]) == 0:
                rho = 1.0 if np.array_equal(weights, previous[0]) else -1.0
            else:
                rho = float(spearmanr(weights, previous[0]).statistic)
            before = float(np.mean(previous[1]))
            rel = abs(float(np.mean(window)) - before) / max(abs(before), 1e-12)
            spearman.append(rho)
            change.append(rel)
            converged = rho >= rule.min_spearman and rel <= rule.max_loss_change
        previous = (weights, window)
        losses += window
    return losses, {
        "steps": len(losses),
        "converged": converged,
        "spearman": spearman,
        "loss_change": change,
        "rule": rule.model_dump(),
    }
