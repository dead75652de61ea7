"""`tomrepro analyse`: stage outputs -> netCDF datasets -> judged claims (JSON and tidy CSV)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from tomrepro.analysis import datasets
from tomrepro.analysis.claims import ClaimJudge, ClaimResult
from tomrepro.core.atomic import atomic_path
from tomrepro.core.config import ProfileConfig


def row_id(result: ClaimResult) -> str:
    return f"{result.claim_id} ({result.scope})"


def claims_table(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per judged claim: the tidy table behind the report and DVC plots."""
    return pd.DataFrame(
        [
            {
                "claim": row_id(r),
                "verdict": r.verdict,
                "effect": r.estimate.value if r.estimate else None,
                "low": r.estimate.low if r.estimate else None,
                "high": r.estimate.high if r.estimate else None,
                "units": r.units,
                "measure": r.measure,
            }
            for r in results
        ]
    )


def analyse(profile: ProfileConfig, data_dir: Path, out_dir: Path) -> list[ClaimResult]:
    """Build and save the datasets of `data_dir`, judge every claim, write claims.json/.csv."""
    data = datasets.build(data_dir)
    datasets.save(data, out_dir)
    results = ClaimJudge(profile.analysis, profile.seed).judge(data)
    payload = {
        "profile": profile.name,
        "rules": profile.analysis.model_dump(),
        "claims": {row_id(r): r.to_json() for r in results},
    }
    with atomic_path(out_dir / "claims.json") as tmp:
        tmp.write_text(json.dumps(_json_safe(payload), indent=2, allow_nan=False))
    with atomic_path(out_dir / "claims.csv") as tmp:
        claims_table(results).to_csv(tmp, index=False)
    return results


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
