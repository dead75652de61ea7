"""Claims C5 and C6 measured on random finite MDPs, where every quantity is exact.

C5 (the dual-RL estimator recovers the occupancy ratio w = d^pi / d^R) is judged on the estimator
the code runs. For each MDP, a current policy pi and a replay distribution
d^R = (1 - k) d^older + k d^pi (older policies' mixture, and pi's own share k), a buffer of N rows
(s, a, s') is sampled: N - K from d^older, then the last K = round(k N) from d^pi, which are D^pi
as in a real buffer. The project's estimator (`estimate_tom_weights` with one-hot features, a
tabular policy and explicit mu0 draws) fits it with the discriminator reward and with the
no-discriminator reward (1 on D^pi, 0 elsewhere), for chi2 and KL, and its weights are compared
with d^pi / d^R (both mean 1 over the rows):
- `error`: mean |w_hat - w| / mean w over the rows (the primary measure);
- `spearman`: rank correlation of w_hat and w over the rows;
- `cell_error`: the same with w_hat averaged over the rows of each (s, a, s') cell;
- `form_bias_error`: the population optimum of the same form (`solve_sampled_optimum`: the
  estimator's conjugate, read-out and per-row a' and reward, with an optimal discriminator) against
  w under d^R: the error the estimator keeps with unlimited samples and steps;
  `form_bias_cell_error` the same with the optimum's weights averaged per cell;
- `vs_optimum_error`: the estimator's cell-averaged weights against the optimum's, over the rows:
  sampling and optimisation error (and, for the discriminator reward, the learned
  discriminator's). A convergence table reports it, and `error`, for growing N and Q steps, with
  the no-discriminator reward, whose optimum is exactly the estimator's target.

The expected-residual form of the dual is also solved exactly for three rewards (`check_recovery`):
it recovers w exactly for any reward, a theorem, so it is a sanity check of the solver only.

C6 (the TOM objective lower-bounds log J(pi)): with r > 0 and J(pi) = E_{d^pi_P}[r(s, a)] (the
(1 - gamma)-normalised return), for any model P_hat with the same support,
    log J(pi) = log E_{d^pi_P_hat}[r * d^pi_P / d^pi_P_hat]
             >= E_{d^pi_P_hat}[log r] - KL(d^pi_P_hat(s,a,s') || d^pi_P(s,a,s'))      (Jensen)
             >= E_{d^pi_P_hat}[log r] - chi2(d^pi_P_hat(s,a,s') || d^pi_P(s,a,s'))    (KL <= chi2)
Both inequalities are checked; the slack (left minus right) must be >= 0 (a sanity check).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy.stats import spearmanr

from tomrepro.analysis.finite_model_fit import FitProblem, model_fit_summary, run_model_fit
from tomrepro.core.atomic import atomic_path
from tomrepro.core.config import FiniteMDPConfig
from tomrepro.core.errors import TomreproError
from tomrepro.core.learners import TOMConfig
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.finite_dual import (
    Divergence,
    RewardDistribution,
    SampledOptimum,
    solve_dual,
    solve_sampled_optimum,
)
from tomrepro.learning.finite_features import (
    DiscretePolicy,
    initial_observations,
    sample_cells,
    transition_columns,
)
from tomrepro.learning.finite_mdp import (
    FiniteMDP,
    perturbed_dynamics,
    random_mdp,
    random_policy,
    replay_occupancy,
    state_action_occupancy,
    transition_occupancy,
)
from tomrepro.learning.tom_weights import estimate_tom_weights

REWARDS = ("discriminator", "perturbed", "zero_one")
# C6's name for the weights of the project's estimator in the model-fit comparison.
ESTIMATED = "estimated"
DIVERGENCES: tuple[Divergence, ...] = ("chi2", "kl")
RewardKind = Literal["discriminator", "no_discriminator"]
REWARD_KINDS: tuple[RewardKind, ...] = ("discriminator", "no_discriminator")
ESTIMATOR_MEASURES = (
    "error",
    "spearman",
    "cell_error",
    "vs_optimum_error",
    "form_bias_error",
    "form_bias_cell_error",
    "seconds",
)
CONVERGENCE_MEASURES = ("vs_optimum_error", "error")
CPU = torch.device("cpu")


@dataclass
class RecoveryResult:
    """Largest relative error of recovered weights, per (reward, divergence, form)."""

    mdps: int
    max_relative_error: dict[str, float] = field(default_factory=dict)

    def record(self, key: str, error: float) -> None:
        self.max_relative_error[key] = max(self.max_relative_error.get(key, 0.0), error)


def _draw(rng: np.random.Generator, gamma: float):
    """A random MDP, the current policy pi, 1-3 older policies and Dirichlet mixture shares."""
    states, actions = int(rng.integers(3, 9)), int(rng.integers(2, 5))
    mdp = random_mdp(rng, states, actions, gamma)
    pi = random_policy(rng, states, actions)
    older = [random_policy(rng, states, actions) for _ in range(int(rng.integers(1, 4)))]
    shares = rng.dirichlet(np.ones(len(older) + 1))
    return mdp, pi, older, shares


def _problem(rng: np.random.Generator, gamma: float):
    mdp, pi, older, shares = _draw(rng, gamma)
    return mdp, pi, replay_occupancy(mdp, [*older, pi], shares)


def _rewards(rng: np.random.Generator, d_pi: np.ndarray, d_r: np.ndarray) -> dict[str, np.ndarray]:
    disc = np.log((d_pi + 0.1 * d_r) / (0.9 * d_r))
    drawn = rng.choice(d_pi.size, size=max(1, d_pi.size // 3), p=d_pi.reshape(-1) / d_pi.sum())
    zero_one = np.zeros(d_pi.size)
    zero_one[drawn] = 1.0
    return {
        "discriminator": disc,
        "perturbed": disc + rng.normal(size=disc.shape),
        "zero_one": zero_one.reshape(d_pi.shape),
    }


def check_recovery(mdps: int, seed: int, gamma: float = 0.9) -> RecoveryResult:
    """C5 on `mdps` random problems."""
    rng = np.random.default_rng(seed)
    result = RecoveryResult(mdps)
    for _ in range(mdps):
        mdp, pi, d_r = _problem(rng, gamma)
        d_pi = transition_occupancy(mdp, pi)
        ratio_sa = d_pi.sum(-1) / d_r.sum(-1)
        ratio_sas = d_pi / d_r
        for name, reward in _rewards(rng, d_pi, d_r).items():
            for divergence in DIVERGENCES:
                exact = solve_dual(mdp, pi, d_r, reward, divergence, "expected")
                result.record(
                    f"{name}/{divergence}/expected",
                    float(np.max(np.abs(exact.weights - ratio_sa) / ratio_sa)),
                )
                sampled = solve_dual(mdp, pi, d_r, reward, divergence, "sampled")
                result.record(
                    f"{name}/{divergence}/sampled",
                    float(np.max(np.abs(sampled.weights - ratio_sas) / ratio_sas)),
                )
    return result


@dataclass
class BoundResult:
    """Slack of each inequality over many random (MDP, model, policy, reward) draws."""

    mdps: int
    slack_kl: list[float] = field(default_factory=list)
    slack_chi2: list[float] = field(default_factory=list)
    model_mix: list[float] = field(default_factory=list)

    @property
    def min_slack_kl(self) -> float:
        return min(self.slack_kl)

    @property
    def min_slack_chi2(self) -> float:
        return min(self.slack_chi2)


def check_bound(mdps: int, seed: int, gamma: float = 0.9) -> BoundResult:
    """C6 on `mdps` random problems; models range from exact (mix 0) to far off (mix 1)."""
    rng = np.random.default_rng(seed)
    result = BoundResult(mdps)
    for i in range(mdps):
        states, actions = int(rng.integers(2, 9)), int(rng.integers(2, 5))
        mdp = random_mdp(rng, states, actions, gamma)
        mix = float(i % 5) / 4
        model = perturbed_dynamics(rng, mdp, mix=mix)
        pi = random_policy(rng, states, actions)
        reward = rng.uniform(0.05, 1.0, size=(states, actions))
        log_j = np.log(np.sum(state_action_occupancy(mdp, pi) * reward))
        d_true, d_model = transition_occupancy(mdp, pi), transition_occupancy(model, pi)
        expected_log_r = np.sum(d_model.sum(-1) * np.log(reward))
        kl = np.sum(d_model * np.log(d_model / d_true))
        chi2 = np.sum(d_true * (d_model / d_true - 1) ** 2)
        result.slack_kl.append(float(log_j - (expected_log_r - kl)))
        result.slack_chi2.append(float(log_j - (expected_log_r - chi2)))
        result.model_mix.append(mix)
    return result


# --- C5: the estimator the code runs ----------------------------------------------------------


@dataclass(frozen=True)
class RatioProblem:
    """One MDP of the C5 estimator check: pi (S, A), the older policies' mixture d_older
    (S, A, S) and pi's share k of d^R = (1 - k) d_older + k d^pi."""

    mdp: FiniteMDP
    pi: np.ndarray
    d_older: np.ndarray
    recent_share: float

    @property
    def d_pi(self) -> np.ndarray:
        return transition_occupancy(self.mdp, self.pi)

    @property
    def d_replay(self) -> np.ndarray:
        return (1 - self.recent_share) * self.d_older + self.recent_share * self.d_pi

    @property
    def ratio(self) -> np.ndarray:
        """The truth w = d^pi / d^R, (S, A, S), mean 1 under d^R."""
        return self.d_pi / self.d_replay

    @classmethod
    def from_replay(
        cls, mdp: FiniteMDP, pi: np.ndarray, d_replay: np.ndarray, recent_share: float
    ) -> RatioProblem:
        """Split a given d^R into pi's share and the rest; the share must fit in d^R."""
        d_replay = d_replay / d_replay.sum()
        d_pi = transition_occupancy(mdp, pi)
        rest = (d_replay - recent_share * d_pi) / (1 - recent_share)
        if not 0 < recent_share < 1 or rest.min() < -1e-12:
            raise TomreproError(
                f"a share {recent_share} of d^pi does not fit in this d^R (it must be in (0, 1) "
                f"and at most min d^R / d^pi = {np.min(d_replay / d_pi):.3g})"
            )
        rest = np.maximum(rest, 0.0)
        return cls(mdp, pi, rest, recent_share)


