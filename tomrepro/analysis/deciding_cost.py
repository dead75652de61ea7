"""What deciding an undecided claim row would take, estimated from the stage times measured.

One function, so that the planner (`tomrepro plan`, issue 19) can replace the estimate in one
place. The figure is a projection from this run's measured wall time per unit, not a measurement.
"""

from __future__ import annotations

from typing import Any

from tomrepro.analysis.claim_rows import ClaimResult
from tomrepro.core.config import ProfileConfig

UNDECIDED = ("inconclusive", "indicative")


def collect_runs(profile: ProfileConfig) -> int:
    """How many independent collect runs the profile makes."""
    return len(getattr(profile.collect, "seeds", (profile.seed,)))


def _seconds_per_unit(
    claim_id: str, scope: str, profile: ProfileConfig, stage_times: dict[str, dict]
) -> tuple[float, str] | None:
    """Measured wall seconds of one more unit of this row, and the stages that gave it."""

    def wall(*stages: str) -> float | None:
        if not all(s in stage_times for s in stages):
            return None
        return sum(float(stage_times[s]["wall_seconds"]) for s in stages)

    if claim_id in ("C1", "C2"):
        runs = collect_runs(profile)
        total = wall("collect", "offline_study")
        return None if total is None else (total / runs, f"(collect + offline study) / {runs} runs")
    if claim_id in ("C3", "C4") and profile.mbpo is not None:
        m = profile.mbpo
        continued = "continued" in scope
        stage = "mbpo_continue" if continued else "mbpo_scratch"
        cells = len(m.continue_snapshots) if continued else len(m.tasks)
        total = wall(stage)
        seeds = len(m.seeds)
        if total is None:
            return None
        return total / (seeds * cells), f"{stage} / ({seeds} seeds x {cells} cells)"
    if claim_id in ("C5", "C6") and profile.finite_mdp is not None:
        total = wall("finite_mdp")
        mdps = profile.finite_mdp.mdps
        return None if total is None else (total / mdps, f"finite_mdp / {mdps} MDPs")
    return None


def deciding_cost(
    result: ClaimResult, profile: ProfileConfig, stage_times: dict[str, dict]
) -> dict[str, Any] | None:
    """More units and hours on this machine for an undecided row with a power estimate."""
    if result.verdict not in UNDECIDED or result.units_needed is None:
        return None
    per_unit = _seconds_per_unit(result.claim_id, result.scope, profile, stage_times)
    more = max(0, result.units_needed - result.units)
    out: dict[str, Any] = {"units_needed": result.units_needed, "more_units": more}
    if per_unit is not None:
        seconds, basis = per_unit
        out["hours_on_this_machine (projection)"] = round(more * seconds / 3600, 2)
        out["basis"] = f"measured wall time per unit: {basis}"
    return out
