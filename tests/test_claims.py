"""Claim rows on hand-built data: each rule gives the verdict its definition implies (effects,
censoring, gates, Holm, too few units), with the comparison and aggregate rows a reader asks for.
The rules' error rates are checked by simulation in test_rule_simulation.py."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.stats import trim_mean

from tests.synthetic_stage_outputs import curves_table, write_stage_outputs, write_study
from tomrepro.analysis import datasets
from tomrepro.analysis.claim_rows import ClaimResult
from tomrepro.analysis.claims import STEPS_SCOPE, ClaimJudge, _reach_and_stay
from tomrepro.analysis.statistics import sign_flip_interval
from tomrepro.core.config import AnalysisConfig

PENDULUM, HOPPER = "InvertedPendulum-v5", "Hopper-v5"
RULES = AnalysisConfig(
    return_thresholds={PENDULUM: 900.0}, task_maximum={PENDULUM: 1000.0, HOPPER: 4000.0}
)
SEEDS = RULES.min_online_seeds


def judge(rules: AnalysisConfig = RULES) -> ClaimJudge:
    return ClaimJudge(rules, seed=0)


def _read_curves(tmp_path, table: pd.DataFrame) -> xr.Dataset:
    path = tmp_path / "mbpo_scratch_curves.csv"
    table.to_csv(path, index=False)
    curves = datasets.curves_dataset(path, "scratch")
    assert curves is not None
    return curves


def _table(runs: dict[str, dict[str, np.ndarray]], steps: np.ndarray) -> pd.DataFrame:
    """The sweep's CSV rows for runs[task][learner] = returns (seed, evaluation)."""
    rows = []
    for task, learners in runs.items():
        for learner, returns in learners.items():
            for seed, row in enumerate(returns):
                for step, value in zip(steps, row, strict=True):
                    rows.append(
                        {
                            "snapshot": -1,
                            "task": task,
                            "learner": learner,
                            "seed": seed,
                            "env_step": int(step),
                            "policy_version": int(step) // 1000,
                            "return_mean": float(value),
                            "return_std": 1.0,
                        }
                    )
    return pd.DataFrame(rows)


def _ramps(scale: np.ndarray, steps: np.ndarray, start: float = 100.0) -> np.ndarray:
    """Straight learning curves from `start`, gaining 500 * scale (one per seed) by the end."""
    return start + 500.0 * np.outer(scale, steps / steps[-1])


def _plateaus(rng, levels: np.ndarray, steps: np.ndarray, noise: float = 2.0) -> np.ndarray:
    """Curves that rise fast and sit flat at `levels` (one per seed) with evaluation noise."""
    shape = 1 - np.exp(-steps / (steps[-1] / 12))
    return 10.0 + np.outer(levels - 10.0, shape) + rng.normal(0, noise, (len(levels), len(steps)))


STEPS = np.arange(11) * 1000


# --- C3: area, reach-and-stay steps, censoring ---------------------------------------------------


def test_reach_and_stay_takes_the_last_crossing_and_censors_runs_that_end_below():
    values = np.array(
        [
            [0, 50, 95, 40, 90, 100],  # crosses, dips, crosses again (90 counts as reached)
            [95, 96, 97, 98, 99, 100],  # above from the first evaluation
            [0, 0, 0, 0, 0, 95],  # reaches only at the last evaluation
            [0, 10, 20, 30, 40, 50],  # never
            [0, 95, 96, 97, 98, 50],  # reaches, then ends below: censored
        ],
        dtype=np.float64,
    )
    steps = np.array([0, 100, 200, 400, 800, 1600])
    runs = xr.DataArray(values, dims=("seed", "env_step"), coords={"env_step": steps})
    got = _reach_and_stay(runs, threshold=90.0)
    np.testing.assert_array_equal(got[:3], [800, 0, 1600])
    assert np.isnan(got[3:]).all()