def draw_ratio_problem(rng: np.random.Generator, gamma: float, recent_share: float) -> RatioProblem:
    """The MDPs of `check_recovery` (same draws), with pi's share of d^R fixed at
    `recent_share` and the older policies keeping their relative shares."""
    mdp, pi, older, shares = _draw(rng, gamma)
    return RatioProblem(mdp, pi, replay_occupancy(mdp, older, shares[:-1]), recent_share)


def population_reward(
    problem: RatioProblem, kind: RewardKind, negative_target: float
) -> RewardDistribution:
    """The reward of a buffer row given its cell, in the population: the optimal discriminator's
    logit log((d^pi + t d^R) / ((1 - t) d^R)) (positives d^pi, negatives d^R with soft target t),
    or 1 with probability P(row in D^pi | cell) = k d^pi / d^R and 0 otherwise."""
    d_pi, d_r = problem.d_pi, problem.d_replay
    if kind == "discriminator":
        return RewardDistribution.fixed(
            np.log((d_pi + negative_target * d_r) / ((1 - negative_target) * d_r))
        )
    recent = np.minimum(1.0, problem.recent_share * d_pi / d_r)
    return RewardDistribution(
        np.stack([np.ones_like(recent), np.zeros_like(recent)]), np.stack([recent, 1 - recent])
    )


