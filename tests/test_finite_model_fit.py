"""C6's model-fit comparison: the aggregated weighted MLE, why aggregation is needed, the
experiment's output."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tomrepro.analysis.finite_model_fit import (
    BASELINE,
    EXACT,
    METRICS,
    SANITY,
    FitProblem,
    aggregated_fit,
    draw_problem,
    exact_weights,
    model_fit_summary,
    model_metrics,
    paired_effects,
    run_model_fit,
)
from tomrepro.core.errors import TomreproError
from tomrepro.learning.finite_mdp import (
    FiniteMDP,
    replay_occupancy,
    state_action_occupancy,
)


def _problems(count: int, samples: int | None = None):
    return [draw_problem(np.random.default_rng(i), 0.9, samples) for i in range(count)]


def test_weighted_fit_is_the_hand_computed_weighted_count():
    groups = np.array([0, 0, 1])
    data = np.zeros((3, 2, 3))
    weights = np.ones((3, 2, 3))
    data[0, 0], weights[0, 0] = [1, 2, 1], [1, 1, 2]
    data[1, 0], weights[1, 0] = [0, 3, 1], [2, 1, 1]
    data[2, 0] = [2, 0, 2]
    data[2, 1], weights[2, 1] = [0, 1, 0], [3, 3, 3]
    fit = aggregated_fit(data, weights, groups)
    # group 0, action 0: [1, 2, 2] + [0, 3, 1] = [1, 5, 3] over 9
    np.testing.assert_allclose(fit[0, 0], [1 / 9, 5 / 9, 3 / 9])
    np.testing.assert_allclose(fit[1, 0], [1 / 9, 5 / 9, 3 / 9])
    np.testing.assert_allclose(fit[2, 0], [0.5, 0.0, 0.5])
    # group 0, action 1 has no data: the uniform row
    np.testing.assert_allclose(fit[0, 1], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(fit[2, 1], [0.0, 1.0, 0.0])


def test_unit_weights_give_the_unweighted_fit():
    for problem in _problems(5, samples=300):
        counts, groups = problem.data, problem.groups
        expected = np.empty_like(counts)
        for g in np.unique(groups):
            pooled = counts[groups == g].sum(axis=0)  # (A, S)
            total = pooled.sum(-1, keepdims=True)
            rows = np.where(total > 0, pooled / np.maximum(total, 1e-300), 1 / counts.shape[-1])
            expected[groups == g] = rows
        np.testing.assert_allclose(aggregated_fit(counts, np.ones_like(counts), groups), expected)
        np.testing.assert_allclose(
            aggregated_fit(counts, np.full_like(counts, 3.7), groups), expected
        )


def test_tabular_class_ignores_state_action_weights_and_aggregation_does_not():
    for problem in _problems(5, samples=400) + _problems(5):
        tabular = np.arange(problem.mdp.n_states)
        w = exact_weights(problem)
        np.testing.assert_allclose(
            aggregated_fit(problem.data, w, tabular),
            aggregated_fit(problem.data, np.ones_like(w), tabular),
        )
        assert not np.allclose(
            aggregated_fit(problem.data, w, problem.groups),
            aggregated_fit(problem.data, np.ones_like(w), problem.groups),
        )


def test_exact_weights_fit_the_policy_s_cells_where_mle_fits_the_old_policy_s():
    # One group for both states; action 0 is informative from state 0, action 1 from state 1.
    # pi takes those informative actions, the older policy (90 % of the buffer) the others.
    P = np.array([[[0.95, 0.05], [0.5, 0.5]], [[0.5, 0.5], [0.05, 0.95]]])
    mdp = FiniteMDP(P, np.array([0.5, 0.5]), 0.9)
    pi = np.array([[0.95, 0.05], [0.05, 0.95]])
    old = pi[:, ::-1]
    d_replay = replay_occupancy(mdp, [old, pi], np.array([0.9, 0.1]))
    reward = np.array([[1.0, 0.2], [0.2, 1.0]])

    problem = FitProblem(mdp, pi, d_replay, reward, np.array([0, 0]), d_replay, None)
    w = exact_weights(problem)
    tom = model_metrics(problem, aggregated_fit(d_replay, w, problem.groups))
    mle = model_metrics(problem, aggregated_fit(d_replay, np.ones_like(w), problem.groups))
    assert tom["model_onpolicy_tv"] < 0.5 * mle["model_onpolicy_tv"]


def _onpolicy_kl(problem, p_hat):
    d = state_action_occupancy(problem.mdp, problem.pi)
    P = problem.mdp.P
    return float(np.sum(d[:, :, None] * P * np.log(P / p_hat)))


def test_population_exact_fit_keeps_the_policy_occupancy_and_minimises_onpolicy_kl():
    for problem in _problems(20):
        w = exact_weights(problem)
        tom = aggregated_fit(problem.data, w, problem.groups)
        mle = aggregated_fit(problem.data, np.ones_like(w), problem.groups)
        truth = state_action_occupancy(problem.mdp, problem.pi)

        def occupancy(p_hat, problem=problem):
            model = FiniteMDP(p_hat, problem.mdp.mu0, problem.mdp.gamma)
            return state_action_occupancy(model, problem.pi)

        np.testing.assert_allclose(occupancy(tom), truth, atol=1e-12)
        assert not np.allclose(occupancy(mle), truth, atol=1e-6)
        assert _onpolicy_kl(problem, tom) <= _onpolicy_kl(problem, mle) + 1e-12


def _half_exact(problem, rng):
    noise = rng.uniform(0.9, 1.1, size=problem.d_replay.shape)
    return {"half": (0.5 + 0.5 * exact_weights(problem)) * noise}


def test_experiment_output_shape_determinism_and_sanity():
    result = run_model_fit(6, seed=3, samples=300, weight_source=_half_exact)
    assert result["weights"] == [BASELINE, EXACT, "half"]
    assert set(result["metrics"]) == set(METRICS) and set(result["sanity"]) == set(SANITY)
    for table in (*result["metrics"].values(), *result["sanity"].values()):
        assert set(table) == set(result["weights"])
        assert all(len(values) == 6 for values in table.values())
    assert all(g < s for g, s in zip(result["groups"], result["states"], strict=True))
    assert json.loads(json.dumps(result)) == result
    assert run_model_fit(6, seed=3, samples=300, weight_source=_half_exact) == result
    plain = run_model_fit(6, seed=3, samples=300)
    assert (
        plain["metrics"]["model_return_error"][BASELINE]
        == (result["metrics"]["model_return_error"][BASELINE])
    )
    assert min(min(v) for t in result["sanity"].values() for v in t.values()) >= -1e-10
    assert paired_effects(result, "model_onpolicy_tv", "half").shape == (6,)
    lines = model_fit_summary(result)
    assert sum("half" in line for line in lines) == len(METRICS)
    assert "sanity" in lines[-1]


def test_population_summary_labels_the_return_identity():
    lines = model_fit_summary(run_model_fit(5, seed=0))
    (line,) = [x for x in lines if EXACT in x and "model_return_error" in x]
    assert "identity" in line


def test_bad_weights_and_clashing_names_are_one_line_errors():
    problem = _problems(1)[0]
    with pytest.raises(TomreproError, match="non-negative"):
        aggregated_fit(problem.data, -np.ones_like(problem.data), problem.groups)
    with pytest.raises(TomreproError, match="do not match"):
        aggregated_fit(problem.data, np.ones(3), problem.groups)
    with pytest.raises(TomreproError, match="clash"):
        run_model_fit(2, seed=0, weight_source=lambda p, rng: {EXACT: exact_weights(p)})
