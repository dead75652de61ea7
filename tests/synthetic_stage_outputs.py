"""Hand-built stage outputs with a chosen effect size, in the exact formats the stages write.

`effect=True` builds data in which TOM does what the paper claims (recent transitions weighted up,
lower on-policy error, faster learning, the same final return); `effect=False` builds data in
which TOM and MLE are draws from one distribution.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from tomrepro.analysis.finite_claims import check_bound, check_recovery, finite_results
from tomrepro.analysis.finite_model_fit import run_model_fit

LEARNERS = ["mle", "tom", "tom-nodisc", "pmac"]


def write_study(
    path: Path, effect: bool, seed: int = 0, snapshots=(5, 10, 15), seeds=4, runs=6
) -> None:
    """A study.nc over `runs` independent collect runs (each with its own level of error),
    with snapshots and model seeds nested inside each run."""
    rng = np.random.default_rng(seed)
    shape = (runs, len(LEARNERS), len(snapshots), seeds)
    cells = (runs, len(snapshots), seeds)
    age_bins, horizon = 5, 4
    base = rng.lognormal(-1.0, 0.3, (runs, 1, 1)) * rng.lognormal(0, 0.1, cells)
    on_policy = np.stack([base * rng.lognormal(0, 0.05, cells) for _ in LEARNERS], axis=1)
    if effect:
        on_policy[:, 1] *= 0.6  # TOM's on-policy error 40 % below MLE's
    slope = np.where(np.arange(len(LEARNERS)) == 0, 0.0, 0.5 if effect else 0.0)
    by_age = np.exp(
        slope[None, :, None, None, None] * np.linspace(-1, 1, age_bins)
        + rng.normal(0, 0.05, (*shape, age_bins))
    )
    by_age[:, 0] = 1.0
    rho = np.where(
        slope[None, :, None, None] > 0, rng.uniform(0.3, 0.6, shape), rng.normal(0, 0.05, shape)
    )
    rho[:, 0] = np.nan  # MLE's constant weights have no rank correlation
    dims = ("run", "learner", "snapshot", "seed")
    ds = xr.Dataset(
        {
            "on_policy_state_mse": (dims, on_policy),
            "buffer_state_mse": (dims, on_policy * rng.uniform(0.8, 1.2, shape)),
            "open_loop_state_mse": (
                (*dims, "horizon"),
                on_policy[..., None] * np.arange(1, horizon + 1) ** 1.5,
            ),
            "weight_by_age": ((*dims, "age_bin"), by_age),
            "newest_oldest_ratio": (dims, by_age[..., -1] / by_age[..., 0]),
            "spearman_recency": (dims, rho),
            "ess_share": (dims, rng.uniform(0.2, 0.9, shape)),
        },
        coords={
            "run": list(range(runs)),
            "learner": LEARNERS,
            "snapshot": list(snapshots),
            "seed": list(range(seeds)),
            "horizon": np.arange(1, horizon + 1),
            "age_bin": np.arange(age_bins),
            "env_step": (("run", "snapshot"), np.tile(np.asarray(snapshots) * 1000, (runs, 1))),
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, engine="h5netcdf")


def curves_table(
    speedup: float = 0.0,
    seeds: int = 5,
    snapshot: int = -1,
    task: str = "InvertedPendulum-v5",
    seed: int = 0,
    final_gap: float = 0.0,
) -> pd.DataFrame:
    """Logistic learning curves to 1000; TOM's midpoint `speedup` (a share) earlier than MLE's."""
    rng = np.random.default_rng(seed)
    steps = np.arange(0, 5001, 250)
    start = 0 if snapshot < 0 else 10_000
    rows = []
    for learner in ("mle", "tom"):
        for s in range(seeds):
            mid = 2500 * (1 - speedup if learner == "tom" else 1.0) + rng.normal(0, 100)
            top = 1000 * (1 - final_gap if learner == "tom" else 1.0)
            returns = 10 + (top - 10) / (1 + np.exp(-(steps - mid) / 250))
            returns = returns + rng.normal(0, 5, len(steps))
            for step, ret in zip(steps, returns, strict=True):
                rows.append(
                    {
                        "snapshot": snapshot,
                        "task": task,
                        "learner": learner,
                        "seed": s,
                        "env_step": start + step,
                        "policy_version": step // 250,
                        "return_mean": ret,
                        "return_std": 1.0,
                        "seconds_sac": 2.0,
                        "seconds_model_fit": 0.5 + (learner == "tom"),
                        "seconds_weights": float(learner == "tom"),
                        "seconds_total": 3.0 + 2 * (learner == "tom"),
                    }
                )
    return pd.DataFrame(rows)


def write_finite(path: Path, mdps: int = 10) -> None:
    """The finite stage's JSON without the (slow) estimator parts; C6's model fit on 200 MDPs
    of 1000 samples, where exact TOM weights beat MLE (tests/test_finite_model_fit.py)."""
    recovery, bound = check_recovery(mdps, 0), check_bound(mdps, 1)
    results = finite_results(recovery, bound, 0)
    results["model_fit"] = run_model_fit(200, 0, samples=1000)
    path.write_text(json.dumps(results))


def write_stage_outputs(data_dir: Path, effect: bool, seed: int = 0) -> Path:
    """A profile data folder as the pipeline leaves it before `analyse`."""
    write_study(data_dir / "offline_study" / "study.nc", effect, seed)
    speedup = 0.4 if effect else 0.0
    curves_table(speedup, seeds=10, seed=seed).to_csv(
        data_dir / "mbpo_scratch_curves.csv", index=False
    )
    curves_table(speedup, seeds=10, snapshot=15, task="Hopper-v5", seed=seed + 1).to_csv(
        data_dir / "mbpo_continue_curves.csv", index=False
    )
    write_finite(data_dir / "finite_mdp.json")
    times = data_dir / "stage_times"
    times.mkdir()
    for i, stage in enumerate(("collect", "offline_study", "mbpo_scratch")):
        (times / f"{stage}.json").write_text(
            json.dumps(
                {"command": stage, "wall_seconds": 60.0 * (i + 1), "finished_at": "2026-01-01"}
            )
        )
    return data_dir
