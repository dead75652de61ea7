"""D4RL-style flat HDF5 <-> schema-v1 buffers.

D4RL keeps one flat array per key: `observations`, `actions`, `rewards`, `terminals`, `timeouts`,
and sometimes `next_observations`. Episodes end at a terminal or a timeout. Without
`next_observations`, s' of a row is the next row's observation inside the episode; the last row of
each episode has no known s' and is dropped (the count is reported and stored). Export writes
those keys plus `next_observations` and our provenance under `infos/`, which import restores, so
our buffers round-trip row for row.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from tomrepro.core.atomic import atomic_path
from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import BufferMetadata, read_buffer, write_buffer
from tomrepro.core.errors import TomreproError
from tomrepro.core.minari_io import resolve_task, snapshots_from

REQUIRED = ("observations", "actions", "rewards", "terminals", "timeouts")
PROVENANCE = ("episode_ids", "episode_steps", "env_steps", "policy_versions")


def _read_flat(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise TomreproError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise TomreproError(f"{path}: not an HDF5 file") from None
    with f:
        missing = [k for k in REQUIRED if k not in f]
        if missing:
            raise TomreproError(
                f"{path}: not a D4RL-style file, missing key(s) {', '.join(missing)}"
            )
        keys = [*REQUIRED, "next_observations", *(f"infos/{k}" for k in PROVENANCE)]
        for key in keys:
            if key in f and not isinstance(f[key], h5py.Dataset):
                raise TomreproError(f"{path}: {key} is not a dataset")
        data = {k: f[k][()] for k in keys if k in f}
    for key, value in data.items():
        if value.ndim == 0 or value.dtype.kind not in "biuf":
            raise TomreproError(
                f"{path}: {key} must be an array of numbers, not dtype {value.dtype} with shape "
                f"{value.shape}"
            )
    n = len(data["rewards"])
    for key, value in data.items():
        if len(value) != n:
            raise TomreproError(f"{path}: {key} has {len(value)} rows, rewards has {n}")
    if data["observations"].ndim != 2 or data["actions"].ndim != 2:
        raise TomreproError(f"{path}: observations and actions must be 2-D (rows, dim)")
    for key in ("rewards", "terminals", "timeouts", *(f"infos/{k}" for k in PROVENANCE)):
        if key in data and data[key].size != n:
            raise TomreproError(f"{path}: {key} must hold one value per row")
    return data


def import_d4rl(
    path: Path, out: Path, task: str, snapshots: Path | None = None
) -> tuple[Path, int]:
    """Write a D4RL-style file as a buffer file; returns the path and the rows dropped."""
    d = _read_flat(path)
    obs = d["observations"].astype(np.float32)
    n = len(obs)
    terminals, timeouts = d["terminals"].astype(bool), d["timeouts"].astype(bool)
    ends = terminals | timeouts
    found = resolve_task(task, None, obs.shape[1], d["actions"].shape[1])
    if all(f"infos/{k}" in d for k in PROVENANCE):
        prov = {k: d[f"infos/{k}"].astype(np.int64) for k in PROVENANCE}
        recorded = True
    else:
        episode = np.r_[0, np.cumsum(ends[:-1])].astype(np.int64)
        first = np.r_[True, episode[1:] != episode[:-1]]
        start_rows = np.flatnonzero(first)
        steps = np.arange(n) - start_rows[np.cumsum(first) - 1]
        prov = {
            "episode_ids": episode,
            "episode_steps": steps.astype(np.int64),
            "env_steps": np.arange(n, dtype=np.int64),
            "policy_versions": np.zeros(n, dtype=np.int64),
        }
        recorded = False
    if "next_observations" in d:
        next_obs, keep = d["next_observations"].astype(np.float32), np.ones(n, dtype=bool)
    else:
        next_obs = np.empty_like(obs)
        next_obs[:-1] = obs[1:]
        same = np.r_[prov["episode_ids"][1:] == prov["episode_ids"][:-1], False]
        keep = same & ~ends  # s' is unknown at an episode's last row
    columns = {
        "observations": obs,
        "actions": d["actions"].astype(np.float32),
        "rewards": d["rewards"].astype(np.float32).reshape(n),
        "next_observations": next_obs,
        "terminations": terminals,
        "truncations": timeouts,
        **prov,
    }
    columns = {k: v[keep] for k, v in columns.items()}
    if not len(columns["rewards"]):
        raise TomreproError(f"{path}: no transition has a known next observation")
    dropped = int(n - keep.sum())
    if dropped:
        # A dropped last row leaves its episode without an end: mark the new last row truncated.
        ep = columns["episode_ids"]
        last = np.r_[ep[1:] != ep[:-1], True]
        columns["truncations"] = columns["truncations"] | (last & ~columns["terminations"])
    meta = BufferMetadata(
        found.task_id,
        seed=0,
        config={"source": "d4rl", "file": str(path), "dropped_rows": dropped},
        policy_versions_recorded=recorded,
    )
    attached = snapshots_from(snapshots, recorded)
    return write_buffer(out, ReplayBuffer.from_columns(columns), meta, attached), dropped


def export_d4rl(buffer_path: Path, out: os.PathLike[str] | str) -> Path:
    """Write a buffer file's rows as a D4RL-style HDF5 file (atomically)."""
    loaded = read_buffer(buffer_path)
    c = loaded.buffer.columns()
    out = Path(out)
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("observations", data=c["observations"])
        f.create_dataset("actions", data=c["actions"])
        f.create_dataset("rewards", data=c["rewards"])
        f.create_dataset("next_observations", data=c["next_observations"])
        f.create_dataset("terminals", data=c["terminations"])
        f.create_dataset("timeouts", data=c["truncations"])
        for k in PROVENANCE:
            f.create_dataset(f"infos/{k}", data=c[k])
        f.attrs["task_id"] = loaded.metadata.task_id
        f.attrs["source"] = "tomrepro"
    return out
