"""Pieces of the MBPO loop: the model pool, mixed minibatches, weighted start draws, model
rollouts, warm-started and per-output-weighted model fits, and the learners' plans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tomrepro.core.config import ModelConfig, ProfileConfig, SACConfig, load_profile, with_overrides
from tomrepro.core.tasks import get_task
from tomrepro.learning.dynamics_model import DynamicsModel
from tomrepro.learning.model_learners import PlanInputs, build_learner, value_gradients
from tomrepro.learning.model_pool import MixedBatchSampler, ModelPool
from tomrepro.learning.model_rollout import draw_rows, rollout_model
from tomrepro.learning.model_training import fit_dynamics, fit_on_columns
from tomrepro.learning.sac import SAC

CPU = torch.device("cpu")
SMALL_MODEL = ModelConfig(
    hidden_sizes=(32, 32), ensemble_size=3, elites=2, max_epochs=5, batches_per_epoch=20
)


def rows(n: int, start: float = 0.0) -> dict[str, torch.Tensor]:
    base = torch.arange(n, dtype=torch.float32) + start
    return {
        "observations": base[:, None].repeat(1, 3),
        "actions": base[:, None],
        "rewards": base,
        "next_observations": base[:, None].repeat(1, 3) + 0.5,
        "masks": torch.ones(n),
    }


def test_pool_ring_keeps_the_newest_rows():
    pool = ModelPool(10, 3, 1, CPU)
    pool.add(rows(6))
    pool.add(rows(7, start=100))
    assert len(pool) == 10
    kept = set(pool.data["rewards"].tolist())
    assert kept == set(range(3, 6)) | set(range(100, 107))
    pool.add(rows(25, start=1000))  # more than the capacity: the newest 10
    assert set(pool.data["rewards"].tolist()) == set(range(1015, 1025))
    state = pool.state_dict()
    other = ModelPool(10, 3, 1, CPU)
    other.load_state_dict(state)
    other.add(rows(1, start=-1))
    pool.add(rows(1, start=-1))
    torch.testing.assert_close(other.data["rewards"], pool.data["rewards"])


def test_mixed_batches_take_the_real_share_from_the_buffer(hopper_buffer):
    pool = ModelPool(1000, 11, 3, CPU)
    fake = rows(1000, start=1e6)
    pool.add({**fake, "observations": fake["observations"].repeat(1, 4)[:, :11],
              "next_observations": fake["next_observations"].repeat(1, 4)[:, :11],
              "actions": fake["actions"].repeat(1, 3)})  # fmt: skip
    sampler = MixedBatchSampler(
        hopper_buffer, pool, 256, 0.05, CPU, torch.Generator().manual_seed(0)
    )
    batch = sampler.sample()
    assert sampler.real_rows == 12 and batch.rewards.shape == (256,)
    assert (batch.rewards[:12].abs() < 1e5).all() and (batch.rewards[12:] >= 1e6).all()
    real = hopper_buffer.columns()["observations"]
    hits = (torch.as_tensor(real)[None] == batch.observations[:12, None]).all(-1).any(-1)
    assert hits.all()


def test_weighted_start_draws_follow_the_probabilities():
    probs = np.array([0.0, 1.0, 3.0, 0.0])
    idx = draw_rows(probs, 4, 40_000, torch.Generator().manual_seed(0))
    counts = np.bincount(idx.numpy(), minlength=4)
    assert counts[0] == 0 and counts[3] == 0
    assert counts[2] / counts[1] == pytest.approx(3.0, rel=0.05)
    assert draw_rows(None, 4, 10, torch.Generator().manual_seed(0)).max() < 4


def _profile(**tom: object) -> ProfileConfig:
    """The smoke profile with some of TOM's settings replaced."""
    return with_overrides(load_profile("smoke"), "tom", **tom)


def _agent(obs_dim: int, act_dim: int) -> SAC:
    return SAC(
        obs_dim, act_dim, -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32),
        SACConfig(hidden_sizes=(32, 32)), CPU, torch.Generator().manual_seed(0),
    )  # fmt: skip


def test_rollouts_stop_at_termination_and_drop_nonfinite(hopper_buffer):
    task = get_task("Hopper-v5")
    model = DynamicsModel(SMALL_MODEL, 11, 3)
    fit_on_columns(model, hopper_buffer.columns(), None, torch.Generator().manual_seed(0), CPU)
    starts = torch.tensor(hopper_buffer.columns()["observations"][:500])  # a copy: NaN below
    starts[:5] = float("nan")  # these rows must vanish rather than reach SAC
    out = rollout_model(model, _agent(11, 3).actor, starts, 3, task.terminated_torch,
                        torch.Generator().manual_seed(1))  # fmt: skip
    n = out["observations"].shape[0]
    assert 495 <= n <= 3 * 495
    assert all(torch.isfinite(v).all() for v in out.values())
    done = out["masks"] == 0
    np.testing.assert_array_equal(done.numpy(), task.terminated(out["next_observations"].numpy()))
    first_step = out["observations"][:495]
    torch.testing.assert_close(first_step, starts[5:])


def test_warm_start_keeps_what_was_learned(hopper_buffer):
    cols = hopper_buffer.columns()
    model = DynamicsModel(SMALL_MODEL, 11, 3)
    gen = torch.Generator().manual_seed(0)
    cold = fit_on_columns(model, cols, None, gen, CPU)
    warm = fit_on_columns(model, cols, None, gen, CPU, warm_start=True, max_epochs=1)
    again = fit_on_columns(model, cols, None, gen, CPU, max_epochs=1)
    assert warm.epochs == 1 and again.epochs == 1
    # After one epoch, a warm start is already better than a cold one.
    assert warm.train_loss[0] < again.train_loss[0]
    assert warm.train_loss[0] < cold.train_loss[0]


