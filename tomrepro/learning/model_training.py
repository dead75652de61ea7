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

Many fits train as one computation (`prepare_fit`, then `train_fits`: the model rounds of an
MBPO population); a single fit is a population of one, and a fit's arithmetic on CPU does not
depend on its company (`_StackOptimizer` says how).
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tomrepro.core.config import ModelConfig
from tomrepro.core.errors import TomreproError
from tomrepro.learning.dynamics_model import DynamicsModel, model_inputs, model_targets
from tomrepro.learning.networks import BatchedMLP, alias_into, detach_views, step_members


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


@dataclass
class FitJob:
    """One model's fit: `fit_dynamics`'s arguments."""

    model: DynamicsModel
    inputs: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None
    generator: torch.Generator
    target_weights: np.ndarray | None = None
    warm_start: bool = False
    max_epochs: int | None = None
    batches_per_epoch: int | None = None
    clip_weights: bool = True


@dataclass
class PreparedFit:
    """A job after its checks, holdout split, normalisation and initialisation: ready to train."""

    model: DynamicsModel
    generator: torch.Generator
    x_train: torch.Tensor
    y_train: torch.Tensor
    dim_train: torch.Tensor | None
    x_hold: torch.Tensor
    y_hold: torch.Tensor
    weighting: SplitWeights
    sampler: IndexSampler
    steps: int
    epochs: int
    deterministic: bool
    log: FitLog
    seconds: float


