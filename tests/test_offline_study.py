"""`tomrepro offline-study` on the smoke profile: dims and finiteness, determinism, resume after a
real SIGKILL, C1 statistics that mean what they say, and refusals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.conftest import REPO_ROOT
from tomrepro.core.config import load_profile
from tomrepro.learning.tom_weights import recency_statistics
from tomrepro.loops.collect import Collector
from tomrepro.loops.offline_study import OfflineStudy

SMOKE = REPO_ROOT / "pipelines" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke_buffer(tmp_path_factory) -> Path:
    return Collector(
        load_profile(SMOKE), tmp_path_factory.mktemp("collect") / "run", progress=False
    ).run()


@pytest.fixture(scope="module")
def study(smoke_buffer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "run"
    return OfflineStudy(load_profile(SMOKE), smoke_buffer, out, progress=False).run()


def test_dataset_has_the_expected_dims_and_finite_cells(study):
    ds = xr.load_dataset(study, engine="h5netcdf")
    cfg = load_profile(SMOKE).offline_study
    assert dict(ds.sizes) == {
        "learner": 4,
        "snapshot": 2,
        "seed": 2,
        "horizon": cfg.horizon,
        "age_bin": cfg.age_bins,
    }
    for name in (
        "on_policy_state_mse",
        "on_policy_reward_mse",
        "on_policy_nll",
        "buffer_state_mse",
        "open_loop_state_mse",
        "weight_by_age",
        "ess_share",
        "newest_oldest_ratio",
    ):
        assert np.isfinite(ds[name].values).all(), name
    # Spearman is undefined for constant (MLE) weights and defined for every other method.
    assert np.isnan(ds["spearman_recency"].sel(learner="mle")).all()
    assert np.isfinite(ds["spearman_recency"].drop_sel(learner="mle")).all()
    np.testing.assert_allclose(ds["weight_by_age"].sel(learner="mle"), 1.0)
    assert ds.attrs["buffer_digest"] and ds.attrs["task_id"] == "InvertedPendulum-v5"
    for table in ("study.csv", "open_loop.csv", "weight_by_age.csv", "metrics.json"):
        assert (study.parent / table).stat().st_size > 0


def test_pmac_weights_follow_the_official_group_masses(study):
    """Snapshot versions: the exploration group keeps mass 0.9^G (the official initial group),
    each later version 0.1 * 0.9^age, shared equally; so at the first snapshots the large
    exploration group outweighs each policy row, and among policy rows weight rises."""
    ds = xr.load_dataset(study, engine="h5netcdf")
    assert (ds["ess_share"].sel(learner="pmac") < 1).all()
    by_age = ds["weight_by_age"].sel(learner="pmac", seed=0)
    first = by_age.isel(snapshot=0).values  # smoke k=2: 1000 exploration rows, 500 of version 1
    np.testing.assert_allclose(first[:2], 0.9 / 1000 * 1500)
    assert first[-1] == pytest.approx(0.1 / 500 * 1500)


def test_killed_study_resumes_to_the_identical_dataset(smoke_buffer, study, tmp_path):
    """SIGKILLed after 5 of 16 cells, rerun: identical to the `study` fixture, which ran
    uninterrupted in this process (so this also checks same seed -> same dataset)."""
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "tomrepro", "offline-study", str(smoke_buffer), "--out", str(out),
        "--profile", str(SMOKE), "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list((out / "cells").glob("*.json"))) >= 5:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the study finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "cells").glob("*.json")))
    assert 5 <= done < 16 and not (out / "study.nc").exists()
    assert subprocess.run(cmd, check=False).returncode == 0
    xr.testing.assert_identical(
        xr.load_dataset(out / "study.nc", engine="h5netcdf"),
        xr.load_dataset(study, engine="h5netcdf"),
    )


def test_recency_statistics_on_known_weights():
    steps = np.arange(100)
    stats = recency_statistics(steps.astype(float) + 1, steps, bins=4)
    np.testing.assert_allclose(stats["weight_by_age"], [13, 38, 63, 88])
    assert stats["spearman_recency"] == pytest.approx(1.0)
    assert stats["newest_oldest_ratio"] == pytest.approx(88 / 13)


def test_missing_snapshot_is_a_one_line_error(smoke_buffer, tmp_path, run_cli):
    profile = tmp_path / "bad.yaml"
    profile.write_text(SMOKE.read_text().replace("snapshots: [2, 4]", "snapshots: [2, 40]"))
    code, _, err = run_cli(
        "offline-study", smoke_buffer, "--out", tmp_path / "o", "--profile", profile, "--quiet"
    )
    assert (
        code == 2
        and err.count("\n") == 1
        and "no policy snapshot 40 (snapshots: 1, 2, 3, 4)" in err
    )


def test_snapshot_with_no_data_before_it_is_a_one_line_error(tmp_path, run_cli):
    import torch

    from tomrepro.core.buffer_file import BufferMetadata, PolicySnapshot, write_buffer
    from tomrepro.core.tasks import get_task
    from tomrepro.learning.sac import SquashedGaussianActor
    from tomrepro.loops.rollout import rollout

    actor = SquashedGaussianActor(4, 1, (8,), np.array([-3.0]), np.array([3.0]))
    actor.net.reset_parameters(torch.Generator().manual_seed(0))
    tensors = {k: v.numpy() for k, v in actor.state_dict().items()}
    buffer_path = tmp_path / "b.h5"
    write_buffer(
        buffer_path,
        rollout(get_task("InvertedPendulum-v5"), 300, 0, policy_version=0),
        BufferMetadata("InvertedPendulum-v5", 0),
        [PolicySnapshot(1, 0, tensors)],
    )
    profile = tmp_path / "p.yaml"
    profile.write_text(SMOKE.read_text().replace("snapshots: [2, 4]", "snapshots: [1]"))
    code, _, err = run_cli(
        "offline-study", buffer_path, "--out", tmp_path / "o", "--profile", profile, "--quiet"
    )
    assert code == 2 and err.count("\n") == 1 and "no transitions before env step 0" in err
