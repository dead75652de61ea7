"""Fidelity to the official TOM code: each check against an independent transcription of the
official rule (kausiksivakumar/TOM), kept here as the reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tomrepro.core.buffer_file import read_buffer
from tomrepro.core.config import ModelConfig, load_profile, profile_from_dict, with_overrides
from tomrepro.core.deviations import DEVIATIONS, applicable_deviations
from tomrepro.learning.dynamics_model import DynamicsModel
from tomrepro.learning.model_learners import PlanInputs, build_learner
from tomrepro.learning.model_training import weighted_squared_error
from tomrepro.learning.recency_weights import pmac_weights
from tomrepro.loops.mbpo import MBPORun
from tomrepro.loops.update_schedule import UpdateSchedule

CPU = torch.device("cpu")


def official_burst_steps(epochs: int, epoch_length: int, burst: int, cap: int) -> list[int]:
    """TOM's train_policy_repeats: train_policy_steps reset each epoch, cur_step from 0."""
    steps = []
    for epoch in range(epochs):
        trained = 0
        for cur_step in range(epoch_length):
            if not trained > cap * cur_step:
                trained += burst
                steps.append(epoch * epoch_length + cur_step)
    return steps


@pytest.mark.parametrize(("burst", "cap"), [(20, 5), (4, 2), (7, 3), (1, 5)])
def test_update_schedule_matches_the_official_rule(burst, cap):
    schedule = UpdateSchedule("official", burst, cap, 1000, 0, 5000)
    steps = np.arange(5000, 8000)
    expected = 5000 + np.array(official_burst_steps(3, 1000, burst, cap))
    np.testing.assert_array_equal(steps[schedule.burst_at(steps)], expected)
    if (burst, cap) == (20, 5):
        assert schedule.updates_per_epoch() == 5000  # 5 per env step, not 20
        assert list(expected[:4] - 5000) == [0, 4, 8, 12]
    counts = schedule.bursts_before(steps)
    np.testing.assert_array_equal(counts, np.searchsorted(expected, steps, side="left"))
    every = UpdateSchedule("every_step", burst, cap, 1000, 0, 5000)
    assert every.burst_at(steps).all() and not every.burst_at(np.arange(5000)).any()


def test_mbpo_loop_trains_at_exactly_the_official_steps(tmp_path, monkeypatch):
    profile = load_profile("smoke")  # epochs of 200 steps, bursts of 4 capped at 2 per step
    seen: list[int] = []
    original = MBPORun.after_updates

    def record(self, state, stats, seconds):
        if stats is not None:  # a burst of SAC updates ran at this env step
            seen.append(state.loop.step)
        return original(self, state, stats, seconds)

    monkeypatch.setattr(MBPORun, "after_updates", record)
    run = MBPORun(profile, tmp_path / "run", learner="mle", progress=False)
    run.run()
    m = profile.mbpo
    policy_epochs = (m.env_steps - m.random_steps) // m.epoch_length
    expected = m.random_steps + np.array(
        official_burst_steps(
            policy_epochs, m.epoch_length, m.updates_per_step, m.max_updates_per_step
        )
    )
    np.testing.assert_array_equal(seen, expected)
    curve = json.loads((tmp_path / "run" / "run.json").read_text())["summary"]
    per_epoch = m.epoch_length * m.max_updates_per_step
    assert curve["sac_updates"] == policy_epochs * per_epoch


def official_litm_probabilities(exploration: int, bursts: np.ndarray, decay: float = 0.9):
    """TOM's update_litm_prob (utils.py), called after every push of the epoch loop with the
    previous step's train_policy_repeats result as its flag."""
    p = np.full(exploration, 1.0 / exploration)
    n, flag = exploration, 0
    for burst in bursts:
        if flag == 0:  # the current group grows: all its members get 0.1 / n
            n += 1
            t = (1 - decay) / n
            p[len(p) - (n - 1) :] = t
            p = np.append(p, t)
        else:  # a new group: everything older x 0.9, the newcomer the rest
            n = 1
            p = decay * p
            p = np.append(p, p.sum() * (1 - decay) / decay)
        p /= p.sum()
        flag = 20 if burst else 0
    return p


