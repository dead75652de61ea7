"""Step an env and record each transition with its provenance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.env_state import capture_env_state, restore_env_state


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


def save_episode(env: Any, obs: np.ndarray) -> dict[str, Any]:
    """The live env mid-episode and the observation to act on, as checkpoint-safe tensors."""
    state = capture_env_state(env)
    return {
        "env": {**state, "physics": torch.from_numpy(state["physics"])},
        "observation": torch.from_numpy(np.asarray(obs, dtype=np.float64)),
    }


def restore_episode(
    payload: Mapping[str, Any], counters: Mapping[str, Any], env: Any, recorder: EpisodeRecorder
) -> np.ndarray:
    """Undo `save_episode` into a reset env, set the recorder's counters from `counters`
    (episode, episode_step, episode_return); returns the observation to act on."""
    state = dict(payload["env"])
    state["physics"] = state["physics"].numpy()
    restore_env_state(env, state)
    recorder.episode = int(counters["episode"])
    recorder.episode_step = int(counters["episode_step"])
    recorder.episode_return = float(counters["episode_return"])
    return payload["observation"].numpy()
