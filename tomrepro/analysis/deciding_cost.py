"""What deciding an undecided claim row would take: the units its power analysis asks for, and
the hours the planner estimates for them.

The hours come from one place, the planner's per-unit costs (`tomrepro plan`, written by the
pipeline's `plan` stage to datasets/<profile>/plan.json): the analysis layer reads its file and
never measures. They are a planner estimate from phase costs measured on the machine that made
the plan, not a measurement, with the units run one after another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tomrepro.analysis.claim_rows import ClaimResult
from tomrepro.analysis.claims import scope_name
from tomrepro.core.config import ProfileConfig
from tomrepro.core.errors import TomreproError

UNDECIDED = ("inconclusive", "indicative")
PLAN_FORMAT_PREFIX = "tomrepro.plan/"
HOURS = "hours (planner estimate)"


def read_plan(path: Path) -> dict[str, Any] | None:
    """The planner's JSON, or None when there is none (rows then get units but no hours)."""
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise TomreproError(f"{path}: not a readable plan ({exc})") from None
    if not (
        isinstance(raw, dict)
        and str(raw.get("format", "")).startswith(PLAN_FORMAT_PREFIX)
        and isinstance(raw.get("units_seconds"), dict)
    ):
        raise TomreproError(f"{path}: not a tomrepro plan; rerun `tomrepro plan --out {path}`")
    return raw


def _mbpo_unit(scope: str, cells: list[dict[str, Any]]) -> tuple[float, str] | None:
    """The MBPO cell a C3/C4 row is about (named as the claims name it) and its seed's cost."""
    for cell in cells:
        snapshot = cell["snapshot"]
        name = scope_name(cell["task"], -1 if snapshot is None else int(snapshot))
        if scope == name or scope.startswith(name + ","):
            learners = " + ".join(cell["learners"])
            return float(cell["seconds"]), f"one more seed of {name} ({learners})"
    return None


def unit_seconds(claim_id: str, scope: str, units: dict[str, Any]) -> tuple[float, str] | None:
    """The planner's seconds for one more unit of this row, and what that unit is."""
    try:
        if claim_id in ("C1", "C2") and "offline_run" in units:
            return float(units["offline_run"]), "one more collect run and its offline study"
        if claim_id in ("C3", "C4"):
            return _mbpo_unit(scope, units.get("mbpo_seed", []))
        estimated = claim_id == "C5" or (claim_id == "C6" and "estimated" in scope)
        if estimated and "finite_estimator_mdp" in units:
            return float(units["finite_estimator_mdp"]), "one more MDP of the neural estimator"
        if claim_id == "C6" and "finite_mdp" in units:
            return float(units["finite_mdp"]), "one more MDP of the exact checks"
    except (KeyError, TypeError, ValueError) as exc:
        raise TomreproError(f"the plan's per-unit costs are malformed ({exc!r})") from None
    return None


def deciding_cost(
    result: ClaimResult, profile: ProfileConfig, plan: dict[str, Any] | None
) -> dict[str, Any] | None:
    """More units and the planner's hours for them, for an undecided row with a power estimate;
    no hours without a plan or without a unit of this row in it."""
    if result.verdict not in UNDECIDED or result.units_needed is None:
        return None
    more = max(0, result.units_needed - result.units)
    out: dict[str, Any] = {"units_needed": result.units_needed, "more_units": more}
    if plan is None:
        return out
    if plan.get("profile") != profile.name:
        raise TomreproError(
            f"the plan is for profile {plan.get('profile')!r}, not {profile.name!r}; rerun "
            f"`tomrepro plan --profile {profile.name} --out ...`"
        )
    unit = unit_seconds(result.claim_id, result.scope, plan["units_seconds"])
    if unit is not None:
        seconds, basis = unit
        out[HOURS] = round(more * seconds / 3600, 2)
        out["basis"] = (
            f"planner estimate, not a measurement: {basis} takes {seconds / 3600:.3g} h on the "
            "machine that made the plan, units one after another"
        )
    return out