def test_c3_area_follows_a_known_speedup_and_calls_its_absence(tmp_path):
    rows = {}
    for speedup in (0.4, 0.0, -0.4):
        curves = _read_curves(tmp_path, curves_table(speedup, seeds=SEEDS))
        rows[speedup] = judge().speeds_up_learning(curves, PENDULUM, -1, "primary")[0]
    assert rows[0.4].verdict == "reproduced" and rows[0.4].estimate.low > 0
    assert rows[0.0].verdict in ("not reproduced", "inconclusive")
    assert rows[0.0].estimate.low < 0 < rows[0.0].estimate.high
    assert rows[-0.4].verdict == "not reproduced" and rows[-0.4].estimate.high < 0
    assert rows[0.4].units == SEEDS and rows[0.4].evidence["evaluations_on_grid"] == 21


def test_c3_area_effect_is_the_paired_gain_over_mles_mean_area(tmp_path):
    gains = np.linspace(0.05, 0.5, SEEDS)
    runs = {PENDULUM: {"mle": _ramps(np.ones(SEEDS), STEPS), "tom": _ramps(1 + gains, STEPS)}}
    row = judge().speeds_up_learning(
        _read_curves(tmp_path, _table(runs, STEPS)), PENDULUM, -1, "primary"
    )[0]
    low, high, p = sign_flip_interval(gains, RULES.confidence)
    assert row.estimate.value == pytest.approx(gains.mean())
    assert (row.estimate.low, row.estimate.high) == pytest.approx((low, high))
    assert row.p_value == pytest.approx(p) and row.verdict == "reproduced"
    assert row.evidence["area_mle"] == pytest.approx([250.0] * SEEDS)  # 500 * mean of a ramp


def test_steps_row_counts_only_seeds_where_both_arms_reach_the_threshold(tmp_path):
    mle = np.tile(np.linspace(0, 1000, len(STEPS)), (SEEDS + 2, 1))  # reaches 900 at step 9000
    tom = np.minimum(mle * 2, 1000.0)  # reaches 900 at step 5000: 44 % fewer steps
    mle[:2] = np.minimum(mle[:2], 800.0)  # two MLE runs never reach it
    runs = {PENDULUM: {"mle": mle, "tom": tom}}
    rows = judge().speeds_up_learning(
        _read_curves(tmp_path, _table(runs, STEPS)), PENDULUM, -1, "primary"
    )
    steps_row = rows[1]
    assert steps_row.scope.endswith(STEPS_SCOPE) and steps_row.role == "secondary"
    assert steps_row.evidence["censored_mle"] == 2 and steps_row.evidence["censored_tom"] == 0
    assert steps_row.units == SEEDS and steps_row.verdict == "reproduced"
    assert steps_row.estimate.value == pytest.approx(1 - 5000 / 9000)  # shown as a saving


def test_steps_row_is_inconclusive_when_most_runs_of_both_arms_are_censored(tmp_path):
    curve = np.linspace(0, 1000, len(STEPS))
    below = np.minimum(curve, 800.0)
    arm = np.vstack([np.tile(below, (6, 1)), np.tile(curve, (4, 1))])  # 6 of 10 censored
    runs = {PENDULUM: {"mle": arm, "tom": arm.copy()}}
    rows = judge().speeds_up_learning(
        _read_curves(tmp_path, _table(runs, STEPS)), PENDULUM, -1, "primary"
    )
    assert rows[1].verdict == "inconclusive" and "never reach" in rows[1].note
    tom = np.tile(curve, (SEEDS, 1))  # only MLE mostly censored: a verdict on the rest
    runs = {PENDULUM: {"mle": arm, "tom": tom}}
    rows = judge().speeds_up_learning(
        _read_curves(tmp_path, _table(runs, STEPS)), PENDULUM, -1, "primary"
    )
    assert rows[1].verdict == "indicative" and rows[1].units == 4


def test_steps_row_needs_enough_evaluations_on_the_grid(tmp_path):
    short = STEPS[: RULES.min_threshold_evaluations - 1]
    arm = np.tile(np.linspace(0, 1000, len(short)), (SEEDS, 1))
    runs = {PENDULUM: {"mle": arm, "tom": arm}}
    rows = judge().speeds_up_learning(
        _read_curves(tmp_path, _table(runs, short)), PENDULUM, -1, "primary"
    )
    assert rows[1].verdict == "indicative" and "evaluations on the grid" in rows[1].note


