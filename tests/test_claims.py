"""Claim rules on hand-built data: a known effect gives the verdict the rule implies, no effect
does not give `reproduced` (C1-C3), and too little data is `inconclusive`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.synthetic_stage_outputs import curves_table, write_stage_outputs, write_study
from tomrepro.analysis import datasets
from tomrepro.analysis.claims import ClaimJudge, _steps_to
from tomrepro.analysis.statistics import bootstrap, mean_of, ratio_of_means
from tomrepro.core.config import AnalysisConfig

RULES = AnalysisConfig(bootstrap_samples=1000)


def judge() -> ClaimJudge:
    return ClaimJudge(RULES, seed=0)


def _curves(tmp_path, **kwargs):
    path = tmp_path / "curves.csv"
    curves_table(**kwargs).to_csv(path, index=False)
    return datasets.curves_dataset(path, "scratch")


def test_bootstrap_interval_covers_the_mean_narrows_with_data_and_repeats():
    rng = np.random.default_rng(1)
    small, large = rng.normal(3, 1, 10), rng.normal(3, 1, 1000)
    a = bootstrap((small,), mean_of, np.random.default_rng(0), 2000, 0.95)
    b = bootstrap((large,), mean_of, np.random.default_rng(0), 2000, 0.95)
    assert a.low < small.mean() < a.high and b.low < 3 < b.high
    assert (b.high - b.low) < (a.high - a.low) / 5
    assert a == bootstrap((small,), mean_of, np.random.default_rng(0), 2000, 0.95)


def test_ratio_of_means_treats_zero_over_zero_as_no_difference():
    zeros = np.zeros((1, 3))
    assert ratio_of_means(zeros, zeros)[0] == 1.0
    assert ratio_of_means(np.full((1, 2), 2.0), np.full((1, 2), 1.0))[0] == 0.5


def test_steps_to_threshold_counts_from_first_evaluation_and_censors_misses(tmp_path):
    ds = _curves(tmp_path, speedup=0.0, seeds=3)
    runs = ds.return_mean.sel(task="InvertedPendulum-v5", snapshot=-1, learner="mle").copy()
    runs[0, :] = np.linspace(0, 100, runs.sizes["env_step"])
    runs[1, :] = 0.0
    runs[2, :] = 0.0
    runs[2, 10:] = np.nan  # a run that stopped early and never got there
    steps = _steps_to(runs, threshold=50.0)
    grid = runs.env_step.values
    censored = grid[-1] + (grid[-1] - grid[-2]) - grid[0]
    assert steps[0] == grid[np.argmax(runs.values[0] >= 50)] - grid[0]
    assert steps[1] == steps[2] == censored  # both censored at the grid's end, not their own


def test_final_return_uses_each_runs_own_last_evaluations():
    import xarray as xr

    from tomrepro.analysis.claims import _final

    values = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, np.nan, np.nan]])
    runs = xr.DataArray(values, dims=("seed", "env_step"))
    assert _final(runs, 2).tolist() == [3.5, 5.5]


@pytest.mark.parametrize("claim", ["C1", "C2"])
def test_offline_claims_follow_a_known_effect(tmp_path, claim):
    verdicts = {}
    for effect in (True, False):
        path = tmp_path / f"{effect}.nc"
        write_study(path, effect)
        offline = datasets.offline_dataset(path)
        rule = judge().weights_focus_on_recent if claim == "C1" else judge().accurate_on_policy
        verdicts[effect] = rule(offline)
    assert verdicts[True].verdict == "reproduced"
    assert verdicts[False].verdict in ("not reproduced", "inconclusive")
    assert verdicts[True].units == 12


def test_c2_is_not_reproduced_when_tom_is_clearly_worse(tmp_path):
    write_study(tmp_path / "s.nc", effect=False)
    offline = datasets.offline_dataset(tmp_path / "s.nc")
    offline["on_policy_state_mse"].loc[{"learner": "tom"}] *= 1.5
    result = judge().accurate_on_policy(offline)
    assert result.verdict == "not reproduced" and result.estimate.low > 1


def test_c3_is_not_reproduced_when_tom_is_clearly_slower(tmp_path):
    slower = judge().speeds_up_learning(_curves(tmp_path, speedup=-0.4), "InvertedPendulum-v5", -1)
    assert slower.verdict == "not reproduced" and slower.estimate.low > 1


def test_c1_counts_constant_weights_as_no_focus_and_clips_infinite_ratios(tmp_path):
    write_study(tmp_path / "s.nc", effect=False)
    offline = datasets.offline_dataset(tmp_path / "s.nc")
    offline["spearman_recency"].loc[{"learner": "tom"}] = np.nan  # constant weights everywhere
    offline["newest_oldest_ratio"].loc[{"learner": "tom"}] = 1.0
    flat = judge().weights_focus_on_recent(offline)
    assert flat.verdict == "not reproduced" and flat.units == 12
    assert flat.evidence["cells_with_constant_weights"] == 12
    write_study(tmp_path / "e.nc", effect=True)
    strong = datasets.offline_dataset(tmp_path / "e.nc")
    strong["newest_oldest_ratio"].loc[{"learner": "tom", "snapshot": 5}] = np.inf
    result = judge().weights_focus_on_recent(strong)
    assert result.verdict == "reproduced" and result.evidence["cells_with_clipped_ratio"] == 4


def test_c3_follows_a_known_speedup_and_not_its_absence(tmp_path):
    faster = judge().speeds_up_learning(_curves(tmp_path, speedup=0.4), "InvertedPendulum-v5", -1)
    assert faster.verdict == "reproduced"
    assert 0.5 < faster.estimate.value < 0.75  # the hand-built curves reach 800 ~40 % sooner
    same = judge().speeds_up_learning(_curves(tmp_path, speedup=0.0), "InvertedPendulum-v5", -1)
    assert same.verdict in ("not reproduced", "inconclusive")
    assert same.estimate.low < 1.05 and same.estimate.high > 0.95


def test_c4_equal_finals_reproduce_and_a_large_gap_does_not(tmp_path):
    equal = judge().same_final_return(_curves(tmp_path, speedup=0.4), "InvertedPendulum-v5", -1)
    assert equal.verdict == "reproduced"
    gap = judge().same_final_return(
        _curves(tmp_path, speedup=0.0, final_gap=0.4), "InvertedPendulum-v5", -1
    )
    assert gap.verdict == "not reproduced" and gap.estimate.high < -RULES.equivalence_margin


def test_too_few_seeds_are_inconclusive(tmp_path):
    ds = _curves(tmp_path, speedup=0.4, seeds=2)
    for rule in (judge().speeds_up_learning, judge().same_final_return):
        result = rule(ds, "InvertedPendulum-v5", -1)
        assert result.verdict == "inconclusive" and "seeds" in result.evidence["why"]


def test_finite_claims_reproduce_on_real_checks_and_fail_on_a_violated_bound(tmp_path):
    data = datasets.build(write_stage_outputs(tmp_path / "d", effect=True))
    assert judge().recovers_ratio(data.finite).verdict == "reproduced"
    assert judge().lower_bounds_objective(data.finite).verdict == "reproduced"
    broken = data.finite.copy(deep=True)
    broken["slack_kl"][3] = -0.01
    broken["recovery_error"].loc[{"form": "expected"}] = 1e-3
    assert judge().lower_bounds_objective(broken).verdict == "not reproduced"
    assert judge().recovers_ratio(broken).verdict == "not reproduced"
    failed = data.finite.copy(deep=True)  # a failed solve or a missing key is NaN, never a pass
    failed["recovery_error"][0, 0, 0] = np.nan
    failed["slack_chi2"][0] = np.nan
    assert judge().recovers_ratio(failed).verdict == "not reproduced"
    assert judge().lower_bounds_objective(failed).verdict == "not reproduced"


def test_missing_stage_outputs_make_their_claims_inconclusive(tmp_path):
    (tmp_path / "empty").mkdir()
    results = judge().judge(datasets.build(tmp_path / "empty"))
    assert [r.claim_id for r in results] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert {r.verdict for r in results} == {"inconclusive"}


def test_analyse_cli_writes_datasets_and_claims_that_round_trip(tmp_path, run_cli):
    data = write_stage_outputs(tmp_path / "d", effect=True)
    code, _, err = run_cli("analyse", "--profile", "smoke", "--data", str(data))
    assert code == 0, err
    claims = json.loads((data / "analysis" / "claims.json").read_text())
    assert claims["profile"] == "smoke"
    assert [v["claim_id"] for v in claims["claims"].values()] == [
        "C1",
        "C2",
        "C3",
        "C3",
        "C4",
        "C5",
        "C6",
    ]
    assert all(v["verdict"] == "reproduced" for v in claims["claims"].values())
    saved = datasets.load(data / "analysis")
    assert set(saved.curves) == {"scratch", "continue"}
    assert saved.offline.sizes["snapshot"] == 3 and saved.finite.sizes["mdp"] == 10
    table = (data / "analysis" / "claims.csv").read_text().splitlines()
    assert table[0].startswith("claim,verdict,effect,low,high") and len(table) == 8


def test_analyse_refuses_bad_inputs_with_one_line(tmp_path, run_cli):
    code, _, err = run_cli("analyse", "--profile", "smoke", "--data", str(tmp_path / "nope"))
    assert code == 2 and "no such data folder" in err
    data = tmp_path / "d"
    (data / "offline_study").mkdir(parents=True)
    (data / "offline_study" / "study.nc").write_bytes(b"not netcdf")
    code, _, err = run_cli("analyse", "--profile", "smoke", "--data", str(data))
    assert code == 2 and "study.nc: not a readable netCDF file" in err
    assert len(err.strip().splitlines()) == 1
    (data / "offline_study" / "study.nc").unlink()
    (data / "mbpo_scratch_curves.csv").write_text("a,b\n1,2\n")
    code, _, err = run_cli("analyse", "--profile", "smoke", "--data", str(data))
    assert code == 2 and "missing columns" in err
