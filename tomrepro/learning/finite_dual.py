"""TOM's dual-RL problem solved exactly on a finite MDP (tabular Q, convex optimisation).

    L(Q) = (1 - gamma) E_{s0 ~ mu0, a0 ~ pi}[Q(s0, a0)] + E_{d^R}[f*(e)],
    chi2: f*(x) = max(0, x + 1)^2 / 2 - 1/2,  w = f*'(e) = max(0, e + 1)
    KL:   the second term is log E_{d^R}[exp(e)],   w = exp(e) / E_{d^R}[exp(e)]

Two forms of the residual e:
- `expected`: e(s, a) = E_{s' ~ P}[R(s, a, s') + gamma V(s')] - Q(s, a),
  with V(s') = E_{a' ~ pi} Q(s', a').
  Setting the gradient to zero gives exactly the flow equations of d = d^R w, whose only solution
  is d^pi, so w = d^pi / d^R for *any* reward R (claim C5). This needs P, so it is the finite-MDP
  check, not the practical estimator.
- `sampled`: e(s, a, s') = R(s, a, s') + gamma V(s') - Q(s, a), what the neural estimator fits from
  samples. Here the flow equations only constrain sums over s', so w(s, a, s') may vary with
  R + gamma V across s' and recovery is not exact; the reward shapes the estimate.

chi2 uses the conjugate of f(x) = (x - 1)^2 / 2 on x >= 0 (whose derivative is max(0, x + 1)); the
official code's loss uses x + x^2 / 2, which agrees wherever e >= -1.
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
    weights: np.ndarray  # (S, A) for `expected`, (S, A, S) for `sampled`
    gradient_norm: float


def _residual_operator(
    mdp: FiniteMDP, pi: np.ndarray, reward: np.ndarray, form: str
) -> tuple[np.ndarray, np.ndarray]:
    """e = c + M q, with q the flattened Q; rows are (s, a) or (s, a, s') cells."""
    S, A = mdp.n_states, mdp.n_actions
    # V(s') = sum_a' pi(a'|s') Q(s', a'): a linear map Pi from q (S*A) to V (S).
    Pi = (np.eye(S)[:, :, None] * pi[None, :, :]).reshape(S, S * A)
    if form == "expected":
        c = np.einsum("sat,sat->sa", mdp.P, reward).reshape(-1)
        M = mdp.gamma * mdp.P.reshape(S * A, S) @ Pi - np.eye(S * A)
    else:
        c = reward.reshape(-1)
        select_next = np.tile(np.eye(S), (S * A, 1))  # row (s, a, s') picks s'
        select_here = np.repeat(np.eye(S * A), S, axis=0)  # row (s, a, s') picks (s, a)
        M = mdp.gamma * select_next @ Pi - select_here
    return c, M


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
    """Minimise L(Q) to gradient norm `tol`.

    `replay` is d^R(s, a, s') (S, A, S); `reward` is R(s, a, s') (S, A, S).
    """
    S, A = mdp.n_states, mdp.n_actions
    c, M = _residual_operator(mdp, pi, reward, form)
    d_r = replay.sum(-1).reshape(-1) if form == "expected" else replay.reshape(-1)
    nu = (mdp.mu0[:, None] * pi).reshape(-1)
    lin = (1 - mdp.gamma) * nu

    if divergence == "chi2":

        def fun(q: np.ndarray) -> tuple[float, np.ndarray]:
            e = c + M @ q
            w = np.maximum(0.0, e + 1)
            return lin @ q + d_r @ (0.5 * w**2 - 0.5), lin + M.T @ (d_r * w)

        def hess(q: np.ndarray) -> np.ndarray:
            active = (c + M @ q > -1).astype(np.float64)
            return M.T @ ((d_r * active)[:, None] * M)

        x0 = np.zeros(S * A)
        result = optimize.minimize(
            fun,
            x0,
            jac=True,
            hess=hess,
            method="trust-exact",
            options={"gtol": tol, "maxiter": 2000},
        )
        q = _newton_polish(result.x, lambda q: fun(q)[1], hess, tol)
        e = c + M @ q
        weights = np.maximum(0.0, e + 1)
        grad = fun(q)[1]
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
    shape = (S, A) if form == "expected" else (S, A, S)
    return DualSolution(q.reshape(S, A), weights.reshape(shape), float(np.linalg.norm(grad)))
