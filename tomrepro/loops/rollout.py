"""Run a policy (uniform-random by default) on a real environment into a replay buffer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tomrepro.core.atomic import make_parent
from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import BufferMetadata, write_buffer
from tomrepro.core.config import ProfileConfig
from tomrepro.core.noise import StepNoise
from tomrepro.core.seeding import derive_seed
from tomrepro.core.tasks import Task, get_task
from tomrepro.loops.episode_recorder import EpisodeRecorder


def rollout(
    task: Task,
    env_steps: int,
    seed: int,
    act: Callable[[np.ndarray, int], np.ndarray] | None = None,
    policy_version: int = 0,
    episodes: int | None = None,
) -> ReplayBuffer:
    """Step `task` for `env_steps` steps, or (`episodes`) until that many episodes are complete
    (ended by termination or the time limit, so no episode is cut); `act(obs, step)` chooses
    actions (None: uniform).

    Deterministic in `seed`: the first reset and the uniform actions (`StepNoise`; Gymnasium's
    action-space sampler would need separate seeding) take seeds derived from it.
    """
    if episodes is not None:
        env_steps = episodes * task.max_episode_steps
    if env_steps <= 0:
        raise ValueError("env_steps must be positive")
    env = task.make_env()
    low, high = env.action_space.low, env.action_space.high
    if act is None:
        uniform = StepNoise(derive_seed(seed, "exploration"), task.act_dim, "uniform")

        def act(_: np.ndarray, step: int) -> np.ndarray:
            return low + (high - low) * uniform.at(step)

    buffer = ReplayBuffer(env_steps, task.obs_dim, task.act_dim)
    recorder = EpisodeRecorder(env, buffer)
    obs, _ = env.reset(seed=derive_seed(seed, "env"))
    try:
        for step in range(env_steps):
            obs, _ = recorder.step(obs, act(obs, step), step, policy_version)
            if episodes is not None and recorder.episode == episodes:
                break
    finally:
        env.close()
    return buffer


def random_rollout(task: Task, env_steps: int, seed: int) -> ReplayBuffer:
    """Uniform-random actions, policy version 0."""
    return rollout(task, env_steps, seed)


def write_random_buffer(profile: ProfileConfig, out: Path) -> Path:
    """Stage function: the profile's random-policy buffer, written atomically to `out`."""
    make_parent(out)
    cfg = profile.random_buffer
    buffer = random_rollout(get_task(cfg.task), cfg.env_steps, profile.seed)
    meta = BufferMetadata(
        task_id=cfg.task,
        seed=profile.seed,
        config={"profile": profile.name, "random_buffer": cfg.model_dump()},
    )
    return write_buffer(out, buffer, meta)
