"""Claims C1-C6 judged on measured data by stated rules (DESIGN §1); verdicts are computed here.

Every rule gives one of three verdicts: `reproduced` (the interval says the claimed effect is
there), `not reproduced` (the interval says it is absent or reversed) and `inconclusive` (the
interval allows both, or there is too little data). Intervals are expanded percentile bootstraps
(`statistics.bootstrap`) over seeds for MBPO runs and over (snapshot, seed) cells for the offline
study. Those cells share one collect run (snapshots are nested prefixes of one buffer), and the
continuations of one snapshot start from one state: the intervals describe seed-to-seed variation
given that run, not variation over independent collections. Rows are judged one by one, with no
correction for testing several of them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import xarray as xr

from tomrepro.analysis.datasets import AnalysisData
from tomrepro.analysis.statistics import (
    Estimate,
    bootstrap,
    gain_difference,
    mean_of,
    ratio_of_means,
)
from tomrepro.core.config import AnalysisConfig
from tomrepro.core.seeding import derive_seed

Verdict = Literal["reproduced", "not reproduced", "inconclusive"]

STATEMENTS = {
    "C1": "TOM's weights focus on policy-relevant, recent experience",
    "C2": "TOM models are more accurate where the current policy goes",
    "C3": "TOM speeds up learning of the backbone (MBPO)",
    "C4": "TOM reaches the same asymptotic return as MLE",
    "C5": "the dual-RL estimator recovers the true occupancy ratio",
    "C6": "the TOM objective lower-bounds log J(pi)",
}

# With 2 units a bootstrap interval is the range of 2 values (coverage 50 %); 3 is the least
# that can support a verdict, and even then the interval is optimistic (see statistics.py).
MIN_UNITS = 3
# Weight ratios are clipped here before their log is averaged, so a bin with zero mean weight
# (ratio 0 or inf) counts as a strong effect instead of breaking the mean.
RATIO_CLIP = (1e-3, 1e3)

MEASURES = {
    "C1": "mean Spearman correlation of TOM weight with transition env step",
    "C2": "TOM / MLE on-policy state error (geometric mean over paired cells)",
    "C3": "TOM / MLE mean env steps to reach the return threshold",
    "C4": "(TOM - MLE) final return as a share of MLE's gain over the first evaluation",
    "C5": "largest relative error of the exactly solved dual's weights vs d^pi / d^R",
    "C6": "smallest slack log J(pi) - bound over all MDP draws (KL and chi2 forms)",
}


@dataclass(frozen=True)
class ClaimResult:
    """One row of the claims table: the verdict with the number and rule it came from."""

    claim_id: str
    scope: str
    verdict: Verdict
    measure: str
    rule: str
    estimate: Estimate | None
    units: int
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def statement(self) -> str:
        return STATEMENTS[self.claim_id]

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> ClaimResult:
        est = raw["estimate"]
        return cls(
            raw["claim_id"],
            raw["scope"],
            raw["verdict"],
            raw["measure"],
            raw["rule"],
            Estimate(**est) if est else None,
            raw["units"],
            raw["evidence"],
        )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["statement"] = self.statement
        out["estimate"] = asdict(self.estimate) if self.estimate else None
        return out


def _ratio_verdict(est: Estimate) -> Verdict:
    """For a ratio whose claimed direction is below 1."""
    if est.high < 1:
        return "reproduced"
    if est.low >= 1:
        return "not reproduced"
    return "inconclusive"


class ClaimJudge:
    """Applies the rules of one profile's `analysis` section; seeded, so verdicts are repeatable."""

    def __init__(self, cfg: AnalysisConfig, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed

    def _bootstrap(self, samples: tuple[np.ndarray, ...], statistic) -> Estimate:
        rng = np.random.default_rng(derive_seed(self.seed, "analysis/bootstrap"))
        return bootstrap(samples, statistic, rng, self.cfg.bootstrap_samples, self.cfg.confidence)

    @property
    def _pct(self) -> str:
        return f"{100 * self.cfg.confidence:g}%"

    def rules(self) -> dict[str, str]:
        """Each claim's rule in words, with this profile's numbers."""
        f, n, margin = (
            self.cfg.threshold_fraction,
            self.cfg.final_evaluations,
            self.cfg.equivalence_margin,
        )
        cells = "(bootstrap over snapshot x seed cells of one collect run)"
        return {
            "C1": f"reproduced if the {self._pct} intervals of the mean Spearman correlation and "
            "of the geometric-mean newest/oldest age-bin weight ratio lie above 0 and 1; not "
            "reproduced if either lies at or below 0 / 1; else inconclusive. Constant weights "
            f"count as correlation 0; ratios are clipped to {RATIO_CLIP} {cells}",
            "C2": f"reproduced if the {self._pct} interval of the ratio lies below 1; not "
            "reproduced if it lies at or above 1; else inconclusive (paired: same data, budget "
            f"and seed per pair) {cells}",
            "C3": f"threshold = R0 + {f:g} (Rbest - R0), R0 the mean first evaluation, Rbest the "
            "best seed-mean evaluation of either learner; a run that never reaches it counts as "
            "reaching it one evaluation after the last of the grid; reproduced if the "
            f"{self._pct} interval of the step ratio lies below 1, not reproduced if at or above "
            "1, else inconclusive (bootstrap over seeds)",
            "C4": f"final return = mean of each run's last {n} evaluations at the run's budget; "
            f"reproduced if the {self._pct} interval lies above -{margin:g} (TOM not worse than "
            f"MLE by more than {margin:g} of MLE's gain; better counts too), not reproduced if "
            f"it lies below -{margin:g}, else inconclusive (bootstrap over seeds)",
            "C5": f"reproduced if the error is at most {self.cfg.recovery_tolerance:g} for every "
            "reward and divergence with the expected (exact) residual, not reproduced otherwise "
            "(a missing or non-finite value included). The sampled residual's error is reported, "
            "not judged: it is biased by construction",
            "C6": f"reproduced if every slack is at least -{self.cfg.bound_tolerance:g}, not "
            "reproduced otherwise (a non-finite slack included)",
        }

    def _result(self, claim_id, scope, verdict, estimate, units, evidence) -> ClaimResult:
        rule = self.rules()[claim_id]
        return ClaimResult(
            claim_id, scope, verdict, MEASURES[claim_id], rule, estimate, units, evidence
        )

    def _lacking(self, claim_id: str, scope: str, why: str, units: int = 0) -> ClaimResult:
        return self._result(claim_id, scope, "inconclusive", None, units, {"why": why})

    # --- C1, C2: the offline study -------------------------------------------------------------

    def weights_focus_on_recent(self, offline: xr.Dataset | None) -> ClaimResult:
        scope = "offline study"
        if offline is None or "tom" not in offline.learner.values:
            return self._lacking("C1", scope, "no offline study with TOM")
        tom = offline.sel(learner="tom")
        ratio = tom.newest_oldest_ratio.values.ravel()
        fitted = ~np.isnan(ratio)  # cells whose TOM weights were estimated at all
        rho = np.nan_to_num(tom.spearman_recency.values.ravel()[fitted], nan=0.0)
        log_ratio = np.log(np.clip(ratio[fitted], *RATIO_CLIP))
        if fitted.sum() < MIN_UNITS:
            return self._lacking("C1", scope, f"fewer than {MIN_UNITS} cells", int(fitted.sum()))
        corr = self._bootstrap((rho,), mean_of)
        ratio_est = self._bootstrap((log_ratio,), mean_of).map(math.exp)
        if corr.low > 0 and ratio_est.low > 1:
            verdict: Verdict = "reproduced"
        elif corr.high <= 0 or ratio_est.high <= 1:
            verdict = "not reproduced"
        else:
            verdict = "inconclusive"
        evidence = {
            "newest_oldest_ratio": asdict(ratio_est),
            "cells_with_clipped_ratio": int(
                ((ratio[fitted] < RATIO_CLIP[0]) | (ratio[fitted] > RATIO_CLIP[1])).sum()
            ),
            "cells_with_constant_weights": int(
                np.isnan(tom.spearman_recency.values.ravel())[fitted].sum()
            ),
            "spearman_by_snapshot": {
                int(k): float(v)
                for k, v in tom.spearman_recency.fillna(0.0)
                .where(tom.newest_oldest_ratio.notnull())
                .mean("seed")
                .to_series()
                .items()
            },
            "ess_share_mean": float(np.nanmean(tom.ess_share.values)),
        }
        return self._result("C1", scope, verdict, corr, int(fitted.sum()), evidence)

    def _error_ratio(
        self, offline: xr.Dataset, variable: str, learner: str
    ) -> tuple[Estimate | None, int]:
        """Geometric-mean ratio learner/MLE of a model error over paired cells, and the pairs."""
        mine = offline[variable].sel(learner=learner).values.ravel()
        mle = offline[variable].sel(learner="mle").values.ravel()
        keep = np.isfinite(mine) & np.isfinite(mle) & (mine > 0) & (mle > 0)
        if keep.sum() < MIN_UNITS:
            return None, int(keep.sum())
        diffs = np.log(mine[keep]) - np.log(mle[keep])
        return self._bootstrap((diffs,), mean_of).map(math.exp), int(keep.sum())

    def accurate_on_policy(self, offline: xr.Dataset | None) -> ClaimResult:
        scope = "offline study"
        learners = [] if offline is None else offline.learner.values.tolist()
        if offline is None or not {"tom", "mle"} <= set(learners):
            return self._lacking("C2", scope, "no offline study with TOM and MLE")
        est, pairs = self._error_ratio(offline, "on_policy_state_mse", "tom")
        if est is None:
            return self._lacking("C2", scope, f"fewer than {MIN_UNITS} paired cells", pairs)
        evidence: dict[str, Any] = {}
        last = offline.assign(open_loop_last=offline.open_loop_state_mse.isel(horizon=-1))
        horizon = int(offline.horizon.values[-1])
        for learner in learners:
            if learner == "mle":
                continue
            for variable, name in (
                ("on_policy_state_mse", "on-policy"),
                ("buffer_state_mse", "buffer"),
                ("open_loop_last", f"open-loop H={horizon}"),
            ):
                other, _ = self._error_ratio(last, variable, learner)
                evidence[f"{learner} / MLE, {name}"] = asdict(other) if other else None
        return self._result("C2", scope, _ratio_verdict(est), est, pairs, evidence)

    # --- C3, C4: MBPO curves -------------------------------------------------------------------

    def _runs(self, curves: xr.Dataset, task: str, snapshot: int, learner: str) -> xr.DataArray:
        """return_mean over (seed, env_step) of one learner's runs, seeds without data dropped."""
        da = curves.return_mean.sel(task=task, snapshot=snapshot, learner=learner)
        return da.dropna("seed", how="all")

    def _both(self, curves: xr.Dataset, task: str, snapshot: int) -> dict[str, xr.DataArray]:
        if not {"tom", "mle"} <= set(curves.learner.values.tolist()):
            return {}
        runs = {m: self._runs(curves, task, snapshot, m) for m in ("mle", "tom")}
        grid = xr.concat(list(runs.values()), "learner").dropna("env_step", how="all").env_step
        return {m: r.sel(env_step=grid) for m, r in runs.items()}

    def speeds_up_learning(self, curves: xr.Dataset, task: str, snapshot: int) -> ClaimResult:
        scope = scope_name(task, snapshot)
        runs = self._both(curves, task, snapshot)
        if not runs:
            return self._lacking("C3", scope, "no TOM and MLE runs")
        seeds = min(r.sizes["seed"] for r in runs.values())
        if seeds < MIN_UNITS or runs["mle"].sizes["env_step"] < 2:
            return self._lacking(
                "C3", scope, f"fewer than {MIN_UNITS} seeds or 2 evaluations", seeds
            )
        r0 = float(np.mean([r.isel(env_step=0).mean() for r in runs.values()]))
        best = float(max(r.mean("seed", skipna=True).max() for r in runs.values()))
        if best <= r0:
            return self._lacking("C3", scope, "no learner improved on R0", seeds)
        threshold = r0 + self.cfg.threshold_fraction * (best - r0)
        steps = {m: _steps_to(r, threshold) for m, r in runs.items()}
        est = self._bootstrap((steps["mle"], steps["tom"]), ratio_of_means)
        evidence = {
            "threshold": threshold,
            "r0": r0,
            "best_seed_mean": best,
            **{f"steps_{m}": v.tolist() for m, v in steps.items()},
            **{f"reached_{m}": int(_reached(r, threshold).sum()) for m, r in runs.items()},
        }
        return self._result("C3", scope, _ratio_verdict(est), est, seeds, evidence)

    def same_final_return(self, curves: xr.Dataset, task: str, snapshot: int) -> ClaimResult:
        scope = scope_name(task, snapshot)
        runs = self._both(curves, task, snapshot)
        if not runs:
            return self._lacking("C4", scope, "no TOM and MLE runs")
        finals = {m: _final(r, self.cfg.final_evaluations) for m, r in runs.items()}
        seeds = min(len(v) for v in finals.values())
        if seeds < MIN_UNITS:
            return self._lacking("C4", scope, f"fewer than {MIN_UNITS} seeds", seeds)
        r0 = float(np.mean([r.isel(env_step=0).mean() for r in runs.values()]))
        if finals["mle"].mean() <= r0:
            return self._lacking("C4", scope, "MLE's final return is not above R0", seeds)
        est = self._bootstrap((finals["mle"], finals["tom"]), gain_difference(r0))
        margin = self.cfg.equivalence_margin
        if est.low > -margin:
            verdict: Verdict = "reproduced"
        elif est.high < -margin:
            verdict = "not reproduced"
        else:
            verdict = "inconclusive"
        evidence = {"r0": r0, **{f"final_{m}": v.tolist() for m, v in finals.items()}}
        return self._result("C4", scope, verdict, est, seeds, evidence)

    # --- C5, C6: finite MDPs -------------------------------------------------------------------

    def recovers_ratio(self, finite: xr.Dataset | None) -> ClaimResult:
        scope = "finite MDPs"
        if finite is None:
            return self._lacking("C5", scope, "no finite-MDP results")
        exact = finite.recovery_error.sel(form="expected")
        worst = float(exact.max(skipna=False))  # NaN (a failed or missing solve) stays NaN
        ok = bool(np.isfinite(worst) and worst <= self.cfg.recovery_tolerance)
        evidence = {
            "expected": _by_key(exact),
            "sampled": _by_key(finite.recovery_error.sel(form="sampled")),
        }
        verdict: Verdict = "reproduced" if ok else "not reproduced"
        est = Estimate(worst, worst, worst)
        return self._result("C5", scope, verdict, est, int(finite.attrs["mdps"]), evidence)

    def lower_bounds_objective(self, finite: xr.Dataset | None) -> ClaimResult:
        scope = "finite MDPs"
        if finite is None:
            return self._lacking("C6", scope, "no finite-MDP results")
        kl = float(finite.slack_kl.min(skipna=False))
        chi2 = float(finite.slack_chi2.min(skipna=False))
        worst = min(kl, chi2) if np.isfinite([kl, chi2]).all() else math.nan
        ok = bool(np.isfinite(worst) and worst >= -self.cfg.bound_tolerance)
        verdict: Verdict = "reproduced" if ok else "not reproduced"
        evidence = {"min_slack_kl": kl, "min_slack_chi2": chi2}
        est = Estimate(worst, worst, worst)
        return self._result("C6", scope, verdict, est, int(finite.sizes["mdp"]), evidence)

    # --- all -----------------------------------------------------------------------------------

    def judge(self, data: AnalysisData) -> list[ClaimResult]:
        """Every claim, in order; C3 per (task, start) of both MBPO kinds, C4 on scratch runs."""
        results = [
            self.weights_focus_on_recent(data.offline),
            self.accurate_on_policy(data.offline),
        ]
        scopes = [
            (kind, str(t), int(k))
            for kind in ("scratch", "continue")
            if kind in data.curves
            for t in data.curves[kind].task.values
            for k in data.curves[kind].snapshot.values
            if np.isfinite(data.curves[kind].return_mean.sel(task=t, snapshot=k)).any()
        ]
        c3 = [self.speeds_up_learning(data.curves[kind], t, k) for kind, t, k in scopes]
        c4 = [self.same_final_return(data.curves[kind], t, k) for kind, t, k in scopes if k < 0]
        results += c3 or [self._lacking("C3", "MBPO", "no MBPO runs")]
        results += c4 or [self._lacking("C4", "MBPO", "no from-scratch MBPO runs")]
        results += [self.recovers_ratio(data.finite), self.lower_bounds_objective(data.finite)]
        return results


def scope_name(task: str, snapshot: int) -> str:
    """How a claims row and a curve panel name an MBPO grid cell."""
    return (
        f"{task}, from scratch" if snapshot < 0 else f"{task}, continued from snapshot {snapshot}"
    )


def _reached(runs: xr.DataArray, threshold: float) -> np.ndarray:
    """(seed, env_step): whether each evaluation is at or above `threshold` (NaN is not)."""
    return np.nan_to_num(runs.values, nan=-np.inf) >= threshold


def _steps_to(runs: xr.DataArray, threshold: float) -> np.ndarray:
    """Env steps from the grid's first evaluation until each seed's return first reaches
    `threshold`; a seed that never does is censored at one evaluation past the grid's end, the
    same for every run, so a run that stopped early cannot look fast."""
    steps = runs.env_step.values
    reached = _reached(runs, threshold)
    censored = steps[-1] + (steps[-1] - steps[-2])
    at = np.where(reached.any(axis=1), steps[reached.argmax(axis=1)], censored)
    return (at - steps[0]).astype(np.float64)


def _final(runs: xr.DataArray, n: int) -> np.ndarray:
    """Mean of each seed's own last `n` finite evaluations."""
    finals = []
    for row in runs.values:
        values = row[np.isfinite(row)]
        if len(values):
            finals.append(values[-n:].mean())
    return np.asarray(finals, dtype=np.float64)


def _by_key(da: xr.DataArray) -> dict[str, float]:
    return {
        f"{r}/{d}": float(da.sel(reward=r, divergence=d))
        for r in da.reward.values
        for d in da.divergence.values
    }
