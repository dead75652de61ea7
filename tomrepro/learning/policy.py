"""The SAC actor evaluated in numpy from a policy snapshot's tensors.

Acting happens once per env step on a single observation; there torch's per-call overhead
(several microseconds per op) would cost more than a MuJoCo step, while a numpy forward pass with
preallocated buffers costs a few microseconds per layer. It reads the same snapshot tensors that the
buffer file stores, so a snapshot alone reproduces the actions recorded under it.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tomrepro.learning.sac import LOG_STD_MAX, LOG_STD_MIN


class SnapshotPolicy:
    """Squashed-Gaussian policy from `SquashedGaussianActor` tensors (keys `net.layers.i.*`)."""

    def __init__(self, tensors: Mapping[str, np.ndarray]) -> None:
        count = sum(1 for k in tensors if k.startswith("net.layers.") and k.endswith(".weight"))
        if count == 0:
            raise ValueError("not an actor snapshot: no net.layers.*.weight tensors")
        # Stored as (1, in, out) and (1, 1, out): member-batched layers with one member.
        self.weights = [
            np.ascontiguousarray(tensors[f"net.layers.{i}.weight"][0]) for i in range(count)
        ]
        self.biases = [
            np.ascontiguousarray(tensors[f"net.layers.{i}.bias"][0, 0]) for i in range(count)
        ]
        self.scale = np.asarray(tensors["action_scale"], dtype=np.float32)
        self.offset = np.asarray(tensors["action_bias"], dtype=np.float32)
        self.act_dim = self.scale.shape[0]
        self._hidden = [np.empty(w.shape[1], dtype=np.float32) for w in self.weights]

    def act(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """One observation (obs_dim,) and standard-normal noise (act_dim,) -> action (act_dim,)."""
        h = np.asarray(obs, dtype=np.float32)
        last = len(self.weights) - 1
        for i, (w, b, out) in enumerate(zip(self.weights, self.biases, self._hidden, strict=True)):
            np.matmul(h, w, out=out)
            np.add(out, b, out=out)
            if i < last:
                np.maximum(out, 0.0, out=out)
            h = out
        mean, log_std = h[: self.act_dim], h[self.act_dim :]
        std = np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))
        return np.tanh(mean + std * noise) * self.scale + self.offset

    def act_batch(self, obs: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """(B, obs_dim), (B, act_dim) -> (B, act_dim); same arithmetic as `act`."""
        h = np.asarray(obs, dtype=np.float32)
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        mean, log_std = h[:, : self.act_dim], h[:, self.act_dim :]
        std = np.exp(np.clip(log_std, LOG_STD_MIN, LOG_STD_MAX))
        return np.tanh(mean + std * noise) * self.scale + self.offset
