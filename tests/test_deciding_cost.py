"""What deciding an undecided row would take: units from the power analysis, hours from the
planner's per-unit costs (plan.json, as `tomrepro plan` writes it); decided rows get no estimate,
and no plan means units without hours."""

from __future__ import annotations

import json

import pytest

from tests.synthetic_stage_outputs import curves_table, write_stage_outputs
from tomrepro.analysis.claim_rows import ClaimResult
from tomrepro.analysis.deciding_cost import HOURS, deciding_cost, read_plan
from tomrepro.analysis.statistics import Estimate
from tomrepro.core.config import load_profile
from tomrepro.core.errors import TomreproError
from tomrepro.core.profile_paths import PLAN_FILE
from tomrepro.loops.planner import (
    FiniteCosts,
    PhaseCosts,
    Plan,
    TaskCosts,
    estimate_stages,
    unit_costs,
)


def _row(claim: str, scope: str, verdict: str, units: int, needed: int | None) -> ClaimResult:
    return ClaimResult(
        claim,
        scope,
        "primary",
        verdict,
        "m",
        "r",
        Estimate(0.1, -1, 1),
        units,
        0.1,
        units_needed=needed,
    )


def _plan(profile) -> dict:
    """A plan document exactly as the planner writes it, from made-up phase costs."""
    task = TaskCosts(*(1e-3 * (i + 1) for i in range(13)))
    tasks = {t: task for t in ("Hopper-v5", "InvertedPendulum-v5")}
    costs = PhaseCosts("cpu", 1, 1, tasks, FiniteCosts(1e-3, 2e-3, 5e-4))
    stages = estimate_stages(profile, costs, parallel_runs=2)
    return Plan(profile.name, costs, costs, 2, stages, unit_costs(profile, costs)).to_json()


def test_hours_are_the_missing_units_times_the_planners_cost_of_one():
    profile = load_profile("default")
    plan = _plan(profile)
    units = plan["units_seconds"]
    cells = {(c["task"], c["snapshot"]): c["seconds"] for c in units["mbpo_seed"]}
    scratch = cells[("InvertedPendulum-v5", None)]
    snapshot = profile.mbpo.continue_snapshots[0]
    continued = cells[("Hopper-v5", snapshot)]
    expected = {
        ("C3", "InvertedPendulum-v5, from scratch", 2, 12): 10 * scratch,
        ("C3", "InvertedPendulum-v5, from scratch, steps to threshold", 2, 12): 10 * scratch,
        ("C4", f"Hopper-v5, continued from snapshot {snapshot}", 2, 5): 3 * continued,
        ("C2", "offline study", 6, 9): 3 * units["offline_run"],
        ("C5", "finite MDPs, chi2, discriminator reward", 10, 14): 4
        * units["finite_estimator_mdp"],
        ("C6", "finite MDPs, model fit with estimated TOM weights", 10, 12): 2
        * units["finite_estimator_mdp"],
        ("C6", "finite MDPs, model fit with exact TOM weights", 200, 300): 100
        * units["finite_mdp"],
    }
    for (claim, scope, have, need), seconds in expected.items():
        cost = deciding_cost(_row(claim, scope, "inconclusive", have, need), profile, plan)
        assert cost["more_units"] == need - have
        assert cost[HOURS] == pytest.approx(seconds / 3600, abs=0.006), scope
        assert "planner estimate" in cost["basis"]


def test_decided_rows_and_rows_without_a_power_analysis_or_a_plan_get_no_hours():
    profile = load_profile("default")
    plan = _plan(profile)
    assert deciding_cost(_row("C2", "offline study", "reproduced", 6, 9), profile, plan) is None
    row = _row("C2", "offline study", "inconclusive", 6, None)
    assert deciding_cost(row, profile, plan) is None
    missing = deciding_cost(_row("C2", "offline study", "inconclusive", 6, 8), profile, None)
    assert missing == {"units_needed": 8, "more_units": 2}
    other_task = _row("C3", "Walker2d-v5, from scratch", "indicative", 2, 12)
    assert HOURS not in deciding_cost(other_task, profile, plan)  # no such cell in the plan


def test_a_plan_for_another_profile_or_a_broken_plan_file_is_refused(tmp_path):
    profile = load_profile("default")
    row = _row("C2", "offline study", "inconclusive", 6, 8)
    with pytest.raises(TomreproError, match="not 'default'"):
        deciding_cost(row, profile, _plan(load_profile("smoke")))
    assert read_plan(tmp_path / "absent.json") is None
    broken = tmp_path / "plan.json"
    broken.write_text("{not json")
    with pytest.raises(TomreproError, match="not a readable plan"):
        read_plan(broken)
    broken.write_text(json.dumps({"format": "something else", "units_seconds": {}}))
    with pytest.raises(TomreproError, match="not a tomrepro plan"):
        read_plan(broken)


def test_analyse_reads_the_plan_from_the_data_folder(tmp_path, run_cli):
    data = write_stage_outputs(tmp_path / "data", effect=False)
    # Three seeds from scratch: C3 is indicative there, with the seeds deciding it would need.
    curves_table(0.0, seeds=3).to_csv(data / "mbpo_scratch_curves.csv", index=False)
    plan = _plan(load_profile("smoke"))
    (data / PLAN_FILE).write_text(json.dumps(plan))
    code, _, err = run_cli("analyse", "--profile", "smoke", "--data", data)
    assert code == 0, err
    claims = json.loads((data / "analysis" / "claims.json").read_text())["claims"]
    cost = claims["C3 (InvertedPendulum-v5, from scratch)"]["evidence"]["deciding would take"]
    assert cost["more_units"] > 0 and cost[HOURS] > 0 and "planner estimate" in cost["basis"]
