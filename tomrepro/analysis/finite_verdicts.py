"""Claims rows of the finite-MDP stage (C5, C6): the evidence rows and the labelled sanity rows.

The units are independently drawn MDPs. Rows whose rule holds by construction (the expected
residual recovers the ratio exactly; Jensen's inequality and KL <= chi2) are `sanity` rows: they
catch arithmetic bugs and say nothing about TOM.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from tomrepro.analysis.claim_rows import (
    ClaimResult,
    Role,
    lacking,
    make_row,
    ratio_display,
    sanity_row,
)
from tomrepro.analysis.statistics import Decision, Estimate, min_units_for

if TYPE_CHECKING:
    from tomrepro.analysis.claims import ClaimJudge

SCOPE = "finite MDPs"


def _missing(claim_id: str, why: str) -> list[ClaimResult]:
    return [lacking(claim_id, SCOPE, "primary", "", why)]


def recovery_rows(judge: ClaimJudge, finite: xr.Dataset | None) -> list[ClaimResult]:
    """C5: the practical estimator against the exact ratio, per divergence and reward; the
    exactly solved expected-residual form as a sanity row."""
    if finite is None:
        return _missing("C5", "no finite-MDP results")
    cfg = judge.cfg
    rows = []
    if "estimator_error" in finite:
        tol = cfg.ratio_error_tolerance
        rule = (
            "error = E_dR|w_hat - w| / E_dR[w] per MDP (weights of the project's own estimator, "
            f"sampled residual, its own conjugate, on samples of d^R); effect = {tol:g} - error; "
            + judge._verdict_words("random finite MDPs", 2)
            + " (SESOI 0: the interval must clear the tolerance)"
        )
        for reward in finite.reward_kind.values:
            for divergence in finite.divergence.values:
                errors = finite.estimator_error.sel(reward_kind=reward, divergence=divergence)
                decision = judge._decide(tol - errors.values, 0.0, min_units_for(cfg.confidence))
                evidence = _recovery_evidence(finite, str(reward), str(divergence))
                if (reward, divergence) == ("discriminator", "chi2"):
                    evidence |= _weights_in_use(judge, finite)
                rows.append(
                    make_row(
                        "C5",
                        f"{SCOPE}, {divergence}, {reward} reward",
                        "primary",
                        "mean weighted relative error of the estimator's weights vs d^pi/d^R",
                        rule,
                        _as_error(decision, tol),
                        evidence,
                    )
                )
    exact = finite.recovery_error.sel(form="expected")
    worst = float(exact.max(skipna=False))
    rows.append(
        sanity_row(
            "C5",
            f"{SCOPE}, expected residual (sanity)",
            "largest relative error of the exactly solved expected-residual dual",
            f"passes if <= {cfg.sanity_tolerance:g}: the flow equations force w = d^pi/d^R for "
            "any reward, so this only checks the solver",
            worst,
            bool(np.isfinite(worst) and worst <= cfg.sanity_tolerance),
            int(finite.attrs["mdps"]),
        )
    )
    return rows


def _as_error(decision: Decision, tol: float) -> Decision:
    """Show the effect tol - error as the error itself (the interval flips)."""
    est = decision.estimate
    shown = Estimate(tol - est.value, tol - est.high, tol - est.low) if est else None
    return Decision(
        decision.verdict, shown, decision.units, tol, decision.p_value, note=decision.note
    )


def _weights_in_use(judge: ClaimJudge, finite: xr.Dataset) -> dict:
    """Why the tolerance matters: the C6 model fit with the estimator's weights against the fit
    with the exact ratio, on the same MDPs and samples (> 0: the estimated fit is worse)."""
    if "model_return_error_estimated" not in finite:
        return {}
    worse = _log_ratio(finite.model_return_error_estimated, "estimated", "exact")
    est = judge._decide(worse, 0.0, 2).estimate
    if est is None:
        return {}
    key = "model return error, estimated / exact weights (geometric mean, interval)"
    return {key: asdict(est.map(math.exp))}


def _recovery_evidence(finite: xr.Dataset, reward: str, divergence: str) -> dict:
    pick = {"reward_kind": reward, "divergence": divergence}
    out = {}
    for name in ("estimator_spearman", "form_bias_error", "estimator_vs_optimum_error"):
        if name in finite:
            values = finite[name].sel(pick).values
            out[f"{name} (median)"] = float(np.nanmedian(values))
    return out


def _log_ratio(errors: xr.DataArray, base: str, other: str) -> np.ndarray:
    """Per MDP: log(base fit's error / other fit's error), > 0 where `other` is nearer the truth."""
    dim = next(str(d) for d in errors.dims if str(d).startswith("weights"))
    return np.log(errors.sel({dim: base}).values) - np.log(errors.sel({dim: other}).values)


def model_fit_rows(judge: ClaimJudge, finite: xr.Dataset | None) -> list[ClaimResult]:
    """C6: TOM-weighted vs plain MLE fits of a model class that cannot fit every (s, a); the
    lower-bound inequalities as a sanity row."""
    if finite is None:
        return _missing("C6", "no finite-MDP results")
    cfg = judge.cfg
    minimum = min_units_for(cfg.confidence)
    rows = []
    sesoi = -math.log(1 - cfg.sesoi_model_fit)
    samples = finite.attrs.get("model_fit_samples")
    rule = (
        "effect = log(MLE-fit return error / TOM-fit return error) per MDP, both fits of a "
        f"state-aggregated model (G = ceil(S/2) groups) by weighted MLE on the same {samples} "
        f"samples of d^R; SESOI {cfg.sesoi_model_fit:g} relative reduction; "
        + judge._verdict_words("random finite MDPs", minimum)
    )
    measure = "relative reduction of the model's return error, 1 - TOM fit / MLE fit"
    fits: tuple[tuple[str, str, Role], ...] = (
        ("", "exact", "primary"),
        ("_estimated", "estimated", "secondary"),
    )
    for suffix, name, role in fits:
        variable = f"model_return_error{suffix}"
        if variable not in finite:
            continue
        effects = _log_ratio(finite[variable], "mle", name)
        evidence: dict = {"MDPs where the TOM fit is nearer": int(np.sum(effects > 0))}
        bound = f"model_bound_error{suffix}"
        if bound in finite:
            est = judge._decide(_log_ratio(finite[bound], "mle", name), sesoi, 2).estimate
            evidence["lower-bound error reduction"] = (
                asdict(est.map(ratio_display)) if est else None
            )
        rows.append(
            make_row(
                "C6",
                f"{SCOPE}, model fit with {name} TOM weights",
                role,
                measure,
                rule,
                judge._decide(effects, sesoi, minimum),
                evidence,
                ratio_display,
            )
        )
    kl, chi2 = float(finite.slack_kl.min(skipna=False)), float(finite.slack_chi2.min(skipna=False))
    worst = min(kl, chi2) if np.isfinite([kl, chi2]).all() else math.nan
    rows.append(
        sanity_row(
            "C6",
            f"{SCOPE}, lower bound (sanity)",
            "smallest slack of log J >= E[log r] - KL >= E[log r] - chi2",
            f"passes if >= -{cfg.sanity_tolerance:g}: Jensen's inequality and KL <= chi2 are "
            "theorems, so this only checks the arithmetic",
            worst,
            bool(np.isfinite(worst) and worst >= -cfg.sanity_tolerance),
            int(finite.sizes["mdp"]),
        )
    )
    return rows
