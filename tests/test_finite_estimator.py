"""C5 on the estimator the code runs: the finite MDP behind the estimator's interfaces (one-hot
features, a tabular policy, explicit mu0 draws), the exact sampled-form optimum with the
estimator's conjugate, the estimator's convergence to it, and the stage's JSON/dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.stats import chisquare

from tomrepro.analysis import datasets
from tomrepro.analysis.finite_claims import (
    DIVERGENCES,
    ESTIMATOR_MEASURES,
    REWARD_KINDS,
    RatioProblem,
    draw_ratio_problem,
    estimated_cell_weights,
    estimator_measures,
    estimator_rows,
    population_reward,
    run_finite_checks,
)
from tomrepro.core.config import FiniteMDPConfig
from tomrepro.core.errors import TomreproError
from tomrepro.core.learners import TOMConfig
from tomrepro.learning import tom_weights
from tomrepro.learning.finite_dual import RewardDistribution, solve_sampled_optimum
from tomrepro.learning.finite_features import (
    DiscretePolicy,
    one_hot,
    sample_cells,
    transition_columns,
)
from tomrepro.learning.finite_mdp import random_mdp, random_policy, transition_occupancy

CPU = torch.device("cpu")


def tiny_config(**update) -> FiniteMDPConfig:
    """A budget of seconds: enough for every code path, not for accuracy."""
    base = dict(
        mdps=3,
        estimator_mdps=2,
        estimator_samples=400,
        estimator_initial_samples=50,
        estimator_q_steps=30,
        estimator_q_hidden_sizes=(16,),
        estimator_discriminator_steps=10,
        estimator_discriminator_width=16,
        convergence_mdps=1,
        convergence_samples=(300, 600),
        convergence_q_steps=(10, 20),
    )
    return FiniteMDPConfig(**(base | update))


# --- the finite MDP behind the estimator's interfaces -----------------------------------------


def test_discrete_policy_draws_actions_with_pis_frequencies():
    rng = np.random.default_rng(0)
    pi = random_policy(rng, 4, 3)
    policy = DiscretePolicy(pi).to(CPU)
    states = np.repeat(np.arange(4), 5000)
    actions, log_prob = policy.sample(
        torch.as_tensor(one_hot(states, 4)), torch.Generator().manual_seed(1)
    )
    assert actions.shape == (20_000, 3) and bool((actions.sum(1) == 1).all())
    drawn = actions.argmax(1).numpy()
    np.testing.assert_allclose(log_prob.numpy(), np.log(pi[states, drawn]), rtol=1e-5)
    for s in range(4):
        counts = np.bincount(drawn[states == s], minlength=3)
        assert chisquare(counts, 5000 * pi[s]).pvalue > 1e-3, (s, counts, pi[s])


def test_one_hot_columns_encode_the_cells_and_refuse_bad_indices():
    rng = np.random.default_rng(1)
    mdp = random_mdp(rng, 5, 2, 0.9)
    s, a, s_next = sample_cells(rng, transition_occupancy(mdp, random_policy(rng, 5, 2)), 300)
    cols = transition_columns(mdp, s, a, s_next)
    assert cols["observations"].shape == (300, 5) and cols["actions"].shape == (300, 2)
    np.testing.assert_array_equal(cols["observations"].argmax(1), s)
    np.testing.assert_array_equal(cols["actions"].argmax(1), a)
    np.testing.assert_array_equal(cols["next_observations"].argmax(1), s_next)
    assert cols["observations"].sum() == 300 and not cols["terminations"].any()
    with pytest.raises(TomreproError):
        one_hot(np.array([0, 5]), 5)


def test_explicit_initial_observations_reach_the_dual_and_default_to_episode_starts(monkeypatch):
    seen = []
    original = tom_weights.fit_estimators

    def spy(fits, steps=None):
        seen.extend(fit.initial_observations.clone() for fit in fits)
        return original(fits, steps=1)

    monkeypatch.setattr(tom_weights, "fit_estimators", spy)
    rng = np.random.default_rng(2)
    mdp, pi = random_mdp(rng, 4, 2, 0.9), random_policy(rng, 4, 2)
    s, a, s_next = sample_cells(rng, transition_occupancy(mdp, pi), 40)
    cols = transition_columns(mdp, s, a, s_next) | {"episode_steps": np.arange(40) % 10}
    cfg = TOMConfig(recent_size=10, gamma=0.9, q_hidden_sizes=(8,), offline_convergence=None)
    explicit = one_hot(np.array([3, 3, 1]), 4)
    for initial in (explicit, None):
        tom_weights.estimate_tom_weights(
            cols,
            DiscretePolicy(pi),
            cfg,
            use_discriminator=False,
            seed=0,
            device=CPU,
            initial_observations=initial,
        )
    np.testing.assert_array_equal(seen[0].numpy(), explicit)
    np.testing.assert_array_equal(seen[1].numpy(), cols["observations"][::10])
    with pytest.raises(TomreproError, match="initial observations"):
        tom_weights.estimate_tom_weights(
            cols,
            DiscretePolicy(pi),
            cfg,
            use_discriminator=False,
            seed=0,
            device=CPU,
            initial_observations=np.zeros((3, 5), dtype=np.float32),
        )


# --- the exact sampled-form optimum ---------------------------------------------------------


def _gradient(problem: RatioProblem, q: np.ndarray, reward: RewardDistribution, divergence: str):
    """dL/dQ of the sampled form over rows (s, a, s', a' ~ pi), written out independently."""
    mdp, pi, d_r = problem.mdp, problem.pi, problem.d_replay
    e = reward.values[..., None] + mdp.gamma * q[None, None, None] - q[None, :, :, None, None]
    law = d_r[None, ..., None] * reward.probs[..., None] * pi[None, None, None]
    if divergence == "chi2":
        slope = law * (1 + e)
    else:
        slope = law * np.exp(e - e.max())
        slope = slope / slope.sum()
    here = slope.sum(axis=(0, 3, 4))  # (S, A): rows whose (s, a) is the entry
    there = slope.sum(axis=(0, 1, 2))  # (S', A'): rows whose (s', a') is the entry
    return (1 - mdp.gamma) * mdp.mu0[:, None] * pi + mdp.gamma * there - here


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_sampled_optimum_meets_its_first_order_conditions_and_is_biased_where_rewards_vary(
    divergence,
):
    problem = draw_ratio_problem(np.random.default_rng(3), 0.9, 0.3)
    ratio, d_r = problem.ratio, problem.d_replay
    varying = population_reward(problem, "no_discriminator", 0.1)
    optimum = solve_sampled_optimum(problem.mdp, problem.pi, d_r, varying, divergence)
    assert np.abs(_gradient(problem, optimum.q, varying, divergence)).max() < 1e-8
    law = d_r[None, ..., None] * varying.probs[..., None] * problem.pi[None, None, None]
    assert np.sum(law * optimum.weights) == pytest.approx(1.0)
    # The truth is constant across s' for each (s, a); this optimum's cell weights are not.
    cells = optimum.cell_weights(problem.pi, varying)
    assert np.ptp(ratio, axis=2).max() < 1e-9 < 1e-2 < np.ptp(cells, axis=2).max()
    # A reward whose read-out at Q = 0 is the ratio itself (w - 1 for chi2, log w for KL): the
    # form is then exact, because Q = 0 meets the first-order conditions (d^pi's flow equations).
    exact = RewardDistribution.fixed(ratio - 1 if divergence == "chi2" else np.log(ratio))
    recovered = solve_sampled_optimum(problem.mdp, problem.pi, d_r, exact, divergence)
    np.testing.assert_allclose(recovered.cell_weights(problem.pi, exact), ratio, rtol=1e-7)


def test_ratio_problem_from_replay_splits_pis_share_and_refuses_one_too_large():
    problem = draw_ratio_problem(np.random.default_rng(4), 0.9, 0.25)
    again = RatioProblem.from_replay(problem.mdp, problem.pi, problem.d_replay, 0.25)
    np.testing.assert_allclose(again.d_older, problem.d_older, atol=1e-12)
    too_large = 1.01 * float(np.min(problem.d_replay / problem.d_pi))
    with pytest.raises(TomreproError, match="does not fit"):
        RatioProblem.from_replay(problem.mdp, problem.pi, problem.d_replay, min(too_large, 0.99))


# --- the estimator against the optimum --------------------------------------------------------


def test_estimator_approaches_the_population_optimum_as_samples_and_steps_grow():
    """No-discriminator reward, chi2: its optimum is exactly the estimator's target, so the
    error of the cell-averaged weights against it must shrink with data and steps."""
    cfg = FiniteMDPConfig(estimator_q_hidden_sizes=(32, 32), estimator_initial_samples=500)
    problem = draw_ratio_problem(np.random.default_rng(5), cfg.gamma, cfg.estimator_recent_share)
    reward = population_reward(problem, "no_discriminator", TOMConfig().negative_target)
    optimum = solve_sampled_optimum(problem.mdp, problem.pi, problem.d_replay, reward, "chi2")
    errors = {}
    for samples, steps in ((300, 20), (8000, 800)):
        buffer, weights = estimator_rows(
            problem, "chi2", "no_discriminator", cfg, seed=0, samples=samples, q_steps=steps
        )
        errors[samples] = estimator_measures(problem, buffer, weights, optimum, reward)
    print({n: round(m["vs_optimum_error"], 4) for n, m in errors.items()})
    assert errors[8000]["vs_optimum_error"] < 0.5 * errors[300]["vs_optimum_error"]
    assert errors[8000]["vs_optimum_error"] < 0.1


def test_estimated_cell_weights_average_the_rows_and_repeat_with_the_seed():
    cfg = tiny_config()
    problem = draw_ratio_problem(np.random.default_rng(6), cfg.gamma, cfg.estimator_recent_share)
    cells = estimated_cell_weights(problem, "kl", "discriminator", cfg, seed=7)
    buffer, weights = estimator_rows(problem, "kl", "discriminator", cfg, seed=7)
    counts = np.zeros(cells.shape)
    np.add.at(counts, (buffer.s, buffer.a, buffer.s_next), 1)
    assert cells.shape == problem.d_pi.shape
    np.testing.assert_array_equal(np.isnan(cells), counts == 0)
    sums = np.zeros(cells.shape)
    np.add.at(sums, (buffer.s, buffer.a, buffer.s_next), weights)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(cells, sums / counts, rtol=1e-12)  # same seed, same fit
    assert weights.mean() == pytest.approx(1.0)


# --- the stage's output -------------------------------------------------------------------------


def test_finite_json_round_trips_into_the_dataset(tmp_path):
    cfg = tiny_config()
    lines = run_finite_checks(cfg, tmp_path / "finite.json")
    assert any(line.startswith("C5 convergence") for line in lines)
    raw = json.loads((tmp_path / "finite.json").read_text())
    ds = datasets.finite_dataset(tmp_path / "finite.json")
    assert dict(ds.estimator_error.sizes) == {
        "reward_kind": len(REWARD_KINDS),
        "divergence": len(DIVERGENCES),
        "estimator_mdp": cfg.estimator_mdps,
    }
    for measure, name in datasets.ESTIMATOR_VARIABLES.items():
        assert measure in ESTIMATOR_MEASURES
        for kind in REWARD_KINDS:
            for divergence in DIVERGENCES:
                np.testing.assert_array_equal(
                    ds[name].sel(reward_kind=kind, divergence=divergence).values,
                    raw["estimator"]["values"][kind][divergence][measure],
                )
    assert ((ds.estimator_error >= 0) & (ds.form_bias_error >= 0)).all()
    table = ds.convergence_vs_optimum_error
    assert table.dims == ("divergence", "samples", "q_steps", "convergence_mdp")
    assert list(table.samples.values) == list(cfg.convergence_samples)
    np.testing.assert_array_equal(
        table.sel(divergence="kl").values, raw["convergence"]["values"]["vs_optimum_error"]["kl"]
    )
    assert json.loads(ds.attrs["estimator_settings"]) == cfg.model_dump(mode="json")
    data = datasets.AnalysisData(offline=None, curves={}, finite=ds)
    datasets.save(data, tmp_path / "analysis")
    loaded = datasets.load(tmp_path / "analysis").finite
    assert loaded is not None and loaded.identical(ds)
    broken = raw | {"estimator": raw["estimator"] | {"mdps": 3}}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(TomreproError, match="malformed estimator results"):
        datasets.finite_dataset(tmp_path / "broken.json")


def test_a_recent_share_that_empties_a_part_of_the_buffer_is_refused():
    with pytest.raises(ValidationError, match="leaves"):
        FiniteMDPConfig(estimator_recent_share=0.001, estimator_samples=400)
