"""Finite MDPs with exact occupancies: the laboratory for claims C5 and C6.

Occupancies are normalised discounted visitation distributions,
    d^pi_P(s, a)     = (1 - gamma) sum_t gamma^t Pr(s_t = s, a_t = a),
    d^pi_P(s, a, s') = d^pi_P(s, a) P(s' | s, a),
computed by solving the linear flow equations exactly. A replay distribution is a mixture of older
policies' occupancies, as a replay buffer filled by a sequence of policies is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FiniteMDP:
    """P: (S, A, S) transition probabilities; mu0: (S,) initial distribution."""

    P: np.ndarray
    mu0: np.ndarray
    gamma: float

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]


def random_mdp(
    rng: np.random.Generator, states: int, actions: int, gamma: float, concentration: float = 1.0
) -> FiniteMDP:
    """Dense random MDP: every transition row and the initial distribution Dirichlet-drawn."""
    P = rng.dirichlet(np.full(states, concentration), size=(states, actions))
    return FiniteMDP(P, rng.dirichlet(np.ones(states)), gamma)


def random_policy(
    rng: np.random.Generator, states: int, actions: int, concentration: float = 1.0
) -> np.ndarray:
    """pi(a | s) as an (S, A) array with full support."""
    return rng.dirichlet(np.full(actions, concentration), size=states)


def perturbed_dynamics(rng: np.random.Generator, mdp: FiniteMDP, mix: float) -> FiniteMDP:
    """A 'learned model': P mixed with a random transition kernel."""
    other = rng.dirichlet(np.ones(mdp.n_states), size=(mdp.n_states, mdp.n_actions))
    return FiniteMDP((1 - mix) * mdp.P + mix * other, mdp.mu0, mdp.gamma)


def state_action_occupancy(mdp: FiniteMDP, pi: np.ndarray) -> np.ndarray:
    """d^pi(s, a), (S, A), summing to 1: solves d_s = (1 - gamma) mu0 + gamma P_pi^T d_s."""
    p_pi = np.einsum("sa,sat->st", pi, mdp.P)  # (S, S)
    d_s = np.linalg.solve(np.eye(mdp.n_states) - mdp.gamma * p_pi.T, (1 - mdp.gamma) * mdp.mu0)
    return d_s[:, None] * pi


def transition_occupancy(mdp: FiniteMDP, pi: np.ndarray) -> np.ndarray:
    """d^pi(s, a, s'), (S, A, S)."""
    return state_action_occupancy(mdp, pi)[:, :, None] * mdp.P


def replay_occupancy(mdp: FiniteMDP, policies: list[np.ndarray], shares: np.ndarray) -> np.ndarray:
    """d^R(s, a, s') of a buffer holding `shares` of data from each of `policies`."""
    shares = np.asarray(shares, dtype=np.float64) / np.sum(shares)
    return sum(w * transition_occupancy(mdp, pi) for w, pi in zip(shares, policies, strict=True))
