"""Model-learning strategies for an online MBRL loop, behind one small interface.

Before each model round the loop asks its learner for a `LearnerPlan` on the real buffer: per-row
training weights, per-row-per-output loss weights, and the distribution of rollout start states.
- `mle`: MBPO's maximum likelihood; uniform everything.
- `tom` / `tom-nodisc`: TOM's occupancy-ratio weights w ≈ d^π/d^R for the current actor (dual
  RL; discriminator reward or 1 on D^π), for training and rollout starts; the Q network is kept
  across rounds. Plain MLE until the buffer holds the K transitions of D^π.
- `pmac`: PMAC's geometric decay per policy version of age, for training and rollout starts.
- `vagram`: VaGraM's diagonal value-gradient weighting: each state output's loss term is scaled
  by (∂V/∂s'_i)² in the model's standardised units, V(s) = min_j Q_j(s, μ(s)); uniform starts.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tomrepro.core.config import LearnerName, TOMConfig
from tomrepro.learning.dual_rl import OccupancyRatioEstimator
from tomrepro.learning.recency_weights import pmac_weights
from tomrepro.learning.sac import SAC
from tomrepro.learning.tom_weights import estimate_tom_weights, weight_summary

VALUE_GRADIENT_CHUNK = 16_384


@dataclass(frozen=True)
class LearnerPlan:
    """What one model round uses; None means uniform / unweighted."""

    row_weights: np.ndarray | None = None  # (N,)
    target_weights: np.ndarray | None = None  # (N, obs_dim + 1)
    start_probs: np.ndarray | None = None  # (N,)
    diagnostics: dict[str, Any] = field(default_factory=dict)


class ModelLearner:
    """MLE; subclasses change the plan. `state_dict` holds what must survive a resume."""

    name: str = "mle"

    def plan(self, columns: Mapping[str, np.ndarray], agent: SAC, version: int) -> LearnerPlan:
        return LearnerPlan()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class TOMLearner(ModelLearner):
    def __init__(
        self, cfg: TOMConfig, use_discriminator: bool, seed: int, device: torch.device
    ) -> None:
        self.cfg, self.use_discriminator, self.seed, self.device = (
            cfg,
            use_discriminator,
            seed,
            device,
        )
        self.name = "tom" if use_discriminator else "tom-nodisc"
        self.estimator: OccupancyRatioEstimator | None = None
        self.rounds = 0

    def plan(self, columns: Mapping[str, np.ndarray], agent: SAC, version: int) -> LearnerPlan:
        if len(columns["rewards"]) < self.cfg.recent_size:
            return LearnerPlan(diagnostics={"tom_active": False})
        obs_dim, act_dim = columns["observations"].shape[1], columns["actions"].shape[1]
        if self.estimator is None:
            self.estimator = OccupancyRatioEstimator(
                obs_dim, act_dim, self.cfg, self.device, self.seed
            )
        estimate, _ = estimate_tom_weights(
            columns,
            agent.actor,
            self.cfg,
            use_discriminator=self.use_discriminator,
            seed=self.seed + 7919 * (self.rounds + 1),  # a fresh discriminator each round
            device=self.device,
            estimator=self.estimator,
        )
        self.rounds += 1
        w = estimate.weights
        return LearnerPlan(w, None, w, {"tom_active": True, **estimate.diagnostics})

    def state_dict(self) -> dict[str, Any]:
        if self.estimator is None:
            return {"rounds": self.rounds}
        return {
            "rounds": self.rounds,
            "q": self.estimator.q.state_dict(),
            "optimizer": self.estimator.optimizer.state_dict(),
            "generator": self.estimator.generator.get_state(),
            "input_dim": self.estimator.q.layers[0].weight.shape[1],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Adam's load_state_dict keeps references to the given tensors: take private copies.
        state = copy.deepcopy(state)
        self.rounds = int(state["rounds"])
        if "q" not in state:
            self.estimator = None
            return
        # The Q network sees [s, a] concatenated: only the sum of the widths matters.
        in_dim = int(state["input_dim"])
        self.estimator = OccupancyRatioEstimator(in_dim - 1, 1, self.cfg, self.device, self.seed)
        self.estimator.q.load_state_dict(state["q"])
        self.estimator.optimizer.load_state_dict(state["optimizer"])
        self.estimator.generator.set_state(state["generator"])


class PMACLearner(ModelLearner):
    name = "pmac"

    def __init__(self, decay: float) -> None:
        self.decay = decay

    def plan(self, columns: Mapping[str, np.ndarray], agent: SAC, version: int) -> LearnerPlan:
        w = pmac_weights(columns["policy_versions"], version, self.decay)
        return LearnerPlan(w, None, w, weight_summary(w))


class VaGraMLearner(ModelLearner):
    name = "vagram"

    def __init__(self, weight_clip: float, device: torch.device) -> None:
        self.weight_clip, self.device = weight_clip, device

    def plan(self, columns: Mapping[str, np.ndarray], agent: SAC, version: int) -> LearnerPlan:
        next_obs = columns["next_observations"]
        scale = (next_obs - columns["observations"]).std(0)
        scale[scale < 1e-6] = 1.0
        grads = value_gradients(agent, next_obs, self.device)
        state_w = np.square(grads * scale)
        state_w /= max(float(state_w.mean()), 1e-12)
        state_w = np.minimum(state_w, self.weight_clip)
        target_w = np.concatenate((state_w, np.ones((len(state_w), 1))), axis=1)
        per_dim = state_w.mean(0)
        return LearnerPlan(
            None,
            target_w.astype(np.float32),
            None,
            {
                "state_dim_weight_mean": per_dim.tolist(),
                "clipped_share": float((state_w >= self.weight_clip).mean()),
            },
        )


def value_gradients(agent: SAC, states: np.ndarray, device: torch.device) -> np.ndarray:
    """∂V/∂s with V(s) = min_j Q_j(s, μ(s)) (the mean action), for every row: (N, obs_dim)."""
    out = np.empty(states.shape, dtype=np.float32)
    agent.critic.requires_grad_(False)
    try:
        for start in range(0, len(states), VALUE_GRADIENT_CHUNK):
            s = torch.as_tensor(states[start : start + VALUE_GRADIENT_CHUNK], device=device)
            s.requires_grad_(True)
            mean, _ = agent.actor.distribution(s)
            action = torch.tanh(mean) * agent.actor.action_scale + agent.actor.action_bias
            value = agent.critic(s, action).amin(0).sum()
            (grad,) = torch.autograd.grad(value, s)
            out[start : start + len(s)] = grad.cpu().numpy()
    finally:
        agent.critic.requires_grad_(True)
    return out


def make_learner(
    name: LearnerName, tom: TOMConfig, weight_clip: float, seed: int, device: torch.device
) -> ModelLearner:
    if name == "mle":
        return ModelLearner()
    if name in ("tom", "tom-nodisc"):
        return TOMLearner(tom, name == "tom", seed, device)
    if name == "pmac":
        return PMACLearner(tom.pmac_decay)
    return VaGraMLearner(weight_clip, device)
