"""Claims C5 and C6 measured on random finite MDPs, where every quantity is exact.

C5 (the dual-RL estimator recovers the occupancy ratio): for each MDP, a current policy pi and a
replay distribution d^R mixing older policies' occupancies (and pi's own, for coverage), the dual
is solved exactly and the recovered weights compared with d^pi / d^R, for three rewards:
`discriminator` (the optimum of TOM's discriminator loss, positives d^pi and soft negative target
0.1: R = log((d^pi + 0.1 d^R) / (0.9 d^R))), `perturbed` (that plus N(0, 1) noise) and `zero_one`
(1 on transitions drawn from d^pi, 0 elsewhere). The `expected` residual must recover the ratio
exactly; the `sampled` residual's deviation is reported, not asserted.

C6 (the TOM objective lower-bounds log J(pi)): with r > 0 and J(pi) = E_{d^pi_P}[r(s, a)] (the
(1 - gamma)-normalised return), for any model P_hat with the same support,
    log J(pi) = log E_{d^pi_P_hat}[r * d^pi_P / d^pi_P_hat]
             >= E_{d^pi_P_hat}[log r] - KL(d^pi_P_hat(s,a,s') || d^pi_P(s,a,s'))      (Jensen)
             >= E_{d^pi_P_hat}[log r] - chi2(d^pi_P_hat(s,a,s') || d^pi_P(s,a,s'))    (KL <= chi2)
Both inequalities are checked; the slack (left minus right) must be >= 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tomrepro.core.atomic import atomic_path
from tomrepro.core.config import FiniteMDPConfig
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.finite_dual import Divergence, solve_dual
from tomrepro.learning.finite_mdp import (
    perturbed_dynamics,
    random_mdp,
    random_policy,
    replay_occupancy,
    state_action_occupancy,
    transition_occupancy,
)

REWARDS = ("discriminator", "perturbed", "zero_one")
DIVERGENCES: tuple[Divergence, ...] = ("chi2", "kl")


@dataclass
class RecoveryResult:
    """Largest relative error of recovered weights, per (reward, divergence, form)."""

    mdps: int
    max_relative_error: dict[str, float] = field(default_factory=dict)

    def record(self, key: str, error: float) -> None:
        self.max_relative_error[key] = max(self.max_relative_error.get(key, 0.0), error)


def _problem(rng: np.random.Generator, gamma: float):
    states, actions = int(rng.integers(3, 9)), int(rng.integers(2, 5))
    mdp = random_mdp(rng, states, actions, gamma)
    pi = random_policy(rng, states, actions)
    older = [random_policy(rng, states, actions) for _ in range(int(rng.integers(1, 4)))]
    shares = rng.dirichlet(np.ones(len(older) + 1))
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


def finite_results(recovery: RecoveryResult, bound: BoundResult, seed: int) -> dict:
    """Both checks as plain JSON: the stage output the analysis reads."""
    return {
        "mdps": recovery.mdps,
        "seed": seed,
        "recovery": recovery.max_relative_error,
        "min_slack_kl": bound.min_slack_kl,
        "min_slack_chi2": bound.min_slack_chi2,
        "bound_model_mix": bound.model_mix,
        "slack_kl": bound.slack_kl,
        "slack_chi2": bound.slack_chi2,
    }


def run_finite_checks(cfg: FiniteMDPConfig, out: Path | None = None) -> list[str]:
    """The `finite-mdp` stage: both checks, the JSON file (when `out` is given) and a summary."""
    recovery = check_recovery(cfg.mdps, derive_seed(cfg.seed, "finite/recovery"))
    bound = check_bound(cfg.mdps, derive_seed(cfg.seed, "finite/bound"))
    lines = [f"C5: largest relative error of recovered weights over {cfg.mdps} MDPs"]
    lines += [
        f"  {key:<32} {error:.3e}" for key, error in sorted(recovery.max_relative_error.items())
    ]
    lines.append(
        f"C6: min slack over {cfg.mdps} MDPs: KL bound {bound.min_slack_kl:.3e}, "
        f"chi2 bound {bound.min_slack_chi2:.3e} (>= 0 means the bound holds)"
    )
    if out is not None:
        with atomic_path(out) as tmp:
            tmp.write_text(json.dumps(finite_results(recovery, bound, cfg.seed), indent=2))
    return lines
