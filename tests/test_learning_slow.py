"""Learning sanity on real tasks (slow; `make test-slow`). Prints the learning curves."""

from __future__ import annotations

import pytest

from tests.conftest import REPO_ROOT
from tomrepro.core.buffer_file import read_buffer
from tomrepro.core.buffer_summary import learning_curve
from tomrepro.core.config import load_profile, with_overrides
from tomrepro.loops.collect import Collector

pytestmark = pytest.mark.slow


def _collect(tmp_path, **overrides):
    profile = with_overrides(
        load_profile("default", REPO_ROOT / "pipelines"), "collect", **overrides
    )
    path = Collector(profile, tmp_path / "run", device="cpu", progress=False).run()
    curve = learning_curve(read_buffer(path).buffer.columns(), 1000)
    for point in curve:
        print(point)
    return curve


def test_sac_solves_inverted_pendulum_within_20000_steps(tmp_path):
    curve = _collect(
        tmp_path,
        task="InvertedPendulum-v5",
        env_steps=20_000,
        random_steps=5000,
        snapshot_every=1000,
    )
    assert max(p["max_return"] for p in curve) >= 1000


def test_sac_return_rises_on_hopper_within_the_default_budget(tmp_path):
    default = load_profile("default", REPO_ROOT / "pipelines").collect
    curve = _collect(tmp_path, task="Hopper-v5")
    random_phase = [p["mean_return"] for p in curve if p["env_step"] < default.random_steps]
    last = [p["mean_return"] for p in curve if p["env_step"] >= default.env_steps - 5000]
    assert min(last) > 3 * max(random_phase), (random_phase, last)


def test_mbpo_mle_solves_inverted_pendulum_in_fewer_steps_than_sac(tmp_path):
    import pandas as pd

    from tomrepro.loops.mbpo import MBPORun

    profile = load_profile("default", REPO_ROOT / "pipelines")
    profile = with_overrides(
        profile,
        "mbpo",
        tasks=["InvertedPendulum-v5"],
        env_steps=5000,
        epoch_length=250,
        random_steps=500,
        eval_episodes=5,
    )
    root = MBPORun(profile, tmp_path / "mbpo", learner="mle", device="cpu", progress=False).run()
    curve = pd.read_csv(root / "curve.csv")
    print(curve[["env_step", "return_mean", "return_min", "model_holdout_loss"]].to_string())
    solved = curve[curve["return_min"] >= 1000]
    assert len(solved), "MBPO-MLE never reached return 1000 in 5000 env steps"
    steps = int(solved["env_step"].iloc[0])
    # Plain SAC from the collect stage, same random phase, the same number of env steps.
    sac = _collect(
        tmp_path, task="InvertedPendulum-v5", env_steps=steps, random_steps=500, snapshot_every=250
    )
    assert max(p["max_return"] for p in sac) < 1000, (steps, sac)
