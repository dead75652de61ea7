"""Exact snapshots of a live Gymnasium env, so an interrupted run can continue bit for bit.

MuJoCo's full integration state (positions, velocities, warm-start accelerations, time, controls)
is what `mj_step` depends on; restoring only qpos/qvel would change later trajectories in the last
bits through the solver's warm start. Also kept: the env's own generator (used by resets) and the
time-limit counter.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def _time_limit(env: Any) -> Any:
    wrapper = env
    while wrapper is not None:
        if type(wrapper).__name__ == "TimeLimit":
            return wrapper
        wrapper = getattr(wrapper, "env", None)
    return None


def _is_mujoco(base: Any) -> bool:
    return hasattr(base, "model") and hasattr(base, "data")


def capture_env_state(env: Any) -> dict[str, Any]:
    """A dict of arrays and strings (safe for `torch.save` / `weights_only` loading)."""
    base = env.unwrapped
    if _is_mujoco(base):
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(base.model, spec), dtype=np.float64)
        mujoco.mj_getState(base.model, base.data, physics, spec)
    else:
        physics = np.array(base.state, dtype=np.float64)
    limit = _time_limit(env)
    return {
        "physics": physics,
        "np_random": json.dumps(base.np_random.bit_generator.state),
        "elapsed_steps": int(limit._elapsed_steps) if limit is not None else -1,
    }


def restore_env_state(env: Any, state: dict[str, Any]) -> None:
    """Put a reset env back into a captured state (call `env.reset()` once before)."""
    base = env.unwrapped
    physics = np.asarray(state["physics"], dtype=np.float64)
    if _is_mujoco(base):
        import mujoco

        mujoco.mj_setState(base.model, base.data, physics, mujoco.mjtState.mjSTATE_INTEGRATION)
    else:
        base.state = physics.copy()
    base.np_random.bit_generator.state = json.loads(state["np_random"])
    limit = _time_limit(env)
    if limit is not None:
        limit._elapsed_steps = int(state["elapsed_steps"])
