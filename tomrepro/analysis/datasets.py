"""The stage outputs of one profile as xarray datasets, saved as netCDF for claims and figures.

`offline.nc`: the offline study (learner x snapshot x seed [x horizon | age_bin]).
`curves.nc`: MBPO evaluation curves, one netCDF group per kind (`scratch`, `continue`), each
over task x snapshot x learner x seed x env_step (snapshot -1 for from-scratch runs).
`finite.nc`: the finite-MDP checks (recovery errors by reward x divergence x form, bound slacks
by MDP draw; C5's estimator by reward_kind x divergence x estimator_mdp and its convergence table
by divergence x samples x q_steps x convergence_mdp).
Any part whose stage output is missing is left out, and the claims that need it say so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from tomrepro.core.atomic import atomic_path, make_parent
from tomrepro.core.errors import TomreproError

CURVE_INDEX = ["task", "snapshot", "learner", "seed", "env_step"]
CURVE_KINDS = ("scratch", "continue")
OFFLINE_VARIABLES = (
    "on_policy_state_mse",
    "buffer_state_mse",
    "open_loop_state_mse",
    "weight_by_age",
    "newest_oldest_ratio",
    "spearman_recency",
    "ess_share",
)


@dataclass
class AnalysisData:
    """Everything the claims and the figures read; None where a stage produced nothing."""

    offline: xr.Dataset | None
    curves: dict[str, xr.Dataset]
    finite: xr.Dataset | None


def _fail(path: Path, problem: str) -> TomreproError:
    return TomreproError(f"{path}: {problem}")


def offline_dataset(path: Path) -> xr.Dataset:
    """The offline study's `study.nc` (run x learner x snapshot x seed [x horizon | age_bin]),
    checked for the variables the claims use and for the `run` dimension (the collect runs,
    the claims' units) on each of them."""
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            loaded = ds.load()
    except (OSError, ValueError) as exc:
        raise _fail(path, f"not a readable netCDF file ({type(exc).__name__})") from None
    missing = [v for v in OFFLINE_VARIABLES if v not in loaded]
    if missing:
        raise _fail(path, f"not an offline-study dataset (missing {', '.join(missing)})")
    if any("run" not in loaded[v].dims for v in OFFLINE_VARIABLES):
        raise _fail(
            path,
            "an offline study without a `run` dimension (made before collect runs were its "
            "units); rerun `tomrepro offline-study` on the collect directory",
        )
    return loaded


def curves_dataset(path: Path, kind: str) -> xr.Dataset | None:
    """A sweep's tidy curves CSV on the curve grid; None when the sweep finished no run."""
    try:
        table = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    except (OSError, pd.errors.ParserError) as exc:
        raise _fail(path, f"not a readable CSV file ({type(exc).__name__})") from None
    if table.empty:
        return None
    missing = [c for c in [*CURVE_INDEX, "return_mean"] if c not in table.columns]
    if missing:
        raise _fail(path, f"not a sweep curves table (missing columns {', '.join(missing)})")
    if table.duplicated(CURVE_INDEX).any():
        raise _fail(path, "repeated (task, snapshot, learner, seed, env_step) rows")
    values = [c for c in table.columns if c not in CURVE_INDEX and c != "policy_version"]
    numeric = table[values].apply(pd.to_numeric, errors="coerce")
    ds = pd.concat([table[CURVE_INDEX], numeric], axis=1).set_index(CURVE_INDEX).to_xarray()
    ds.attrs["kind"] = kind
    return ds


def finite_dataset(path: Path) -> xr.Dataset:
    """The finite-MDP stage's JSON as a dataset (module doc; `_estimator_variables`)."""
    try:
        raw = json.loads(path.read_text())
        keys = [tuple(k.split("/")) for k in raw["recovery"]]
        slack_kl, slack_chi2 = raw["slack_kl"], raw["slack_chi2"]
        mix = raw["bound_model_mix"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _fail(path, f"not a finite-MDP result ({type(exc).__name__}: {exc})") from None
    if any(len(k) != 3 for k in keys) or not (len(slack_kl) == len(slack_chi2) == len(mix)):
        raise _fail(path, "not a finite-MDP result (malformed recovery keys or slack lists)")
    axes = [sorted({k[i] for k in keys}) for i in range(3)]
    errors = np.full([len(a) for a in axes], np.nan)
    for key, value in zip(keys, raw["recovery"].values(), strict=True):
        errors[tuple(axes[i].index(key[i]) for i in range(3))] = value
    ds = xr.Dataset(
        {
            "recovery_error": (("reward", "divergence", "form"), errors),
            "slack_kl": ("mdp", np.asarray(slack_kl, dtype=np.float64)),
            "slack_chi2": ("mdp", np.asarray(slack_chi2, dtype=np.float64)),
        },
        coords={
            "reward": axes[0],
            "divergence": axes[1],
            "form": axes[2],
            "mdp": np.arange(len(mix)),
            "model_mix": ("mdp", np.asarray(mix, dtype=np.float64)),
        },
        attrs={"mdps": int(raw["mdps"]), "seed": int(raw["seed"])},
    )
    try:
        extra = _estimator_variables(raw)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise _fail(path, f"malformed estimator results ({type(exc).__name__}: {exc})") from None
    try:
        fits = [_model_fit_variables(raw, key) for key in MODEL_FIT_KEYS]
    except (ValueError, KeyError, TypeError) as exc:
        raise _fail(path, f"malformed model-fit results ({type(exc).__name__}: {exc})") from None
    parts = [ds, *(f for f in fits if f is not None)]
    if extra is not None:
        if list(extra.divergence.values) != list(ds.divergence.values):
            raise _fail(path, "the estimator's divergences differ from the recovery check's")
        parts.append(extra)
    return xr.merge(parts, combine_attrs="no_conflicts")


# JSON key of a C6 model-fit comparison -> the suffix of its dataset variables and dims.
MODEL_FIT_KEYS = {"model_fit": "", "model_fit_estimated": "_estimated"}


def _model_fit_variables(raw: dict, key: str) -> xr.Dataset | None:
    """C6's per-MDP fit errors: `model_<metric>{suffix}` over (weights{suffix}, fit_mdp{suffix})."""
    if key not in raw:
        return None
    fit, suffix = raw[key], MODEL_FIT_KEYS[key]
    names, n = list(fit["weights"]), int(fit["mdps"])
    weights_dim, mdp_dim = f"weights{suffix}", f"fit_mdp{suffix}"
    variables = {}
    for metric, per_name in fit["metrics"].items():
        values = np.asarray([per_name[name] for name in names], dtype=np.float64)
        if values.shape != (len(names), n):
            raise ValueError(f"{metric} has shape {values.shape}, not {(len(names), n)}")
        variables[f"{metric}{suffix}"] = ((weights_dim, mdp_dim), values)
    return xr.Dataset(
        variables,
        coords={weights_dim: names, mdp_dim: np.arange(n)},
        attrs={f"model_fit_samples{suffix}": int(fit["samples"] or 0)},
    )


# JSON measure -> dataset variable of the C5 estimator check (finite_claims.ESTIMATOR_MEASURES).
ESTIMATOR_VARIABLES = {
    "error": "estimator_error",
    "spearman": "estimator_spearman",
    "cell_error": "estimator_cell_error",
    "vs_optimum_error": "estimator_vs_optimum_error",
    "form_bias_error": "form_bias_error",
    "form_bias_cell_error": "form_bias_cell_error",
    "seconds": "estimator_seconds",
}
CONVERGENCE_VARIABLES = {
    "vs_optimum_error": "convergence_vs_optimum_error",
    "error": "convergence_error",
}


def _estimator_variables(raw: dict) -> xr.Dataset | None:
    """C5's estimator arrays: (reward_kind, divergence, estimator_mdp) and the convergence table
    (divergence, samples, q_steps, convergence_mdp); None for a result made without them."""
    if "estimator" not in raw:
        return None
    est = raw["estimator"]
    kinds, divergences, n = est["reward_kinds"], est["divergences"], int(est["mdps"])
    shape = (len(kinds), len(divergences), n)
    variables: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for measure, name in ESTIMATOR_VARIABLES.items():
        values = np.asarray(
            [[est["values"][k][d][measure] for d in divergences] for k in kinds],
            dtype=np.float64,
        )
        if values.shape != shape:
            raise ValueError(f"{measure} has shape {values.shape}, not {shape}")
        variables[name] = (("reward_kind", "divergence", "estimator_mdp"), values)
    coords: dict = {
        "reward_kind": kinds,
        "divergence": divergences,
        "estimator_mdp": np.arange(n),
        "estimator_states": ("estimator_mdp", np.asarray(est["states"], dtype=np.int64)),
        "estimator_actions": ("estimator_mdp", np.asarray(est["actions"], dtype=np.int64)),
    }
    attrs = {"estimator_settings": json.dumps(est.get("settings", {}), sort_keys=True)}
    conv = raw.get("convergence")
    if conv is not None and int(conv["mdps"]) > 0:
        if conv["divergences"] != divergences:
            raise ValueError("the convergence table's divergences differ from the estimator's")
        grid = (len(divergences), len(conv["samples"]), len(conv["q_steps"]), int(conv["mdps"]))
        for measure, name in CONVERGENCE_VARIABLES.items():
            values = np.asarray([conv["values"][measure][d] for d in divergences], dtype=np.float64)
            if values.shape != grid:
                raise ValueError(f"convergence {measure} has shape {values.shape}, not {grid}")
            variables[name] = (("divergence", "samples", "q_steps", "convergence_mdp"), values)
        coords |= {
            "samples": np.asarray(conv["samples"], dtype=np.int64),
            "q_steps": np.asarray(conv["q_steps"], dtype=np.int64),
            "convergence_mdp": np.arange(grid[-1]),
        }
        attrs["convergence_reward_kind"] = str(conv["reward_kind"])
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def build(data_dir: Path) -> AnalysisData:
    """Read every stage output of one profile's data folder that exists."""
    study = data_dir / "offline_study" / "study.nc"
    finite = data_dir / "finite_mdp.json"
    curves = {}
    for kind in CURVE_KINDS:
        path = data_dir / f"mbpo_{kind}_curves.csv"
        ds = curves_dataset(path, kind) if path.is_file() else None
        if ds is not None:
            curves[kind] = ds
    return AnalysisData(
        offline=offline_dataset(study) if study.is_file() else None,
        curves=curves,
        finite=finite_dataset(finite) if finite.is_file() else None,
    )


def save(data: AnalysisData, out_dir: Path) -> None:
    """Write offline.nc, curves.nc (a group per kind) and finite.nc. A part with no stage output
    is saved as a dataset without variables, so the three files (DVC outputs) always exist."""
    make_parent(out_dir / "offline.nc")
    with atomic_path(out_dir / "offline.nc") as tmp:
        (data.offline if data.offline is not None else xr.Dataset()).to_netcdf(
            tmp, engine="h5netcdf"
        )
    with atomic_path(out_dir / "curves.nc") as tmp:
        xr.Dataset(attrs={"kinds": json.dumps(sorted(data.curves))}).to_netcdf(
            tmp, engine="h5netcdf"
        )
        for kind, ds in data.curves.items():
            ds.to_netcdf(tmp, engine="h5netcdf", mode="a", group=kind)
    with atomic_path(out_dir / "finite.nc") as tmp:
        (data.finite if data.finite is not None else xr.Dataset()).to_netcdf(tmp, engine="h5netcdf")


def _open(path: Path, group: str | None = None) -> xr.Dataset:
    try:
        with xr.open_dataset(path, engine="h5netcdf", group=group) as ds:
            return ds.load()
    except (OSError, ValueError) as exc:
        raise _fail(path, f"not a readable analysis dataset ({type(exc).__name__})") from None


def load(out_dir: Path) -> AnalysisData:
    """The datasets `save` wrote; a part saved empty comes back as None."""
    offline, finite = _open(out_dir / "offline.nc"), _open(out_dir / "finite.nc")
    root = _open(out_dir / "curves.nc")
    kinds = json.loads(root.attrs.get("kinds", "[]"))
    return AnalysisData(
        offline=offline if offline.data_vars else None,
        curves={k: _open(out_dir / "curves.nc", group=k) for k in kinds},
        finite=finite if finite.data_vars else None,
    )
