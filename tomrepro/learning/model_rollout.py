"""Branched model rollouts (MBPO): many short imagined trajectories from real start states.

All starts advance together as one batch: the actor samples actions, the model samples next
states and rewards from a random elite per row, the task's termination rule ends rows, and the
survivors continue. No Python loop over transitions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from tomrepro.learning.dynamics_model import DynamicsModel
from tomrepro.learning.model_training import IndexSampler
from tomrepro.learning.sac import SquashedGaussianActor


def draw_rows(
    probs: np.ndarray | None, rows: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """`count` row indices in [0, rows): uniform, or ∝ `probs` (the trainer's inverse-CDF draw)."""
    if probs is None:
        return torch.randint(0, rows, (count,), generator=generator)
    return IndexSampler(probs, torch.device("cpu"), generator).draw((count,))


@torch.no_grad()
def rollout_model(
    model: DynamicsModel,
    actor: SquashedGaussianActor,
    starts: torch.Tensor,
    length: int,
    terminated: Callable[[torch.Tensor], torch.Tensor],
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Transitions of all rollouts, step after step: obs, actions, rewards, next_obs, masks."""
    parts: dict[str, list[torch.Tensor]] = {
        k: [] for k in ("observations", "actions", "rewards", "next_observations", "masks")
    }
    obs = starts
    for _ in range(length):
        if obs.shape[0] == 0:
            break
        action, _ = actor.sample(obs, generator)
        next_obs, reward = model.sample(obs, action, generator)
        # A diverging model can emit inf/NaN; such rows are dropped rather than fed to SAC.
        finite = torch.isfinite(next_obs).all(-1) & torch.isfinite(reward)
        done = terminated(next_obs) | ~finite
        values = (obs, action, reward, next_obs, (~done).float())
        for k, v in zip(parts, values, strict=True):
            parts[k].append(v[finite])
        obs = next_obs[~done]
    return {k: torch.cat(v) for k, v in parts.items()}