def test_too_few_seeds_give_indicative_rows_with_the_estimate(tmp_path):
    curves = _read_curves(tmp_path, curves_table(0.4, seeds=3))
    area = judge().speeds_up_learning(curves, PENDULUM, -1, "primary")[0]
    assert area.verdict == "indicative" and area.units == 3 and "fewer than" in area.note
    assert area.estimate is not None and area.estimate.value > 0
    final = judge(AnalysisConfig()).same_final_return(curves, PENDULUM)[0]
    assert final.verdict == "indicative" and final.units == 3


# --- C4: gated equivalence and superiority ------------------------------------------------------


def test_c4_equal_plateaus_are_equivalent_and_two_margins_apart_are_not(tmp_path):
    rng = np.random.default_rng(0)
    levels = rng.normal(800, 20, SEEDS)
    gap = 2 * RULES.equivalence_margin * (800 - 10)
    for tom_levels, verdict in ((levels, "reproduced"), (levels - gap, "not reproduced")):
        runs = {
            HOPPER: {"mle": _plateaus(rng, levels, STEPS), "tom": _plateaus(rng, tom_levels, STEPS)}
        }
        rows = judge().same_final_return(_read_curves(tmp_path, _table(runs, STEPS)), HOPPER)
        assert rows[0].verdict == verdict, rows[0]
        assert rows[1].role == "secondary" and "higher asymptote" in rows[1].scope
        assert rows[1].verdict != "reproduced"


def test_c4_is_not_applicable_when_both_arms_sit_at_the_task_maximum(tmp_path):
    rng = np.random.default_rng(1)
    top = np.full(SEEDS, 1000.0)
    at_top = {
        PENDULUM: {
            "mle": np.minimum(_plateaus(rng, top, STEPS), 1000),
            "tom": np.minimum(_plateaus(rng, top, STEPS), 1000),
        }
    }
    rows = judge().same_final_return(_read_curves(tmp_path, _table(at_top, STEPS)), PENDULUM)
    assert len(rows) == 1 and rows[0].verdict == "not applicable" and "maximum" in rows[0].note
    one_below = {
        PENDULUM: {**at_top[PENDULUM], "tom": _plateaus(rng, np.full(SEEDS, 800.0), STEPS)}
    }
    rows = judge().same_final_return(_read_curves(tmp_path, _table(one_below, STEPS)), PENDULUM)
    assert rows[0].verdict != "not applicable"


def test_c4_is_inconclusive_while_a_significant_upward_slope_remains(tmp_path):
    rng = np.random.default_rng(2)
    rising = {
        HOPPER: {
            "mle": _ramps(rng.uniform(0.9, 1.1, SEEDS), STEPS),
            "tom": _ramps(rng.uniform(0.9, 1.1, SEEDS), STEPS),
        }
    }
    rows = judge().same_final_return(_read_curves(tmp_path, _table(rising, STEPS)), HOPPER)
    assert [r.verdict for r in rows] == ["inconclusive", "inconclusive"]
    assert "not converged" in rows[0].note and "mle, tom" in rows[0].note


def _drifting_plateaus(rng, rise: float) -> dict[str, dict[str, np.ndarray]]:
    """Equal plateaus of both arms plus a straight drift that rises by `rise` of the gain over
    the slope window."""
    levels = rng.normal(800, 20, SEEDS)
    span = float(STEPS[-1] - STEPS[-RULES.slope_evaluations])
    drift = rise * (levels.mean() - 10.0) * STEPS / span
    return {HOPPER: {m: _plateaus(rng, levels, STEPS, noise=1.0) + drift for m in ("mle", "tom")}}


@pytest.mark.parametrize("share, gated", [(0.2, False), (3.0, True)])
def test_c4_gates_only_a_rise_significantly_above_the_plateau_tolerance(tmp_path, share, gated):
    rng = np.random.default_rng(5)
    runs = _drifting_plateaus(rng, share * RULES.slope_tolerance)
    curves = _read_curves(tmp_path, _table(runs, STEPS))
    rows = judge().same_final_return(curves, HOPPER)
    for m in ("mle", "tom"):
        rise = rows[0].evidence[f"end_slope_{m} (gain share over the window)"]
        low, high, _ = sign_flip_interval(np.asarray(rise), RULES.confidence)
        assert low > 0  # sanity: the drift is significant, so a gate without tolerance fires
        assert (low > RULES.slope_tolerance) == gated and (high < RULES.slope_tolerance) != gated
    assert ("not converged" in rows[0].note) == gated, rows[0]
    if gated:
        assert [r.verdict for r in rows] == ["inconclusive", "inconclusive"]
        assert rows[0].p_value is None  # untested: outside Holm's family
    else:
        assert rows[0].verdict == "reproduced" and rows[0].p_value is not None
    assert f"plateau tolerance {RULES.slope_tolerance:g}" in rows[0].rule
    strict = judge(RULES.model_copy(update={"slope_tolerance": 0.0}))
    assert "not converged" in strict.same_final_return(curves, HOPPER)[0].note


