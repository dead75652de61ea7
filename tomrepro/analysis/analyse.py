"""`tomrepro analyse`: stage outputs -> netCDF datasets -> judged claims (JSON and tidy CSV).

Besides `claims.json` (everything, for the report) it writes `headline.json`, the pipeline's one
DVC metrics file, kept small so `dvc exp show` stays readable: each claims row's verdict and
estimate, the summed wall time of the stages timed before `analyse` ran (named in the file), and
each MBPO cell's final return per learner (C4's definition: the mean of a run's last
`analysis.final_evaluations` evaluations), averaged over seeds.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from tomrepro.analysis import datasets
from tomrepro.analysis.claims import ClaimJudge, ClaimResult, scope_name
from tomrepro.analysis.deciding_cost import deciding_cost, read_plan
from tomrepro.core.atomic import atomic_path
from tomrepro.core.config import ProfileConfig
from tomrepro.core.profile_paths import PLAN_FILE
from tomrepro.core.stage_time import read_stage_times
from tomrepro.learning.reference_speed import sac_update_ms

HEADLINE = "headline.json"
# Stages timed after the headline is written (a stale record of an earlier run may be on disk).
NOT_IN_WALL_TIME = ("analyse", "report")


def row_id(result: ClaimResult) -> str:
    return f"{result.claim_id} ({result.scope})"


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per judged claim: the tidy table behind the report and DVC plots."""
    return pd.DataFrame(
        [
            {
                "claim": row_id(r),
                "role": r.role,
                "verdict": r.verdict,
                "effect": r.estimate.value if r.estimate else None,
                "low": r.estimate.low if r.estimate else None,
                "high": r.estimate.high if r.estimate else None,
                "sesoi": r.sesoi,
                "p_value": r.p_value,
                "power": r.power,
                "units": r.units,
                "units_needed": r.units_needed,
                "measure": r.measure,
            }
            for r in results
        ]
    )


def analyse(profile: ProfileConfig, data_dir: Path, out_dir: Path) -> list[ClaimResult]:
    """Build and save the datasets of `data_dir`, judge every claim, write claims.json/.csv."""
    data = datasets.build(data_dir)
    datasets.save(data, out_dir)
    stage_times = read_stage_times(data_dir / "stage_times")
    plan = read_plan(data_dir / PLAN_FILE)  # the planner's per-unit costs, when it ran
    results = [
        _with_cost(r, deciding_cost(r, profile, plan))
        for r in ClaimJudge(profile.analysis, profile.seed).judge(data)
    ]
    payload = {
        "profile": profile.name,
        "rules": profile.analysis.model_dump(),
        "claims": {row_id(r): r.to_json() for r in results},
    }
    with atomic_path(out_dir / "claims.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False))
    with atomic_path(out_dir / "claims.csv") as tmp:
        claims_table(results).to_csv(tmp, index=False)
    summary = headline(results, data, stage_times, profile)
    with atomic_path(out_dir / HEADLINE) as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2, allow_nan=False))
    return results


def _with_cost(result: ClaimResult, cost: dict[str, Any] | None) -> ClaimResult:
    if cost is None:
        return result
    return replace(result, evidence={**result.evidence, "deciding would take": cost})


def final_returns(data: datasets.AnalysisData, evaluations: int) -> dict[str, dict[str, float]]:
    """Per MBPO cell (named as its claims rows are) and learner: the seed mean of each run's
    final return (the mean of its last `evaluations` finite evaluations)."""
    out: dict[str, dict[str, float]] = {}
    for curves in data.curves.values():
        for task in curves.task.values:
            for snapshot in curves.snapshot.values:
                cell = {}
                for learner in curves.learner.values:
                    runs = curves.return_mean.sel(task=task, snapshot=snapshot, learner=learner)
                    finals = _final(runs.dropna("seed", how="all"), evaluations)
                    if len(finals):
                        cell[str(learner)] = float(finals.mean())
                if cell:
                    out[scope_name(str(task), int(snapshot))] = cell
    return out


def headline(
    results: list[ClaimResult],
    data: datasets.AnalysisData,
    stage_times: dict[str, dict],
    profile: ProfileConfig,
) -> dict[str, Any]:
    """The few numbers worth a column in `dvc exp show` (the pipeline's only DVC metrics)."""
    timed = {k: v for k, v in stage_times.items() if k not in NOT_IN_WALL_TIME}
    return {
        "claims": {
            row_id(r): {"verdict": r.verdict, "estimate": r.estimate.value if r.estimate else None}
            for r in results
        },
        "wall_seconds": {
            "total": round(sum(float(t["wall_seconds"]) for t in timed.values()), 3),
            "stages": ",".join(timed),  # the stage_times files summed
        },
        # The machine's speed, measured now, beside its wall times (compare ratios only).
        "sac_update_ms": round(sac_update_ms(), 2),
        "final_return": final_returns(data, profile.analysis.final_evaluations),
    }


def _final(runs: xr.DataArray, n: int) -> np.ndarray:
    """Mean of each seed's own last `n` finite evaluations."""
    finals = []
    for row in runs.values:
        values = row[np.isfinite(row)]
        if len(values):
            finals.append(values[-n:].mean())
    return np.asarray(finals, dtype=np.float64)


def _json_safe(value: Any) -> Any:
    """NaN and infinities (e.g. a statistic of no cells) become null: JSON has no NaN."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def load_claims(out_dir: Path) -> dict:
    """The claims.json that `analyse` wrote."""
    return json.loads((out_dir / "claims.json").read_text())
