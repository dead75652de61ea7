"""`tomrepro sweep` through a real local Ray: runs finish, a failing run is reported while the
other goes on, and a second sweep skips what is complete."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from .conftest import REPO_ROOT  # noqa: F401  (sets the Ray and DVC environment)


@pytest.mark.parametrize("population", ["1", pytest.param("2", marks=pytest.mark.slow)])
def test_two_run_sweep_reports_failure_then_skips(run_cli, tmp_path, population):
    """Runs alone (one Ray task each) or packed into one population: the same outcome."""
    out = tmp_path / "sweep"
    blocker = out / "InvertedPendulum-v5" / "mle"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")  # the mle run cannot create its directory
    args = (
        "sweep", "--profile", "smoke", "--kind", "scratch", "--out", out,
        "--learners", "mle,pmac", "--seeds", "0", "--env-steps", "400", "--num-cpus", "2",
        "--runs-per-population", population, "--quiet",
    )  # fmt: skip
    code, stdout, err = run_cli(*args)
    assert code == 2 and "1 of 2 runs failed" in err
    runs = {k.split("/")[1]: r for k, r in json.loads((out / "sweep.json").read_text()).items()}
    assert runs["pmac"]["status"] == "done"
    assert (
        runs["mle"]["status"] == "failed"
        and "cannot create output directory" in runs["mle"]["error"]
    )

    blocker.unlink()
    code, stdout, _ = run_cli(*args)
    assert code == 0
    runs = {k.split("/")[1]: r for k, r in json.loads((out / "sweep.json").read_text()).items()}
    assert runs["pmac"]["status"] == "skipped" and runs["mle"]["status"] == "done"

    code, stdout, _ = run_cli(*args)
    assert code == 0 and stdout.count("skipped") == 2
    curves = pd.read_csv(out / "curves.csv")
    assert set(curves["learner"]) == {"mle", "pmac"}
    assert set(curves["env_step"]) == {0, 200, 400}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_gpus_per_run_without_a_gpu_is_refused(run_cli, tmp_path):
    code, _, err = run_cli(
        "sweep", "--profile", "smoke", "--kind", "scratch", "--out", tmp_path / "s",
        "--learners", "mle", "--gpus-per-run", "0.25", "--num-cpus", "1", "--quiet",
    )  # fmt: skip
    assert code == 2 and "no GPU" in err and err.count("\n") == 1, err  # before Ray starts


def test_continuation_sweep_needs_a_source(run_cli, tmp_path):
    code, _, err = run_cli(
        "sweep", "--profile", "smoke", "--kind", "continue", "--out", tmp_path / "s", "--quiet"
    )
    assert code == 2 and "--source" in err
