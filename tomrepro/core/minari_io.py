"""Minari datasets <-> schema-v1 buffers (local HDF5 storage only; nothing is downloaded).

A Minari episode holds N + 1 observations and N actions, rewards, terminations and truncations;
our rows pair each observation with the next. Export writes one Minari episode per buffer episode
(through `minari.create_dataset_from_buffers`, which needs no jax) and keeps our provenance
columns (global env step, policy version, step within the episode) as per-step `infos`, so an
export imports back row for row. A foreign dataset gets episode ids in order, steps from 0, global
env steps counted across episodes and policy version 0 throughout, and the file says
`policy_versions_recorded = false`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import (
    BufferMetadata,
    PolicySnapshot,
    read_buffer,
    read_snapshot,
    write_buffer,
)
from tomrepro.core.errors import TomreproError
from tomrepro.core.tasks import Task, get_task, task_ids

PROVENANCE_INFOS = ("env_steps", "episode_steps", "policy_versions")


def resolve_task(task: str | None, env_id: str | None, obs_dim: int, act_dim: int) -> Task:
    """`task` if given (its sizes must match), else the registry task for this env id and size."""
    if task is not None:
        found = get_task(task)
    else:
        matches = [
            get_task(t)
            for t in task_ids()
            if get_task(t).env_id == env_id and get_task(t).obs_dim == obs_dim
        ]
        if not matches:
            raise TomreproError(
                f"env {env_id!r} with {obs_dim}-dim observations is not in the task registry; "
                "pass --task explicitly"
            )
        found = matches[0]
    if (found.obs_dim, found.act_dim) != (obs_dim, act_dim):
        raise TomreproError(
            f"task {found.task_id} has obs {found.obs_dim} / act {found.act_dim}, the data has "
            f"obs {obs_dim} / act {act_dim}"
        )
    return found


def snapshots_from(path: Path | None, recorded: bool) -> list[PolicySnapshot]:
    """Policy snapshots to attach to an import (formats carry none): all of another buffer's."""
    if path is None:
        return []
    if not recorded:
        raise TomreproError(
            "--snapshots-from needs imported rows with recorded policy versions to match"
        )
    index = read_buffer(path, allow_incomplete=True).snapshot_steps
    return [read_snapshot(path, v) for v in sorted(index)]


def minari_data_path(dataset: str | os.PathLike[str]) -> Path:
    """A dataset directory (holding `data/`, or `data/` itself) or an id under
    `MINARI_DATASETS_PATH` (default ~/.minari/datasets)."""
    path = Path(dataset)
    for candidate in (path, path / "data"):
        if (candidate / "metadata.json").is_file():
            return candidate
    root = Path(os.environ.get("MINARI_DATASETS_PATH", Path.home() / ".minari" / "datasets"))
    by_id = root / str(dataset) / "data"
    if (by_id / "metadata.json").is_file():
        return by_id
    raise TomreproError(
        f"no local Minari dataset {str(dataset)!r} (no data/metadata.json there nor under "
        f"{root}); nothing is downloaded"
    )


def import_minari(
    dataset: str | os.PathLike[str],
    out: Path,
    task: str | None = None,
    snapshots: Path | None = None,
) -> Path:
    """Write the episodes of a local Minari dataset as a schema-v1 buffer file."""
    from minari import MinariDataset

    data_path = minari_data_path(dataset)
    try:
        ds = MinariDataset(data_path)
        episodes = list(ds.iterate_episodes())
        env_spec = ds.env_spec
    except Exception as exc:  # Minari raises many kinds of errors on malformed storage
        raise TomreproError(f"{data_path}: not a readable Minari dataset ({exc})") from None
    if not episodes:
        raise TomreproError(f"{data_path}: the dataset holds no episodes")
    first = episodes[0]
    if not isinstance(first.observations, np.ndarray) or not isinstance(first.actions, np.ndarray):
        raise TomreproError(f"{data_path}: only flat Box observations and actions are supported")
    env_id = env_spec.id if env_spec is not None else None
    found = resolve_task(task, env_id, first.observations.shape[1], first.actions.shape[1])
    columns, recorded = _columns_from_episodes(episodes, data_path)
    meta = BufferMetadata(
        found.task_id,
        seed=0,
        config={"source": "minari", "dataset": str(data_path.parent), "env_id": env_id},
        policy_versions_recorded=recorded,
    )
    attached = snapshots_from(snapshots, recorded)
    return write_buffer(out, ReplayBuffer.from_columns(columns), meta, attached)