@pytest.mark.parametrize("schedule_kind", ["official", "every_step"])
def test_pmac_probabilities_equal_the_official_update_litm_prob(schedule_kind):
    explore, policy_steps = 300, 1000
    schedule = UpdateSchedule(schedule_kind, 20, 5, 500, 0, explore)
    steps = np.arange(explore + policy_steps)
    reference = official_litm_probabilities(explore, schedule.burst_at(steps[explore:]))
    groups = np.where(steps >= explore, schedule.bursts_before(steps), 0)
    ours = pmac_weights(groups, 0.9)
    np.testing.assert_allclose(ours / ours.sum(), reference, rtol=1e-9)


def test_pmac_in_mbpo_groups_by_burst_and_is_never_clipped():
    profile = load_profile("smoke")
    learner = build_learner("pmac", profile, 0, CPU)
    explore = 200
    schedule = UpdateSchedule("official", 4, 2, 200, 0, explore)
    steps = np.arange(600)
    cols = {
        "env_steps": steps,
        "policy_versions": np.where(steps >= explore, 1 + (steps - explore) // 200, 0),
    }
    groups = np.where(steps >= explore, schedule.bursts_before(steps), 0)
    plan = learner.plan(PlanInputs(cols, None, 2, groups=lambda g: groups))  # type: ignore[arg-type]
    assert plan.diagnostics["granularity"] == "burst" and plan.clip_weights is False
    assert plan.row_weights.max() > profile.model.weight_clip  # the newest group's weight
    offline = learner.plan(PlanInputs(cols, None, 2))  # type: ignore[arg-type]
    assert offline.diagnostics["granularity"] == "snapshot"


def test_tom_is_plain_mle_until_k_rows_collected_by_a_policy(hopper_buffer):
    profile = with_overrides(
        load_profile("smoke"), "tom", recent_size=300, discriminator_steps=5, q_steps=5,
        offline_convergence=None,
    )  # fmt: skip
    cols = dict(hopper_buffer.columns())  # 600 rows
    agent_actor = _actor(11, 3)
    learner = build_learner("tom", profile, 0, CPU)
    few = {**cols, "policy_versions": np.r_[np.zeros(350), np.ones(250)].astype(np.int64)}
    plan = learner.plan(PlanInputs(few, agent_actor, 1))
    assert plan.row_weights is None and "250 transitions collected by a policy" in (
        plan.inactive_reason
    )
    enough = {**cols, "policy_versions": np.r_[np.zeros(300), np.ones(300)].astype(np.int64)}
    assert learner.plan(PlanInputs(enough, agent_actor, 1)).row_weights is not None


def _actor(obs_dim: int, act_dim: int):
    from tomrepro.core.config import SACConfig
    from tomrepro.learning.sac import SAC

    low, high = -np.ones(act_dim, np.float32), np.ones(act_dim, np.float32)
    sac = SAC(obs_dim, act_dim, low, high, SACConfig(hidden_sizes=(16,)), CPU,
              torch.Generator().manual_seed(0))  # fmt: skip
    return sac.actor


def test_vagram_loss_equals_an_independent_numpy_computation():
    rng = np.random.default_rng(0)
    cfg = ModelConfig(hidden_sizes=(8,), ensemble_size=2, elites=1)
    model = DynamicsModel(cfg, 3, 1)
    inputs = rng.normal(size=(50, 4)).astype(np.float32)
    targets = rng.normal(size=(50, 4)).astype(np.float32) * np.array([1, 2, 3, 0.5], np.float32)
    model.fit_normalization(inputs, targets)
    model.net.reset_parameters(torch.Generator().manual_seed(0))
    g = rng.normal(size=(50, 3)).astype(np.float32)
    weights = np.concatenate((g**2, np.ones((50, 1), np.float32)), axis=1)
    x = model.normalize_inputs(torch.as_tensor(inputs))[None].expand(2, -1, -1)
    y = model.normalize_targets(torch.as_tensor(targets))[None].expand(2, -1, -1)
    with torch.no_grad():
        ours = weighted_squared_error(model, x, y, torch.as_tensor(weights)).numpy()
        f = (model.net.mean(x) * model.target_std + model.target_mean).numpy()  # raw units
    reference = ((g * (f[..., :3] - targets[:, :3])) ** 2).sum(-1) + (
        f[..., 3] - targets[:, 3]
    ) ** 2
    np.testing.assert_allclose(ours, reference, rtol=1e-5)


def test_offline_evaluation_uses_complete_episodes(tmp_path):
    from tomrepro.core.tasks import get_task
    from tomrepro.loops.rollout import rollout

    task = get_task("InvertedPendulum-v5")
    buffer = rollout(task, 0, 0, episodes=4)
    cols = buffer.columns()
    assert (cols["episode_steps"] == 0).sum() == 4
    assert cols["terminations"][-1] or cols["truncations"][-1]
    ends = np.flatnonzero(cols["terminations"] | cols["truncations"])
    assert len(ends) == 4 and ends[-1] == len(cols["rewards"]) - 1


def test_offline_cells_keep_the_dual_curve_and_criterion(tmp_path):
    from tomrepro.loops.collect import Collector
    from tomrepro.loops.offline_study import Cell, OfflineStudy, StudyPaths

    profile = with_overrides(
        load_profile("smoke"), "offline_study", snapshots=(4,), learners=("tom",), seeds=(0,)
    )
    buffer = Collector(profile, tmp_path / "collect", progress=False).run()
    OfflineStudy(profile, buffer, tmp_path / "study", progress=False).run()
    paths, run = StudyPaths(tmp_path / "study"), profile.collect.seeds[0]
    cell = json.loads(paths.cell(Cell(run, 4, "tom", 0)).read_text())
    conv, rule = cell["diagnostics"]["q_convergence"], profile.tom.offline_convergence
    assert (
        conv["steps"] <= rule.max_steps
        and len(conv["spearman"]) == conv["steps"] // rule.window - 1
    )
    met = (
        conv["spearman"][-1] >= rule.min_spearman
        and conv["loss_change"][-1] <= rule.max_loss_change
    )
    assert conv["converged"] == met
    assert len(cell["diagnostics"]["q_loss_per_100_steps"]) == conv["steps"] // 100
    assert cell["eval_start_states"] == profile.offline_study.eval_episodes
    episodes = read_buffer(paths.eval_episodes(run, 4)).buffer.columns()
    assert episodes["terminations"][-1] or episodes["truncations"][-1]


def _set(raw: dict, dotted: str, value) -> None:
    section, key = dotted.split(".")
    raw[section] = {**raw[section], key: list(value) if isinstance(value, tuple) else value}


@pytest.mark.parametrize("deviation", DEVIATIONS, ids=lambda d: d.key)
def test_each_deviation_appears_and_disappears_with_its_setting(deviation):
    base = load_profile("smoke").model_dump(mode="json")
    if deviation.setting is None:
        assert deviation in applicable_deviations(load_profile("smoke"))  # fixed in the code
        return
    profiles = []
    for overrides in deviation.examples:
        raw = json.loads(json.dumps(base))
        for dotted, value in overrides.items():
            _set(raw, dotted, value)
        profiles.append(profile_from_dict(raw))
    on, off = ({d.key for d in applicable_deviations(p)} for p in profiles)
    assert deviation.key in on and deviation.key not in off
    assert on ^ off == {deviation.key}, on ^ off  # exactly that one changes
    assert deviation.describe(profiles[0])
