"""The stage outputs of one profile as xarray datasets, saved as netCDF for claims and figures.

`offline.nc`: the offline study (learner x snapshot x seed [x horizon | age_bin]).
`curves.nc`: MBPO evaluation curves, one netCDF group per kind (`scratch`, `continue`), each
over task x snapshot x learner x seed x env_step (snapshot -1 for from-scratch runs).
`finite.nc`: the finite-MDP checks (recovery errors by reward x divergence x form, bound slacks
by MDP draw).
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
    """The offline study's `study.nc`, checked for the variables the claims use."""
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            loaded = ds.load()
    except (OSError, ValueError) as exc:
        raise _fail(path, f"not a readable netCDF file ({type(exc).__name__})") from None
    missing = [v for v in OFFLINE_VARIABLES if v not in loaded]
    if missing:
        raise _fail(path, f"not an offline-study dataset (missing {', '.join(missing)})")
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
    """The finite-MDP stage's JSON on (reward, divergence, form) and (mdp) grids."""
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
    return xr.Dataset(
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