def _columns_from_episodes(episodes: list[Any], where: Path) -> tuple[dict[str, np.ndarray], bool]:
    parts: dict[str, list[np.ndarray]] = {}
    recorded = all(
        isinstance(e.infos, dict) and all(k in e.infos for k in PROVENANCE_INFOS) for e in episodes
    )
    step = 0
    for index, ep in enumerate(episodes):
        n = len(ep.rewards)
        obs = np.asarray(ep.observations, dtype=np.float32)
        if obs.shape[0] != n + 1 or len(ep.actions) != n or len(ep.terminations) != n:
            raise TomreproError(
                f"{where}: episode {ep.id} has {obs.shape[0]} observations, {len(ep.actions)} "
                f"actions and {n} rewards (expected N + 1, N, N)"
            )
        if recorded:
            prov = {k: np.asarray(ep.infos[k], dtype=np.int64) for k in PROVENANCE_INFOS}
        else:
            prov = {
                "env_steps": np.arange(step, step + n),
                "episode_steps": np.arange(n),
                "policy_versions": np.zeros(n, dtype=np.int64),
            }
        step += n
        cols = {
            "observations": obs[:-1],
            "actions": np.asarray(ep.actions, dtype=np.float32),
            "rewards": np.asarray(ep.rewards, dtype=np.float32),
            "next_observations": obs[1:],
            "terminations": np.asarray(ep.terminations, dtype=bool),
            "truncations": np.asarray(ep.truncations, dtype=bool),
            "episode_ids": np.full(n, index, dtype=np.int64),
            **prov,
        }
        for k, v in cols.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}, recorded


def export_minari(buffer_path: Path, dataset_id: str) -> Path:
    """Write a buffer file as a local Minari dataset (under `MINARI_DATASETS_PATH`); returns the
    dataset directory."""
    import minari

    loaded = read_buffer(buffer_path)
    task = get_task(loaded.metadata.task_id)
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.storage import get_dataset_path

    target = get_dataset_path(dataset_id)
    if target.exists():
        raise TomreproError(f"Minari dataset {dataset_id!r} already exists at {target}")
    c = loaded.buffer.columns()
    bounds = np.flatnonzero(np.diff(c["episode_ids"])) + 1
    starts, ends = np.r_[0, bounds], np.r_[bounds, len(c["rewards"])]
    episodes = []
    for index, (a, b) in enumerate(zip(starts, ends, strict=True)):
        obs = np.concatenate((c["observations"][a:b], c["next_observations"][b - 1 : b]))
        episodes.append(
            EpisodeBuffer(
                id=index,
                observations=obs,
                actions=c["actions"][a:b],
                rewards=c["rewards"][a:b].tolist(),
                terminations=c["terminations"][a:b].tolist(),
                truncations=c["truncations"][a:b].tolist(),
                infos={k: c[k][a:b] for k in PROVENANCE_INFOS},
            )
        )
    env = task.make_env()
    try:
        minari.create_dataset_from_buffers(
            dataset_id,
            episodes,
            env=env.spec,
            eval_env=env.spec,
            algorithm_name=f"tomrepro {loaded.metadata.config.get('stage', 'buffer')}",
            author="tomrepro",
            author_email="unknown",
            description=f"Exported by tomrepro from {buffer_path.name} ({task.task_id})",
        )
    except ValueError as exc:  # Minari's complaints about ids and spaces
        raise TomreproError(f"cannot export to Minari dataset {dataset_id!r}: {exc}") from None
    finally:
        env.close()
    return target
