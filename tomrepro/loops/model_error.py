"""How wrong a dynamics model is, and where: errors weighted by an arbitrary distribution.

The same transitions can be weighted to ask different questions:
- `occupancy_weights`: gamma^t on step t of each episode, i.e. the policy's discounted state-action
  occupancy when the transitions are fresh on-policy episodes (TOM's notion of "where the policy
  goes");
- uniform weights: the buffer's own distribution.

Errors are squared errors divided by `scale` (per-dimension standard deviation of the true state
change and reward on the evaluated data, unless given), so dimensions count equally and two models
evaluated on the same data are compared in the same units. NLL is the model's own (standardised
targets, elites averaged). Open-loop error runs the model's mean prediction from each start row
along the recorded actions for 1..H steps and compares it with the real state H steps on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from tomrepro.learning.dynamics_model import DynamicsModel, model_inputs, model_targets

PREDICT_CHUNK = 100_000


def occupancy_weights(episode_steps: np.ndarray, gamma: float) -> np.ndarray:
    """gamma^t for each row's step t within its episode (unnormalised)."""
    return np.power(gamma, episode_steps.astype(np.float64))


def error_scale(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-dimension std of [s' - s, r] over the rows (1 where a dimension is constant)."""
    targets = model_targets(
        columns["observations"], columns["next_observations"], columns["rewards"]
    )
    std = targets.std(0).astype(np.float64)
    std[std < 1e-8] = 1.0
    return std


@dataclass(frozen=True)
class ModelErrors:
    """Weighted one-step errors and open-loop state error per horizon (index h-1)."""

    state_mse: float
    reward_mse: float
    nll: float
    open_loop_state_mse: list[float]
    open_loop_starts: list[int]
    rows: int
    effective_sample_size: float

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    total = np.sum(weights)
    return float(np.sum(values * weights) / total) if total > 0 else float("nan")


@torch.no_grad()
def _predict(model: DynamicsModel, obs: np.ndarray, act: np.ndarray, device: torch.device):
    next_obs, rewards = [], []
    for start in range(0, len(obs), PREDICT_CHUNK):
        o = torch.as_tensor(obs[start : start + PREDICT_CHUNK], device=device)
        a = torch.as_tensor(act[start : start + PREDICT_CHUNK], device=device)
        n, r = model.predict(o, a)
        next_obs.append(n.cpu().numpy())
        rewards.append(r.cpu().numpy())
    return np.concatenate(next_obs), np.concatenate(rewards)


@torch.no_grad()
def _nll(model: DynamicsModel, columns: Mapping[str, np.ndarray], device: torch.device):
    inputs = model_inputs(columns["observations"], columns["actions"])
    targets = model_targets(
        columns["observations"], columns["next_observations"], columns["rewards"]
    )
    out = []
    for start in range(0, len(inputs), PREDICT_CHUNK):
        x = torch.as_tensor(inputs[start : start + PREDICT_CHUNK], device=device)
        y = torch.as_tensor(targets[start : start + PREDICT_CHUNK], device=device)
        out.append(model.nll(x, y)[model.elites].mean(0).cpu().numpy())
    return np.concatenate(out)


def evaluate_model(
    model: DynamicsModel,
    columns: Mapping[str, np.ndarray],
    weights: np.ndarray,
    horizon: int,
    device: torch.device,
    scale: np.ndarray | None = None,
) -> ModelErrors:
    """Weighted one-step errors over all rows and open-loop errors for horizons 1..`horizon`."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(columns["rewards"]),) or not (weights > 0).any():
        raise ValueError("weights must be one number per row, with at least one positive")
    scale = error_scale(columns) if scale is None else scale
    obs, act = columns["observations"], columns["actions"]
    next_obs, rewards = columns["next_observations"], columns["rewards"]
    pred_next, pred_rew = _predict(model, obs, act, device)
    state_se = (((pred_next - next_obs) / scale[:-1]) ** 2).mean(1)
    reward_se = ((pred_rew - rewards) / scale[-1]) ** 2
    open_loop, starts = _open_loop(model, columns, weights, horizon, scale, device)
    return ModelErrors(
        state_mse=_weighted_mean(state_se, weights),
        reward_mse=_weighted_mean(reward_se, weights),
        nll=_weighted_mean(_nll(model, columns, device), weights),
        open_loop_state_mse=open_loop,
        open_loop_starts=starts,
        rows=len(weights),
        effective_sample_size=float(weights.sum() ** 2 / np.square(weights).sum()),
    )


def _open_loop(
    model: DynamicsModel,
    columns: Mapping[str, np.ndarray],
    weights: np.ndarray,
    horizon: int,
    scale: np.ndarray,
    device: torch.device,
) -> tuple[list[float], list[int]]:
    """Roll the model's mean from every start row; a start drops out when its episode ends."""
    ids, n = columns["episode_ids"], len(columns["rewards"])
    starts = np.arange(n)
    state = torch.as_tensor(columns["observations"], device=device)
    actions = torch.as_tensor(columns["actions"], device=device)
    errors, counts = [], []
    for h in range(1, horizon + 1):
        row = starts + h - 1  # the transition taken at this horizon step
        valid = row < n
        valid[valid] &= ids[row[valid]] == ids[starts[valid]]
        starts, row = starts[valid], row[valid]
        state = state[torch.as_tensor(valid, device=device)]
        if len(starts) == 0:
            break
        state, _ = model.predict(state, actions[torch.as_tensor(row, device=device)])
        err = ((state.cpu().numpy() - columns["next_observations"][row]) / scale[:-1]) ** 2
        errors.append(_weighted_mean(err.mean(1), weights[starts]))
        counts.append(len(starts))
    return errors, counts
