"""Array-backed replay buffer with provenance columns.

Columns are preallocated once at capacity. Besides the transition itself each row records where it
came from (episode, step within the episode, global env step, policy version), because TOM and the
analyses compare data by age and by the policy that produced it. `terminations` (true end: no
bootstrap) and `truncations` (time limit: bootstrap) are kept apart.

The storage is a ring: when full, the oldest rows are overwritten. Views of the data in
chronological order are free unless the ring has wrapped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tomrepro.core.errors import BufferFormatError, TomreproError


@dataclass(frozen=True)
class ColumnSpec:
    """One column: its dtype, its per-row width and what it means."""

    name: str
    dtype: type[np.generic]
    width: Literal["obs", "act", "scalar"]
    doc: str

    def row_shape(self, obs_dim: int, act_dim: int) -> tuple[int, ...]:
        return {"obs": (obs_dim,), "act": (act_dim,), "scalar": ()}[self.width]


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("observations", np.float32, "obs", "observation s_t before the action"),
    ColumnSpec("actions", np.float32, "act", "action a_t taken in s_t, in the env's action bounds"),
    ColumnSpec("rewards", np.float32, "scalar", "reward r_t returned by the step"),
    ColumnSpec("next_observations", np.float32, "obs", "observation s_{t+1} after the action"),
    ColumnSpec("terminations", np.bool_, "scalar", "true end of the episode: do not bootstrap"),
    ColumnSpec("truncations", np.bool_, "scalar", "time-limit end: s_{t+1} is not terminal"),
    ColumnSpec("episode_ids", np.int64, "scalar", "episode counter, from 0, in collection order"),
    ColumnSpec("episode_steps", np.int64, "scalar", "step t within the episode, from 0"),
    ColumnSpec("env_steps", np.int64, "scalar", "global env step of this transition, from 0"),
    ColumnSpec("policy_versions", np.int64, "scalar", "policy snapshot that chose the action"),
)
COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
FLOAT_COLUMNS = tuple(c.name for c in COLUMNS if c.dtype is np.float32)
PROVENANCE_COLUMNS = tuple(c.name for c in COLUMNS if c.dtype is not np.float32)


@dataclass(frozen=True)
class TransitionBatch:
    """A sampled minibatch; arrays are shaped (B, ...) and freshly gathered."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    next_observations: np.ndarray
    terminations: np.ndarray
    indices: np.ndarray


