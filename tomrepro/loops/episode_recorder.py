"""Step an env and record each transition with its provenance."""

from __future__ import annotations

from typing import Any

import numpy as np

from tomrepro.core.buffer import ReplayBuffer


class EpisodeRecorder:
    """Writes every step into a buffer with its episode id and step; resets at episode ends.

    The counters are plain attributes so that a checkpoint can save and restore them.
    """

    def __init__(
        self,
        env: Any,
        buffer: ReplayBuffer,
        episode: int = 0,
        episode_step: int = 0,
        episode_return: float = 0.0,
    ) -> None:
        self.env, self.buffer = env, buffer
        self.episode, self.episode_step, self.episode_return = episode, episode_step, episode_return

    def step(
        self, obs: np.ndarray, action: np.ndarray, env_step: int, policy_version: int
    ) -> tuple[np.ndarray, float | None]:
        """Take `action` in state `obs`; return the observation to act on next and, when an
        episode just ended, its return (None otherwise)."""
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        self.buffer.add(
            obs,
            action,
            reward,
            next_obs,
            terminated,
            truncated,
            self.episode,
            self.episode_step,
            env_step,
            policy_version,
        )
        self.episode_return += float(reward)
        if not (terminated or truncated):
            self.episode_step += 1
            return next_obs, None
        finished = self.episode_return
        self.episode, self.episode_step, self.episode_return = self.episode + 1, 0, 0.0
        return self.env.reset()[0], finished
