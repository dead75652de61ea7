"""Record a uniform-random policy on a real environment into a replay buffer."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import BufferMetadata, write_buffer
from tomrepro.core.config import ProfileConfig
from tomrepro.core.tasks import Task, get_task


def random_rollout(task: Task, env_steps: int, seed: int) -> ReplayBuffer:
    """Step `task` for `env_steps` steps with uniform actions; policy version 0 throughout.

    Deterministic in `seed`: it seeds the first reset and draws actions from its own generator
    (Gymnasium's action-space sampler would need separate seeding to be reproducible).
    """
    if env_steps <= 0:
        raise ValueError("env_steps must be positive")
    rng = np.random.default_rng(seed)
    env = task.make_env()
    low, high = env.action_space.low, env.action_space.high
    buffer = ReplayBuffer(env_steps, task.obs_dim, task.act_dim)
    actions = rng.uniform(low, high, size=(env_steps, task.act_dim)).astype(np.float32)
    obs, _ = env.reset(seed=seed)
    episode, t = 0, 0
    try:
        for step in range(env_steps):
            next_obs, reward, terminated, truncated, _ = env.step(actions[step])
            buffer.add(
                obs, actions[step], reward, next_obs, terminated, truncated, episode, t, step, 0
            )
            if terminated or truncated:
                obs, _ = env.reset()
                episode, t = episode + 1, 0
            else:
                obs, t = next_obs, t + 1
    finally:
        env.close()
    return buffer


def write_random_buffer(profile: ProfileConfig, out: Path) -> Path:
    """Stage function: the profile's random-policy buffer, written atomically to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = profile.random_buffer
    buffer = random_rollout(get_task(cfg.task), cfg.env_steps, profile.seed)
    meta = BufferMetadata(
        task_id=cfg.task,
        seed=profile.seed,
        config={"profile": profile.name, "random_buffer": cfg.model_dump()},
    )
    return write_buffer(out, buffer, meta)
