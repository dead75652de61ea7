"""The CUDA paths: a population's one-call kernels and stacked fits on a GPU, and a short MBPO
population there. Skipped without a GPU (CI has none); `benchmarks/gpu_session.sh` runs them on
the device machine when a session is lent one."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch

from tomrepro.core.config import ModelConfig, SACConfig, load_profile, with_overrides
from tomrepro.learning.dynamics_model import DynamicsModel, model_inputs, model_targets
from tomrepro.learning.model_training import FitJob, prepare_fit, train_fits
from tomrepro.learning.sac import SAC, SACBatch, SACRun
from tomrepro.loops.mbpo import MBPORun
from tomrepro.loops.mbpo_population import run_population

from .conftest import REPO_ROOT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
CUDA = torch.device("cuda")


def _rows(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    s, a = rng.normal(size=(n, 3)).astype(np.float32), rng.uniform(-1, 1, (n, 2))
    s2 = (0.9 * s + a.astype(np.float32) @ rng.normal(size=(2, 3)).astype(np.float32)).astype(
        np.float32
    )
    return model_inputs(s, a.astype(np.float32)), model_targets(s, s2, s.sum(1))


def _job(cfg: ModelConfig, r: int) -> FitJob:
    x, y = _rows(r, 500 + 100 * r)
    return FitJob(DynamicsModel(cfg, 3, 2), x, y, None, torch.Generator().manual_seed(r))


def test_stacked_fits_on_a_gpu_give_the_fits_alone_up_to_rounding():
    cfg = ModelConfig(
        hidden_sizes=(32, 32), ensemble_size=3, elites=2, max_epochs=3, batches_per_epoch=5
    )
    together = [_job(cfg, r) for r in range(4)]
    train_fits([prepare_fit(job, CUDA) for job in together])
    for r, own in enumerate(together):
        alone = _job(cfg, r)
        train_fits([prepare_fit(alone, CUDA)])
        for a, b in zip(alone.model.parameters(), own.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_sac_population_on_a_gpu_follows_each_run_alone_closely():
    """30 updates; one matmul over all runs on a GPU rounds differently from a run alone, so
    this is a closeness check, not the CPU's bit-identity."""
    cfg = SACConfig(hidden_sizes=(64, 64), batch_size=32)
    ones = np.ones(2, dtype=np.float32)
    g = torch.Generator().manual_seed(0)
    batches = [
        SACBatch(
            torch.randn(3, 32, 5, generator=g).to(CUDA),
            (torch.rand(3, 32, 2, generator=g) * 2 - 1).to(CUDA),
            torch.randn(3, 32, generator=g).to(CUDA),
            torch.randn(3, 32, 5, generator=g).to(CUDA),
            torch.ones(3, 32).to(CUDA),
        )
        for _ in range(30)
    ]

    def generators(seeds):
        return [torch.Generator(device=CUDA).manual_seed(s) for s in seeds]

    population = SAC(5, 2, -ones, ones, cfg, CUDA, generators(range(3)))
    for batch in batches:
        population.update(batch)
    for r in range(3):
        alone = SAC(5, 2, -ones, ones, cfg, CUDA, generators([r]))
        for batch in batches:
            alone.update(SACBatch(*(getattr(batch, f.name)[r : r + 1] for f in fields(batch))))
        own, single = SACRun(population, r).state_dict(), SACRun(alone, 0).state_dict()
        for key in ("actor", "critic"):
            for a, b in zip(own[key].values(), single[key].values(), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_a_short_mbpo_population_runs_on_a_gpu(tmp_path):
    profile = with_overrides(load_profile("smoke", REPO_ROOT / "pipelines"), "mbpo", env_steps=400)
    runs = [
        MBPORun(profile, tmp_path / m, learner=m, device="cuda", progress=False)
        for m in ("mle", "tom")
    ]
    for root in run_population(runs):
        curve = pd.read_csv(root / "curve.csv")
        assert np.isfinite(curve["return_mean"]).all() and len(curve) >= 2
