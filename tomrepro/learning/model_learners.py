"""Model-learning strategies behind one small interface; each is declared once, in the registry
`tomrepro.core.learners`, which names the class below that builds it.

Before each model round (MBPO), for each cell (the offline study) and in `tomrepro weights`, the
caller asks its learner for a `LearnerPlan` on the real buffer: per-row training weights,
per-row-per-output loss weights, and the distribution of rollout start states.
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

from tomrepro.core.config import ProfileConfig
from tomrepro.core.errors import TomreproError
from tomrepro.core.learners import PMACConfig, TOMConfig, VaGraMConfig, get_learner
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.dual_rl import OccupancyRatioEstimator
from tomrepro.learning.recency_weights import pmac_weights
from tomrepro.learning.sac import SquashedGaussianActor, TwinCritic
from tomrepro.learning.tom_weights import estimate_tom_weights, weight_summary

VALUE_GRADIENT_CHUNK = 16_384


@dataclass(frozen=True)
class PlanInputs:
    """What a plan may look at: the real data, the policy it is for, and a critic if any."""

    columns: Mapping[str, np.ndarray]
    actor: SquashedGaussianActor
    version: int  # the policy version the plan is for (PMAC's age origin)
    critic: TwinCritic | None = None  # SAC's critic in MBPO; None for a policy snapshot


@dataclass(frozen=True)
class LearnerPlan:
    """What one model round uses; None means uniform / unweighted."""

    row_weights: np.ndarray | None = None  # (N,)
    target_weights: np.ndarray | None = None  # (N, obs_dim + 1)
    start_probs: np.ndarray | None = None  # (N,)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    # Why the learner fell back to MLE this round (MBPO accepts that; a one-off plan refuses).
    inactive_reason: str | None = None

    def weights_or_uniform(self, rows: int) -> np.ndarray:
        return np.ones(rows) if self.row_weights is None else self.row_weights


class ModelLearner:
    """MLE; subclasses change the plan. `state_dict` holds what must survive a resume.

    Every learner is built as `cls(params, seed=..., device=..., **spec.options)`, `params`
    being its registry section (None when it has none).
    """

    def __init__(self, params: Any = None, *, seed: int, device: torch.device) -> None:
        self.params, self.seed, self.device = params, seed, device

    def plan(self, inputs: PlanInputs) -> LearnerPlan:
        return LearnerPlan()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class TOMLearner(ModelLearner):
    def __init__(
        self, params: TOMConfig, *, seed: int, device: torch.device, use_discriminator: bool
    ) -> None:
        super().__init__(params, seed=seed, device=device)
        self.cfg, self.use_discriminator = params, use_discriminator
        self.estimator: OccupancyRatioEstimator | None = None
        self.rounds = 0

    def plan(self, inputs: PlanInputs) -> LearnerPlan:
        columns = inputs.columns
        rows, k = len(columns["rewards"]), self.cfg.recent_size
        if rows < k:
            return LearnerPlan(
                diagnostics={"tom_active": False},
                inactive_reason=f"the buffer prefix holds {rows} transitions, fewer than the "
                f"{k} that D^pi needs (tom.recent_size)",
            )
        obs_dim, act_dim = columns["observations"].shape[1], columns["actions"].shape[1]
        if self.estimator is None:
            self.estimator = OccupancyRatioEstimator(
                obs_dim, act_dim, self.cfg, self.device, self.seed
            )
        estimate, _ = estimate_tom_weights(
            columns,
            inputs.actor,
            self.cfg,
            use_discriminator=self.use_discriminator,
            seed=self.seed,
            discriminator_seed=derive_seed(self.seed, "tom/discriminator", self.rounds),
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
    def __init__(self, params: PMACConfig, *, seed: int, device: torch.device) -> None:
        super().__init__(params, seed=seed, device=device)

    def plan(self, inputs: PlanInputs) -> LearnerPlan:
        w = pmac_weights(inputs.columns["policy_versions"], inputs.version, self.params.decay)
        return LearnerPlan(w, None, w, weight_summary(w))


class VaGraMLearner(ModelLearner):
    def __init__(self, params: VaGraMConfig, *, seed: int, device: torch.device) -> None:
        super().__init__(params, seed=seed, device=device)
        self.weight_clip = params.clip

    def plan(self, inputs: PlanInputs) -> LearnerPlan:
        if inputs.critic is None:
            raise TomreproError("vagram needs a critic, which a policy snapshot does not have")
        columns = inputs.columns
        next_obs = columns["next_observations"]
        scale = (next_obs - columns["observations"]).std(0)
        scale[scale < 1e-6] = 1.0
        grads = value_gradients(inputs.actor, inputs.critic, next_obs, self.device)
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


def value_gradients(
    actor: SquashedGaussianActor, critic: TwinCritic, states: np.ndarray, device: torch.device
) -> np.ndarray:
    """∂V/∂s with V(s) = min_j Q_j(s, μ(s)) (the mean action), for every row: (N, obs_dim)."""
    out = np.empty(states.shape, dtype=np.float32)
    critic.requires_grad_(False)
    try:
        for start in range(0, len(states), VALUE_GRADIENT_CHUNK):
            s = torch.as_tensor(states[start : start + VALUE_GRADIENT_CHUNK], device=device)
            s.requires_grad_(True)
            mean, _ = actor.distribution(s)
            action = torch.tanh(mean) * actor.action_scale + actor.action_bias
            value = critic(s, action).amin(0).sum()
            (grad,) = torch.autograd.grad(value, s)
            out[start : start + len(s)] = grad.cpu().numpy()
    finally:
        critic.requires_grad_(True)
    return out


def build_learner(
    name: str, profile: ProfileConfig, seed: int, device: torch.device
) -> ModelLearner:
    """The registered learner `name` with its parameters from `profile` (one-line error if
    the name is unknown)."""
    spec = get_learner(name)
    params = None if spec.section is None else profile.section(spec.section)
    learner = spec.builder()(params, seed=seed, device=device, **spec.options)
    if not isinstance(learner, ModelLearner):
        raise TomreproError(f"learner {name!r}: its entry point did not build a ModelLearner")
    return learner


def learner_fingerprint(name: str, profile: ProfileConfig) -> dict[str, Any]:
    """What of the profile decides a learner's results: stored with every run and cell."""
    spec = get_learner(name)
    params = None if spec.section is None else profile.section(spec.section)
    return {
        "name": name,
        "options": dict(spec.options),
        "params": None if params is None else params.model_dump(mode="json"),
    }


def plan_for_snapshot(
    name: str,
    profile: ProfileConfig,
    columns: Mapping[str, np.ndarray],
    actor: SquashedGaussianActor,
    version: int,
    seed: int,
    device: torch.device,
) -> LearnerPlan:
    """A fresh learner's plan for a saved policy snapshot (the offline study, `tomrepro
    weights`): no critic exists there, and falling back to MLE is an error, not a round."""
    if get_learner(name).needs_critic:
        raise TomreproError(
            f"learner {name!r} needs a critic, which a policy snapshot does not have"
        )
    plan = build_learner(name, profile, seed, device).plan(PlanInputs(columns, actor, version))
    if plan.inactive_reason is not None:
        raise TomreproError(plan.inactive_reason)
    return plan
