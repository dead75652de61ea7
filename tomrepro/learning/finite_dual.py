"""TOM's dual-RL problem solved exactly on a finite MDP (tabular Q, population d^R).

    L(Q) = (1 - gamma) E_{s0 ~ mu0, a0 ~ pi}[Q(s0, a0)] + E_{d^R}[f*(e)],
    chi2: f*(x) = x + x^2 / 2,  w = max(0, e + 1)
    KL:   the second term is log E_{d^R}[exp(e)],   w = exp(e)
with the weights normalised to mean 1 under d^R: the conjugates and read-outs of the neural
estimator (`dual_rl.py`), so that its weights can be compared with this population optimum.

Two forms of the residual e:
- `expected`: e(s, a) = E_{s' ~ P}[R(s, a, s') + gamma V(s')] - Q(s, a),
  with V(s') = E_{a' ~ pi} Q(s', a').
  Setting the gradient to zero gives exactly the flow equations of d = d^R w, whose only solution
  is d^pi, so w = d^pi / d^R for *any* reward R: a theorem, hence only a sanity check of the
  solver. It needs P, so it is not what the code runs.
- `sampled`: e(s, a, s', a') = R(s, a, s') + gamma Q(s', a') - Q(s, a) with a' ~ pi(s') drawn per
  row, the form the neural estimator fits from samples (and reads out, one a' per row). The flow
  equations only constrain sums over s' and a', so w varies with R + gamma Q(s', a') across them
  and recovery is not exact: the reward shapes the optimum (the bias of the form, claim C5). The
  a' inside the square also makes chi2 penalise gamma^2 Var_{a'} Q(s', a').

chi2's quadratic makes the solve a linear system; KL is convex and solved by Newton's method.
A reward that is random given the cell (TOM without a discriminator: 1 on the rows of D^pi, 0
elsewhere) enters chi2's loss only through its mean and KL's only through log E[exp(R)], so the
optimum Q is that of a fixed reward; the weights then differ by the row's reward
(`solve_sampled_optimum`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize

from tomrepro.learning.finite_mdp import FiniteMDP

Divergence = Literal["chi2", "kl"]


@dataclass(frozen=True)
class DualSolution:
    q: np.ndarray  # (S, A)
    weights: np.ndarray  # (S, A) for `expected`; (S, A, S), the mean over a' ~ pi, for `sampled`
    gradient_norm: float


def _residual_operator(
    mdp: FiniteMDP, pi: np.ndarray, replay: np.ndarray, reward: np.ndarray, form: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """e = c + M q, with q the flattened Q, and the rows' probabilities d; rows are (s, a) cells
    (`expected`) or (s, a, s', a') with a' ~ pi(s') (`sampled`)."""
    S, A = mdp.n_states, mdp.n_actions
    if form == "expected":
        # V(s') = sum_a' pi(a'|s') Q(s', a'): a linear map Pi from q (S*A) to V (S).
        Pi = (np.eye(S)[:, :, None] * pi[None, :, :]).reshape(S, S * A)
        c = np.einsum("sat,sat->sa", mdp.P, reward).reshape(-1)
        M = mdp.gamma * mdp.P.reshape(S * A, S) @ Pi - np.eye(S * A)
        d = replay.sum(-1).reshape(-1)
    else:
        c = np.repeat(reward.reshape(-1), A)
        select_next = np.tile(np.eye(S * A), (S * A, 1))  # row (s, a, s', a') picks (s', a')
        select_here = np.repeat(np.eye(S * A), S * A, axis=0)  # ... and (s, a)
        M = mdp.gamma * select_next - select_here
        d = (replay[..., None] * pi[None, None]).reshape(-1)
    return c, M, d


def _newton_polish(x: np.ndarray, grad, hess, tol: float, steps: int = 8) -> np.ndarray:
    """A few full Newton steps from near the optimum, where they converge quadratically."""
    for _ in range(steps):
        g = grad(x)
        if np.linalg.norm(g) <= tol:
            break
        x = x - np.linalg.lstsq(hess(x), g, rcond=None)[0]
    return x


def solve_dual(
    mdp: FiniteMDP,
    pi: np.ndarray,
    replay: np.ndarray,
    reward: np.ndarray,
    divergence: Divergence = "chi2",
    form: Literal["expected", "sampled"] = "expected",
    tol: float = 1e-12,
) -> DualSolution:
    """Minimise L(Q) exactly (chi2) or to gradient norm `tol` (KL).

    `replay` is d^R(s, a, s') (S, A, S) with full support; `reward` is R(s, a, s') (S, A, S).
    """
    S, A = mdp.n_states, mdp.n_actions
    c, M, d_r = _residual_operator(mdp, pi, replay, reward, form)
    nu = (mdp.mu0[:, None] * pi).reshape(-1)
    lin = (1 - mdp.gamma) * nu

    if divergence == "chi2":
        # grad = lin + M^T diag(d_r) (1 + c + M q) = 0; M has full column rank (V = Q = const
        # is the only candidate kernel and gamma < 1 rules it out), so the system is SPD.
        hessian = M.T @ (d_r[:, None] * M)
        q = np.linalg.solve(hessian, -lin - M.T @ (d_r * (1 + c)))
        e = c + M @ q
        grad = lin + M.T @ (d_r * (1 + e))
        weights = np.maximum(0.0, e + 1)
        weights = weights / (d_r @ weights)
    else:
        # log E exp(e) is invariant to adding a constant to Q, so fix Q's first entry at 0.
        Mr = M[:, 1:]

        def parts(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
            e = c + Mr @ z
            shift = e.max()
            p = d_r * np.exp(e - shift)
            return e, p / p.sum(), float(np.log(p.sum()) + shift)

        def fun_kl(z: np.ndarray) -> tuple[float, np.ndarray]:
            _, p, lse = parts(z)
            return lin[1:] @ z + lse, lin[1:] + Mr.T @ p

        def hess_kl(z: np.ndarray) -> np.ndarray:
            _, p, _ = parts(z)
            Mp = Mr.T @ p
            return Mr.T @ (p[:, None] * Mr) - np.outer(Mp, Mp)

        result = optimize.minimize(
            fun_kl,
            np.zeros(S * A - 1),
            jac=True,
            hess=hess_kl,
            method="trust-exact",
            options={"gtol": tol, "maxiter": 2000},
        )
        z = _newton_polish(result.x, lambda z: fun_kl(z)[1], hess_kl, tol)
        q = np.concatenate(([0.0], z))
        e, _, _ = parts(z)
        weights = np.exp(e - e.max())
        weights = weights / (d_r @ weights)
        grad = fun_kl(z)[1]
    if form == "expected":
        weights = weights.reshape(S, A)
    else:
        weights = np.einsum("satb,tb->sat", weights.reshape(S, A, S, A), pi)
    return DualSolution(q.reshape(S, A), weights, float(np.linalg.norm(grad)))


@dataclass(frozen=True)
class RewardDistribution:
    """R(s, a, s') as J values per cell with their probabilities: values, probs (J, S, A, S),
    probs summing to 1 over J. A reward that is a function of the cell has J = 1."""

    values: np.ndarray
    probs: np.ndarray

    @classmethod
    def fixed(cls, reward: np.ndarray) -> RewardDistribution:
        return cls(reward[None], np.ones((1, *reward.shape)))

    @property
    def mean(self) -> np.ndarray:
        return np.sum(self.values * self.probs, axis=0)

    @property
    def log_mean_exp(self) -> np.ndarray:
        """log E[exp(R) | cell], (S, A, S)."""
        top = self.values.max(axis=0)
        return top + np.log(np.sum(self.probs * np.exp(self.values - top), axis=0))


@dataclass(frozen=True)
class SampledOptimum:
    """The population optimum of the sampled form: q (S, A); weights (J, S, A, S, A), the
    read-out of a row (s, a, s') whose reward is value j and whose drawn a' is the last index,
    normalised to mean 1 under d^R(s, a, s') pi(a' | s') and the reward's law."""

    q: np.ndarray
    weights: np.ndarray
    gradient_norm: float

    def row_weights(self, pi: np.ndarray) -> np.ndarray:
        """Mean read-out over a' ~ pi(s') for a row of each reward value: (J, S, A, S)."""
        return np.einsum("jsatb,tb->jsat", self.weights, pi)

    def cell_weights(self, pi: np.ndarray, reward: RewardDistribution) -> np.ndarray:
        """Mean weight of the rows in each cell: (S, A, S)."""
        return np.sum(self.row_weights(pi) * reward.probs, axis=0)


def solve_sampled_optimum(
    mdp: FiniteMDP,
    pi: np.ndarray,
    replay: np.ndarray,
    reward: RewardDistribution,
    divergence: Divergence = "chi2",
    tol: float = 1e-12,
) -> SampledOptimum:
    """The sampled-form dual on the population d^R (S, A, S), with the estimator's conjugate,
    a' ~ pi drawn per row as it does, and its read-out: what the neural estimator converges to
    with unlimited samples and steps and an exact Q (for the discriminator reward, also an optimal
    discriminator)."""
    effective = reward.mean if divergence == "chi2" else reward.log_mean_exp
    solution = solve_dual(mdp, pi, replay, effective, divergence, "sampled", tol)
    q = solution.q
    e = reward.values[..., None] + mdp.gamma * q[None, None, None] - q[None, :, :, None, None]
    if divergence == "chi2":
        w = np.maximum(0.0, e + 1)
    else:
        w = np.exp(e - e.max())
    law = replay[None, ..., None] * reward.probs[..., None] * pi[None, None, None]
    return SampledOptimum(q, w / np.sum(law * w), solution.gradient_norm)
