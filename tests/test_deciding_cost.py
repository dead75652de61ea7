"""What deciding an undecided row would take: units from the power analysis, hours projected from
the stage times this run measured; decided rows get no estimate."""

from __future__ import annotations

import pytest

from tomrepro.analysis.claim_rows import ClaimResult
from tomrepro.analysis.deciding_cost import collect_runs, deciding_cost
from tomrepro.analysis.statistics import Estimate
from tomrepro.core.config import load_profile


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


def test_hours_scale_with_the_missing_units_and_the_measured_time_per_unit():
    profile = load_profile("default")
    m = profile.mbpo
    times = {"mbpo_scratch": {"wall_seconds": 3600.0 * len(m.seeds) * len(m.tasks)}}
    cost = deciding_cost(_row("C3", "Hopper-v5, from scratch", "indicative", 2, 12), profile, times)
    assert cost["more_units"] == 10
    assert cost["hours_on_this_machine (projection)"] == pytest.approx(10.0)
    runs = collect_runs(profile)
    times = {"collect": {"wall_seconds": 600.0 * runs}, "offline_study": {"wall_seconds": 0.0}}
    cost = deciding_cost(_row("C2", "offline study", "inconclusive", 6, 9), profile, times)
    assert cost["hours_on_this_machine (projection)"] == pytest.approx(3 * 600 / 3600, abs=0.01)


def test_decided_rows_and_rows_without_a_power_analysis_get_no_estimate():
    profile = load_profile("default")
    assert deciding_cost(_row("C2", "offline study", "reproduced", 6, 9), profile, {}) is None
    assert deciding_cost(_row("C2", "offline study", "inconclusive", 6, None), profile, {}) is None
    missing = deciding_cost(_row("C2", "offline study", "inconclusive", 6, 8), profile, {})
    assert missing == {"units_needed": 8, "more_units": 2}  # no stage times: no hours
