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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tomrepro.core.config import ProfileConfig
from tomrepro.core.errors import TomreproError
from tomrepro.core.learners import TOMConfig, get_learner
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.dual_rl import OccupancyRatioEstimator
from tomrepro.learning.recency_weights import pmac_weights
from tomrepro.learning.sac import SquashedGaussianActor, TwinCritic
from tomrepro.learning.tom_weights import (
    TOMRound,
    finish_tom_round,
    prepare_tom_round,
    train_tom_rounds,
    weight_summary,
)

VALUE_GRADIENT_CHUNK = 16_384


@dataclass(frozen=True)
class PlanInputs:
    """What a plan may look at: the real data, the policy it is for, and a critic if any."""

    columns: Mapping[str, np.ndarray]
    actor: SquashedGaussianActor
    version: int  # the policy version the plan is for
    critic: TwinCritic | None = None  # SAC's critic in MBPO; None for a policy snapshot
    critic_target: TwinCritic | None = None
    # Per-row policy-version groups at a granularity ("burst", "model_round", "snapshot"): the
    # MBPO loop knows its update schedule; None where only snapshots exist.
    groups: Callable[[str], np.ndarray] | None = None
    one_off: bool = False  # a saved snapshot, no earlier rounds: estimators train to convergence


@dataclass(frozen=True)
class LearnerPlan:
    """What one model round uses; None means uniform / unweighted."""

    row_weights: np.ndarray | None = None  # (N,)
    target_weights: np.ndarray | None = None  # (N, obs_dim + 1)
    start_probs: np.ndarray | None = None  # (N,)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    # Why the learner fell back to MLE this round (MBPO accepts that; a one-off plan refuses).
    inactive_reason: str | None = None
    clip_weights: bool = True  # resampling clips row weights at model.weight_clip (PMAC: never)

    def weights_or_uniform(self, rows: int) -> np.ndarray:
        return np.ones(rows) if self.row_weights is None else self.row_weights


@dataclass(frozen=True)
class PendingPlan:
    """A plan whose training (TOM's round) may run together with other runs' plans
    (`train_plans`); `finish` then gives the plan."""

    tom_round: TOMRound | None
    finish: Callable[[], LearnerPlan]

    def training_seconds(self) -> float:
        """This plan's share of `train_plans`' wall time (0 before it or without training)."""
        if self.tom_round is None:
            return 0.0
        seconds = self.tom_round.seconds
        return seconds.get("discriminator", 0.0) + seconds.get("dual_q", 0.0)


def train_plans(pending: Sequence[PendingPlan]) -> None:
    """The training of several runs' pending plans as one computation (`train_tom_rounds`)."""
    train_tom_rounds([p.tom_round for p in pending if p.tom_round is not None])


class ModelLearner:
    """MLE; subclasses change the plan. `state_dict` holds what must survive a resume.

    Every learner is built as `cls(params, seed=..., device=..., **spec.options)`, `params`
    being its registry section (None when it has none). `start` splits a plan around the
    training that a population of runs does together; a learner with none plans at once.
    """

    def __init__(self, params: Any = None, *, seed: int, device: torch.device) -> None:
        self.params, self.seed, self.device = params, seed, device

    def plan(self, inputs: PlanInputs) -> LearnerPlan:
        return LearnerPlan()

    def start(self, inputs: PlanInputs) -> PendingPlan:
        plan = self.plan(inputs)
        return PendingPlan(None, lambda: plan)

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
        pending = self.start(inputs)
        train_plans([pending])
        return pending.finish()

    def start(self, inputs: PlanInputs) -> PendingPlan:
        columns = inputs.columns
        # As the official code's cur_pol_pool: only transitions a policy collected count toward
        # D^pi, not the exploration phase's (policy version 0).
        rows, k = int((columns["policy_versions"] >= 1).sum()), self.cfg.recent_size
        if rows < k:
            inactive = LearnerPlan(
                diagnostics={"tom_active": False},
                inactive_reason=f"the buffer prefix holds {rows} transitions collected by a "
                f"policy, fewer than the {k} that D^pi needs (tom.recent_size)",
            )
            return PendingPlan(None, lambda: inactive)
        obs_dim, act_dim = columns["observations"].shape[1], columns["actions"].shape[1]
        if self.estimator is None:
            self.estimator = OccupancyRatioEstimator(
                obs_dim, act_dim, self.cfg, self.device, self.seed
            )
        tom_round = prepare_tom_round(
            columns,
            inputs.actor,
            self.cfg,
            use_discriminator=self.use_discriminator,
            seed=self.seed,
            discriminator_seed=derive_seed(self.seed, "tom/discriminator", self.rounds),
            converge=self.cfg.offline_convergence if inputs.one_off else None,
            device=self.device,
            estimator=self.estimator,
        )

        def finish() -> LearnerPlan:
            self.rounds += 1
            w = finish_tom_round(tom_round).weights
            return LearnerPlan(w, None, w, {"tom_active": True, **tom_round.diagnostics})

        return PendingPlan(tom_round, finish)

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
    def plan(self, inputs: PlanInputs) -> LearnerPlan:
        granularity = self.params.granularity if inputs.groups is not None else "snapshot"
        groups = (
            inputs.columns["policy_versions"]
            if inputs.groups is None
            else inputs.groups(granularity)
        )
        w = pmac_weights(groups, self.params.decay)
        diagnostics = {"granularity": granularity, "versions": int(groups.max()) + 1}
        return LearnerPlan(w, None, w, {**diagnostics, **weight_summary(w)}, clip_weights=False)


