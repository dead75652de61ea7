"""Weighted maximum-likelihood fitting of a `DynamicsModel` (one trainer for both families).

Per-transition weights w (TOM's occupancy ratios, PMAC's recency weights, or w = 1 for MLE) enter
in one of two ways that estimate the same objective E_w[NLL]:
- `resample` (the official TOM code): w is clipped at `weight_clip`, each member draws its own
  minibatch indices with probability ∝ w, and the NLL is unweighted;
- `loss`: each member draws its own uniform minibatch and the NLL is multiplied by w / mean(w).
The holdout metric (MSE of the mean, or NLL) is weighted the same way (clipped w, or w / mean(w));
it drives early stopping
(stop after `patience` epochs in which no member improved by `min_improvement`), the best
weights of each member are restored, and the `elites` best members are kept for prediction.

Optional per-row, per-output `target_weights` W (N, out) replace the likelihood by a weighted
squared error of the mean in the targets' raw units, sum_j W_j (f_j - y_j)^2 (VaGraM: W = g^2 on
the state outputs, 1 on the reward); such a model is marked deterministic, so rollouts use its
mean as VaGraM's deterministic models do. `warm_start` keeps the current parameters (an online loop
refits every few hundred steps, as MBPO does); the normalisation is always refitted to the data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tomrepro.core.config import ModelConfig
from tomrepro.core.errors import TomreproError
from tomrepro.learning.dynamics_model import DynamicsModel, model_inputs, model_targets


@dataclass
class FitLog:
    """Training curve and outcome of one fit."""

    epochs: int = 0
    best_epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    holdout_loss: list[list[float]] = field(default_factory=list)  # per epoch, per member
    elites: list[int] = field(default_factory=list)
    train_size: int = 0
    holdout_size: int = 0
    seconds: float = 0.0
    gradient_steps: int = 0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def check_weights(weights: np.ndarray, rows: int) -> np.ndarray:
    """Weights must be one finite, non-negative number per row, not all zero."""
    weights = np.asarray(weights)
    if weights.ndim != 1 or len(weights) != rows:
        raise TomreproError(f"weights have shape {weights.shape}, expected ({rows},)")
    if not np.isfinite(weights).all():
        raise TomreproError("weights contain NaN or inf")
    if (weights < 0).any():
        raise TomreproError("weights contain negative entries")
    if not (weights > 0).any():
        raise TomreproError("weights are all zero")
    return weights.astype(np.float64)


class IndexSampler:
    """Draws (E, B) row indices with fixed probabilities via inverse-CDF search (O(B log N))."""

    def __init__(self, probs: np.ndarray, device: torch.device, generator: torch.Generator):
        cdf = np.cumsum(probs / probs.sum())
        cdf[-1] = 1.0
        self.cdf = torch.as_tensor(cdf, dtype=torch.float64)
        self.device, self.generator = device, generator

    def draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        u = torch.rand(shape, generator=self.generator, dtype=torch.float64)
        idx = torch.searchsorted(self.cdf, u, right=True).clamp_(max=len(self.cdf) - 1)
        return idx.to(self.device)


def check_target_weights(target_weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-output weights: finite, non-negative, one row per training row."""
    target_weights = np.asarray(target_weights)
    if target_weights.shape != shape:
        raise TomreproError(f"target weights have shape {target_weights.shape}, expected {shape}")
    if not np.isfinite(target_weights).all() or (target_weights < 0).any():
        raise TomreproError("target weights must be finite and non-negative")
    return target_weights.astype(np.float32)


