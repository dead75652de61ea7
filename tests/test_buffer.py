"""The in-memory replay buffer: ring storage, views, sampling, provenance checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tomrepro.core.buffer import COLUMN_NAMES, ReplayBuffer, check_columns
from tomrepro.core.errors import BufferFormatError, TomreproError


def _rows(start: int, count: int, obs_dim: int = 3, act_dim: int = 2) -> dict[str, np.ndarray]:
    """`count` rows of one long episode starting at global step `start`."""
    steps = np.arange(start, start + count)
    obs = np.stack([steps + j for j in range(obs_dim)], axis=1).astype(np.float32)
    return {
        "observations": obs,
        "actions": np.full((count, act_dim), 0.5, np.float32),
        "rewards": steps.astype(np.float32),
        "next_observations": obs + 1,
        "terminations": np.zeros(count, bool),
        "truncations": np.zeros(count, bool),
        "episode_ids": np.zeros(count, np.int64),
        "episode_steps": steps.astype(np.int64),
        "env_steps": steps.astype(np.int64),
        "policy_versions": (steps // 10).astype(np.int64),
    }


def test_add_and_extend_store_the_same_rows():
    rows = _rows(0, 25)
    one = ReplayBuffer(40, 3, 2)
    for i in range(25):
        one.add(*(rows[k][i] for k in COLUMN_NAMES))
    many = ReplayBuffer(40, 3, 2)
    many.extend(rows)
    for k in COLUMN_NAMES:
        np.testing.assert_array_equal(one.columns()[k], rows[k])
        np.testing.assert_array_equal(many.columns()[k], rows[k])


@settings(max_examples=60, deadline=None)
@given(capacity=st.integers(1, 30), sizes=st.lists(st.integers(1, 45), min_size=1, max_size=6))
def test_ring_keeps_the_newest_rows_in_chronological_order(capacity, sizes):
    buf = ReplayBuffer(capacity, 3, 2)
    start = 0
    for size in sizes:
        buf.extend(_rows(start, size))
        start += size
    expected = _rows(0, start)
    assert len(buf) == min(capacity, start)
    for k in COLUMN_NAMES:
        np.testing.assert_array_equal(buf.columns()[k], expected[k][-len(buf) :])


def test_prefix_is_a_view_of_the_data_before_the_step():
    buf = ReplayBuffer(100, 3, 2)
    buf.extend(_rows(0, 60))
    pre = buf.prefix(25)
    assert len(pre) == 25
    assert pre.columns()["env_steps"][-1] == 24
    assert np.shares_memory(pre.columns()["observations"], buf.columns()["observations"])
    with pytest.raises(TomreproError, match="no transitions"):
        buf.prefix(0)


def test_last_returns_the_most_recent_rows():
    buf = ReplayBuffer(50, 3, 2)
    buf.extend(_rows(0, 80))
    tail = buf.last(10)
    np.testing.assert_array_equal(tail.columns()["env_steps"], np.arange(70, 80))


def test_sampling_is_reproducible_with_the_callers_generator():
    buf = ReplayBuffer(100, 3, 2)
    buf.extend(_rows(0, 100))
    a = buf.sample(32, np.random.default_rng(7))
    b = buf.sample(32, np.random.default_rng(7))
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.observations, buf.columns()["observations"][a.indices])
    assert a.observations.shape == (32, 3) and a.rewards.shape == (32,)


def test_initial_observations_are_the_episode_starts(hopper_buffer):
    cols = hopper_buffer.columns()
    starts = hopper_buffer.initial_observations()
    assert len(starts) == len(np.unique(cols["episode_ids"]))
    assert np.all(np.abs(starts[:, 0] - 1.25) < 0.01)  # Hopper resets near z = 1.25


@pytest.mark.parametrize(
    ("column", "mutate", "message"),
    [
        ("observations", lambda a: a.__setitem__((3, 1), np.nan), "NaN or inf"),
        ("rewards", lambda a: a.__setitem__(4, np.inf), "NaN or inf"),
        ("env_steps", lambda a: a.__setitem__(5, 2), "strictly increasing"),
        ("policy_versions", lambda a: a.__setitem__(20, 0), "non-decreasing"),
        ("episode_steps", lambda a: a.__setitem__(6, 99), "count up by one"),
        ("terminations", lambda a: a.__setitem__(6, True), "continues after"),
        ("next_observations", lambda a: a.__setitem__((8, 0), 1e3), "differs from"),
        (
            "episode_ids",
            lambda a: a.__setitem__(slice(10, None), 1),
            "must start at episode_steps 0",
        ),
    ],
)
def test_inconsistent_columns_are_refused(column, mutate, message):
    rows = _rows(0, 30)
    mutate(rows[column])
    with pytest.raises(BufferFormatError, match=message):
        check_columns(rows)


def test_wrong_dtype_and_missing_column_are_refused():
    rows = _rows(0, 10)
    rows["actions"] = rows["actions"].astype(np.float64)
    with pytest.raises(BufferFormatError, match="dtype float64"):
        check_columns(rows)
    rows = _rows(0, 10)
    del rows["truncations"]
    with pytest.raises(BufferFormatError, match="missing column"):
        check_columns(rows)


def test_real_rollout_passes_every_check(hopper_buffer):
    n, obs_dim, act_dim = check_columns(hopper_buffer.columns())
    assert (n, obs_dim, act_dim) == (600, 11, 3)
    cols = hopper_buffer.columns()
    assert cols["terminations"].any()
    assert not (cols["terminations"] & cols["truncations"]).any()