def prepare_fit(job: FitJob, device: torch.device) -> PreparedFit:
    """Everything of a fit before its first gradient step, drawing from the job's generator in
    the order a fit alone does; bad weights or rows raise here, before any training."""
    start = time.perf_counter()
    model, inputs, targets = job.model, job.inputs, job.targets
    cfg: ModelConfig = model.cfg
    n = len(inputs)
    w = np.ones(n) if job.weights is None else check_weights(job.weights, n)
    dim_w = (
        None
        if job.target_weights is None
        else check_target_weights(job.target_weights, targets.shape)
    )
    train, hold = holdout_split(n, cfg, job.generator)
    if len(train) == 0 or not (w[train] > 0).any():
        raise TomreproError("no training rows with positive weight after the holdout split")
    model.to(device)
    model.fit_normalization(inputs[train], targets[train])
    if not job.warm_start:
        model.net.reset_parameters(job.generator)
    weighting = split_weights(w, train, hold, cfg, device, job.clip_weights)
    return PreparedFit(
        model=model,
        generator=job.generator,
        x_train=torch.as_tensor(inputs[train], device=device),
        y_train=torch.as_tensor(targets[train], device=device),
        dim_train=None if dim_w is None else torch.as_tensor(dim_w[train], device=device),
        x_hold=torch.as_tensor(inputs[hold], device=device),
        y_hold=torch.as_tensor(targets[hold], device=device),
        weighting=weighting,
        sampler=IndexSampler(weighting.draw_probs, device, job.generator),
        steps=job.batches_per_epoch
        or cfg.batches_per_epoch
        or max(1, len(train) // cfg.batch_size),
        epochs=job.max_epochs or cfg.max_epochs,
        deterministic=dim_w is not None,
        log=FitLog(train_size=len(train), holdout_size=len(hold)),
        seconds=time.perf_counter() - start,
    )


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
    """Fit `model` in place on rows (N, in) -> (N, out) with optional per-row weights: a
    population of one (`train_fits`).

    `max_epochs` and `batches_per_epoch` override the model config's caps for this fit;
    `clip_weights=False` resamples ∝ the weights unclipped (PMAC's probabilities).
    """
    job = FitJob(
        model,
        inputs,
        targets,
        weights,
        generator,
        target_weights,
        warm_start,
        max_epochs,
        batches_per_epoch,
        clip_weights,
    )
    return train_fits([prepare_fit(job, device)])[0]


def train_fits(fits: Sequence[PreparedFit]) -> list[FitLog]:
    """Train prepared fits together, each exactly as it would train alone: fits of one
    architecture, minibatch schedule and loss form are one stacked network (one batched matmul
    per layer for all their members) with each fit's own head, data, weights, sampler, early
    stopping and elites."""
    groups: dict[Hashable, list[int]] = {}
    for i, fit in enumerate(fits):
        groups.setdefault(_stack_key(fit), []).append(i)
    logs: list[FitLog] = [fit.log for fit in fits]
    for members in groups.values():
        _train_stacked([fits[i] for i in members])
    return logs


def _stack_key(fit: PreparedFit) -> Hashable:
    net, cfg = fit.model.net, fit.model.cfg
    shapes = tuple(tuple(p.shape) for p in net.body.parameters())
    return (
        type(net),
        shapes,
        fit.steps,
        cfg.batch_size,
        cfg.lr,
        fit.dim_train is None,
        fit.weighting.train_weights is None,
        fit.x_train.device,
    )


def _train_stacked(fits: list[PreparedFit]) -> None:
    """The epochs of fits that share a stack; each stops by its own early stopping (a stopped
    fit draws no more minibatches and leaves the loss; its best parameters are kept)."""
    start = time.perf_counter()
    first = fits[0]
    members, batch, steps = first.model.members, first.model.cfg.batch_size, first.steps
    stack = _StackedBodies([fit.model for fit in fits])
    try:
        optimizer = _StackOptimizer(stack, [fit.model for fit in fits])
        stopping = [EarlyStopping(fit.model, fit.log) for fit in fits]
        going = [fit.epochs > 0 for fit in fits]
        # A fit that has stopped keeps its last minibatch in the stack's input, out of the loss.
        idx = [
            torch.zeros((members, batch), dtype=torch.long, device=fit.x_train.device)
            for fit in fits
        ]
        for epoch in range(max(fit.epochs for fit in fits)):
            if not any(going):
                break
            totals = [torch.zeros(members, device=fit.x_train.device) for fit in fits]
            for _ in range(steps):
                for r, fit in enumerate(fits):
                    if going[r]:
                        idx[r] = fit.sampler.draw((members, batch))  # each member its own
                x = torch.cat(
                    [
                        fit.model.normalize_inputs(fit.x_train[i])
                        for fit, i in zip(fits, idx, strict=True)
                    ]
                )
                losses = []
                for r, (fit, out) in enumerate(zip(fits, stack(x).split(members), strict=True)):
                    if not going[r]:
                        continue
                    member_loss = _member_loss(fit, out, idx[r])
                    losses.append(member_loss.sum() + fit.model.net.regularizer())
                    totals[r] += member_loss.detach()
                optimizer.zero_grad()
                torch.stack(losses).sum().backward()
                optimizer.step(going)
            for r, fit in enumerate(fits):
                if going[r]:
                    going[r] = not _end_epoch(fit, stopping[r], epoch, totals[r] / steps)
    finally:
        stack.release()
    seconds = (time.perf_counter() - start) / len(fits)
    for fit, stop in zip(fits, stopping, strict=True):
        stop.restore_and_pick_elites()
        fit.model.deterministic.fill_(fit.deterministic)
        fit.log.seconds = fit.seconds + seconds


def _member_loss(fit: PreparedFit, out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """One fit's minibatch loss per member (E,) from its slice of the stack's output."""
    model = fit.model
    y = model.normalize_targets(fit.y_train[idx])
    if fit.dim_train is None:
        nll = model.net.nll_from(out, y)  # (E, B)
    else:
        nll = squared_error_from(model, out, y, fit.dim_train[idx])
    if fit.weighting.train_weights is not None:
        nll = nll * fit.weighting.train_weights[idx]
    return nll.mean(1)


def _end_epoch(
    fit: PreparedFit, stopping: EarlyStopping, epoch: int, train_loss: torch.Tensor
) -> bool:
    """Book an epoch of one fit; True when the fit is done."""
    log = fit.log
    log.gradient_steps += fit.steps
    train_loss = train_loss.cpu()
    log.train_loss.append(float(train_loss.mean()))
    # Without a holdout split, the training loss has to stand in for it.
    holdout = (
        _holdout_loss(fit.model, fit.x_hold, fit.y_hold, fit.weighting.holdout_weights)
        if len(fit.x_hold)
        else train_loss
    )
    log.holdout_loss.append(holdout.tolist())
    log.epochs = epoch + 1
    return stopping.update(epoch, holdout) or log.epochs >= fit.epochs


class _StackOptimizer:
    """torch's fused Adam for a stack. On CPU one optimiser per fit over the fit's own
    parameters (`networks.step_members`: bit-identical to the fit alone); on GPU one optimiser
    over the whole stack: one launch, not R."""

    def __init__(self, stack: _StackedBodies, models: list[DynamicsModel]) -> None:
        self.stack, self.models = stack, models
        lr = models[0].cfg.lr
        self.per_fit = exact_per_fit(stack.net.layers[0].weight.device)
        if self.per_fit:
            self.optimizers = [
                torch.optim.Adam(model.net.parameters(), lr=lr, fused=True) for model in models
            ]
        else:
            heads = [p for model in models for p in _head_parameters(model)]
            self.optimizers = [torch.optim.Adam([*stack.parameters(), *heads], lr=lr, fused=True)]

    def zero_grad(self) -> None:
        self.stack.net.zero_grad(set_to_none=False)
        for model in self.models:
            for p in _head_parameters(model):
                if p.grad is not None:
                    p.grad.zero_()

    def step(self, going: list[bool]) -> None:
        """An update of the fits still going (on GPU the stopped ones step too, on zero
        gradients: harmless, as their best parameters are restored at the end)."""
        if not self.per_fit:
            self.optimizers[0].step()
            return
        bodies = [model.net.body for model in self.models]
        step_members(self.stack.net, bodies, self.optimizers, going)


def exact_per_fit(device: torch.device) -> bool:
    """Whether a stack updates each fit on its own (CPU: bit-identical to the fit alone) or
    all at once (GPU: one launch)."""
    return device.type == "cpu"


def _head_parameters(model: DynamicsModel) -> list[torch.nn.Parameter]:
    return [p for name, p in model.net.named_parameters() if not name.startswith("body.")]


class _StackedBodies:
    """The bodies of R models as one `BatchedMLP` of R x E members while they train; each
    model's body parameters are views into it (`networks.alias_into`), so its own methods
    (holdout loss, early stopping) see the live values. `release` gives them back."""

    def __init__(self, models: list[DynamicsModel]) -> None:
        self.bodies = [model.net.body for model in models]
        layers = self.bodies[0].layers
        widths = [layers[0].weight.shape[1], *(layer.weight.shape[2] for layer in layers)]
        self.net = BatchedMLP(
            models[0].members * len(models),
            widths[0],
            widths[1:-1],
            widths[-1],
            activation=type(self.bodies[0].activation),
            group=models[0].members,
        ).to(layers[0].weight.device)
        alias_into(self.net, self.bodies)

    def parameters(self) -> list[torch.nn.Parameter]:
        return list(self.net.parameters())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def release(self) -> None:
        detach_views(self.bodies)


def weighted_squared_error(
    model: DynamicsModel, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """sum_j W_j (f_j - y_j)^2 in raw target units, from normalised x, y (E, B, .): (E, B)."""
    return squared_error_from(model, model.net.body(x), y, weights)


def squared_error_from(
    model: DynamicsModel, out: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """`weighted_squared_error` from the body's output."""
    error = (model.net.mean_from(out) - y) * model.target_std
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