@dataclass(frozen=True)
class EstimatorBuffer:
    """Buffer rows as cell indices s, a, s_next (N,), the last `recent` of them D^pi; `initial`
    (M, S) one-hot draws from mu0."""

    s: np.ndarray
    a: np.ndarray
    s_next: np.ndarray
    recent: int
    initial: np.ndarray

    def __len__(self) -> int:
        return len(self.s)

    @property
    def reward_index(self) -> np.ndarray:
        """Which value of the no-discriminator reward each row got: 0 (R = 1) on D^pi, else 1."""
        index = np.ones(len(self), dtype=np.int64)
        index[-self.recent :] = 0
        return index


def sample_buffer(
    problem: RatioProblem, rng: np.random.Generator, samples: int, initial_samples: int
) -> EstimatorBuffer:
    """N - K rows from the older policies, then K = round(k N) from pi, as a replay buffer holds
    them; its rows are a sample of d^R stratified by source."""
    recent = round(problem.recent_share * samples)
    if not 0 < recent < samples:
        raise TomreproError(f"a share {problem.recent_share} of {samples} rows leaves a part empty")
    old = sample_cells(rng, problem.d_older, samples - recent)
    new = sample_cells(rng, problem.d_pi, recent)
    s, a, s_next = (np.concatenate(parts) for parts in zip(old, new, strict=True))
    return EstimatorBuffer(
        s, a, s_next, recent, initial_observations(rng, problem.mdp, initial_samples)
    )