# --- several tasks: Holm and aggregates ---------------------------------------------------------

# Per-seed gains whose exact one-sided p-value is 20/1024: significant alone at 2.5 %, not after
# Holm's correction for two rows (2 x 20/1024 > 2.5 %).
MODERATE = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, -7.5]) / 100


def _two_task_curves(tmp_path, gains: dict[str, np.ndarray]):
    runs = {
        t: {"mle": _ramps(np.ones(SEEDS), STEPS), "tom": _ramps(1 + g, STEPS)}
        for t, g in gains.items()
    }
    curves = _read_curves(tmp_path, _table(runs, STEPS))
    return judge().judge(
        datasets.AnalysisData(offline=None, curves={"scratch": curves}, finite=None)
    )


def _area_rows(results: list[ClaimResult]) -> dict[str, ClaimResult]:
    return {r.scope.split(",")[0]: r for r in results if r.claim_id == "C3" and r.role == "primary"}


def test_holm_downgrades_a_per_task_reproduced_that_does_not_survive_correction(tmp_path):
    p = sign_flip_interval(MODERATE, RULES.confidence)[2]
    alpha = (1 - RULES.confidence) / 2
    assert alpha / 2 < p <= alpha  # sanity check of the hand-built gains
    alone = _area_rows(_two_task_curves(tmp_path, {HOPPER: MODERATE}))
    assert alone[HOPPER].verdict == "reproduced"
    both = _area_rows(_two_task_curves(tmp_path, {HOPPER: MODERATE, PENDULUM: MODERATE}))
    for row in both.values():
        assert row.verdict == "inconclusive" and "Holm" in row.note
        assert row.evidence["holm_adjusted_p"] == pytest.approx(2 * p)
    strong = _area_rows(_two_task_curves(tmp_path, {HOPPER: MODERATE, PENDULUM: MODERATE + 0.2}))
    assert strong[PENDULUM].verdict == "reproduced"
    assert strong[HOPPER].verdict == "reproduced"  # the larger p is multiplied by 1
    assert strong[HOPPER].evidence["holm_adjusted_p"] == pytest.approx(p)


# Per-seed distances of TOM's final below the upper margin whose exact one-sided p-value is
# 43/1024: equivalent alone (TOST at 5 %), not after Holm's correction for two rows.
NEAR_MARGIN = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, -10.5]) / 100


def _two_task_finals(tmp_path, effects: dict[str, np.ndarray]) -> list[ClaimResult]:
    """Flat curves from 10 to 810 (MLE) and to 810 + 800 x effect (TOM) after one evaluation."""
    jump = (STEPS > 0).astype(np.float64)
    runs = {
        t: {
            "mle": 10.0 + 800.0 * np.tile(jump, (SEEDS, 1)),
            "tom": 10.0 + np.outer(800.0 * (1 + e), jump),
        }
        for t, e in effects.items()
    }
    curves = _read_curves(tmp_path, _table(runs, STEPS))
    return judge().judge(
        datasets.AnalysisData(offline=None, curves={"scratch": curves}, finite=None)
    )


def _c4_rows(results: list[ClaimResult], role: str = "primary") -> dict[str, ClaimResult]:
    return {r.scope.split(",")[0]: r for r in results if r.claim_id == "C4" and r.role == role}


