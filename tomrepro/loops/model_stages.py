"""Stage functions behind `tomrepro train-model` and `tomrepro eval-model`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tomrepro.core.atomic import atomic_path, make_parent
from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import content_digest, read_buffer
from tomrepro.core.config import ProfileConfig, with_overrides
from tomrepro.core.errors import TomreproError
from tomrepro.core.seeding import derive_seed
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.dynamics_model import (
    DynamicsModel,
    load_dynamics_model,
)
from tomrepro.learning.model_training import check_weights, fit_on_columns
from tomrepro.loops.model_error import evaluate_model, occupancy_weights

EVAL_WEIGHTINGS = ("occupancy", "uniform")


def load_weights_file(path: Path) -> np.ndarray:
    """Per-transition weights from `.npy` (a 1-D array) or `.npz` (array `weights`)."""
    if not path.is_file():
        raise TomreproError(f"{path}: no such weights file")
    try:
        data = np.load(path, allow_pickle=False)
        weights = data["weights"] if isinstance(data, np.lib.npyio.NpzFile) else data
        return np.asarray(weights, dtype=np.float64)
    except (ValueError, KeyError, OSError) as exc:
        raise TomreproError(
            f"{path}: not a weights file (.npy array or .npz with 'weights'): {exc}"
        ) from None


def _rows(buffer_path: Path, prefix_end: int | None) -> tuple[ReplayBuffer, str]:
    loaded = read_buffer(buffer_path)
    buffer = loaded.buffer
    if prefix_end is not None:
        buffer = buffer.prefix(prefix_end)
    return buffer, loaded.metadata.task_id


def train_model(
    profile: ProfileConfig,
    buffer_path: Path,
    out: Path,
    *,
    prefix_end: int | None = None,
    weights_path: Path | None = None,
    family: str | None = None,
    weighting: str | None = None,
    seed: int | None = None,
    device: str | None = None,
) -> Path:
    """Fit a dynamics model on a buffer (or its prefix before env step `prefix_end`).

    Writes `out` (tensors) and `out` with suffix `.json` (training curve and provenance).
    """
    profile = with_overrides(profile, "model", family=family, weighting=weighting)
    seed = profile.seed if seed is None else seed
    buffer, task_id = _rows(buffer_path, prefix_end)
    cols = buffer.columns()
    weights = None
    if weights_path is not None:
        weights = load_weights_file(weights_path)
        try:
            check_weights(weights, len(buffer))
        except TomreproError as exc:
            raise TomreproError(f"{weights_path}: {exc}") from None
    torch_device = resolve_device(device or profile.device)
    model = DynamicsModel(profile.model, buffer.obs_dim, buffer.act_dim)
    log = fit_on_columns(
        model,
        cols,
        weights,
        torch.Generator().manual_seed(derive_seed(seed, "model_fit")),
        torch_device,
    )
    provenance = {
        "buffer": str(buffer_path),
        "buffer_digest": content_digest(buffer_path),
        "task_id": task_id,
        "prefix_end": prefix_end,
        "rows": len(buffer),
        "weights": str(weights_path) if weights_path else None,
        "seed": seed,
        "device": str(torch_device),
    }
    make_parent(out)
    model.save(out, extra=provenance)
    report = {**provenance, "config": profile.model.model_dump(mode="json"), "fit": log.as_dict()}
    with atomic_path(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    return out


def eval_model(
    model_path: Path,
    data_path: Path,
    out: Path,
    *,
    weighting: str = "occupancy",
    gamma: float = 0.99,
    horizon: int = 10,
    prefix_end: int | None = None,
    netcdf: Path | None = None,
    device: str = "auto",
) -> Path:
    """Errors of a saved model on a buffer's transitions, as JSON (and netCDF if asked)."""
    if weighting not in EVAL_WEIGHTINGS:
        raise TomreproError(
            f"unknown weighting {weighting!r}; choose {' or '.join(EVAL_WEIGHTINGS)}"
        )
    if not 0 < gamma < 1:
        raise TomreproError(f"gamma must lie in (0, 1), got {gamma}")
    if horizon < 1:
        raise TomreproError(f"horizon must be at least 1, got {horizon}")
    torch_device = resolve_device(device)
    model, provenance = load_dynamics_model(model_path, torch_device)
    buffer, task_id = _rows(data_path, prefix_end)
    if (buffer.obs_dim, buffer.act_dim) != (model.obs_dim, model.act_dim):
        raise TomreproError(
            f"{data_path}: dims do not match the model's ({model.obs_dim}, {model.act_dim})"
        )
    cols = buffer.columns()
    weights = (
        occupancy_weights(cols["episode_steps"], gamma)
        if weighting == "occupancy"
        else np.ones(len(buffer))
    )
    errors = evaluate_model(model, cols, weights, horizon, torch_device)
    report = {
        "model": str(model_path),
        "data": str(data_path),
        "task_id": task_id,
        "data_digest": content_digest(data_path),
        "weighting": weighting,
        "gamma": gamma,
        "prefix_end": prefix_end,
        "model_provenance": provenance,
        **errors.as_dict(),
    }
    make_parent(out)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    if netcdf is not None:
        _write_netcdf(report, netcdf)
    return out


def _write_netcdf(report: dict, path: Path) -> None:
    import xarray as xr

    horizons = np.arange(1, len(report["open_loop_state_mse"]) + 1)
    ds = xr.Dataset(
        {
            "state_mse": report["state_mse"],
            "reward_mse": report["reward_mse"],
            "nll": report["nll"],
            "open_loop_state_mse": ("horizon", np.asarray(report["open_loop_state_mse"])),
            "open_loop_starts": ("horizon", np.asarray(report["open_loop_starts"])),
        },
        coords={"horizon": horizons},
        attrs={
            k: str(report[k])
            for k in ("model", "data", "task_id", "data_digest", "weighting", "gamma")
        },
    )
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
