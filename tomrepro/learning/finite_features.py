"""A finite MDP seen through the neural estimator's interfaces: one-hot features and a policy.

The dual-RL estimator (`dual_rl.py`) and TOM's weight round (`tom_weights.py`) take buffer columns
of float features and an actor with `sample(obs, generator) -> (actions, log_prob)`. Encoding
states and actions one-hot and drawing actions from a tabular pi(a | s) lets the same code run on
a finite MDP, where d^pi / d^R is exact (claim C5).
"""

from __future__ import annotations

import numpy as np
import torch

from tomrepro.core.errors import TomreproError
from tomrepro.learning.finite_mdp import FiniteMDP


def one_hot(indices: np.ndarray, size: int) -> np.ndarray:
    """(N,) integer indices in [0, size) -> (N, size) float32 one-hot rows."""
    indices = np.asarray(indices)
    if indices.ndim != 1 or (indices.size and (indices.min() < 0 or indices.max() >= size)):
        raise TomreproError(f"one-hot: indices must be a vector in [0, {size})")
    out = np.zeros((len(indices), size), dtype=np.float32)
    out[np.arange(len(indices)), indices] = 1.0
    return out


class DiscretePolicy:
    """pi(a | s) as an actor: one-hot states (B, S) -> one-hot actions (B, A) drawn from pi, and
    their log-probabilities (B,). Rows that are not one-hot mix pi's rows linearly."""

    def __init__(self, pi: np.ndarray) -> None:
        pi = np.asarray(pi, dtype=np.float64)
        if pi.ndim != 2 or (pi < 0).any() or not np.allclose(pi.sum(1), 1.0):
            raise TomreproError("discrete policy: pi must be (S, A) rows of probabilities")
        self.table = torch.as_tensor(pi, dtype=torch.float32)

    @property
    def n_actions(self) -> int:
        return self.table.shape[1]

    def to(self, device: torch.device) -> DiscretePolicy:
        self.table = self.table.to(device)
        return self

    @torch.no_grad()
    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        probs = obs @ self.table  # (B, A)
        drawn = torch.multinomial(probs, 1, replacement=True, generator=generator)[:, 0]
        actions = torch.nn.functional.one_hot(drawn, self.n_actions).to(obs.dtype)
        return actions, torch.log(probs.gather(1, drawn[:, None])[:, 0])


def sample_cells(
    rng: np.random.Generator, occupancy: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n i.i.d. draws (s, a, s') from an (S, A, S) distribution: three (n,) index arrays."""
    flat = occupancy.reshape(-1) / occupancy.sum()
    cells = rng.choice(flat.size, size=n, p=flat)
    return np.unravel_index(cells, occupancy.shape)  # type: ignore[return-value]


def transition_columns(
    mdp: FiniteMDP, s: np.ndarray, a: np.ndarray, s_next: np.ndarray
) -> dict[str, np.ndarray]:
    """Buffer columns of transitions given as indices: one-hot features, no terminations (the
    finite MDP is an infinite-horizon discounted one) and zero rewards (TOM does not read them)."""
    S, A = mdp.n_states, mdp.n_actions
    return {
        "observations": one_hot(s, S),
        "actions": one_hot(a, A),
        "next_observations": one_hot(s_next, S),
        "rewards": np.zeros(len(s), dtype=np.float32),
        "terminations": np.zeros(len(s), dtype=bool),
    }


def initial_observations(rng: np.random.Generator, mdp: FiniteMDP, n: int) -> np.ndarray:
    """n one-hot draws s0 ~ mu0: (n, S)."""
    return one_hot(rng.choice(mdp.n_states, size=n, p=mdp.mu0), mdp.n_states)
