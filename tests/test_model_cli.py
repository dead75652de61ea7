"""`tomrepro train-model` and `tomrepro eval-model` on real MuJoCo buffers, and the error maths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from tests.conftest import REPO_ROOT
from tomrepro.core.buffer_file import BufferMetadata, read_buffer, write_buffer
from tomrepro.core.tasks import get_task
from tomrepro.learning.dynamics_model import load_dynamics_model
from tomrepro.loops.model_error import evaluate_model, occupancy_weights
from tomrepro.loops.rollout import random_rollout

SMOKE = str(REPO_ROOT / "pipelines" / "smoke.yaml")


@pytest.fixture(scope="module")
def pendulum_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pendulum.h5"
    write_buffer(
        path,
        random_rollout(get_task("InvertedPendulum-v5"), 3000, seed=0),
        BufferMetadata("InvertedPendulum-v5", seed=0),
    )
    return path


@pytest.fixture(scope="module")
def trained(pendulum_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "mle.pt"
    from tomrepro.cli import main

    assert (
        main(
            [
                "train-model",
                str(pendulum_file),
                "--out",
                str(out),
                "--profile",
                SMOKE,
                "--prefix-end",
                "2000",
            ]
        )
        == 0
    )
    return out


def test_train_model_writes_tensors_and_a_training_curve(trained, pendulum_file):
    model, provenance = load_dynamics_model(trained)
    assert provenance["rows"] == 2000 and provenance["prefix_end"] == 2000
    report = json.loads(trained.with_suffix(".json").read_text())
    assert report["fit"]["epochs"] == len(report["fit"]["train_loss"]) >= 1
    assert np.isfinite(report["fit"]["train_loss"]).all()
    assert report["buffer_digest"] and len(report["fit"]["elites"]) == model.cfg.elites


def test_eval_model_writes_json_and_netcdf(trained, pendulum_file, tmp_path, run_cli):
    out, nc = tmp_path / "err.json", tmp_path / "err.nc"
    code, _, err = run_cli(
        "eval-model", trained, pendulum_file, "--out", out, "--netcdf", nc, "--horizon", "4"
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert np.isfinite([report["state_mse"], report["reward_mse"], report["nll"]]).all()
    assert len(report["open_loop_state_mse"]) == 4
    ds = xr.load_dataset(nc, engine="h5netcdf")
    np.testing.assert_allclose(ds["open_loop_state_mse"].values, report["open_loop_state_mse"])
    assert ds.attrs["weighting"] == "occupancy"


def test_occupancy_weighting_is_gamma_to_the_episode_step(trained, pendulum_file):
    model, _ = load_dynamics_model(trained)
    cols = read_buffer(pendulum_file).buffer.columns()
    w = occupancy_weights(cols["episode_steps"], 0.9)
    np.testing.assert_allclose(w, 0.9 ** cols["episode_steps"])
    errors = evaluate_model(model, cols, w, horizon=3, device=torch.device("cpu"))
    # Recompute the one-step state error by hand.
    with torch.no_grad():
        pred, _ = model.predict(
            torch.from_numpy(cols["observations"]), torch.from_numpy(cols["actions"])
        )
    scale = (cols["next_observations"] - cols["observations"]).std(0)
    se = (((pred.numpy() - cols["next_observations"]) / scale) ** 2).mean(1)
    assert errors.state_mse == pytest.approx(np.sum(se * w) / np.sum(w), rel=1e-4)
    # Horizon 1 of the open-loop error is the one-step error.
    assert errors.open_loop_state_mse[0] == pytest.approx(errors.state_mse, rel=1e-6)
    assert errors.open_loop_starts[0] == len(w) > errors.open_loop_starts[2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.ones(10), "expected (2000,)"),
        (np.r_[np.ones(1999), -2.0], "negative"),
        (np.r_[np.ones(1999), np.nan], "NaN"),
        (np.zeros(2000), "all zero"),
    ],
)
def test_bad_weights_files_are_one_line_errors(content, message, pendulum_file, tmp_path, run_cli):
    weights = tmp_path / "w.npy"
    np.save(weights, content)
    code, _, err = run_cli(
        "train-model",
        pendulum_file,
        "--out",
        tmp_path / "m.pt",
        "--profile",
        SMOKE,
        "--prefix-end",
        "2000",
        "--weights",
        weights,
    )
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "m.pt").exists()


def test_weights_file_that_is_not_an_array_is_refused(pendulum_file, tmp_path, run_cli):
    weights = tmp_path / "w.npy"
    weights.write_text("0.5, 0.5")
    code, _, err = run_cli(
        "train-model",
        pendulum_file,
        "--out",
        tmp_path / "m.pt",
        "--profile",
        SMOKE,
        "--weights",
        weights,
    )
    assert code == 2 and "not a weights file" in err


def test_model_file_that_is_not_a_model_is_refused(pendulum_file, tmp_path, run_cli):
    bogus = tmp_path / "bogus.pt"
    torch.save({"hello": torch.zeros(1)}, bogus)
    code, _, err = run_cli("eval-model", bogus, pendulum_file, "--out", tmp_path / "e.json")
    assert code == 2 and "not a tomrepro dynamics model" in err and err.count("\n") == 1


class _Payload:
    """An arbitrary object: torch.save pickles it, weights_only loading must refuse it."""


@pytest.mark.parametrize("kind", ["plain pickle", "torch file with an object", "torch tensor"])
def test_foreign_model_files_are_one_line_errors(kind, tmp_path, run_cli, buffer_file):
    import pickle

    import torch

    path = tmp_path / "model.pt"
    if kind == "plain pickle":
        path.write_bytes(pickle.dumps({"a": 1}))
    elif kind == "torch file with an object":
        torch.save({"format": _Payload()}, path)
    else:
        torch.save(torch.zeros(3), path)
    before = path.read_bytes()
    code, _, err = run_cli("eval-model", path, buffer_file, "--out", tmp_path / "e.json")
    assert code == 2 and err.count("\n") == 1 and "not a tomrepro dynamics model" in err, err
    assert path.read_bytes() == before and not (tmp_path / "e.json").exists()
