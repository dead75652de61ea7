"""Dynamics models and weighted MLE: recovery of known dynamics, the weighting effect TOM relies
on, equivalence of the two weighting estimators at w = 1, determinism, and weight validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tomrepro.core.config import ModelConfig
from tomrepro.core.errors import TomreproError
from tomrepro.learning.dynamics_model import (
    DynamicsModel,
    load_dynamics_model,
    model_inputs,
    model_targets,
)
from tomrepro.learning.model_training import FitJob, fit_dynamics, prepare_fit, train_fits

CPU = torch.device("cpu")
A = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.95]])
B = np.array([[0.5, -0.2, 0.1], [0.0, 0.3, -0.4]])
NOISE = 0.05


def _linear_gaussian(rng: np.random.Generator, n: int):
    s = rng.normal(size=(n, 3)).astype(np.float32)
    a = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    s2 = (s @ A.T + a @ B + NOISE * rng.normal(size=(n, 3))).astype(np.float32)
    r = s.sum(1).astype(np.float32)
    return s, a, s2, r


def _fit(cfg: ModelConfig, s, a, s2, r, weights=None, seed=0) -> DynamicsModel:
    model = DynamicsModel(cfg, s.shape[1], a.shape[1])
    fit_dynamics(
        model,
        model_inputs(s, a),
        model_targets(s, s2, r),
        weights,
        torch.Generator().manual_seed(seed),
        CPU,
    )
    return model


def test_ensemble_recovers_linear_dynamics_and_noise_scale():
    s, a, s2, r = _linear_gaussian(np.random.default_rng(0), 4000)
    cfg = ModelConfig(
        hidden_sizes=(64, 64), ensemble_size=5, elites=3, max_epochs=60, batches_per_epoch=50
    )
    model = _fit(cfg, s, a, s2, r)
    ts, ta, _, _ = _linear_gaussian(np.random.default_rng(1), 1000)
    pred, reward = model.predict(torch.from_numpy(ts), torch.from_numpy(ta))
    mean_error = np.sqrt(((pred.numpy() - (ts @ A.T + ta @ B)) ** 2).mean())
    assert mean_error < 0.3 * NOISE, mean_error
    assert np.sqrt(np.mean((reward.numpy() - ts.sum(1)) ** 2)) < 0.03
    with torch.no_grad():
        x = model.normalize_inputs(torch.from_numpy(model_inputs(ts, ta)))
        _, logvar = model.net(x.unsqueeze(0).expand(model.members, -1, -1))
        sd = (torch.exp(0.5 * logvar[model.elites, :, :3]) * model.target_std[:3]).mean().item()
    assert abs(sd - NOISE) < 0.2 * NOISE, sd


def test_mdn_fits_linear_dynamics():
    s, a, s2, r = _linear_gaussian(np.random.default_rng(0), 3000)
    cfg = ModelConfig(
        family="mdn",
        hidden_sizes=(64, 64),
        elites=1,
        components=3,
        max_epochs=40,
        batches_per_epoch=50,
    )
    model = _fit(cfg, s, a, s2, r)
    ts, ta, _, _ = _linear_gaussian(np.random.default_rng(1), 1000)
    pred, _ = model.predict(torch.from_numpy(ts), torch.from_numpy(ta))
    assert np.sqrt(((pred.numpy() - (ts @ A.T + ta @ B)) ** 2).mean()) < 0.5 * NOISE


def _two_regions(rng: np.random.Generator, n: int):
    s = rng.uniform(-3, 3, (n, 1)).astype(np.float32)
    a = rng.uniform(-1, 1, (n, 1)).astype(np.float32)
    s2 = (s + np.sin(3 * s) + 0.3 * a + 0.02 * rng.normal(size=(n, 1))).astype(np.float32)
    return s, a, s2, np.cos(2 * s[:, 0]).astype(np.float32)


@pytest.mark.parametrize("weighting", ["resample", "loss"])
def test_weights_focus_accuracy_on_their_region(weighting):
    """A small model cannot fit everything; weights decide where it is accurate."""
    s, a, s2, r = _two_regions(np.random.default_rng(0), 3000)
    ts, ta, ts2, _ = _two_regions(np.random.default_rng(100), 2000)
    cfg = ModelConfig(
        weighting=weighting,
        hidden_sizes=(16, 16),
        ensemble_size=3,
        elites=2,
        max_epochs=15,
        batches_per_epoch=40,
        batch_size=64,
    )
    focus = np.where(s[:, 0] < 0, 1.0, 0.01)
    errors = {}
    for name, weights in (("uniform", None), ("focused", focus)):
        pred, _ = _fit(cfg, s, a, s2, r, weights).predict(
            torch.from_numpy(ts), torch.from_numpy(ta)
        )
        se = ((pred.numpy() - ts2) ** 2)[:, 0]
        errors[name] = (se[ts[:, 0] < 0].mean(), se[ts[:, 0] >= 0].mean())
    assert errors["focused"][0] < 0.85 * errors["uniform"][0], errors
    assert errors["focused"][1] > 2.0 * errors["uniform"][1], errors


def test_resample_and_loss_weighting_coincide_when_all_weights_are_one():
    s, a, s2, r = _linear_gaussian(np.random.default_rng(0), 1000)
    base = dict(
        hidden_sizes=(32, 32), ensemble_size=3, elites=2, max_epochs=4, batches_per_epoch=10
    )
    models = [
        _fit(ModelConfig(weighting=w, **base), s, a, s2, r, np.ones(1000))
        for w in ("resample", "loss")
    ]
    for p, q in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_same_seed_gives_identical_model_files(tmp_path):
    s, a, s2, r = _linear_gaussian(np.random.default_rng(0), 800)
    cfg = ModelConfig(
        hidden_sizes=(32, 32), ensemble_size=3, elites=2, max_epochs=3, batches_per_epoch=10
    )
    for name in ("a.pt", "b.pt"):
        _fit(cfg, s, a, s2, r, seed=5).save(tmp_path / name)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded, _ = load_dynamics_model(tmp_path / "a.pt")
    original = _fit(cfg, s, a, s2, r, seed=5)
    x = torch.from_numpy(s[:10])
    u = torch.from_numpy(a[:10])
    torch.testing.assert_close(loaded.predict(x, u)[0], original.predict(x, u)[0])


def test_early_stopping_restores_best_and_picks_elites():
    s, a, s2, r = _linear_gaussian(np.random.default_rng(0), 1500)
    cfg = ModelConfig(
        hidden_sizes=(32, 32),
        ensemble_size=4,
        elites=2,
        max_epochs=200,
        batches_per_epoch=20,
        patience=3,
    )
    model = DynamicsModel(cfg, 3, 2)
    log = fit_dynamics(
        model,
        model_inputs(s, a),
        model_targets(s, s2, r),
        None,
        torch.Generator().manual_seed(0),
        CPU,
    )
    assert log.epochs < 200, "early stopping never triggered"
    assert log.epochs - 1 - max(log.best_epoch) == cfg.patience
    best = np.min(np.array(log.holdout_loss), axis=0)
    assert sorted(log.elites) == sorted(np.argsort(best)[:2].tolist())


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        (np.ones(5), "shape"),
        (np.r_[np.ones(99), -1.0], "negative"),
        (np.r_[np.ones(99), np.nan], "NaN"),
        (np.zeros(100), "all zero"),
    ],
)
def test_bad_weights_are_refused(weights, message):
    s, a, s2, r = _linear_gaussian(np.random.default_rng(0), 100)
    cfg = ModelConfig(hidden_sizes=(8,), ensemble_size=2, elites=1, max_epochs=1)
    with pytest.raises(TomreproError, match=message):
        _fit(cfg, s, a, s2, r, weights)


def _jobs(cfg: ModelConfig) -> list[FitJob]:
    """Four fits that differ in everything a population's fits may: rows, weights, target
    weights, warm start, epoch caps, and so in when early stopping ends them."""
    jobs = []
    for r, (n, weighted, epochs) in enumerate([(600, False, 6), (900, True, 1), (700, True, 6)]):
        s, a, s2, r_ = _linear_gaussian(np.random.default_rng(10 + r), n)
        w = np.random.default_rng(r).gamma(0.5, size=n) if weighted else None
        model = DynamicsModel(cfg, 3, 2)
        jobs.append(
            FitJob(
                model, model_inputs(s, a), model_targets(s, s2, r_), w,
                torch.Generator().manual_seed(r), max_epochs=epochs,
            )
        )  # fmt: skip
    # Another minibatch schedule: a stack of its own.
    s, a, s2, r_ = _linear_gaussian(np.random.default_rng(20), 500)
    jobs.append(
        FitJob(
            DynamicsModel(cfg, 3, 2), model_inputs(s, a), model_targets(s, s2, r_), None,
            torch.Generator().manual_seed(3), batches_per_epoch=3,
        )
    )  # fmt: skip
    return jobs


@pytest.mark.parametrize(
    ("family", "weighting"), [("ensemble", "resample"), ("mdn", "resample"), ("mdn", "loss")]
)
def test_fits_trained_together_equal_each_fit_alone(family, weighting):
    """Bit for bit on CPU: parameters, elites and the whole fit log of every fit."""
    cfg = ModelConfig(
        family=family, hidden_sizes=(32, 32), ensemble_size=3, elites=2 if family == "ensemble"
        else 1, components=3, max_epochs=6, batches_per_epoch=4, patience=1,
        min_improvement=0.05, weighting=weighting,
    )  # fmt: skip
    together = _jobs(cfg)
    logs = train_fits([prepare_fit(job, CPU) for job in together])
    alone = _jobs(cfg)
    epochs = []
    for job, own, log in zip(alone, together, logs, strict=True):
        single = fit_dynamics(
            job.model, job.inputs, job.targets, job.weights, job.generator, CPU,
            max_epochs=job.max_epochs, batches_per_epoch=job.batches_per_epoch,
        )  # fmt: skip
        for key, value in single.as_dict().items():
            if key != "seconds":
                assert log.as_dict()[key] == value, key
        for (name, a), b in zip(
            job.model.state_dict().items(), own.model.state_dict().values(), strict=True
        ):
            assert torch.equal(a, b), name
        assert torch.equal(job.generator.get_state(), own.generator.get_state())
        epochs.append(single.epochs)
    assert len(set(epochs)) > 1  # the fits ended at different epochs


def test_the_gpu_way_of_stacking_fits_gives_the_same_fits_up_to_rounding(monkeypatch):
    """The one-call path a GPU takes (all members in one matmul, one Adam over the stack), run
    on CPU: the same fits as alone up to float rounding (its CUDA run is untested)."""
    from tomrepro.learning import model_training
    from tomrepro.learning.networks import BatchedLinear

    cfg = ModelConfig(
        family="ensemble", hidden_sizes=(32, 32), ensemble_size=3, elites=2, max_epochs=6,
        batches_per_epoch=4, patience=5,
    )  # fmt: skip
    alone = _jobs(cfg)
    single = [
        fit_dynamics(
            job.model,
            job.inputs,
            job.targets,
            job.weights,
            job.generator,
            CPU,
            max_epochs=job.max_epochs,
            batches_per_epoch=job.batches_per_epoch,
        )
        for job in alone
    ]
    monkeypatch.setattr(model_training, "exact_per_fit", lambda device: False)
    monkeypatch.setattr(
        BatchedLinear, "forward", lambda self, x: torch.baddbmm(self.bias, x, self.weight)
    )
    together = _jobs(cfg)
    logs = train_fits([prepare_fit(job, CPU) for job in together])
    for job, own, log, first in zip(alone, together, logs, single, strict=True):
        assert log.epochs == first.epochs and log.elites == first.elites
        for a, b in zip(job.model.parameters(), own.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