def test_target_weights_decide_which_outputs_are_learned():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 2)).astype(np.float32)
    y = np.stack([np.sin(2 * x[:, 0]), np.cos(2 * x[:, 1])], axis=1).astype(np.float32)
    cfg = SMALL_MODEL.model_copy(update={"max_epochs": 30, "batches_per_epoch": 30})
    errors = []
    for mask in ([1.0, 0.0], [0.0, 1.0]):
        model = DynamicsModel(cfg, 1, 1)
        tw = np.tile(np.array(mask, dtype=np.float32), (len(x), 1))
        fit_dynamics(model, x, y, None, torch.Generator().manual_seed(0), CPU, target_weights=tw)
        with torch.no_grad():
            mean = model.net.mean(
                model.normalize_inputs(torch.as_tensor(x))[None].expand(3, -1, -1)
            )
            pred = (mean * model.target_std + model.target_mean).mean(0).numpy()
        errors.append(np.square(pred - y).mean(0))
    # The output with weight 0 stays at its variance (0.5); the weighted one is learned.
    assert errors[0][1] > 0.45 and errors[1][0] > 0.45
    assert errors[0][0] < 0.6 * errors[0][1] and errors[1][1] < 0.6 * errors[1][0]
    with pytest.raises(Exception, match="target weights"):
        fit_dynamics(DynamicsModel(cfg, 1, 1), x, y, None, torch.Generator(), CPU,
                     target_weights=-np.ones_like(y))  # fmt: skip


def test_value_gradients_match_finite_differences():
    """V = mean of the online and target twins at the actor's mean action, held fixed."""
    agent = _agent(4, 2)
    with torch.no_grad():  # make the target differ from the online critic
        for p in agent.critic_target.parameters():
            p.mul_(0.5)
    critics = [agent.critic, agent.critic_target]
    states = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    grads = value_gradients(agent.actor, critics, states, CPU)
    with torch.no_grad():
        mean, _ = agent.actor.distribution(torch.as_tensor(states))
        action = torch.tanh(mean) * agent.actor.action_scale + agent.actor.action_bias

    def value(s: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            t = torch.as_tensor(s, dtype=torch.float64)
            heads = [c.double()(t, action.double()) for c in critics]
            for c in critics:
                c.float()
            return torch.cat(heads).mean(0).numpy()

    eps = 1e-4
    for i in range(4):
        step = np.zeros(4)
        step[i] = eps
        numeric = (value(states + step) - value(states - step)) / (2 * eps)
        np.testing.assert_allclose(grads[:, i], numeric, rtol=1e-3, atol=1e-4)


def test_plans_of_each_learner(hopper_buffer):
    cols = hopper_buffer.columns()
    cols = {**cols, "policy_versions": (cols["env_steps"] // 200).astype(np.int64)}
    agent = _agent(11, 3)
    profile = _profile(recent_size=100, discriminator_steps=20, q_steps=30, q_hidden_sizes=(32, 32))
    inputs = PlanInputs(cols, agent.actor, 2, agent.critic)
    plans = {m: build_learner(m, profile, 0, CPU).plan(inputs)
             for m in ("mle", "tom", "tom-nodisc", "pmac", "vagram")}  # fmt: skip
    assert plans["mle"].row_weights is None and plans["mle"].start_probs is None
    for m in ("tom", "tom-nodisc", "pmac"):
        w = plans[m].row_weights
        assert w is not None and w.shape == (600,) and w.mean() == pytest.approx(1.0)
        assert plans[m].start_probs is w
    pmac = plans["pmac"].row_weights
    # Snapshot groups of 200 rows: masses 0.81 (group 0, the oldest), 0.09, 0.1 (newest).
    assert pmac[-1] / pmac[0] == pytest.approx(0.1 / 0.81)
    assert pmac[-1] / pmac[300] == pytest.approx(0.1 / 0.09)
    vg = plans["vagram"].target_weights
    assert vg.shape == (600, 12) and (vg >= 0).all() and (vg[:, -1] == 1).all()
    # g's norm is clipped at its 95 % quantile over the round's rows.
    norms = np.sqrt(vg[:, :-1].sum(1))
    bound = plans["vagram"].diagnostics["gradient_norm_bound"]
    assert norms.max() == pytest.approx(bound, rel=1e-4)
    assert plans["vagram"].diagnostics["clipped_share"] == pytest.approx(0.05, abs=0.01)
    assert plans["pmac"].clip_weights is False and plans["tom"].clip_weights


def test_tom_learner_keeps_its_estimator_across_a_resume(hopper_buffer):
    cols = hopper_buffer.columns()
    cols = {**cols, "policy_versions": np.ones(len(cols["rewards"]), dtype=np.int64)}
    agent = _agent(11, 3)
    tom = {"recent_size": 100, "discriminator_steps": 10, "q_steps": 10, "q_hidden_sizes": (16,)}
    inputs = PlanInputs(cols, agent.actor, 1, agent.critic)
    a = build_learner("tom", _profile(**tom), 0, CPU)
    a.plan(inputs)
    b = build_learner("tom", _profile(**tom), 0, CPU)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.plan(inputs).row_weights, b.plan(inputs).row_weights)
    small = build_learner("tom", _profile(**{**tom, "recent_size": 10_000}), 0, CPU)
    plan = small.plan(inputs)
    assert plan.row_weights is None and "fewer than" in plan.inactive_reason  # MLE until D^pi
