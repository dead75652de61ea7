"""Claims C1-C6 judged on measured data by rules fixed in the profile (DESIGN §1, §9).

Each row reduces its claim to one effect per independent unit, signed so that the claimed
direction is positive, and hands it to `statistics.decide`: an exact sign-flip interval, the
smallest effect size of interest (SESOI) from the profile, and one of `reproduced`, `not
reproduced`, `inconclusive` (with power and the units deciding would need) or `indicative` (too
few units for a verdict). Units:
- offline study (C1, C2): independent collect runs; snapshots and model seeds of one run are
  averaged inside it, because they share its buffer and its evaluation episodes;
- MBPO (C3, C4): seeds, paired across learners (a seed's runs share random streams);
- finite MDPs (C5, C6): independently drawn MDPs.
Several per-task rows of one claim are Holm-corrected. Rows whose rule holds by construction
(identities, theorems) are `sanity` rows, never evidence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import xarray as xr

from tomrepro.analysis.aggregates import aggregate_scores
from tomrepro.analysis.claim_rows import (
    ClaimResult,
    Role,
    lacking,
    make_row,
    ratio_display,
)
from tomrepro.analysis.datasets import AnalysisData
from tomrepro.analysis.finite_verdicts import model_fit_rows, recovery_rows
from tomrepro.analysis.statistics import (
    Decision,
    decide,
    decide_equivalence,
    holm,
    sign_flip_interval,
    slope_per_step,
)
from tomrepro.core.config import AnalysisConfig
from tomrepro.core.seeding import derive_seed

# Weight ratios are clipped before their log is averaged, so a bin with zero mean weight (ratio
# 0 or inf) counts as a strong effect instead of breaking the mean.
RATIO_CLIP = (1e-3, 1e3)
# C4: an arm "sits at the task maximum" when its mean final return is within this share of it.
CEILING_SHARE = 0.01
# Suffix of the scope of C3's secondary (steps-to-threshold) row.
STEPS_SCOPE = ", steps to threshold"


class ClaimJudge:
    """Applies the rules of one profile's `analysis` section; seeded, so verdicts repeat."""

    def __init__(self, cfg: AnalysisConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed

    def _decide(self, effects: np.ndarray, sesoi: float, min_units: int) -> Decision:
        seed = derive_seed(self.seed, "analysis/bootstrap")
        return decide(effects, sesoi, self.cfg.confidence, min_units, seed)

    @property
    def _pct(self) -> str:
        return f"{100 * self.cfg.confidence:g}%"

    def _verdict_words(self, units: str, minimum: int) -> str:
        return (
            f"units: {units}; exact sign-flip {self._pct} interval of the mean effect; "
            "reproduced if it lies above 0, not reproduced if it lies below the SESOI, "
            f"inconclusive otherwise; indicative with fewer than {minimum} units"
        )

    # --- C1, C2: the offline study -------------------------------------------------------------

    @staticmethod
    def _per_run(da: xr.DataArray) -> np.ndarray:
        """Mean over the cells nested in each collect run (one run when there is no `run` dim)."""
        nested = [d for d in da.dims if d != "run"]
        per_run = da.mean(nested, skipna=True)
        return np.atleast_1d(per_run.values).astype(np.float64)

    def weights_focus_on_recent(self, offline: xr.Dataset | None) -> list[ClaimResult]:
        scope, measure = "offline study", "mean Spearman correlation of TOM weight with env step"
        if offline is None or "tom" not in offline.learner.values:
            return [lacking("C1", scope, "primary", measure, "no offline study with TOM")]
        tom = offline.sel(learner="tom")
        fitted = tom.newest_oldest_ratio.notnull()  # cells whose TOM weights were estimated
        rho = tom.spearman_recency.fillna(0.0).where(fitted)
        log_ratio = np.log(tom.newest_oldest_ratio.clip(*RATIO_CLIP)).where(fitted)
        per_run = self._per_run(rho)
        decision = self._decide(per_run, self.cfg.sesoi_recency, self.cfg.min_offline_runs)
        ratio = self._decide(self._per_run(log_ratio), 0.0, self.cfg.min_offline_runs)
        evidence = {
            "spearman_per_run": per_run.tolist(),
            "newest_oldest_ratio (geometric mean, interval)": asdict(ratio.estimate.map(math.exp))
            if ratio.estimate
            else None,
            "cells_with_constant_weights": int(
                (tom.spearman_recency.isnull() & fitted).sum().item()
            ),
            "spearman_by_snapshot": _by_snapshot(rho),
            "ess_share_mean": float(np.nanmean(tom.ess_share.values)),
        }
        rule = (
            f"effect = a run's mean Spearman correlation (constant weights count as 0), SESOI "
            f"{self.cfg.sesoi_recency:g}; "
            + self._verdict_words("independent collect runs", self.cfg.min_offline_runs)
        )
        return [make_row("C1", scope, "primary", measure, rule, decision, evidence)]

    def _error_effects(self, offline: xr.Dataset, variable: str, learner: str, base: str):
        """Per collect run: mean over its cells of log(base error / learner error)."""
        mine, other = offline[variable].sel(learner=learner), offline[variable].sel(learner=base)
        keep = (mine > 0) & (other > 0)
        return self._per_run((np.log(other) - np.log(mine)).where(keep))  # type: ignore[attr-defined]

    def accurate_on_policy(self, offline: xr.Dataset | None) -> list[ClaimResult]:
        scope = "offline study"
        learners = [] if offline is None else [str(x) for x in offline.learner.values]
        measure = "relative reduction of on-policy state error, 1 - TOM / {base} (per-run mean)"
        if offline is None or not {"tom", "mle"} <= set(learners):
            return [lacking("C2", scope, "primary", measure.format(base="MLE"), "no TOM and MLE")]
        sesoi = -math.log(1 - self.cfg.sesoi_error_reduction)
        rule = (
            "effect = a run's mean over its cells of log({base} error / TOM error), same data, "
            f"budget and model seed per pair; SESOI {self.cfg.sesoi_error_reduction:g} relative "
            "reduction; "
            + self._verdict_words("independent collect runs", self.cfg.min_offline_runs)
        )
        last = offline.assign(open_loop_last=offline.open_loop_state_mse.isel(horizon=-1))
        horizon = int(offline.horizon.values[-1])
        rows = []
        pairs: tuple[tuple[str, Role], ...] = (("mle", "primary"), ("pmac", "comparison"))
        for base, role in pairs:
            if base not in learners:
                continue
            effects = self._error_effects(offline, "on_policy_state_mse", "tom", base)
            decision = self._decide(effects, sesoi, self.cfg.min_offline_runs)
            evidence: dict[str, Any] = {"effect_per_run (log ratio)": effects.tolist()}
            for variable, name in (
                ("buffer_state_mse", "buffer"),
                ("open_loop_last", f"open-loop H={horizon}"),
            ):
                other = self._decide(
                    self._error_effects(last, variable, "tom", base), 0.0, 2
                ).estimate
                evidence[f"{name} reduction"] = asdict(other.map(ratio_display)) if other else None
            evidence["reduction_by_snapshot"] = _by_snapshot(
                1
                - offline.on_policy_state_mse.sel(learner="tom")
                / offline.on_policy_state_mse.sel(learner=base)
            )
            rows.append(
                make_row(
                    "C2",
                    f"{scope}, TOM vs {base.upper()}",
                    role,
                    measure.format(base=base.upper()),
                    rule.format(base=base.upper()),
                    decision,
                    evidence,
                    ratio_display,
                )
            )
        return rows

    # --- C3, C4: MBPO curves -------------------------------------------------------------------

    def _paired(
        self, curves: xr.Dataset, task: str, snapshot: int, base: str = "mle"
    ) -> dict[str, xr.DataArray]:
        """TOM's and `base`'s runs (seed x env_step) on the seeds both ran, on the common grid
        of evaluations every one of those runs reached; keyed "mle" (the base) and "tom"."""
        if not {"tom", base} <= {str(x) for x in curves.learner.values}:
            return {}
        da = curves.return_mean.sel(task=task, snapshot=snapshot, learner=[base, "tom"])
        seeds = da.notnull().any("env_step").all("learner")
        da = da.sel(seed=seeds.values)
        grid = da.notnull().all(("learner", "seed"))
        da = da.sel(env_step=grid.values)
        return {
            key: da.sel(learner=m, drop=True).transpose("seed", "env_step")
            for key, m in (("mle", base), ("tom", "tom"))
        }

    def speeds_up_learning(
        self, curves: xr.Dataset, task: str, snapshot: int, role: Role
    ) -> list[ClaimResult]:
        scope = scope_name(task, snapshot)
        rows = [self._area_row(curves, task, snapshot, "mle", scope, role)]
        runs = self._paired(curves, task, snapshot)
        threshold = self.cfg.return_thresholds.get(task)
        if runs and runs["mle"].sizes["env_step"] >= 2 and threshold is not None:
            rows.append(self._steps_row(runs, scope, threshold))
        if "pmac" in {str(x) for x in curves.learner.values}:
            rows.append(
                self._area_row(
                    curves, task, snapshot, "pmac", f"{scope}, TOM vs PMAC", "comparison"
                )
            )
        return rows

    def _area_row(
        self, curves: xr.Dataset, task: str, snapshot: int, base: str, scope: str, role: Role
    ) -> ClaimResult:
        name = base.upper()
        measure = f"gain in area under (return - first evaluation), share of {name}'s mean area"
        runs = self._paired(curves, task, snapshot, base)
        if not runs or runs["mle"].sizes["seed"] == 0 or runs["mle"].sizes["env_step"] < 2:
            return lacking("C3", scope, role, measure, f"no paired TOM and {name} runs")
        areas = {m: _normalised_area(r) for m, r in runs.items()}
        base_mean = float(areas["mle"].mean())
        if base_mean <= 0:
            return lacking("C3", scope, role, measure, f"{name}'s mean area is not above 0")
        effects = (areas["tom"] - areas["mle"]) / base_mean
        decision = self._decide(effects, self.cfg.sesoi_area, self.cfg.min_online_seeds)
        evidence = {
            "evaluations_on_grid": int(runs["mle"].sizes["env_step"]),
            f"area_{base}": areas["mle"].tolist(),
            "area_tom": areas["tom"].tolist(),
            "pairing_correlation": _correlation(areas["mle"], areas["tom"]),
        }
        rule = (
            "area = mean over the common evaluation grid of (return - the run's first "
            f"evaluation) (trapezoid); effect = (TOM area - {name} area) / {name}'s mean area, "
            f"per seed; SESOI {self.cfg.sesoi_area:g}; "
            + self._verdict_words("paired seeds", self.cfg.min_online_seeds)
        )
        return make_row("C3", scope, role, measure, rule, decision, evidence)

    def _steps_row(self, runs: dict[str, xr.DataArray], scope: str, threshold: float):
        measure = f"relative saving of env steps to reach and stay above {threshold:g}"
        evaluations = runs["mle"].sizes["env_step"]
        if evaluations < self.cfg.min_threshold_evaluations:
            why = f"{evaluations} evaluations on the grid (fewer than "
            why += f"{self.cfg.min_threshold_evaluations})"
            return lacking("C3", scope + STEPS_SCOPE, "secondary", measure, why)
        steps = {m: _reach_and_stay(r, threshold) for m, r in runs.items()}
        censored = {m: int(np.isnan(s).sum()) for m, s in steps.items()}
        n = len(steps["mle"])
        evidence: dict[str, Any] = {"threshold": threshold}
        evidence |= {f"steps_{m}": s.tolist() for m, s in steps.items()}
        evidence |= {f"censored_{m}": c for m, c in censored.items()}
        if censored["mle"] > n / 2 and censored["tom"] > n / 2:
            return ClaimResult(
                "C3",
                scope + STEPS_SCOPE,
                "secondary",
                "inconclusive",
                measure,
                "",
                None,
                n,
                note="most runs of both arms never reach the threshold",
                evidence=evidence,
            )
        both = np.isfinite(steps["mle"]) & np.isfinite(steps["tom"])
        effects = np.log(steps["mle"][both]) - np.log(steps["tom"][both])
        decision = self._decide(
            effects, -math.log(1 - self.cfg.sesoi_steps), self.cfg.min_online_seeds
        )
        rule = (
            "steps = the first evaluation from which every later one is at or above the "
            "threshold; effect = log(MLE steps / TOM steps) on seeds where both arms reach it "
            f"(no imputed values); SESOI {self.cfg.sesoi_steps:g} fewer steps; "
            + self._verdict_words("paired seeds", self.cfg.min_online_seeds)
        )
        return make_row(
            "C3",
            scope + STEPS_SCOPE,
            "secondary",
            measure,
            rule,
            decision,
            evidence,
            ratio_display,
        )

    def same_final_return(self, curves: xr.Dataset, task: str) -> list[ClaimResult]:
        scope = scope_name(task, -1)
        measure = "(TOM - MLE) final return, share of MLE's mean gain over the first evaluation"
        runs = self._paired(curves, task, -1)
        if not runs or runs["mle"].sizes["seed"] == 0:
            return [lacking("C4", scope, "primary", measure, "no paired TOM and MLE runs")]
        n_final = self.cfg.final_evaluations
        finals = {
            m: r.isel(env_step=slice(-n_final, None)).mean("env_step").values
            for m, r in runs.items()
        }
        r0 = float(np.mean([r.isel(env_step=0).mean() for r in runs.values()]))
        evidence: dict[str, Any] = {
            "r0": r0,
            **{f"final_{m}": v.tolist() for m, v in finals.items()},
        }
        ceiling = self.cfg.task_maximum.get(task)
        if ceiling is not None and all(
            v.mean() >= ceiling - CEILING_SHARE * abs(ceiling) for v in finals.values()
        ):
            why = f"both arms sit at the task maximum {ceiling:g}"
            return [
                ClaimResult(
                    "C4",
                    scope,
                    "primary",
                    "not applicable",
                    measure,
                    "",
                    None,
                    len(finals["mle"]),
                    note=why,
                    evidence=evidence,
                )
            ]
        window = min(self.cfg.slope_evaluations, runs["mle"].sizes["env_step"])
        rising = []
        for m, r in runs.items():
            tail = r.isel(env_step=slice(-window, None))
            slopes = slope_per_step(tail.env_step.values.astype(np.float64), tail.values)
            scale = np.maximum(abs(finals["mle"].mean() - r0), 1e-12) / float(
                tail.env_step.values[-1] - tail.env_step.values[0]
            )
            evidence[f"end_slope_{m} (gain share over the window)"] = (slopes / scale).tolist()
            slope = self._decide(slopes / scale, 0.0, 2)
            if slope.estimate is not None and slope.estimate.low > self.cfg.slope_tolerance:
                rising.append(m)
        gain = float(finals["mle"].mean()) - r0
        if gain <= 0:
            return [lacking("C4", scope, "primary", measure, "MLE's final return is not above R0")]
        effects = (finals["tom"] - finals["mle"]) / gain
        margin = self.cfg.equivalence_margin
        rows = []
        tolerance = self.cfg.slope_tolerance
        seed = derive_seed(self.seed, "analysis/bootstrap")
        if rising:  # untested, so no p-value: the row stays out of Holm's family
            why = f"not converged: a rise over the last {window} evaluations significantly above "
            why += f"{tolerance:g} of the gain ({', '.join(rising)})"
            equivalence = Decision("inconclusive", None, len(effects), margin, note=why)
        else:
            equivalence = decide_equivalence(
                effects, margin, self.cfg.confidence, self.cfg.min_online_seeds, seed
            )
            equivalence = replace(equivalence, p_value=_tost_p(effects, margin, seed))
        pct = f"{100 * (2 * self.cfg.confidence - 1):g}%"
        rows.append(
            make_row(
                "C4",
                scope,
                "primary",
                measure,
                f"final = mean of each run's last {n_final} evaluations; only converged arms and "
                "not both at the task maximum; an arm is not converged when the "
                f"{self._pct} interval of its runs' rise over the last {window} evaluations "
                f"(least-squares slope x window span, share of MLE's mean gain) lies above the "
                f"plateau tolerance {tolerance:g}; equivalence: the exact {pct} sign-flip "
                f"interval inside (-{margin:g}, {margin:g}) is reproduced, wholly outside it not "
                "reproduced; p = the larger of the two one-sided p-values (TOST); indicative "
                f"with fewer than {self.cfg.min_online_seeds} paired seeds",
                equivalence,
                evidence,
            )
        )
        superiority = self._decide(effects, margin, self.cfg.min_online_seeds)
        if rising:
            superiority = Decision(
                "inconclusive", superiority.estimate, len(effects), margin, note=equivalence.note
            )
        rows.append(
            make_row(
                "C4",
                f"{scope}, higher asymptote (earlier version)",
                "secondary",
                measure,
                f"the same effect; superiority SESOI {margin:g}; "
                + self._verdict_words("paired seeds", self.cfg.min_online_seeds),
                superiority,
                {},
            )
        )
        return rows

    def aggregate(self, curves: xr.Dataset) -> list[ClaimResult]:
        """C3 over every task from scratch: paired effects pooled, with rliable's IQM and
        probability of improvement of per-run area scores (stratified by task)."""
        tasks = [str(t) for t in curves.task.values]
        scores: dict[str, list[np.ndarray]] = {"mle": [], "tom": []}
        effects = []
        for task in tasks:
            runs = self._paired(curves, task, -1)
            if not runs or runs["mle"].sizes["env_step"] < 2 or runs["mle"].sizes["seed"] == 0:
                continue
            areas = {m: _normalised_area(r) for m, r in runs.items()}
            mle_mean = float(areas["mle"].mean())
            if mle_mean <= 0:
                continue
            effects.append((areas["tom"] - areas["mle"]) / mle_mean)
            for m in scores:
                scores[m].append(areas[m] / mle_mean)
        measure = "gain in area under (return - first evaluation), share of MLE's mean, all tasks"
        if len(effects) < 2:
            return []
        decision = self._decide(
            np.concatenate(effects), self.cfg.sesoi_area, self.cfg.min_online_seeds
        )
        evidence = aggregate_scores(
            scores, self.cfg.confidence, derive_seed(self.seed, "analysis/bootstrap")
        )
        rule = (
            "per-seed effects of every task pooled (runs of different tasks are independent); "
            + self._verdict_words("paired seeds of all tasks", self.cfg.min_online_seeds)
        )
        return [
            make_row(
                "C3", "all tasks, from scratch", "aggregate", measure, rule, decision, evidence
            )
        ]

    # --- C5, C6: finite MDPs -------------------------------------------------------------------

    def recovers_ratio(self, finite: xr.Dataset | None) -> list[ClaimResult]:
        return recovery_rows(self, finite)

    def model_fit_helps(self, finite: xr.Dataset | None) -> list[ClaimResult]:
        return model_fit_rows(self, finite)

    # --- all -----------------------------------------------------------------------------------

    def judge(self, data: AnalysisData) -> list[ClaimResult]:
        """Every claim in order; C3 per (task, start) of both MBPO kinds, C4 on scratch runs."""
        results = self.weights_focus_on_recent(data.offline)
        results += self.accurate_on_policy(data.offline)
        c3: list[ClaimResult] = []
        c4: list[ClaimResult] = []
        for kind in ("scratch", "continue"):
            curves = data.curves.get(kind)
            if curves is None:
                continue
            primary: list[ClaimResult] = []
            for t in curves.task.values:
                for k in curves.snapshot.values:
                    if not np.isfinite(curves.return_mean.sel(task=t, snapshot=k)).any():
                        continue
                    role: Role = "primary" if kind == "scratch" else "secondary"
                    rows = self.speeds_up_learning(curves, str(t), int(k), role)
                    primary += [r for r in rows if r.role == "primary"]
                    c3 += rows
                    if kind == "scratch":
                        c4 += self.same_final_return(curves, str(t))
            c3 = _holm_corrected(c3, primary, (1 - self.cfg.confidence) / 2)
            if kind == "scratch":
                c3 += self.aggregate(curves)
        # C4's equivalence rows: each one-sided test of the TOST at 1 - confidence (90 % interval).
        c4 = _holm_corrected(c4, [r for r in c4 if r.role == "primary"], 1 - self.cfg.confidence)
        results += c3 or [lacking("C3", "MBPO", "primary", "", "no MBPO runs")]
        results += c4 or [lacking("C4", "MBPO", "primary", "", "no from-scratch MBPO runs")]
        results += self.recovers_ratio(data.finite)
        results += self.model_fit_helps(data.finite)
        return results


def _holm_corrected(
    rows: list[ClaimResult], family: list[ClaimResult], alpha: float
) -> list[ClaimResult]:
    """`reproduced` rows of `family` (per-task rows of one claim) whose Holm-adjusted p-value
    misses the level `alpha` of the row's test become `inconclusive`, with the adjusted p-value
    recorded."""
    if len(family) < 2:
        return rows
    adjusted = dict(zip((id(r) for r in family), holm([r.p_value for r in family]), strict=True))
    out = []
    for r in rows:
        if id(r) in adjusted:
            p = adjusted[id(r)]
            evidence = {**r.evidence, "holm_adjusted_p": p}
            verdict, note = r.verdict, r.note
            if verdict == "reproduced" and (p is None or p > alpha):
                verdict, note = "inconclusive", "reproduced alone, not after Holm's correction"
            r = ClaimResult(
                **{**r.__dict__, "verdict": verdict, "note": note, "evidence": evidence}
            )
        out.append(r)
    return out


def _tost_p(effects: np.ndarray, margin: float, seed: int) -> float | None:
    """p-value of the two one-sided sign-flip tests of |mean| >= margin: the larger of the two.
    Each at level a agrees with the matching end of the 1 - 2a interval `decide_equivalence`
    draws from the same seed (the same subsets)."""
    d = np.asarray(effects, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return None
    above = sign_flip_interval(d + margin, 0.5, np.random.default_rng(seed))[2]
    below = sign_flip_interval(margin - d, 0.5, np.random.default_rng(seed))[2]
    return max(above, below)


def scope_name(task: str, snapshot: int) -> str:
    """How a claims row and a curve panel name an MBPO grid cell."""
    return (
        f"{task}, from scratch" if snapshot < 0 else f"{task}, continued from snapshot {snapshot}"
    )


def _normalised_area(runs: xr.DataArray) -> np.ndarray:
    """Per seed: mean over the grid's span of (return - the run's first evaluation)."""
    steps = runs.env_step.values.astype(np.float64)
    values = runs.values - runs.values[:, :1]
    return np.trapezoid(values, steps, axis=1) / (steps[-1] - steps[0])


def _reach_and_stay(runs: xr.DataArray, threshold: float) -> np.ndarray:
    """Per seed: the env step of the first evaluation from which every later one is at or
    above `threshold`; NaN (censored) when the run ends below it."""
    above = runs.values >= threshold
    stays = np.flip(np.cumprod(np.flip(above, axis=1), axis=1), axis=1).astype(bool)
    first = stays.argmax(axis=1)
    steps = runs.env_step.values.astype(np.float64)
    return np.where(stays.any(axis=1), steps[first], np.nan)


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _by_snapshot(da: xr.DataArray) -> dict[int, float]:
    """A per-cell variable averaged over runs and model seeds, per snapshot (shown beside the
    verdict: these are not independent units)."""
    other = [d for d in da.dims if d != "snapshot"]
    return {int(k): float(v) for k, v in da.mean(other, skipna=True).to_series().items()}
