"""Termination functions against the environments' own `terminated` flag, on real MuJoCo states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tomrepro.core.errors import UnknownTaskError
from tomrepro.core.tasks import get_task, task_ids

# Which qpos entries Gymnasium's health check reads, and the bounds it uses (from the v5 sources).
EDGES = {
    "Hopper-v5": [(1, (0.7,)), (2, (-0.2, 0.2))],
    "Walker2d-v5": [(1, (0.8, 2.0)), (2, (-1.0, 1.0))],
    "AntTruncatedObs-v5": [(2, (0.2, 1.0))],
    "HumanoidTruncatedObs-v5": [(2, (1.0, 2.0))],
    "InvertedPendulum-v5": [(1, (-0.2, 0.2))],
    "HalfCheetah-v5": [],  # never terminates
    "Pendulum-v1": [],
}


def _random_policy_states(task_id: str, steps: int, seed: int):
    task = get_task(task_id)
    env = task.make_env()
    rng = np.random.default_rng(seed)
    obs_list, flags = [], []
    env.reset(seed=seed)
    for _ in range(steps):
        action = rng.uniform(env.action_space.low, env.action_space.high)
        obs, _, terminated, truncated, _ = env.step(action)
        obs_list.append(obs)
        flags.append(terminated)
        if terminated or truncated:
            env.reset()
    env.close()
    return np.array(obs_list), np.array(flags)


def _edge_states(task_id: str, samples: int, seed: int):
    """Start from states with a checked coordinate within 0.05 of a bound, then take one step."""
    task = get_task(task_id)
    env = task.make_env()
    base = env.unwrapped
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    obs_list, flags = [], []
    for i in range(samples):
        env.reset()
        qpos, qvel = base.data.qpos.copy(), base.data.qvel.copy()
        index, bounds = EDGES[task_id][i % len(EDGES[task_id])]
        qpos[index] = rng.choice(bounds) + rng.uniform(-0.05, 0.05)
        base.set_state(qpos, qvel * rng.uniform(0, 3))
        obs, _, terminated, _, _ = env.step(
            rng.uniform(env.action_space.low, env.action_space.high)
        )
        obs_list.append(obs)
        flags.append(terminated)
    env.close()
    return np.array(obs_list), np.array(flags)


@pytest.mark.parametrize("task_id", task_ids())
def test_termination_matches_env_on_random_policy_states(task_id):
    obs, flags = _random_policy_states(task_id, 2000, seed=1)
    task = get_task(task_id)
    np.testing.assert_array_equal(task.terminated(obs), flags)
    torch_flags = task.terminated_torch(torch.from_numpy(obs)).numpy()
    np.testing.assert_array_equal(torch_flags, flags)


@pytest.mark.parametrize("task_id", [t for t in task_ids() if EDGES[t]])
def test_termination_matches_env_on_states_pushed_to_the_edges(task_id):
    obs, flags = _edge_states(task_id, 1500, seed=2)
    task = get_task(task_id)
    np.testing.assert_array_equal(task.terminated(obs), flags)
    np.testing.assert_array_equal(task.terminated_torch(torch.from_numpy(obs)).numpy(), flags)
    # The edge states must really straddle the bound, or this test would prove little.
    assert 0.1 < flags.mean() < 0.9, flags.mean()


def test_torch_termination_is_batched_on_float32_and_keeps_shape():
    task = get_task("Hopper-v5")
    x = torch.zeros(5, 7, task.obs_dim, dtype=torch.float32)
    x[..., 0] = 1.2
    x[0, 0, 1] = 0.5  # angle beyond 0.2
    out = task.terminated_torch(x)
    assert out.shape == (5, 7) and out.dtype == torch.bool
    assert out.sum() == 1 and out[0, 0]


@pytest.mark.parametrize("task_id", task_ids())
def test_registry_dims_match_the_environment(task_id):
    task = get_task(task_id)
    env = task.make_env()
    assert env.observation_space.shape == (task.obs_dim,)
    assert env.action_space.shape == (task.act_dim,)
    assert env.spec.max_episode_steps == task.max_episode_steps
    env.close()


def test_unknown_task_names_the_known_ones():
    with pytest.raises(UnknownTaskError, match="Hopper-v5"):
        get_task("Hopper-v9")
