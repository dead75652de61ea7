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
        "env_steps": [int(cols["env_steps"][0]), int(cols["env_steps"][-1])]
        if len(cols["env_steps"])
        else [],
        "episodes": len(np.unique(cols["episode_ids"])),
        "terminations": int(cols["terminations"].sum()),
        "truncations": int(cols["truncations"].sum()),
        "episode_returns": stats,
        "policy_versions_recorded": meta.policy_versions_recorded,
        "policy_versions": {str(int(v)): int(c) for v, c in zip(versions, counts, strict=True)},
        "policy_snapshots": {str(v): s for v, s in sorted(loaded.snapshot_steps.items())},
        "file_mb": round(Path(loaded.path).stat().st_size / 1e6, 3),
        "versions": dict(meta.versions),
    }


def summary_text(s: dict[str, Any]) -> str:
    """The human-readable form of `summarize`'s output."""
    ret = s["episode_returns"]
    returns = (
        f"mean {ret['mean']:.2f} ± {ret['std']:.2f}, min {ret['min']:.2f}, "
        f"max {ret['max']:.2f} over {ret['count']} finished episodes"
        if ret["count"]
        else "no finished episode"
    )
    recorded = "recorded" if s["policy_versions_recorded"] else "not recorded"
    rows = [
        ("file", f"{s['file']} ({s['file_mb']} MB)"),
        ("schema", f"v{s['schema_version']}, {'complete' if s['complete'] else 'INCOMPLETE'}"),
        ("task", f"{s['task_id']} (obs {s['obs_dim']}, act {s['act_dim']})"),
        ("transitions", f"{s['transitions']} (env steps {s['env_steps']})"),
        (
            "episodes",
            f"{s['episodes']} ({s['terminations']} terminated, {s['truncations']} truncated)",
        ),
        ("returns", returns),
        (
            "policy versions",
            f"{len(s['policy_versions'])} ({recorded}), {len(s['policy_snapshots'])} snapshots",
        ),
        ("seed", f"{s['seed']}, created {s['created_at']}"),
    ]
    lines = [f"{key:<16}{value}" for key, value in rows]
    for point in s.get("learning_curve", []):
        lines.append(
            f"  steps {point['env_step']:>8}+  {point['episodes']:>4} episodes  "
            f"mean return {point['mean_return']:>9.1f}  max {point['max_return']:>9.1f}"
        )
    return "\n".join(lines)


def learning_curve(columns: dict[str, np.ndarray], bin_steps: int) -> list[dict[str, float]]:
    """Mean and max return of the episodes that ended in each bin of `bin_steps` env steps."""
    returns = episode_returns(columns)
    ended = columns["terminations"] | columns["truncations"]
    end_steps = columns["env_steps"][ended]
    bins = end_steps // bin_steps
    return [
        {
            "env_step": int(b * bin_steps),
            "episodes": int((bins == b).sum()),
            "mean_return": float(returns[bins == b].mean()),
            "max_return": float(returns[bins == b].max()),
        }
        for b in np.unique(bins)
    ]
