"""A buffer file in numbers: what `tomrepro inspect` prints and DVC records as metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tomrepro.core.buffer_file import SCHEMA_VERSION, BufferFile


def episode_returns(columns: dict[str, np.ndarray]) -> np.ndarray:
    """Undiscounted returns of the episodes that ended (terminated or truncated) in the data."""
    ids = columns["episode_ids"]
    if len(ids) == 0:
        return np.zeros(0)
    _, inverse = np.unique(ids, return_inverse=True)
    totals = np.bincount(inverse, weights=columns["rewards"].astype(np.float64))
    ended = np.zeros(len(totals), dtype=bool)
    ended[inverse[columns["terminations"] | columns["truncations"]]] = True
    return totals[ended]


def summarize(loaded: BufferFile) -> dict[str, Any]:
    """JSON-ready summary: sizes, episodes, return statistics, policy versions, provenance."""
    cols = loaded.buffer.columns()
    meta = loaded.metadata
    returns = episode_returns(cols)
    versions, counts = np.unique(cols["policy_versions"], return_counts=True)
    stats = (
        {
            "count": len(returns),
            "mean": float(returns.mean()),
            "std": float(returns.std()),
            "min": float(returns.min()),
            "max": float(returns.max()),
        }
        if len(returns)
        else {"count": 0}
    )
    return {
        "file": str(loaded.path),
        "schema_version": SCHEMA_VERSION,
        "complete": meta.complete,
        "task_id": meta.task_id,
        "seed": meta.seed,
        "created_at": meta.created_at,
        "transitions": len(loaded.buffer),
        "obs_dim": loaded.buffer.obs_dim,
        "act_dim": loaded.buffer.act_dim,
        "env_steps": [int(cols["env_steps"][0]), int(cols["env_steps"][-1])] if len(cols["env_steps"]) else [],
        "episodes": int(len(np.unique(cols["episode_ids"]))),
        "terminations": int(cols["terminations"].sum()),
        "truncations": int(cols["truncations"].sum()),
        "episode_returns": stats,
        "policy_versions_recorded": meta.policy_versions_recorded,
        "policy_versions": {str(int(v)): int(c) for v, c in zip(versions, counts, strict=True)},
        "policy_snapshots": {str(v): s for v, s in sorted(loaded.snapshot_steps.items())},
        "file_mb": round(Path(loaded.path).stat().st_size / 1e6, 3),
        "versions": dict(meta.versions),
    }