def test_holm_covers_c4s_equivalence_rows_with_the_tost_p_value(tmp_path):
    effects = RULES.equivalence_margin - NEAR_MARGIN
    p = sign_flip_interval(NEAR_MARGIN, RULES.confidence)[2]
    alpha = 1 - RULES.confidence  # each one-sided test of the TOST (90 % interval)
    assert alpha / 2 < p <= alpha  # sanity check of the hand-built effects
    alone = _c4_rows(_two_task_finals(tmp_path, {HOPPER: effects}))[HOPPER]
    assert alone.verdict == "reproduced" and alone.p_value == pytest.approx(p)
    assert "holm_adjusted_p" not in alone.evidence
    both = _two_task_finals(tmp_path, {HOPPER: effects, PENDULUM: effects})
    for row in _c4_rows(both).values():
        assert row.verdict == "inconclusive" and "Holm" in row.note
        assert row.evidence["holm_adjusted_p"] == pytest.approx(2 * p)
    assert all("holm_adjusted_p" not in r.evidence for r in _c4_rows(both, "secondary").values())
    strong = _c4_rows(_two_task_finals(tmp_path, {HOPPER: effects, PENDULUM: effects * 0}))
    assert strong[PENDULUM].verdict == "reproduced"
    assert strong[HOPPER].verdict == "reproduced"  # the larger p is multiplied by 1
    assert strong[HOPPER].evidence["holm_adjusted_p"] == pytest.approx(p)


def test_aggregate_row_has_rliable_iqm_and_probability_of_improvement(tmp_path):
    gains = {HOPPER: np.linspace(-0.1, 0.3, SEEDS), PENDULUM: np.linspace(0.0, 0.4, SEEDS)}
    results = _two_task_curves(tmp_path, gains)
    aggregate = [r for r in results if r.role == "aggregate"]
    assert len(aggregate) == 1 and aggregate[0].units == 2 * SEEDS
    evidence = aggregate[0].evidence
    tom = np.concatenate([1 + g for g in gains.values()])  # MLE's areas are all equal: scores 1
    assert evidence["iqm_tom"]["value"] == pytest.approx(trim_mean(tom, 0.25))
    assert evidence["iqm_mle"]["value"] == pytest.approx(1.0)
    lo, hi = evidence["iqm_tom"]["interval"]
    assert lo <= evidence["iqm_tom"]["value"] <= hi
    by_task = [
        np.mean((1 + g)[:, None] > 1.0) + 0.5 * np.mean((1 + g)[:, None] == 1.0)
        for g in gains.values()
    ]
    assert evidence["probability_of_improvement"]["value"] == pytest.approx(np.mean(by_task))
    assert evidence["tasks"] == 2 and len(evidence["performance_profile"]["tau"]) > 2
    one_task = _two_task_curves(tmp_path, {HOPPER: gains[HOPPER]})
    assert not [r for r in one_task if r.role == "aggregate"]


# --- C1, C2: collect runs as units, with a PMAC comparison row ------------------------------------


def _study(tmp_path, effect: bool, **kwargs) -> xr.Dataset:
    path = tmp_path / f"study_{effect}.nc"
    write_study(path, effect, **kwargs)
    return datasets.offline_dataset(path)


def test_offline_claims_follow_a_known_effect_with_runs_as_units(tmp_path):
    for claim in ("C1", "C2"):
        verdicts = {}
        for effect in (True, False):
            offline = _study(tmp_path, effect)
            rule = judge().weights_focus_on_recent if claim == "C1" else judge().accurate_on_policy
            verdicts[effect] = rule(offline)[0]
        assert verdicts[True].verdict == "reproduced", claim
        assert verdicts[False].verdict != "reproduced", claim
        assert verdicts[True].units == offline.sizes["run"]


def test_c2_has_a_pmac_comparison_row_when_pmac_is_in_the_study(tmp_path):
    offline = _study(tmp_path, True)
    rows = judge().accurate_on_policy(offline)
    assert [(r.scope, r.role) for r in rows] == [
        ("offline study, TOM vs MLE", "primary"),
        ("offline study, TOM vs PMAC", "comparison"),
    ]
    assert set(rows[0].evidence["reduction_by_snapshot"]) == {int(s) for s in offline.snapshot}
    without = judge().accurate_on_policy(offline.sel(learner=["mle", "tom"]))
    assert [r.role for r in without] == ["primary"]


def test_c2_is_not_reproduced_when_tom_is_clearly_worse(tmp_path):
    offline = _study(tmp_path, False)
    offline["on_policy_state_mse"].loc[{"learner": "tom"}] *= 1.5
    row = judge().accurate_on_policy(offline)[0]
    assert row.verdict == "not reproduced" and row.estimate.high < 0


