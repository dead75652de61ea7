"""Claims C1-C6 judged on measured data by stated rules (DESIGN §1); verdicts are computed here.

Every rule gives one of three verdicts: `reproduced` (the interval says the claimed effect is
there), `not reproduced` (the interval says it is absent or reversed) and `inconclusive` (the
interval allows both, or there is too little data). Intervals are percentile bootstraps over the
independent units: seeds for MBPO runs, (snapshot, seed) cells for the offline study.
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
    mean_of,
    ratio_of_means,
    relative_difference,
)
from tomrepro.core.config import AnalysisConfig

Verdict = Literal["reproduced", "not reproduced", "inconclusive"]

STATEMENTS = {
    "C1": "TOM's weights focus on policy-relevant, recent experience",
    "C2": "TOM models are more accurate where the current policy goes",
    "C3": "TOM speeds up learning of the backbone (MBPO)",
    "C4": "TOM reaches the same asymptotic return as MLE",
    "C5": "the dual-RL estimator recovers the true occupancy ratio",
    "C6": "the TOM objective lower-bounds log J(pi)",
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


def _lacking(claim_id: str, scope: str, measure: str, rule: str, why: str, units: int = 0):
    return ClaimResult(claim_id, scope, "inconclusive", measure, rule, None, units, {"why": why})


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
        rng = np.random.default_rng(self.seed)
        return bootstrap(samples, statistic, rng, self.cfg.bootstrap_samples, self.cfg.confidence)

    @property
    def _pct(self) -> str:
        return f"{100 * self.cfg.confidence:g}%"

    # --- C1, C2: the offline study -------------------------------------------------------------

    def weights_focus_on_recent(self, offline: xr.Dataset | None) -> ClaimResult:
        measure = "mean Spearman correlation of TOM weight with transition env step"
        rule = (
            f"reproduced if the {self._pct} intervals of the mean Spearman correlation and of the "
            "geometric-mean newest/oldest age-bin weight ratio are both above 0 and 1; not "
            "reproduced if either lies entirely at or below 0 / 1; else inconclusive "
            "(bootstrap over snapshot x seed cells)"
        )
        if offline is None or "tom" not in offline.learner.values:
            return _lacking("C1", "offline study", measure, rule, "no offline study with TOM")
        tom = offline.sel(learner="tom")
        rho = tom.spearman_recency.values.ravel()
        ratio = tom.newest_oldest_ratio.values.ravel()
        rho = rho[np.isfinite(rho)]
        # The ratio is undefined (inf) where the oldest bin's mean weight is 0; those cells are
        # counted in the evidence, not averaged.
        defined = np.isfinite(ratio) & (ratio > 0)
        log_ratio = np.log(ratio[defined])
        if min(len(rho), len(log_ratio)) < 2:
            return _lacking("C1", "offline study", measure, rule, "fewer than 2 cells", len(rho))
        corr = self._bootstrap((rho,), mean_of)
        ratio_est = self._bootstrap((log_ratio,), mean_of).map(math.exp)
        if corr.low > 0 and ratio_est.low > 1:
            verdict: Verdict = "reproduced"
        elif corr.high <= 0 or ratio_est.high <= 1:
            verdict = "not reproduced"
        else:
            verdict = "inconclusive"
        per_snapshot = {
            int(k): float(np.nanmean(tom.spearman_recency.sel(snapshot=k).values))
            for k in offline.snapshot.values
        }
        return ClaimResult(
            "C1",
            "offline study",
            verdict,
            measure,
            rule,
            corr,
            len(rho),
            {
                "newest_oldest_ratio": asdict(ratio_est),
                "cells_with_zero_oldest_weight": int(np.isinf(ratio).sum()),
                "spearman_by_snapshot": per_snapshot,
                "ess_share_mean": float(np.nanmean(tom.ess_share.values)),
            },
        )

    def _error_ratio(self, offline: xr.Dataset, variable: str, learner: str) -> Estimate | None:
        """Geometric-mean ratio learner/MLE of a model error over paired cells, with interval."""
        mine = offline[variable].sel(learner=learner).values.ravel()
        mle = offline[variable].sel(learner="mle").values.ravel()
        keep = np.isfinite(mine) & np.isfinite(mle) & (mine > 0) & (mle > 0)
        if keep.sum() < 2:
            return None
        diffs = np.log(mine[keep]) - np.log(mle[keep])
        return self._bootstrap((diffs,), mean_of).map(math.exp)

    def accurate_on_policy(self, offline: xr.Dataset | None) -> ClaimResult:
        measure = "TOM / MLE on-policy state error (geometric mean over cells)"
        rule = (
            f"reproduced if the {self._pct} interval of the ratio lies below 1; not reproduced if "
            "it lies at or above 1; else inconclusive (paired bootstrap over snapshot x seed "
            "cells, same data and budget per pair)"
        )
        learners = [] if offline is None else offline.learner.values.tolist()
        if offline is None or not {"tom", "mle"} <= set(learners):
            return _lacking(
                "C2", "offline study", measure, rule, "no offline study with TOM and MLE"
            )
        est = self._error_ratio(offline, "on_policy_state_mse", "tom")
        if est is None:
            return _lacking("C2", "offline study", measure, rule, "fewer than 2 paired cells")
        evidence: dict[str, Any] = {}
        for learner in learners:
            if learner == "mle":
                continue
            for variable in ("on_policy_state_mse", "buffer_state_mse"):
                other = self._error_ratio(offline, variable, learner)
                evidence[f"{learner}/{variable}"] = asdict(other) if other else None
        horizon = offline.open_loop_state_mse.isel(horizon=-1)
        last = offline.assign(open_loop_last=horizon)
        open_loop = self._error_ratio(last, "open_loop_last", "tom")
        evidence[f"tom/open_loop_state_mse_h{int(offline.horizon.values[-1])}"] = (
            asdict(open_loop) if open_loop else None
        )
        cells = int(np.isfinite(offline.on_policy_state_mse.sel(learner="tom").values).sum())
        return ClaimResult(
            "C2", "offline study", _ratio_verdict(est), measure, rule, est, cells, evidence
        )

    # --- C3, C4: MBPO curves -------------------------------------------------------------------

    def _runs(self, curves: xr.Dataset, task: str, snapshot: int, learner: str) -> xr.DataArray:
        """return_mean over (seed, env_step) of one learner's runs, seeds without data dropped."""
        da = curves.return_mean.sel(task=task, snapshot=snapshot, learner=learner)
        return da.dropna("env_step", how="all").dropna("seed", how="all")

    def speeds_up_learning(self, curves: xr.Dataset, task: str, snapshot: int) -> ClaimResult:
        scope = scope_name(task, snapshot)
        f = self.cfg.threshold_fraction
        measure = "TOM / MLE mean env steps to reach the return threshold"
        rule = (
            f"threshold = R0 + {f:g} (Rbest - R0), R0 the mean first evaluation, Rbest the best "
            "seed-mean evaluation of either learner; a run that never reaches it counts one "
            f"evaluation past its end; reproduced if the {self._pct} interval of the step ratio "
            "lies below 1, not reproduced if at or above 1, else inconclusive (bootstrap over "
            "seeds)"
        )
        if not {"tom", "mle"} <= set(curves.learner.values.tolist()):
            return _lacking("C3", scope, measure, rule, "no TOM and MLE runs")
        runs = {m: self._runs(curves, task, snapshot, m) for m in ("mle", "tom")}
        seeds = min(r.sizes["seed"] for r in runs.values())
        if seeds < 2 or min(r.sizes["env_step"] for r in runs.values()) < 2:
            return _lacking("C3", scope, measure, rule, "fewer than 2 seeds or evaluations", seeds)
        r0 = float(np.mean([r.isel(env_step=0).mean() for r in runs.values()]))
        best = float(max(r.mean("seed", skipna=True).max() for r in runs.values()))
        if best <= r0:
            return _lacking("C3", scope, measure, rule, "no learner improved on R0", seeds)
        threshold = r0 + f * (best - r0)
        steps = {m: _steps_to(r, threshold) for m, r in runs.items()}
        est = self._bootstrap((steps["mle"], steps["tom"]), ratio_of_means)
        return ClaimResult(
            "C3",
            scope,
            _ratio_verdict(est),
            measure,
            rule,
            est,
            seeds,
            {
                "threshold": threshold,
                "r0": r0,
                "best_seed_mean": best,
                "steps_mle": steps["mle"].tolist(),
                "steps_tom": steps["tom"].tolist(),
            },
        )

    def same_final_return(self, curves: xr.Dataset, task: str, snapshot: int) -> ClaimResult:
        scope = scope_name(task, snapshot)
        n, margin = self.cfg.final_evaluations, self.cfg.equivalence_margin
        measure = "(TOM - MLE) / |MLE| final return (mean of the last evaluations)"
        rule = (
            f"final return = mean of a run's last {n} evaluations; reproduced if the {self._pct} "
            f"interval of the relative difference lies above -{margin:g}; not reproduced if it "
            "lies "
            f"below -{margin:g}; else inconclusive (bootstrap over seeds)"
        )
        if not {"tom", "mle"} <= set(curves.learner.values.tolist()):
            return _lacking("C4", scope, measure, rule, "no TOM and MLE runs")
        finals = {}
        for m in ("mle", "tom"):
            last = self._runs(curves, task, snapshot, m).isel(env_step=slice(-n, None))
            values = last.mean("env_step").values
            finals[m] = values[np.isfinite(values)]
        seeds = min(len(v) for v in finals.values())
        if seeds < 2:
            return _lacking("C4", scope, measure, rule, "fewer than 2 seeds", seeds)
        est = self._bootstrap((finals["mle"], finals["tom"]), relative_difference)
        if est.low > -margin:
            verdict: Verdict = "reproduced"
        elif est.high < -margin:
            verdict = "not reproduced"
        else:
            verdict = "inconclusive"
        return ClaimResult(
            "C4",
            scope,
            verdict,
            measure,
            rule,
            est,
            seeds,
            {"final_mle": finals["mle"].tolist(), "final_tom": finals["tom"].tolist()},
        )

    # --- C5, C6: finite MDPs -------------------------------------------------------------------

    def recovers_ratio(self, finite: xr.Dataset | None) -> ClaimResult:
        tol = self.cfg.recovery_tolerance
        measure = "largest relative error of the exactly solved dual's weights vs d^pi / d^R"
        rule = (
            f"reproduced if the error is at most {tol:g} for every reward and divergence with the "
            "expected (exact) residual; not reproduced otherwise. The sampled residual's error is "
            "reported, not judged: it is biased by construction"
        )
        if finite is None:
            return _lacking("C5", "finite MDPs", measure, rule, "no finite-MDP results")
        exact = finite.recovery_error.sel(form="expected")
        worst = float(exact.max())
        sampled = finite.recovery_error.sel(form="sampled")
        return ClaimResult(
            "C5",
            "finite MDPs",
            "reproduced" if worst <= tol else "not reproduced",
            measure,
            rule,
            Estimate(worst, worst, worst),
            int(finite.attrs["mdps"]),
            {
                "expected": _by_key(exact),
                "sampled": _by_key(sampled),
            },
        )

    def lower_bounds_objective(self, finite: xr.Dataset | None) -> ClaimResult:
        tol = self.cfg.bound_tolerance
        measure = "smallest slack log J(pi) - bound over all MDP draws (KL and chi2 forms)"
        rule = f"reproduced if every slack is at least -{tol:g}; not reproduced otherwise"
        if finite is None:
            return _lacking("C6", "finite MDPs", measure, rule, "no finite-MDP results")
        worst = float(min(finite.slack_kl.min(), finite.slack_chi2.min()))
        return ClaimResult(
            "C6",
            "finite MDPs",
            "reproduced" if worst >= -tol else "not reproduced",
            measure,
            rule,
            Estimate(worst, worst, worst),
            int(finite.sizes["mdp"]),
            {
                "min_slack_kl": float(finite.slack_kl.min()),
                "min_slack_chi2": float(finite.slack_chi2.min()),
            },
        )

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
        results += c3 or [_lacking("C3", "MBPO", "", "", "no MBPO runs")]
        results += c4 or [_lacking("C4", "MBPO", "", "", "no from-scratch MBPO runs")]
        results += [self.recovers_ratio(data.finite), self.lower_bounds_objective(data.finite)]
        return results


def scope_name(task: str, snapshot: int) -> str:
    """How a claims row and a curve panel name an MBPO grid cell."""
    return (
        f"{task}, from scratch" if snapshot < 0 else f"{task}, continued from snapshot {snapshot}"
    )


def _steps_to(runs: xr.DataArray, threshold: float) -> np.ndarray:
    """Env steps after each seed's first evaluation until its return first reaches `threshold`."""
    steps = runs.env_step.values
    returns = runs.values  # (seed, env_step)
    reached = np.nan_to_num(returns, nan=-np.inf) >= threshold
    last = np.where(np.isfinite(returns), np.arange(len(steps)), -1).max(axis=1)
    gap = steps[-1] - steps[-2]
    first = np.where(reached.any(axis=1), reached.argmax(axis=1), -1)
    at = np.where(first >= 0, steps[np.maximum(first, 0)], steps[last] + gap)
    return (at - steps[0]).astype(np.float64)


def _by_key(da: xr.DataArray) -> dict[str, float]:
    return {
        f"{r}/{d}": float(da.sel(reward=r, divergence=d))
        for r in da.reward.values
        for d in da.divergence.values
    }