def estimator_config(
    cfg: FiniteMDPConfig, divergence: Divergence, recent: int, q_steps: int | None = None
) -> TOMConfig:
    """TOM's settings for the finite check: the finite section's budget, TOMConfig's defaults
    for the rest (learning rates, batches, weight decay, gradient penalty, soft target)."""
    return TOMConfig(
        recent_size=recent,
        divergence=divergence,
        gamma=cfg.gamma,
        discriminator_steps=cfg.estimator_discriminator_steps,
        discriminator_width=cfg.estimator_discriminator_width,
        q_steps=cfg.estimator_q_steps if q_steps is None else q_steps,
        q_hidden_sizes=cfg.estimator_q_hidden_sizes,
        offline_convergence=None,
    )


def run_estimator(
    problem: RatioProblem,
    buffer: EstimatorBuffer,
    divergence: Divergence,
    reward_kind: RewardKind,
    tom: TOMConfig,
    seed: int,
) -> np.ndarray:
    """The project's estimator on the buffer: one weight per row, mean 1, (N,)."""
    if tom.divergence != divergence or tom.recent_size != buffer.recent:
        raise TomreproError("finite estimator: TOM settings do not match the divergence/buffer")
    estimate, _ = estimate_tom_weights(
        transition_columns(problem.mdp, buffer.s, buffer.a, buffer.s_next),
        DiscretePolicy(problem.pi),
        tom,
        use_discriminator=reward_kind == "discriminator",
        seed=seed,
        device=CPU,
        initial_observations=buffer.initial,
    )
    return estimate.weights


def _buffer_seed(seed: int, samples: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, "finite/estimator/buffer", samples))


def estimator_rows(
    problem: RatioProblem,
    divergence: Divergence,
    reward_kind: RewardKind,
    cfg: FiniteMDPConfig,
    seed: int,
    *,
    samples: int | None = None,
    q_steps: int | None = None,
) -> tuple[EstimatorBuffer, np.ndarray]:
    """A buffer of `samples` (default `cfg.estimator_samples`) rows and the estimator's weights on
    it. The buffer depends only on (seed, samples), so every divergence and reward sees the same
    rows; the estimator is seeded by `seed`."""
    n = cfg.estimator_samples if samples is None else samples
    buffer = sample_buffer(problem, _buffer_seed(seed, n), n, cfg.estimator_initial_samples)
    tom = estimator_config(cfg, divergence, buffer.recent, q_steps)
    return buffer, run_estimator(problem, buffer, divergence, reward_kind, tom, seed)