def test_offline_rows_with_too_few_collect_runs_are_indicative(tmp_path):
    offline = _study(tmp_path, True, runs=RULES.min_offline_runs - 2)
    for rule in (judge().weights_focus_on_recent, judge().accurate_on_policy):
        row = rule(offline)[0]
        assert row.verdict == "indicative" and row.units == RULES.min_offline_runs - 2
        assert row.estimate is not None and row.units_needed >= RULES.min_offline_runs


def test_c1_counts_constant_weights_as_no_focus_and_clips_infinite_ratios(tmp_path):
    offline = _study(tmp_path, False)
    offline["spearman_recency"].loc[{"learner": "tom"}] = np.nan  # constant weights everywhere
    offline["newest_oldest_ratio"].loc[{"learner": "tom"}] = 1.0
    flat = judge().weights_focus_on_recent(offline)[0]
    cells = offline.sel(learner="tom").spearman_recency.size
    assert (
        flat.verdict == "not reproduced" and flat.evidence["cells_with_constant_weights"] == cells
    )
    strong = _study(tmp_path, True)
    strong["newest_oldest_ratio"].loc[{"learner": "tom", "snapshot": 5}] = np.inf
    row = judge().weights_focus_on_recent(strong)[0]
    ratio = row.evidence["newest_oldest_ratio (geometric mean, interval)"]
    assert row.verdict == "reproduced" and all(math.isfinite(v) for v in ratio.values())


# --- whole table and CLI -------------------------------------------------------------------------


def test_missing_stage_outputs_make_their_claims_indicative():
    results = judge().judge(datasets.AnalysisData(offline=None, curves={}, finite=None))
    assert [r.claim_id for r in results] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    assert {r.verdict for r in results} == {"indicative"}
    assert all(r.evidence["why"] for r in results)


def test_analyse_cli_writes_claims_that_round_trip(tmp_path, run_cli):
    data = write_stage_outputs(tmp_path / "d", effect=True)
    code, _, err = run_cli("analyse", "--profile", "smoke", "--data", str(data))
    assert code == 0, err
    claims = json.loads((data / "analysis" / "claims.json").read_text())
    assert claims["profile"] == "smoke"
    rows = [ClaimResult.from_json(v) for v in claims["claims"].values()]
    assert [r.to_json() for r in rows] == list(claims["claims"].values())
    assert {r.claim_id for r in rows} == {"C1", "C2", "C3", "C4", "C5", "C6"}
    assert {r.verdict for r in rows if r.claim_id in ("C1", "C2")} == {"reproduced"}
    table = (data / "analysis" / "claims.csv").read_text().splitlines()
    assert table[0].startswith("claim,role,verdict,effect,low,high") and len(table) == len(rows) + 1
    saved = datasets.load(data / "analysis")
    assert set(saved.curves) == {"scratch", "continue"} and saved.offline.sizes["snapshot"] == 3


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


def test_c3_compares_tom_with_pmac_when_pmac_ran(tmp_path):
    table = curves_table(0.4, seeds=10, seed=3)
    pmac = curves_table(0.0, seeds=10, seed=4)
    pmac = pmac[pmac.learner == "mle"].assign(learner="pmac")
    path = tmp_path / "curves.csv"
    pd.concat([table, pmac]).to_csv(path, index=False)
    curves = datasets.curves_dataset(path, "scratch")
    rows = judge().speeds_up_learning(curves, "InvertedPendulum-v5", -1, "primary")
    versus = [r for r in rows if r.scope.endswith("TOM vs PMAC")]
    assert len(versus) == 1 and versus[0].role == "comparison"
    assert versus[0].verdict == "reproduced" and "area_pmac" in versus[0].evidence
    without = judge().speeds_up_learning(
        datasets.curves_dataset(_write(tmp_path, table), "scratch"),
        "InvertedPendulum-v5",
        -1,
        "primary",
    )
    assert not any(r.scope.endswith("TOM vs PMAC") for r in without)


def _write(tmp_path, table: pd.DataFrame):
    path = tmp_path / "tom_mle.csv"
    table.to_csv(path, index=False)
    return path
