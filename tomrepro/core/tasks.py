"""Task registry: how to build each environment and when a model rollout must stop.

Each termination rule is written once against a tiny array-ops shim, so the numpy version (used on
real data and in checks) and the torch version (used in batched model rollouts) cannot drift apart.
Every rule reads only the next observation and reproduces Gymnasium v5's own `terminated` flag; the
one case an observation cannot reveal is noted on the task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from tomrepro.core.errors import UnknownTaskError


class _ArrayOps(NamedTuple):
    """The few non-operator functions a termination rule needs, for one array library."""

    isfinite: Callable[[Any], Any]
    all_last: Callable[[Any], Any]
    false_like: Callable[[Any], Any]


_NUMPY_OPS = _ArrayOps(
    isfinite=np.isfinite,
    all_last=lambda x: x.all(axis=-1),
    false_like=lambda x: np.zeros(x.shape, dtype=bool),
)


def _torch_ops() -> _ArrayOps:
    import torch  # imported lazily: inspecting a buffer should not pay for torch

    return _ArrayOps(
        isfinite=torch.isfinite,
        all_last=lambda x: x.all(dim=-1),
        false_like=lambda x: torch.zeros(x.shape, dtype=torch.bool, device=x.device),
    )


TerminationRule = Callable[[Any, _ArrayOps], Any]


def _never(next_obs: Any, ops: _ArrayOps) -> Any:
    return ops.false_like(next_obs[..., 0])


def _hopper(next_obs: Any, ops: _ArrayOps) -> Any:
    # obs = [qpos[1:], clip(qvel, -10, 10)]; the env checks qpos[2:] and qvel against (-100, 100).
    z, angle, state = next_obs[..., 0], next_obs[..., 1], next_obs[..., 1:]
    healthy = (
        ops.all_last((state > -100.0) & (state < 100.0))
        & (z > 0.7)
        & (z < math.inf)
        & (angle > -0.2)
        & (angle < 0.2)
    )
    return ~healthy


def _walker2d(next_obs: Any, ops: _ArrayOps) -> Any:
    z, angle = next_obs[..., 0], next_obs[..., 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~healthy


def _ant(next_obs: Any, ops: _ArrayOps) -> Any:
    # Gymnasium's Ant uses closed bounds and also requires the whole state to be finite.
    z = next_obs[..., 0]
    healthy = ops.all_last(ops.isfinite(next_obs)) & (z >= 0.2) & (z <= 1.0)
    return ~healthy


def _humanoid(next_obs: Any, ops: _ArrayOps) -> Any:
    z = next_obs[..., 0]
    return ~((z > 1.0) & (z < 2.0))


def _inverted_pendulum(next_obs: Any, ops: _ArrayOps) -> Any:
    return ~ops.all_last(ops.isfinite(next_obs)) | (abs(next_obs[..., 1]) > 0.2)


@dataclass(frozen=True)
class Task:
    """One environment as tomrepro uses it: construction, sizes and rollout termination."""

    task_id: str
    env_id: str
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    rule: TerminationRule = field(repr=False)
    env_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    note: str = ""

    def make_env(self) -> Any:
        """A fresh Gymnasium env with the registry's kwargs (seed it through `reset(seed=...)`)."""
        import gymnasium as gym

        return gym.make(self.env_id, max_episode_steps=self.max_episode_steps, **self.env_kwargs)

    def terminated(self, next_obs: np.ndarray) -> np.ndarray:
        """(N, obs_dim) next observations -> (N,) bool, the env's `terminated` flag."""
        return np.asarray(self.rule(np.asarray(next_obs), _NUMPY_OPS), dtype=bool)

    def terminated_torch(self, next_obs: Any) -> Any:
        """Torch twin of `terminated` for batched model rollouts; stays on the input's device."""
        return self.rule(next_obs, _torch_ops())


_UNOBSERVABLE_VELOCITY = (
    "The env also ends an episode when an unclipped joint velocity leaves (-100, 100); the "
    "observation clips velocities at +-10, so that case cannot be seen from observations."
)

_TASKS: dict[str, Task] = {
    t.task_id: t
    for t in (
        Task("Hopper-v5", "Hopper-v5", 11, 3, 1000, _hopper, note=_UNOBSERVABLE_VELOCITY),
        Task("Walker2d-v5", "Walker2d-v5", 17, 6, 1000, _walker2d),
        Task("HalfCheetah-v5", "HalfCheetah-v5", 17, 6, 1000, _never),
        Task(
            "AntTruncatedObs-v5",
            "Ant-v5",
            27,
            8,
            1000,
            _ant,
            MappingProxyType({"include_cfrc_ext_in_observation": False}),
            note="MBPO's truncated Ant: contact forces removed from the observation.",
        ),
        Task(
            "HumanoidTruncatedObs-v5",
            "Humanoid-v5",
            45,
            17,
            1000,
            _humanoid,
            MappingProxyType(
                {
                    "include_cinert_in_observation": False,
                    "include_cvel_in_observation": False,
                    "include_qfrc_actuator_in_observation": False,
                    "include_cfrc_ext_in_observation": False,
                }
            ),
            note="MBPO's truncated Humanoid: only joint positions and velocities are observed.",
        ),
        Task("InvertedPendulum-v5", "InvertedPendulum-v5", 4, 1, 1000, _inverted_pendulum),
        Task(
            "Pendulum-v1",
            "Pendulum-v1",
            3,
            1,
            200,
            _never,
            note="Classic control; never terminates.",
        ),
    )
}


def task_ids() -> list[str]:
    return list(_TASKS)


def get_task(task_id: str) -> Task:
    """Look a task up by id; an unknown id is a user error that lists the known ones."""
    try:
        return _TASKS[task_id]
    except KeyError:
        raise UnknownTaskError(
            f"unknown task {task_id!r}; known tasks: {', '.join(_TASKS)}"
        ) from None
