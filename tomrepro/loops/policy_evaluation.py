"""Test episodes of a policy's mean action, all episodes stepped in lockstep.

One batched actor forward per step serves every live episode; each episode's env is seeded from
(seed, episode), so the returns depend only on the policy and the seed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tomrepro.core.tasks import Task
from tomrepro.learning.policy import SnapshotPolicy


def evaluate_policy(
    task: Task,
    actor_tensors: Mapping[str, np.ndarray],
    episodes: int,
    seed: int,
    max_steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Returns and lengths of `episodes` deterministic episodes (mean action, no noise)."""
    policy = SnapshotPolicy(actor_tensors)
    envs = [task.make_env() for _ in range(episodes)]
    seeds = np.random.SeedSequence([seed, 0x5EED]).generate_state(episodes)
    obs = np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds, strict=True)])
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    alive = np.ones(episodes, dtype=bool)
    limit = max_steps or task.max_episode_steps
    zeros = np.zeros((episodes, task.act_dim), dtype=np.float32)
    try:
        while alive.any() and lengths.max() < limit:
            live = np.flatnonzero(alive)
            actions = policy.act_batch(obs[live], zeros[: len(live)])
            for row, i in enumerate(live):
                next_obs, reward, terminated, truncated, _ = envs[i].step(actions[row])
                returns[i] += reward
                lengths[i] += 1
                obs[i] = next_obs
                if terminated or truncated:
                    alive[i] = False
    finally:
        for env in envs:
            env.close()
    return returns, lengths
