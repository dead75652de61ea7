"""`tomrepro offline-study` on the smoke profile's two collect runs: a `run` dimension whose runs
have their own evaluation episodes and seeds, dims and finiteness, determinism, resume after a
real SIGKILL, a changed set of runs that keeps finished cells, C1 statistics that mean what they
say, and refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from tests.conftest import REPO_ROOT, copied_collect
from tomrepro.analysis.datasets import offline_dataset
from tomrepro.core.buffer_file import read_buffer
from tomrepro.core.config import load_profile
from tomrepro.core.errors import TomreproError
from tomrepro.learning.tom_weights import recency_statistics
from tomrepro.loops.collect import run_dir
from tomrepro.loops.offline_study import Cell, OfflineStudy, StudyPaths, study_buffers

SMOKE = REPO_ROOT / "pipelines" / "smoke.yaml"
PROFILE = load_profile(SMOKE)
RUNS = list(PROFILE.collect.seeds)


@pytest.fixture(scope="module")
def collect_dir(smoke_collect, tmp_path_factory) -> Path:
    return copied_collect(smoke_collect, tmp_path_factory)


@pytest.fixture(scope="module")
def study(collect_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "run"
    return OfflineStudy(PROFILE, collect_dir, out, progress=False).run()


def test_dataset_has_a_run_dimension_and_finite_cells(study, collect_dir):
    assert len(RUNS) >= 2
    ds = xr.load_dataset(study, engine="h5netcdf")
    cfg = PROFILE.offline_study
    assert dict(ds.sizes) == {
        "run": len(RUNS),
        "learner": len(cfg.learners),
        "snapshot": len(cfg.snapshots),
        "seed": len(cfg.seeds),
        "horizon": cfg.horizon,
        "age_bin": cfg.age_bins,
    }
    assert ds.run.values.tolist() == RUNS
    assert all(ds[v].dims[0] == "run" for v in ds.data_vars)
    for run in RUNS:
        steps = read_buffer(run_dir(collect_dir, run) / "buffer.h5").snapshot_steps
        assert ds.env_step.sel(run=run).values.tolist() == [steps[k] for k in cfg.snapshots]
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
    assert ds.attrs["task_id"] == "InvertedPendulum-v5"
    assert sorted(map(int, json.loads(ds.attrs["buffer_digests"]))) == RUNS
    for table in ("study.csv", "open_loop.csv", "weight_by_age.csv", "timings.csv"):
        assert sorted(pd.read_csv(study.parent / table)["run"].unique()) == RUNS, table
    assert (study.parent / "metrics.json").stat().st_size > 0
    assert offline_dataset(study).sizes["run"] == len(RUNS)


def test_each_run_has_its_own_evaluation_episodes_and_fit_seeds(study):
    paths, k = StudyPaths(study.parent), PROFILE.offline_study.snapshots[0]
    episodes = [read_buffer(paths.eval_episodes(run, k)) for run in RUNS]
    first, second = (e.buffer.columns() for e in episodes[:2])
    assert episodes[0].metadata.seed != episodes[1].metadata.seed
    assert not np.allclose(first["observations"][0], second["observations"][0])
    ds = xr.load_dataset(study, engine="h5netcdf")
    mse = ds.on_policy_state_mse.sel(learner="mle")
    assert not np.allclose(mse.sel(run=RUNS[0]), mse.sel(run=RUNS[1]))
    cells = [Cell(run, k, "mle", PROFILE.offline_study.seeds[0]) for run in RUNS]
    fit_seeds = {json.loads(paths.cell(c).read_text())["fit_seed"] for c in cells}
    assert len(fit_seeds) == len(RUNS)


def test_pmac_weights_follow_the_official_group_masses(study):
    """Snapshot versions: the exploration group keeps mass 0.9^G (the official initial group),
    each later version 0.1 * 0.9^age, shared equally; so at the first snapshots the large
    exploration group outweighs each policy row, and among policy rows weight rises."""
    ds = xr.load_dataset(study, engine="h5netcdf")
    assert (ds["ess_share"].sel(learner="pmac") < 1).all()
    for run in RUNS:
        by_age = ds["weight_by_age"].sel(run=run, learner="pmac", seed=0)
        first = by_age.isel(snapshot=0).values  # smoke k=2: 1000 exploration rows, 500 of v1
        np.testing.assert_allclose(first[:2], 0.9 / 1000 * 1500)
        assert first[-1] == pytest.approx(0.1 / 500 * 1500)


# Slow (about 45 s): collect and MBPO runs' kill-and-resume tests stay in the default suite.
@pytest.mark.slow
def test_killed_study_resumes_to_the_identical_dataset(collect_dir, study, tmp_path):
    """SIGKILLed after 5 of 16 cells, rerun: identical to the `study` fixture, which ran
    uninterrupted in this process (so this also checks same seed -> same dataset)."""
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "tomrepro", "offline-study", str(collect_dir), "--out", str(out),
        "--profile", str(SMOKE), "--quiet",
    ]  # fmt: skip
    total = len(RUNS) * len(OfflineStudy(PROFILE, collect_dir, out).cells(RUNS[0]))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(out.glob("runs/*/cells/*.json"))) >= 5:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the study finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("runs/*/cells/*.json")))
    assert 5 <= done < total and not (out / "study.nc").exists()
    assert subprocess.run(cmd, check=False).returncode == 0
    xr.testing.assert_identical(
        xr.load_dataset(out / "study.nc", engine="h5netcdf"),
        xr.load_dataset(study, engine="h5netcdf"),
    )


def test_another_set_of_runs_is_refused_then_reassembled_keeping_finished_cells(
    study, collect_dir, tmp_path
):
    out = tmp_path / "study"
    shutil.copytree(study.parent, out)
    cells = sorted(out.glob(f"runs/seed_{RUNS[1]}/cells/*.json"))
    before = [c.stat().st_mtime_ns for c in cells]
    one_run = [run_dir(collect_dir, RUNS[1]) / "buffer.h5"]
    with pytest.raises(TomreproError, match="different config"):
        OfflineStudy(PROFILE, one_run, out, progress=False).run()
    OfflineStudy(PROFILE, one_run, out, overwrite=True, progress=False).run()
    assert [c.stat().st_mtime_ns for c in cells] == before
    xr.testing.assert_equal(
        xr.load_dataset(out / "study.nc", engine="h5netcdf"),
        xr.load_dataset(study, engine="h5netcdf").sel(run=[RUNS[1]]),
    )


def test_sources_name_runs_by_their_collect_seed(collect_dir, tmp_path):
    files = {run: run_dir(collect_dir, run) / "buffer.h5" for run in RUNS}
    assert study_buffers(PROFILE, [collect_dir]) == files
    assert study_buffers(PROFILE, list(reversed(files.values()))) == files
    assert study_buffers(PROFILE, [run_dir(collect_dir, RUNS[1])]) == {RUNS[1]: files[RUNS[1]]}
    with pytest.raises(TomreproError, match=f"collect run {RUNS[0]} given twice"):
        study_buffers(PROFILE, [collect_dir, files[RUNS[0]]])
    partial = tmp_path / "partial"
    shutil.copytree(run_dir(collect_dir, RUNS[0]), run_dir(partial, RUNS[0]))
    with pytest.raises(TomreproError, match=f"collect run {RUNS[1]} has no buffer"):
        study_buffers(PROFILE, [partial])
    renamed = tmp_path / "renamed"
    shutil.copytree(run_dir(collect_dir, RUNS[0]), run_dir(renamed, RUNS[1]))
    shutil.copytree(run_dir(collect_dir, RUNS[1]), run_dir(renamed, RUNS[0]))
    with pytest.raises(TomreproError, match=f"collected with seed {RUNS[1]}, not {RUNS[0]}"):
        study_buffers(PROFILE, [renamed])


def test_a_study_without_runs_is_refused_by_the_analysis(study, tmp_path):
    flat = tmp_path / "flat.nc"
    xr.load_dataset(study, engine="h5netcdf").isel(run=0, drop=True).to_netcdf(
        flat, engine="h5netcdf"
    )
    with pytest.raises(TomreproError, match="without a `run` dimension") as err:
        offline_dataset(flat)
    assert "\n" not in str(err.value)


def test_recency_statistics_on_known_weights():
    steps = np.arange(100)
    stats = recency_statistics(steps.astype(float) + 1, steps, bins=4)
    np.testing.assert_allclose(stats["weight_by_age"], [13, 38, 63, 88])
    assert stats["spearman_recency"] == pytest.approx(1.0)
    assert stats["newest_oldest_ratio"] == pytest.approx(88 / 13)


def test_missing_snapshot_is_a_one_line_error(collect_dir, tmp_path, run_cli):
    profile = tmp_path / "bad.yaml"
    profile.write_text(SMOKE.read_text().replace("snapshots: [2, 4]", "snapshots: [2, 40]"))
    files = [run_dir(collect_dir, run) / "buffer.h5" for run in RUNS]
    code, _, err = run_cli(
        "offline-study", *files, "--out", tmp_path / "o", "--profile", profile, "--quiet"
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