def holdout_split(
    n: int, cfg: ModelConfig, generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(train, holdout) row indices: a random `holdout_ratio` share, at most `max_holdout`."""
    split_rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
    order = split_rng.permutation(n)
    n_hold = min(int(n * cfg.holdout_ratio), cfg.max_holdout)
    return order[n_hold:], order[:n_hold]


@dataclass(frozen=True)
class SplitWeights:
    """How the row weights enter one fit (see the module docstring)."""

    draw_probs: np.ndarray  # minibatch probabilities over the training rows
    train_weights: torch.Tensor | None  # NLL multipliers (`loss`), or None (`resample`)
    holdout_weights: torch.Tensor  # sums to 1 over the holdout rows


def split_weights(
    w: np.ndarray,
    train: np.ndarray,
    hold: np.ndarray,
    cfg: ModelConfig,
    device: torch.device,
    clip: bool = True,
) -> SplitWeights:
    if cfg.weighting == "resample":
        limit = cfg.weight_clip if clip else np.inf
        draw_probs, train_w = np.minimum(w[train], limit), None
        hold_w = np.minimum(w[hold], limit)
    else:
        draw_probs = np.ones(len(train))
        train_w = torch.as_tensor(w[train] / w[train].mean(), dtype=torch.float32, device=device)
        hold_w = w[hold] / w[train].mean()
    hold_weight = torch.as_tensor(
        hold_w / max(hold_w.sum(), 1e-12), dtype=torch.float32, device=device
    )
    return SplitWeights(draw_probs, train_w, hold_weight)


class EarlyStopping:
    """Keeps each member's parameters from its best holdout epoch; `update` says when to stop
    (`patience` epochs in which no member improved by `min_improvement`)."""

    def __init__(self, model: DynamicsModel, log: FitLog) -> None:
        self.model, self.log, self.cfg = model, log, model.cfg
        members = model.members
        self.per_member = [p.shape[0] == members and members > 1 for p in model.net.parameters()]
        self.saved = [p.detach().clone() for p in model.net.parameters()]
        self.best = torch.full((members,), float("inf"))
        self.stale = 0
        log.best_epoch = [0] * members

    def update(self, epoch: int, holdout: torch.Tensor) -> bool:
        best = self.best
        improved = (best - holdout) / best.abs().clamp_min(1e-12) > self.cfg.min_improvement
        improved |= torch.isinf(best)
        if improved.any():
            self.stale = 0
            with torch.no_grad():
                for p, saved, split in zip(
                    self.model.net.parameters(), self.saved, self.per_member, strict=True
                ):
                    if split:
                        saved[improved] = p[improved]
                    else:
                        saved.copy_(p)
            self.best = torch.where(improved, holdout, best)
            self.log.best_epoch = [
                epoch if i else b
                for i, b in zip(improved.tolist(), self.log.best_epoch, strict=True)
            ]
        else:
            self.stale += 1
        return self.stale >= self.cfg.patience

    def restore_and_pick_elites(self) -> None:
        with torch.no_grad():
            for p, saved in zip(self.model.net.parameters(), self.saved, strict=True):
                p.copy_(saved)
        elites = torch.argsort(self.best)[: self.cfg.elites].sort().values
        self.model.elites.copy_(elites)
        self.log.elites = elites.tolist()


def fit_dynamics(
    model: DynamicsModel,
    inputs: np.ndarray,
    targets: np.ndarray,
    weights: np.ndarray | None,
    generator: torch.Generator,
    device: torch.device,
    *,
    target_weights: np.ndarray | None = None,
    warm_start: bool = False,
    max_epochs: int | None = None,
    batches_per_epoch: int | None = None,
    clip_weights: bool = True,
) -> FitLog:
    """Fit `model` in place on rows (N, in) -> (N, out) with optional per-row weights.

    `max_epochs` and `batches_per_epoch` override the model config's caps for this fit;
    `clip_weights=False` resamples ∝ the weights unclipped (PMAC's probabilities).
    """
    cfg: ModelConfig = model.cfg
    n = len(inputs)
    w = np.ones(n) if weights is None else check_weights(weights, n)
    dim_w = None if target_weights is None else check_target_weights(target_weights, targets.shape)
    start = time.perf_counter()
    train, hold = holdout_split(n, cfg, generator)
    if len(train) == 0 or not (w[train] > 0).any():
        raise TomreproError("no training rows with positive weight after the holdout split")

    model.to(device)
    model.fit_normalization(inputs[train], targets[train])
    if not warm_start:
        model.net.reset_parameters(generator)
    x_train = torch.as_tensor(inputs[train], device=device)
    y_train = torch.as_tensor(targets[train], device=device)
    dim_train = None if dim_w is None else torch.as_tensor(dim_w[train], device=device)
    x_hold = torch.as_tensor(inputs[hold], device=device)
    y_hold = torch.as_tensor(targets[hold], device=device)
    weighting = split_weights(w, train, hold, cfg, device, clip_weights)
    train_w = weighting.train_weights
    sampler = IndexSampler(weighting.draw_probs, device, generator)

    members, batch = model.members, cfg.batch_size
    steps = batches_per_epoch or cfg.batches_per_epoch or max(1, len(train) // batch)
    optimizer = torch.optim.Adam(model.net.parameters(), lr=cfg.lr, fused=True)
    log = FitLog(train_size=len(train), holdout_size=len(hold))
    stopping = EarlyStopping(model, log)
    for epoch in range(max_epochs or cfg.max_epochs):
        total = torch.zeros(members, device=device)
        for _ in range(steps):
            idx = sampler.draw((members, batch))  # (E, B): each member its own minibatch
            x = model.normalize_inputs(x_train[idx])
            y = model.normalize_targets(y_train[idx])
            if dim_train is None:
                nll = model.net.nll(x, y)  # (E, B)
            else:
                nll = weighted_squared_error(model, x, y, dim_train[idx])
            if train_w is not None:
                nll = nll * train_w[idx]
            member_loss = nll.mean(1)  # (E,)
            loss = member_loss.sum() + model.net.regularizer()
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            total += member_loss.detach()
        log.gradient_steps += steps
        train_loss = (total / steps).cpu()
        log.train_loss.append(float(train_loss.mean()))
        # Without a holdout split, the training loss has to stand in for it.
        holdout = (
            _holdout_loss(model, x_hold, y_hold, weighting.holdout_weights)
            if len(hold)
            else train_loss
        )
        log.holdout_loss.append(holdout.tolist())
        log.epochs = epoch + 1
        if stopping.update(epoch, holdout):
            break
    stopping.restore_and_pick_elites()
    model.deterministic.fill_(dim_w is not None)
    log.seconds = time.perf_counter() - start
    return log


def weighted_squared_error(
    model: DynamicsModel, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum_j W_j (f_j - y_j)^2 in raw target units, from normalised x, y (E, B, .): (E, B)."""
    error = (model.net.mean(x) - y) * model.target_std
    return (weights * error.square()).sum(-1)


@torch.no_grad()
def _holdout_loss(
    model: DynamicsModel, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Weighted holdout metric per member, in standardised units: (E,) on CPU."""
    if model.cfg.holdout_metric == "nll":
        per_row = model.nll(x, y)  # (E, H)
    else:
        xs = model._per_member(model.normalize_inputs(x))
        mean = torch.cat([model.net.mean(c) for c in xs], dim=1)  # (E, H, out)
        per_row = (mean - model.normalize_targets(y)).square().mean(-1)
    return (per_row * weight).sum(1).cpu()


def fit_on_columns(
    model: DynamicsModel,
    columns: Mapping[str, np.ndarray],
    weights: np.ndarray | None,
    generator: torch.Generator,
    device: torch.device,
    **options: Any,
) -> FitLog:
    """`fit_dynamics` on buffer columns: inputs [s, a], targets [s' - s, r]; `options` are
    `fit_dynamics`'s keyword options."""
    return fit_dynamics(
        model,
        model_inputs(columns["observations"], columns["actions"]),
        model_targets(columns["observations"], columns["next_observations"], columns["rewards"]),
        weights,
        generator,
        device,
        **options,
    )