class VaGraMLearner(ModelLearner):
    """VaGraM as its authors' code (Voelcker et al. 2022, pairlab/vagram, `vaml_mlp.py`) runs it:
    the model's mean f is fitted by sum_i (g_i (f_i - s'_i))^2 on the state change plus an
    unweighted squared reward error, in raw units (`model_training.weighted_squared_error`),
    and used deterministically. g = dV/ds' averaged over the four critic heads (online and
    target twins; the authors' `use_all_vf`) at the actor's mean action, detached (their
    `values()`); g's norm is scaled down to its `gradient_quantile` (0.95, their bound
    clipping), the quantile taken over this round's rows, not per minibatch. TOM's `vaml.py`
    differs: an MDN whose per-dimension NLL (not a squared error) is multiplied by g, with
    the reward and state columns misaligned; see the report's deviation list."""

    def plan(self, inputs: PlanInputs) -> LearnerPlan:
        if inputs.critic is None:
            raise TomreproError("vagram needs a critic, which a policy snapshot does not have")
        critics = [c for c in (inputs.critic, inputs.critic_target) if c is not None]
        g = value_gradients(inputs.actor, critics, inputs.columns["next_observations"], self.device)
        norms = np.linalg.norm(g, axis=1)
        bound = float(np.quantile(norms, self.params.gradient_quantile))
        scale = np.minimum(1.0, bound / np.maximum(norms, 1e-12))
        g = g * scale[:, None]
        target_w = np.concatenate((np.square(g), np.ones((len(g), 1))), axis=1)
        return LearnerPlan(
            None,
            target_w.astype(np.float32),
            None,
            {
                "gradient_norm_bound": bound,
                "clipped_share": float((norms > bound).mean()),
                "state_dim_weight_mean": np.square(g).mean(0).tolist(),
            },
        )


def value_gradients(
    actor: SquashedGaussianActor,
    critics: list[TwinCritic],
    states: np.ndarray,
    device: torch.device,
) -> np.ndarray:
    """dV/ds for every row, V(s) = the mean over all heads of `critics` of Q(s, a), a = the
    actor's mean action at s, held fixed (detached): (N, obs_dim)."""
    out = np.empty(states.shape, dtype=np.float32)
    for critic in critics:
        critic.requires_grad_(False)
    try:
        for start in range(0, len(states), VALUE_GRADIENT_CHUNK):
            s = torch.as_tensor(states[start : start + VALUE_GRADIENT_CHUNK], device=device)
            with torch.no_grad():
                mean, _ = actor.distribution(s)
                action = torch.tanh(mean) * actor.action_scale + actor.action_bias
            s.requires_grad_(True)
            value = torch.cat([critic(s, action) for critic in critics]).mean(0).sum()
            (grad,) = torch.autograd.grad(value, s)
            out[start : start + len(s)] = grad.cpu().numpy()
    finally:
        critics[0].requires_grad_(True)  # the online critic trains; a target never does
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
    plan = build_learner(name, profile, seed, device).plan(
        PlanInputs(columns, actor, version, one_off=True)
    )
    if plan.inactive_reason is not None:
        raise TomreproError(plan.inactive_reason)
    return plan