def cell_means(buffer: EstimatorBuffer, weights: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Mean of the row weights in each (s, a, s') cell; NaN where no row fell: (S, A, S)."""
    cells = np.ravel_multi_index((buffer.s, buffer.a, buffer.s_next), shape)
    counts = np.bincount(cells, minlength=int(np.prod(shape)))
    sums = np.bincount(cells, weights, minlength=int(np.prod(shape)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).reshape(shape)


def estimated_cell_weights(
    problem: RatioProblem,
    divergence: Divergence,
    reward_kind: RewardKind,
    cfg: FiniteMDPConfig,
    seed: int,
    *,
    samples: int | None = None,
) -> np.ndarray:
    """The estimator's weights on (s, a, s') cells, (S, A, S): the mean over the buffer rows in
    each cell (mean 1 over the rows), NaN on cells no row of the buffer fell in."""
    buffer, weights = estimator_rows(problem, divergence, reward_kind, cfg, seed, samples=samples)
    return cell_means(buffer, weights, problem.d_pi.shape)


def relative_error(
    estimate: np.ndarray, truth: np.ndarray, mass: np.ndarray | None = None
) -> float:
    """E|estimate - truth| / E[truth] under `mass` (default: uniform over the entries)."""
    mass = np.ones_like(truth) if mass is None else mass
    return float(np.sum(mass * np.abs(estimate - truth)) / np.sum(mass * truth))


def form_bias(
    problem: RatioProblem, optimum: SampledOptimum, reward: RewardDistribution
) -> tuple[float, float]:
    """The population optimum's weighted relative error against w: per row (over the reward's
    values and a' ~ pi, as the estimator reads rows out) and per cell (averaged first)."""
    pi, d_r, ratio = problem.pi, problem.d_replay, problem.ratio
    law = d_r[None, ..., None] * reward.probs[..., None] * pi[None, None, None]
    rows = relative_error(optimum.weights, np.broadcast_to(ratio[None, ..., None], law.shape), law)
    return rows, relative_error(optimum.cell_weights(pi, reward), ratio, d_r)


def estimator_measures(
    problem: RatioProblem,
    buffer: EstimatorBuffer,
    weights: np.ndarray,
    optimum: SampledOptimum,
    reward: RewardDistribution,
) -> dict[str, float]:
    """The row-level measures of one fit (module doc): error, spearman, cell_error,
    vs_optimum_error."""
    shape = problem.d_pi.shape
    cells = (buffer.s, buffer.a, buffer.s_next)
    truth = problem.ratio[cells]
    truth = truth / truth.mean()
    per_cell = cell_means(buffer, weights, shape)[cells]
    optimum_cell = optimum.cell_weights(problem.pi, reward)[cells]
    constant = np.ptp(weights) == 0 or np.ptp(truth) == 0
    return {
        "error": relative_error(weights, truth),
        "spearman": float("nan") if constant else float(spearmanr(weights, truth).statistic),
        "cell_error": relative_error(per_cell, truth),
        "vs_optimum_error": relative_error(per_cell, optimum_cell),
    }


@dataclass
class EstimatorResult:
    """Per (reward kind, divergence, measure): one value per MDP; plus the MDPs' sizes."""

    mdps: int
    values: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    states: list[int] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)

    def add(self, kind: str, divergence: str, measures: dict[str, float]) -> None:
        cell = self.values.setdefault(kind, {}).setdefault(divergence, {})
        for name, value in measures.items():
            cell.setdefault(name, []).append(value)


def _optimum(
    problem: RatioProblem, divergence: Divergence, kind: RewardKind, negative_target: float
) -> tuple[SampledOptimum, RewardDistribution]:
    reward = population_reward(problem, kind, negative_target)
    return solve_sampled_optimum(
        problem.mdp, problem.pi, problem.d_replay, reward, divergence
    ), reward


def check_estimator(cfg: FiniteMDPConfig) -> EstimatorResult:
    """C5 on `cfg.estimator_mdps` random problems: every (reward kind, divergence) on the same
    buffer per MDP (paired), against the truth and the population optimum."""
    result = EstimatorResult(cfg.estimator_mdps)
    negative_target = TOMConfig().negative_target
    for i in range(cfg.estimator_mdps):
        seed = derive_seed(cfg.seed, "finite/estimator", i)
        rng = np.random.default_rng(derive_seed(seed, "finite/estimator/problem"))
        problem = draw_ratio_problem(rng, cfg.gamma, cfg.estimator_recent_share)
        result.states.append(problem.mdp.n_states)
        result.actions.append(problem.mdp.n_actions)
        for kind in REWARD_KINDS:
            for divergence in DIVERGENCES:
                optimum, reward = _optimum(problem, divergence, kind, negative_target)
                tick = time.perf_counter()
                buffer, weights = estimator_rows(problem, divergence, kind, cfg, seed)
                seconds = time.perf_counter() - tick
                bias_rows, bias_cells = form_bias(problem, optimum, reward)
                result.add(
                    kind,
                    divergence,
                    estimator_measures(problem, buffer, weights, optimum, reward)
                    | {
                        "form_bias_error": bias_rows,
                        "form_bias_cell_error": bias_cells,
                        "seconds": seconds,
                    },
                )
    return result


@dataclass
class ConvergenceResult:
    """values[measure][divergence]: (samples, q_steps, mdp) nested lists, no-discriminator
    reward."""

    samples: tuple[int, ...]
    q_steps: tuple[int, ...]
    mdps: int
    values: dict[str, dict[str, list[list[list[float]]]]] = field(default_factory=dict)


def check_convergence(cfg: FiniteMDPConfig) -> ConvergenceResult:
    """The estimator against the population optimum (cell level) and the truth (rows) as the
    buffer size and the number of Q steps grow; each (N, steps) is a fresh fit."""
    n_s, n_q, m = len(cfg.convergence_samples), len(cfg.convergence_q_steps), cfg.convergence_mdps
    grid = {
        name: {d: np.full((n_s, n_q, m), np.nan) for d in DIVERGENCES}
        for name in CONVERGENCE_MEASURES
    }
    negative_target = TOMConfig().negative_target
    kind: RewardKind = "no_discriminator"
    for i in range(m):
        seed = derive_seed(cfg.seed, "finite/convergence", i)
        rng = np.random.default_rng(derive_seed(seed, "finite/estimator/problem"))
        problem = draw_ratio_problem(rng, cfg.gamma, cfg.estimator_recent_share)
        for divergence in DIVERGENCES:
            optimum, reward = _optimum(problem, divergence, kind, negative_target)
            for a, n in enumerate(cfg.convergence_samples):
                for b, steps in enumerate(cfg.convergence_q_steps):
                    buffer, weights = estimator_rows(
                        problem, divergence, kind, cfg, seed, samples=n, q_steps=steps
                    )
                    measures = estimator_measures(problem, buffer, weights, optimum, reward)
                    for name in CONVERGENCE_MEASURES:
                        grid[name][divergence][a, b, i] = measures[name]
    return ConvergenceResult(
        tuple(cfg.convergence_samples),
        tuple(cfg.convergence_q_steps),
        m,
        {name: {d: v.tolist() for d, v in by_div.items()} for name, by_div in grid.items()},
    )


def finite_results(
    recovery: RecoveryResult,
    bound: BoundResult,
    seed: int,
    estimator: EstimatorResult | None = None,
    convergence: ConvergenceResult | None = None,
    settings: dict[str, Any] | None = None,
) -> dict:
    """The checks as plain JSON: the stage output the analysis reads (`datasets.finite_dataset`).

    `estimator`: {"reward_kinds", "divergences", "measures", "mdps", "states", "actions",
    "values": {kind: {divergence: {measure: [one value per MDP]}}}, "settings"};
    `convergence`: {"reward_kind", "divergences", "samples", "q_steps", "mdps",
    "values": {measure: {divergence: [[[per MDP] per q_steps] per samples]}}}."""
    out: dict[str, Any] = {
        "mdps": recovery.mdps,
        "seed": seed,
        "recovery": recovery.max_relative_error,
        "min_slack_kl": bound.min_slack_kl,
        "min_slack_chi2": bound.min_slack_chi2,
        "bound_model_mix": bound.model_mix,
        "slack_kl": bound.slack_kl,
        "slack_chi2": bound.slack_chi2,
    }
    if estimator is not None:
        out["estimator"] = {
            "reward_kinds": list(REWARD_KINDS),
            "divergences": list(DIVERGENCES),
            "measures": list(ESTIMATOR_MEASURES),
            "mdps": estimator.mdps,
            "states": estimator.states,
            "actions": estimator.actions,
            "values": estimator.values,
            "settings": settings or {},
        }
    if convergence is not None:
        out["convergence"] = {
            "reward_kind": "no_discriminator",
            "divergences": list(DIVERGENCES),
            "samples": list(convergence.samples),
            "q_steps": list(convergence.q_steps),
            "mdps": convergence.mdps,
            "values": convergence.values,
        }
    return out


def _estimator_lines(estimator: EstimatorResult, convergence: ConvergenceResult) -> list[str]:
    lines = [
        f"C5: the project's estimator on {estimator.mdps} MDPs (mean [min, max] over MDPs): "
        "weighted relative error vs d^pi/d^R, Spearman, and the population optimum's error "
        "(bias of the form)"
    ]
    for kind in REWARD_KINDS:
        for divergence in DIVERGENCES:
            v = {k: np.asarray(x) for k, x in estimator.values[kind][divergence].items()}
            lines.append(
                f"  {kind + '/' + divergence:<24} error {v['error'].mean():.3f} "
                f"[{v['error'].min():.3f}, {v['error'].max():.3f}]  "
                f"spearman {np.nanmean(v['spearman']):.3f}  "
                f"form bias {v['form_bias_error'].mean():.3f}  "
                f"vs optimum {v['vs_optimum_error'].mean():.3f}  "
                f"{v['seconds'].mean():.1f} s/fit"
            )
    if convergence.mdps:
        lines.append(
            f"C5 convergence ({convergence.mdps} MDPs, no-discriminator reward): mean error of "
            "cell-averaged weights vs the population optimum | of row weights vs the truth"
        )
        for divergence in DIVERGENCES:
            vs_opt = np.asarray(convergence.values["vs_optimum_error"][divergence])
            truth = np.asarray(convergence.values["error"][divergence])
            for a, n in enumerate(convergence.samples):
                cells = "  ".join(
                    f"{steps} steps {vs_opt[a, b].mean():.3f} | {truth[a, b].mean():.3f}"
                    for b, steps in enumerate(convergence.q_steps)
                )
                lines.append(f"  {divergence:<5} N={n:<6} {cells}")
    return lines


def _estimator_weight_source(cfg: FiniteMDPConfig):
    """C6's extra weights: the project's estimator (chi2, discriminator reward: TOM's default)
    on a buffer of the fit's size drawn from the fit problem's d^R. pi's share k of that buffer
    is the profile's, or 90 % of the largest share d^R can hold when that is smaller; cells the
    estimator's buffer never visited get weight 1 (the fit's counts rarely reach them)."""

    def source(problem: FitProblem, rng: np.random.Generator) -> dict[str, np.ndarray]:
        d_pi = transition_occupancy(problem.mdp, problem.pi)
        d_r = problem.d_replay / problem.d_replay.sum()
        share = min(cfg.estimator_recent_share, 0.9 * float(np.min(d_r / d_pi)))
        ratio = RatioProblem.from_replay(problem.mdp, problem.pi, d_r, share)
        seed = int(rng.integers(2**62))
        weights = estimated_cell_weights(
            ratio, "chi2", "discriminator", cfg, seed, samples=problem.samples
        )
        return {ESTIMATED: np.nan_to_num(weights, nan=1.0)}

    return source


def check_model_fit(cfg: FiniteMDPConfig) -> tuple[dict, dict]:
    """C6: TOM-weighted vs plain MLE fits of a state-aggregated model on N = the estimator's
    buffer size samples of d^R (population data make TOM's return error 0 by construction):
    exact weights on `mdps` MDPs, and, on the first `estimator_mdps` of those same MDPs, the
    estimator's weights too (which also says how good C5's estimated weights are in use)."""
    exact = run_model_fit(cfg.mdps, cfg.seed, cfg.gamma, cfg.estimator_samples)
    with_estimator = run_model_fit(
        cfg.estimator_mdps,
        cfg.seed,
        cfg.gamma,
        cfg.estimator_samples,
        weight_source=_estimator_weight_source(cfg),
    )
    return exact, with_estimator


def run_finite_checks(cfg: FiniteMDPConfig, out: Path | None = None) -> list[str]:
    """The `finite-mdp` stage: every check, the JSON file (when `out` is given) and a summary."""
    recovery = check_recovery(cfg.mdps, derive_seed(cfg.seed, "finite/recovery"), cfg.gamma)
    bound = check_bound(cfg.mdps, derive_seed(cfg.seed, "finite/bound"), cfg.gamma)
    estimator = check_estimator(cfg)
    convergence = check_convergence(cfg)
    model_fit, model_fit_estimated = check_model_fit(cfg)
    lines = [
        f"C5 (sanity: exact for the expected form): largest relative error of the exactly "
        f"solved dual over {cfg.mdps} MDPs"
    ]
    lines += [
        f"  {key:<32} {error:.3e}" for key, error in sorted(recovery.max_relative_error.items())
    ]
    lines += _estimator_lines(estimator, convergence)
    lines.append(
        f"C6 (sanity): min slack over {cfg.mdps} MDPs: KL bound {bound.min_slack_kl:.3e}, "
        f"chi2 bound {bound.min_slack_chi2:.3e} (>= 0 means the bound holds)"
    )
    lines.append(f"C6: state-aggregated model fits on N = {cfg.estimator_samples} samples of d^R")
    lines += model_fit_summary(model_fit)
    lines += [f"  estimated weights, {cfg.estimator_mdps} MDPs:"]
    lines += ["  " + line for line in model_fit_summary(model_fit_estimated) if "estimated" in line]
    if out is not None:
        settings = cfg.model_dump(mode="json")
        results = finite_results(recovery, bound, cfg.seed, estimator, convergence, settings)
        results["model_fit"] = model_fit
        results["model_fit_estimated"] = model_fit_estimated
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
    return lines
