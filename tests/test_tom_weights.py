"""TOM's weights: exact checks on finite MDPs (C5, C6), the sampled-data check on a real MuJoCo
task, PMAC weights, determinism, and the `tomrepro weights` command's outputs and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from scipy.stats import rankdata, spearmanr

from tests.conftest import REPO_ROOT, copied_run
from tomrepro.analysis.finite_claims import check_bound, check_recovery
from tomrepro.core.config import TOMConfig
from tomrepro.core.noise import StepNoise
from tomrepro.core.tasks import get_task
from tomrepro.learning import tom_weights
from tomrepro.learning.finite_mdp import random_mdp, random_policy, state_action_occupancy
from tomrepro.learning.policy import SnapshotPolicy
from tomrepro.learning.recency_weights import pmac_weights
from tomrepro.learning.sac import SquashedGaussianActor
from tomrepro.learning.tom_weights import estimate_tom_weights
from tomrepro.loops.rollout import rollout

SMOKE = REPO_ROOT / "pipelines" / "smoke.yaml"
CPU = torch.device("cpu")


# --- finite MDPs ---------------------------------------------------------------------------


def test_occupancy_matches_the_discounted_visitation_series():
    rng = np.random.default_rng(0)
    mdp, pi = random_mdp(rng, 5, 3, 0.8), random_policy(rng, 5, 3)
    p_pi = np.einsum("sa,sat->st", pi, mdp.P)
    d_s, state = np.zeros(5), mdp.mu0.copy()
    for t in range(400):
        d_s += (1 - mdp.gamma) * mdp.gamma**t * state
        state = state @ p_pi
    np.testing.assert_allclose(state_action_occupancy(mdp, pi), d_s[:, None] * pi, atol=1e-12)


def test_c5_dual_recovers_the_occupancy_ratio_exactly_for_every_reward():
    result = check_recovery(mdps=40, seed=0)
    exact = {k: v for k, v in result.max_relative_error.items() if k.endswith("/expected")}
    assert len(exact) == 6
    for key, error in exact.items():
        assert error < 1e-6, (key, error)


def test_c5_sampled_residual_is_not_exact_which_the_report_says():
    result = check_recovery(mdps=10, seed=1)
    assert max(v for k, v in result.max_relative_error.items() if k.endswith("/sampled")) > 1e-3


def test_c6_tom_objective_lower_bounds_log_return_on_200_mdps():
    result = check_bound(mdps=200, seed=2)
    print(f"C6 min slack: KL {result.min_slack_kl:.3e}, chi2 {result.min_slack_chi2:.3e}")
    assert len(result.slack_kl) == 200
    assert result.min_slack_kl >= 0 and result.min_slack_chi2 >= 0
    assert all(c >= k - 1e-12 for k, c in zip(result.slack_kl, result.slack_chi2, strict=True))


# --- PMAC --------------------------------------------------------------------------------------


def test_pmac_group_masses_decay_geometrically_with_policy_age():
    """Newest group mass 1 - d, older ones x d per newer group, group 0 d^G; equal shares."""
    w = pmac_weights(np.array([0, 0, 1, 2, 3, 3]), decay=0.5)
    p = w / w.sum()
    np.testing.assert_allclose(p, [0.0625, 0.0625, 0.125, 0.25, 0.25, 0.25])
    assert w.mean() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        pmac_weights(np.array([-1, 0]))


# --- sampled data on a real task ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_source_buffer():
    """Pendulum-v1: 4000 steps of a uniform-random 'old' policy, then 4000 of the current one."""
    task = get_task("Pendulum-v1")
    actor = SquashedGaussianActor(3, 1, (32, 32), np.array([-2.0]), np.array([2.0]))
    actor.net.reset_parameters(torch.Generator().manual_seed(0))
    with torch.no_grad():
        actor.net.layers[-1].bias[0, 0, 0] = 1.0  # pre-tanh mean about +1
        actor.net.layers[-1].bias[0, 0, 1] = -1.5  # log std
    policy = SnapshotPolicy({k: v.numpy() for k, v in actor.state_dict().items()})
    noise = StepNoise(7, 1, "normal")
    old = rollout(task, 4000, seed=1).columns()
    new = rollout(
        task, 4000, seed=2, act=lambda o, t: policy.act(o, noise.at(t)), policy_version=1
    ).columns()
    cols = {k: np.concatenate([old[k], new[k]]) for k in old}
    cols["episode_ids"][4000:] += old["episode_ids"][-1] + 1
    cols["env_steps"][4000:] += 4000
    return cols, actor, np.r_[np.zeros(4000), np.ones(4000)]


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    ranks = rankdata(score)
    n1, n0 = label.sum(), len(label) - label.sum()
    return float((ranks[label == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@pytest.mark.parametrize("divergence", ["chi2", "kl"])
@pytest.mark.parametrize("use_discriminator", [True, False])
def test_weights_separate_the_current_policys_data_from_older_data(
    two_source_buffer, divergence, use_discriminator
):
    cols, actor, source = two_source_buffer
    cfg = TOMConfig(
        divergence=divergence,
        discriminator_steps=200,
        q_steps=600,
        q_hidden_sizes=(64, 64),
        discriminator_width=64,
    )
    estimate, _ = estimate_tom_weights(
        cols, actor, cfg, use_discriminator=use_discriminator, seed=0, device=CPU
    )
    auc = _auc(estimate.weights, source)
    rho = spearmanr(estimate.weights, source).statistic
    print(f"{divergence} disc={use_discriminator}: AUC {auc:.3f}, Spearman {rho:.3f}")
    assert auc > 0.8 and rho > 0.4
    assert estimate.weights.mean() == pytest.approx(1.0)
    assert np.isfinite(estimate.weights).all() and (estimate.weights >= 0).all()


def test_same_seed_gives_identical_weights(two_source_buffer):
    cols, actor, _ = two_source_buffer
    cfg = TOMConfig(
        discriminator_steps=30, q_steps=50, q_hidden_sizes=(32, 32), discriminator_width=32
    )
    a, _ = estimate_tom_weights(cols, actor, cfg, use_discriminator=True, seed=3, device=CPU)
    b, _ = estimate_tom_weights(cols, actor, cfg, use_discriminator=True, seed=3, device=CPU)
    np.testing.assert_array_equal(a.weights, b.weights)


# --- the command ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_buffer(smoke_collect, tmp_path_factory) -> Path:
    return copied_run(smoke_collect, tmp_path_factory)


@pytest.mark.parametrize("method", ["tom", "tom-nodisc", "pmac", "mle"])
def test_weights_command_writes_weights_that_train_model_accepts(
    method, smoke_buffer, tmp_path, run_cli
):
    out = tmp_path / f"{method}.npz"
    code, _, err = run_cli(
        "weights",
        smoke_buffer,
        "--snapshot",
        "2",
        "--learner",
        method,
        "--out",
        out,
        "--profile",
        SMOKE,
    )
    assert code == 0, err
    data = np.load(out)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["env_step"] == 1500 and len(data["weights"]) == 1500
    assert data["env_steps"][-1] == 1499
    assert data["weights"].mean() == pytest.approx(1.0)
    if method.startswith("tom"):
        # A one-off estimate trains Q in windows until the profile's criterion (or its cap).
        conv = report["q_convergence"]
        assert len(report["q_loss"]) == conv["steps"] <= conv["rule"]["max_steps"]
        assert conv["steps"] % conv["rule"]["window"] == 0 and "effective_sample_share" in report
        met = conv["spearman"][-1] >= conv["rule"]["min_spearman"] and (
            conv["loss_change"][-1] <= conv["rule"]["max_loss_change"]
        )
        assert conv["converged"] == met
    code, _, err = run_cli(
        "train-model",
        smoke_buffer,
        "--out",
        tmp_path / "m.pt",
        "--profile",
        SMOKE,
        "--prefix-end",
        "1500",
        "--weights",
        out,
    )
    assert code == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--snapshot", "9"], "no policy snapshot 9 (snapshots: 1, 2, 3, 4)"),
        (["--snapshot", "1", "--profile", "big_k"], "fewer than the 5000 that D^pi needs"),
    ],
)
def test_weights_command_refusals(args, message, smoke_buffer, tmp_path, run_cli):
    if "big_k" in args:
        text = SMOKE.read_text().replace("recent_size: 200", "recent_size: 5000")
        (tmp_path / "big_k.yaml").write_text(text)
        args = [a if a != "big_k" else str(tmp_path / "big_k.yaml") for a in args]
    args = ["--profile", str(SMOKE), *args] if "--profile" not in args else args
    code, _, err = run_cli(
        "weights", smoke_buffer, "--learner", "tom", "--out", tmp_path / "w.npz", *args
    )
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "w.npz").exists()


def test_weights_command_refuses_an_incomplete_buffer(smoke_buffer, tmp_path, run_cli):
    copy = tmp_path / "incomplete.h5"
    copy.write_bytes(smoke_buffer.read_bytes())
    with h5py.File(copy, "r+") as f:
        f.attrs["complete"] = False
    code, _, err = run_cli(
        "weights",
        copy,
        "--snapshot",
        "1",
        "--learner",
        "pmac",
        "--out",
        tmp_path / "w.npz",
        "--profile",
        SMOKE,
    )
    assert code == 2 and "incomplete" in err


def test_weights_command_refuses_a_json_output_path(smoke_buffer, tmp_path, run_cli):
    code, _, err = run_cli(
        "weights",
        smoke_buffer,
        "--snapshot",
        "1",
        "--learner",
        "mle",
        "--out",
        tmp_path / "w.json",
        "--profile",
        SMOKE,
    )
    assert code == 2 and "use .npz" in err


# --- TOM rounds of a population ----------------------------------------------------------------


def _round_inputs(seed: int, rows: int):
    rng = np.random.default_rng(seed)
    columns = {
        "observations": rng.normal(size=(rows, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (rows, 1)).astype(np.float32),
        "next_observations": rng.normal(size=(rows, 3)).astype(np.float32),
        "rewards": rng.normal(size=rows).astype(np.float32),
        "terminations": rng.random(rows) < 0.02,
        "episode_steps": np.arange(rows) % 50,
    }
    actor = SquashedGaussianActor(3, 1, (16, 16), np.array([-1.0]), np.array([1.0]))
    actor.net.reset_parameters(torch.Generator().manual_seed(seed))
    return columns, actor


def test_tom_rounds_trained_together_equal_each_round_alone():
    """Discriminators and dual Q networks of three rounds (other rows, policies, seeds; one
    without a discriminator) stacked: weights, Q parameters and loss curves bit for bit (CPU)."""
    cfg = TOMConfig(
        recent_size=40, discriminator_steps=15, discriminator_batch=32, discriminator_width=32,
        q_steps=25, q_batch=32, q_hidden_sizes=(16, 16), offline_convergence=None,
    )  # fmt: skip
    setups = [(0, 200, True), (1, 320, True), (2, 260, False)]

    def rounds():
        return [
            tom_weights.prepare_tom_round(
                *_round_inputs(seed, rows), cfg, use_discriminator=disc, seed=seed, device=CPU
            )
            for seed, rows, disc in setups
        ]

    together = rounds()
    tom_weights.train_tom_rounds(together)
    for alone, own in zip(rounds(), together, strict=True):
        tom_weights.train_tom_rounds([alone])
        a, b = tom_weights.finish_tom_round(alone), tom_weights.finish_tom_round(own)
        np.testing.assert_array_equal(a.weights, b.weights)
        for key in ("q_loss", "discriminator_loss"):
            assert a.diagnostics.get(key) == b.diagnostics.get(key), key
        for p, q in zip(alone.estimator.q.parameters(), own.estimator.q.parameters(), strict=True):
            assert torch.equal(p, q)