class ReplayBuffer:
    """Preallocated ring of transitions; rows are addressed chronologically (0 = oldest)."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int) -> None:
        if capacity <= 0 or obs_dim <= 0 or act_dim <= 0:
            raise ValueError("capacity, obs_dim and act_dim must be positive")
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self._data = {
            c.name: np.zeros((capacity, *c.row_shape(obs_dim, act_dim)), dtype=c.dtype)
            for c in COLUMNS
        }
        self._size = 0
        self._next = 0  # physical index the next row is written to
        self.rows_written = 0  # ever, including overwritten ones

    @classmethod
    def from_columns(cls, columns: Mapping[str, np.ndarray], *, check: bool = True) -> ReplayBuffer:
        """Wrap existing arrays (no copy) as a full, unwrapped buffer.

        `check=False` is for views of rows already checked (prefixes, suffixes).
        """
        if check:
            n, obs_dim, act_dim = check_columns(columns)
        else:
            n, obs_dim = columns["observations"].shape
            act_dim = columns["actions"].shape[1]
        buf = cls.__new__(cls)
        buf.capacity, buf.obs_dim, buf.act_dim = n, obs_dim, act_dim
        buf._data = {name: columns[name] for name in COLUMN_NAMES}
        buf._size, buf._next, buf.rows_written = n, 0, n
        return buf

    def __len__(self) -> int:
        return self._size

    @property
    def wrapped(self) -> bool:
        return self._size == self.capacity and self._next != 0

    def add(
        self,
        observation: np.ndarray,
        action: np.ndarray,
        reward: float,
        next_observation: np.ndarray,
        terminated: bool,
        truncated: bool,
        episode_id: int,
        episode_step: int,
        env_step: int,
        policy_version: int,
    ) -> None:
        """Write one transition in place (no allocation); the env loop calls this once a step."""
        i = self._next
        d = self._data
        d["observations"][i] = observation
        d["actions"][i] = action
        d["rewards"][i] = reward
        d["next_observations"][i] = next_observation
        d["terminations"][i] = terminated
        d["truncations"][i] = truncated
        d["episode_ids"][i] = episode_id
        d["episode_steps"][i] = episode_step
        d["env_steps"][i] = env_step
        d["policy_versions"][i] = policy_version
        self._next = (i + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)
        self.rows_written += 1

    def extend(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append many rows at once (at most two slice copies per column, however many rows)."""
        n = len(columns["rewards"])
        if n > self.capacity:
            columns = {k: v[n - self.capacity :] for k, v in columns.items()}
            n = self.capacity
        first = min(n, self.capacity - self._next)
        for name in COLUMN_NAMES:
            src, dst = columns[name], self._data[name]
            dst[self._next : self._next + first] = src[:first]
            dst[: n - first] = src[first:]
        self._next = (self._next + n) % self.capacity
        self._size = min(self._size + n, self.capacity)
        self.rows_written += n

    def storage(self) -> dict[str, np.ndarray]:
        """The preallocated arrays themselves (capacity rows, physical order): for zero-copy
        consumers such as a torch view that must see rows added later."""
        return self._data

    def columns(self) -> dict[str, np.ndarray]:
        """All rows in chronological order: views, or one copy per column if the ring wrapped."""
        if not self.wrapped:
            return {k: v[: self._size] for k, v in self._data.items()}
        return {
            k: np.concatenate((v[self._next :], v[: self._next])) for k, v in self._data.items()
        }

    def prefix(self, env_step: int) -> ReplayBuffer:
        """The data that existed when global env step `env_step` was about to be taken.

        Rows with `env_steps < env_step`; a view sharing memory with this buffer when unwrapped.
        """
        cols = self.columns()
        end = int(np.searchsorted(cols["env_steps"], env_step, side="left"))
        if end == 0:
            raise TomreproError(f"no transitions before env step {env_step}")
        return ReplayBuffer.from_columns({k: v[:end] for k, v in cols.items()}, check=False)

    def last(self, count: int) -> ReplayBuffer:
        """The most recent `count` rows (D^pi in TOM) as a buffer view."""
        cols = self.columns()
        start = max(0, self._size - count)
        return ReplayBuffer.from_columns({k: v[start:] for k, v in cols.items()}, check=False)

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        """Uniform minibatch with replacement, drawn from the caller's generator."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty buffer")
        idx = rng.integers(0, self._size, size=batch_size)
        d = self._data
        return TransitionBatch(
            observations=d["observations"][idx],
            actions=d["actions"][idx],
            rewards=d["rewards"][idx],
            next_observations=d["next_observations"][idx],
            terminations=d["terminations"][idx],
            indices=idx,
        )

    def initial_observations(self) -> np.ndarray:
        """First observations of the episodes held (the initial-state distribution mu_0)."""
        cols = self.columns()
        return cols["observations"][cols["episode_steps"] == 0]


def check_columns(columns: Mapping[str, np.ndarray], *, deep: bool = True) -> tuple[int, int, int]:
    """Check a set of columns against the schema; return (rows, obs_dim, act_dim).

    Everything is vectorised; problems are raised as `BufferFormatError` naming the column. The
    per-row checks (dtypes, shapes, finiteness, provenance order, episode structure) cost a few ms
    per million rows. `deep` adds the cross-row check that each `next_observations` row equals the
    following `observations` row inside an episode, which reads both observation columns again and
    costs about as much as reading them from disk; writers and `tomrepro validate` run it.
    """
    for name in FLOAT_COLUMNS:
        if name in columns:
            check_finite(name, columns[name])
    return check_structure(columns, deep=deep)


def check_finite(name: str, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise BufferFormatError(f"column {name} contains NaN or inf")


def check_structure(
    columns: Mapping[str, np.ndarray], *, deep: bool, provenance: bool = True
) -> tuple[int, int, int]:
    """Everything `check_columns` does except the finiteness scan of the float columns.

    `provenance=False` skips `check_provenance` for a caller that has already run it.
    """
    missing = [name for name in COLUMN_NAMES if name not in columns]
    if missing:
        raise BufferFormatError(f"missing column(s): {', '.join(missing)}")
    obs, act = columns["observations"], columns["actions"]
    if obs.ndim != 2 or act.ndim != 2:
        raise BufferFormatError("observations and actions must be 2-D (rows, dim)")
    n, obs_dim, act_dim = obs.shape[0], obs.shape[1], act.shape[1]
    for spec in COLUMNS:
        arr = columns[spec.name]
        if arr.dtype != spec.dtype:
            raise BufferFormatError(
                f"column {spec.name} has dtype {arr.dtype}, expected {np.dtype(spec.dtype)}"
            )
        want = (n, *spec.row_shape(obs_dim, act_dim))
        if arr.shape != want:
            raise BufferFormatError(f"column {spec.name} has shape {arr.shape}, expected {want}")
    if provenance:
        check_provenance(columns)
    if deep:
        _check_continuity(columns, n)
    return n, obs_dim, act_dim


def check_provenance(c: Mapping[str, np.ndarray]) -> None:
    """Order and episode structure of the provenance columns (needs no float column)."""
    n = len(c["env_steps"])
    if n == 0:
        return
    if any(len(c[name]) != n for name in PROVENANCE_COLUMNS):
        raise BufferFormatError("provenance columns differ in length")
    # The order checks below make checking the first row enough for the monotone columns.
    if c["env_steps"][0] < 0 or c["episode_ids"][0] < 0 or c["policy_versions"][0] < 0:
        raise BufferFormatError("env_steps, episode_ids and policy_versions must be non-negative")
    if (c["episode_steps"] < 0).any():
        raise BufferFormatError("episode_steps must be non-negative")
    # Neighbour comparisons of slices: no int64 temporaries (np.diff would allocate three).
    if (c["env_steps"][1:] <= c["env_steps"][:-1]).any():
        raise BufferFormatError("env_steps must be strictly increasing")
    if (c["episode_ids"][1:] < c["episode_ids"][:-1]).any():
        raise BufferFormatError("episode_ids must be non-decreasing")
    if (c["policy_versions"][1:] < c["policy_versions"][:-1]).any():
        raise BufferFormatError("policy_versions must be non-decreasing")
    ended = c["terminations"][:-1] | c["truncations"][:-1]
    same = c["episode_ids"][1:] == c["episode_ids"][:-1]
    if (same & ended).any():
        raise BufferFormatError("an episode continues after its termination or truncation")
    if (same & (c["episode_steps"][1:] != c["episode_steps"][:-1] + 1)).any():
        raise BufferFormatError("episode_steps must count up by one within an episode")
    # Only the first row may join an episode midway (a ring buffer may have overwritten its start).
    if (~same & (c["episode_steps"][1:] != 0)).any():
        raise BufferFormatError("an episode after the first row must start at episode_steps 0")


def _check_continuity(c: Mapping[str, np.ndarray], n: int) -> None:
    if n < 2:
        return
    same = c["episode_ids"][1:] == c["episode_ids"][:-1]
    jump = same & (c["next_observations"][:-1] != c["observations"][1:]).any(axis=1)
    if jump.any():
        row = int(np.flatnonzero(jump)[0])
        raise BufferFormatError(
            f"next_observations[{row}] differs from observations[{row + 1}] in the same episode"
        )
