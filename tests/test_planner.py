"""The planner: its counting reproduces hand-computed seconds on a tiny profile, and its estimate
of a short real run, from phases measured just before in the same process, is within 1.5x of
that run's measured wall time (real MuJoCo, the smoke profile's sizes)."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import torch

from tomrepro.core.config import load_profile, profile_from_dict
from tomrepro.core.errors import TomreproError
from tomrepro.core.tasks import get_task
from tomrepro.loops.collect import Collector
from tomrepro.loops.mbpo import MBPORun
from tomrepro.loops.mbpo_population import run_population
from tomrepro.loops.planner import (
    FiniteCosts,
    PhaseCosts,
    TaskCosts,
    estimate_collect_run,
    estimate_mbpo_run,
    estimate_population,
    estimate_stages,
    measure_phases,
    measure_sac_update,
    measure_stacked_fit_step,
    parallel_wall,
    sweep_populations,
    torch_threads,
    unit_costs,
)
from tomrepro.sweep import plan_grid, populations

from .conftest import REPO_ROOT

TASK = "InvertedPendulum-v5"
# Within this factor of the measured wall time, either way (the criterion).
TOLERANCE = 1.5
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
    ),
]


def tiny_profile():
    """Sizes small enough to count by hand (every number below is used in the sums)."""
    raw = load_profile("smoke", REPO_ROOT / "pipelines").model_dump()
    raw["random_buffer"].update(task=TASK, env_steps=100)
    raw["collect"].update(
        seeds=[0, 1], task=TASK, env_steps=100, random_steps=20, snapshot_every=50,
        updates_per_step=1,
    )  # fmt: skip
    raw["sac"]["batch_size"] = 64
    raw["model"].update(
        holdout_ratio=0.5, max_holdout=10, batch_size=10, max_epochs=2, batches_per_epoch=None
    )
    raw["tom"].update(
        recent_size=30, discriminator_steps=7, q_steps=20,
        offline_convergence={"window": 100, "max_steps": 250},
    )  # fmt: skip
    raw["offline_study"].update(
        snapshots=[1], learners=["mle", "tom"], seeds=[0], eval_episodes=1, horizon=2
    )
    raw["mbpo"].update(
        tasks=[TASK], env_steps=100, env_steps_per_task={}, epoch_length=50, random_steps=20,
        model_train_every=40, model_max_epochs=1, model_batches_per_epoch=3, rollout_batch=10,
        rollout_length=1, rollout_schedule=None, update_schedule="every_step", updates_per_step=2,
        eval_episodes=1, eval_max_steps=5, learners=["mle", "tom"], seeds=[0, 1],
        continue_snapshots=[1], continue_env_steps=60,
    )  # fmt: skip
    raw["finite_mdp"].update(
        mdps=10, estimator_mdps=2, estimator_q_steps=100, estimator_discriminator_steps=40,
        convergence_mdps=1, convergence_samples=[1000, 4000], convergence_q_steps=[10, 20],
    )  # fmt: skip
    return profile_from_dict(raw)


ROUND = TaskCosts(
    env_step=1.0,
    env_make=1000.0,
    act=10.0,
    act_torch=10.0,
    act_batch_row=1.0,
    sac_update=100.0,
    model_step=1.0,
    model_fit_setup=5.0,
    model_row=0.1,
    rollout_row=0.5,
    tom_q_step=3.0,
    discriminator_step=2.0,
    tom_row=0.01,
)
ROUND_COSTS = PhaseCosts("cpu", 1, 1, {TASK: ROUND}, FiniteCosts(0.5, 0.25, 0.125))


def hand_counted() -> dict[str, float]:
    """The tiny profile's seconds at ROUND's costs, term by term from the loops' rules."""
    episode = get_task(TASK).max_episode_steps
    # Collect: 100 env steps; the snapshot at step 50 acts for 50; updates from step
    # max(20 random, 64 batch - 1) = 63 on: 37.
    collect_run = 100 * 1 + 50 * 10 + 37 * 100
    # Offline study, snapshot 1 (prefix 50 rows): one evaluation episode of full length; a cold
    # fit (holdout 10 rows, 40 // 10 = 4 steps, 2 epochs); errors on 1000 episode rows x
    # (2 + horizon 2) and 3 x 50 prefix rows; TOM: 7 discriminator steps, 3 windows of 100 Q
    # steps (max 250), a read-out of 50 rows after each window and one at the end.
    fit_50 = 5 + 2 * (4 * 1 + 10 * 0.1)
    evaluation = (episode * (2 + 2) + 3 * 50) * 0.1
    tom_offline = 7 * 2 + 300 * 3 + 4 * 50 * 0.01
    offline_run = (1000 + episode * (1 + 10)) + 2 * (fit_50 + evaluation) + tom_offline
    # MBPO from scratch, 100 steps: 80 acting steps; a burst of 2 after every step from 20 on;
    # model rounds at 20 (cold: 20 rows, holdout 10, 1 step x 2 epochs) and 60 (warm: 1 epoch
    # of 3 steps); 10 rollout rows each; test episodes at 0, 50, 100 (5 steps each).
    tests = 3 * (1000 + 5 * (1 + 1))
    scratch_mle = 100 * 1 + 80 * 10 + 80 * 2 * 100 + (5 + 2 * (1 + 1)) + (5 + 3 + 1) + 2 * 5 + tests
    # TOM is active from 30 policy rows on: the round at 60 (40 rows since step 20).
    scratch_tom = scratch_mle + 7 * 2 + 20 * 3 + 60 * 0.01
    # Continued from snapshot 1 (step 50) for 60 steps: all acting, a burst after each; rounds
    # at 50 (cold, 50 rows) and 90 (warm); tests at 50, 100 and the end 110.
    continue_mle = 60 * 1 + 60 * 10 + 60 * 2 * 100 + fit_50 + (5 + 3 + 1) + 2 * 5 + tests
    continue_tom = continue_mle + 7 * 2 + 20 * 3 + 90 * 0.01  # the round at 90: 40 policy rows
    # Finite: 12 exact solves per MDP; per estimator MDP 5 fits of 100 Q steps, 3 with 40
    # discriminator steps, 4 optima; the convergence table: per divergence 2 sizes x (10 + 20)
    # Q steps and an optimum.
    finite_mdp = 12 * 0.125
    estimator_mdp = 5 * 100 * 0.5 + 3 * 40 * 0.25 + 4 * 0.125
    convergence = 2 * (2 * (10 + 20) * 0.5 + 0.125)
    return {
        "random_buffer": 100 * 1,
        "collect": 2 * collect_run,
        "offline_study": 2 * offline_run,
        # Two seeds of each learner, two at a time: mle, mle, then tom, tom.
        "mbpo_continue": continue_mle + continue_tom,
        "mbpo_scratch": scratch_mle + scratch_tom,
        "finite_mdp": 10 * finite_mdp + 2 * estimator_mdp + convergence,
        "unit/offline_run": collect_run + offline_run,
        "unit/scratch": scratch_mle + scratch_tom,
        "unit/continue": continue_mle + continue_tom,
        "unit/finite_mdp": finite_mdp,
        "unit/finite_estimator_mdp": estimator_mdp,
    }


def test_stage_estimates_count_each_phase_as_the_loops_run_it():
    profile, expected = tiny_profile(), hand_counted()
    stages = estimate_stages(profile, ROUND_COSTS, parallel_runs=2)
    assert list(stages) == [
        "random_buffer", "collect", "offline_study", "mbpo_continue", "mbpo_scratch", "finite_mdp"
    ]  # fmt: skip
    for stage, seconds in stages.items():
        assert seconds == pytest.approx(expected[stage]), stage
    units = unit_costs(profile, ROUND_COSTS)
    assert units["offline_run"] == pytest.approx(expected["unit/offline_run"])
    assert units["finite_mdp"] == pytest.approx(expected["unit/finite_mdp"])
    assert units["finite_estimator_mdp"] == pytest.approx(expected["unit/finite_estimator_mdp"])
    cells = {(u["kind"], u["snapshot"]): u for u in units["mbpo_seed"]}
    assert cells[("scratch", None)]["seconds"] == pytest.approx(expected["unit/scratch"])
    assert cells[("continue", 1)]["seconds"] == pytest.approx(expected["unit/continue"])
    assert cells[("continue", 1)]["task"] == TASK and cells[("scratch", None)]["task"] == TASK


def test_a_sweep_runs_its_runs_on_the_first_free_worker_in_grid_order():
    assert parallel_wall([3.0, 1.0, 1.0, 1.0], 2) == 3.0  # the three short runs share a worker
    assert parallel_wall([1.0, 1.0, 3.0], 2) == 4.0
    assert parallel_wall([2.0, 2.0], 8) == 2.0
    assert parallel_wall([], 2) == 0.0
    one = estimate_stages(tiny_profile(), ROUND_COSTS, parallel_runs=1)["mbpo_scratch"]
    assert one == pytest.approx(2 * hand_counted()["mbpo_scratch"])  # four runs one at a time


def population_costs(size: int, device: str = "cuda") -> PhaseCosts:
    """ROUND's costs for sweeps in populations of `size` (batched, as on a GPU): a batched
    update of 4 runs takes 150 (of 2: 120), a model step of a stack of 4 fits 2 (of 2: 1.5),
    and 2 threads do half a run's stepping and two runs' training at once."""
    return dataclasses.replace(
        ROUND_COSTS,
        device=device,
        population=size,
        population_updates={TASK: {2: 120.0, 4: 150.0}},
        thread_speedup={2: {"stepping": 0.5, "training": 2.0}},
        population_fit_steps={TASK: {2: 1.5, 4: 2.0}},
    )


def test_a_population_is_its_threads_share_of_the_runs_own_work_plus_batched_updates():
    """The tiny profile's from-scratch sweep (mle s0, s1, tom s0, s1) on 2 CPUs at ROUND's
    costs, split as `hand_counted` counts it into stepping (env steps, actions, tests), the
    threads' training (rollouts) and the stacked work (TOM's round at its own cost, model fits
    with each run's steps at its share of the stack's step), with 160 SAC updates per run."""
    tests = 3 * (1000 + 5 * (1 + 1))
    stepping = 100 * 1 + 80 * 10 + tests

    def fits(step: float) -> float:  # a cold fit of 2 epochs of 1 step, a warm one of 3 steps
        return (5 + 2 * (step + 1)) + (5 + 3 * step + 1)

    rollouts = 2 * 5
    tom = 7 * 2 + 20 * 3 + 60 * 0.01  # TOM's round at 60, stacked like the fits
    profile = tiny_profile()
    # One population of 4 on 2 threads: stepping at 0.5 runs per run-time, rollouts at 2.
    four = estimate_stages(profile, population_costs(4), parallel_runs=2, cpus=2)
    own = 4 * stepping / 0.5 + 4 * rollouts / 2.0 + 4 * fits(2.0 / 4) + 2 * tom
    assert four["mbpo_scratch"] == pytest.approx(own + 160 * 150.0)
    # Two populations of 2 side by side: one thread each, so their runs' work adds up.
    two = estimate_stages(profile, population_costs(2), parallel_runs=2, cpus=2)
    slower = 2 * (stepping + rollouts + tom + fits(1.5 / 2)) + 160 * 120.0
    assert two["mbpo_scratch"] == pytest.approx(slower)
    # A population whose own work is one run's: never faster than its slowest run.
    wall, sac = estimate_population(profile, population_costs(2), ["tom"] * 2, threads=2)
    assert sac == 160 * 120.0
    assert wall == pytest.approx(
        max(
            stepping + rollouts + tom + fits(0.75),
            2 * stepping / 0.5 + 2 * rollouts / 2.0 + 2 * (fits(0.75) + tom),
        )
        + sac
    )
    # A population of one is the run alone.
    alone, _ = estimate_population(profile, population_costs(4), ["tom"])
    assert alone == pytest.approx(estimate_mbpo_run(profile, ROUND_COSTS, "tom"))
    with pytest.raises(TomreproError, match="population of 3"):
        estimate_population(profile, population_costs(4), ["tom"] * 3)


def test_a_cpu_population_is_its_runs_alone_on_its_threads():
    """On CPU each run steps alone on a thread: the busiest thread's runs, or all runs' work at
    the threads' speedups (stepping at its own, the rest at training's), whichever is longer."""
    profile = tiny_profile()
    costs = population_costs(4, device="cpu")
    mle, tom = (estimate_mbpo_run(profile, ROUND_COSTS, m) for m in ("mle", "tom"))
    stepping = 100 * 1 + 80 * 10 + 3 * (1000 + 5 * (1 + 1))
    work = 2 * stepping / 0.5 + (mle + tom - 2 * stepping) / 2.0
    wall, sac = estimate_population(profile, costs, ["mle", "tom"], threads=2)
    assert wall == pytest.approx(max(tom, mle, work)) and sac == 2 * 160 * ROUND.sac_update
    fast = dataclasses.replace(costs, thread_speedup={2: {"stepping": 2.0, "training": 2.0}})
    wall, _ = estimate_population(profile, fast, ["mle", "tom", "tom"], threads=2)
    assert mle < tom and wall == pytest.approx(mle + tom)  # the thread done first takes the 3rd
    alone, _ = estimate_population(profile, costs, ["tom"])
    assert alone == pytest.approx(tom)


@pytest.mark.parametrize("size", [1, 3, 4])
def test_the_planner_packs_populations_as_the_sweep_does(tmp_path, size):
    profile = tiny_profile()
    cells = {"scratch": None, "continue": tmp_path / "buffer.h5"}
    for kind, source in cells.items():
        sweep = [
            (s.task or profile.collect.task, s.snapshot, [r.learner for r in group])
            for group in populations(plan_grid(profile, kind, tmp_path, source=source), size)
            for s in group[:1]
        ]
        assert sweep_populations(profile, kind, size) == sweep


def test_costs_round_trip_through_json_with_population_measurements():
    for costs in (ROUND_COSTS, population_costs(4)):
        assert PhaseCosts.from_json(json.loads(json.dumps(costs.to_json()))) == costs
    seconds = measure_sac_update(11, 3, tiny_profile().sac, torch.device("cpu"), 3, budget=0.05)
    assert 0 < seconds < 10
    step = measure_stacked_fit_step(
        tiny_profile().model, get_task(TASK), torch.device("cpu"), 3, budget=0.05
    )
    assert 0 < step < 10


def _estimated_and_measured(profile, device, root) -> dict[str, tuple[float, float]]:
    """Phases measured, then each run estimated, built, and timed (its `run()` alone: start-up,
    such as the code digest of a run's fingerprint, is not what the planner counts)."""
    costs = measure_phases(profile, device, budget=0.5)
    runs: dict[str, tuple[MBPORun | Collector, float]] = {
        "mbpo": (
            MBPORun(profile, root / "mbpo", learner="tom", device=device, progress=False),
            estimate_mbpo_run(profile, costs, "tom"),
        ),
        "collect": (
            Collector(profile, root / "collect", device=device, progress=False),
            estimate_collect_run(profile, costs),
        ),
    }
    out = {}
    for name, (run, estimate) in runs.items():
        tick = time.perf_counter()
        run.run()
        out[name] = (estimate, time.perf_counter() - tick)
    return out


@pytest.mark.serial
@pytest.mark.parametrize("device", DEVICES)
def test_a_short_real_run_takes_what_the_planner_estimates(tmp_path, device):
    """An MBPO run of the smoke profile (TOM, so every phase takes part) and a collect run, each
    within 1.5x of the estimate from phases measured just before, in the same process. Other
    processes on a shared machine can change its speed between measuring and running, so a
    miss is measured and run once more; two misses fail."""
    profile = load_profile("smoke", REPO_ROOT / "pipelines")
    attempts = []
    for attempt in range(2):
        checks = _estimated_and_measured(profile, device, tmp_path / str(attempt))
        attempts.append(checks)
        if all(e / TOLERANCE <= m <= e * TOLERANCE for e, m in checks.values()):
            return
    pytest.fail(f"(estimate, measured) seconds outside {TOLERANCE}x twice: {attempts}")


@pytest.mark.serial
def test_a_short_real_population_takes_what_the_planner_estimates(tmp_path):
    """A population of two smoke MBPO runs (MLE and TOM, each alone on its own thread, as on
    CPU) on one torch thread, as a sweep runs it: within 1.5x of `estimate_population` from phases
    measured just before at that population size. One retry, as above."""
    profile = load_profile("smoke", REPO_ROOT / "pipelines")
    learners = ["mle", "tom"]
    attempts = []
    with torch_threads(1):
        for attempt in range(2):
            costs = measure_phases(profile, "cpu", budget=0.5, population=2)
            estimate, _ = estimate_population(profile, costs, learners)
            runs = [
                MBPORun(profile, tmp_path / f"{attempt}/{m}", learner=m, seed=i, progress=False)
                for i, m in enumerate(learners)
            ]
            tick = time.perf_counter()
            run_population(runs)
            measured = time.perf_counter() - tick
            attempts.append((estimate, measured))
            if estimate / TOLERANCE <= measured <= estimate * TOLERANCE:
                return
    pytest.fail(f"(estimate, measured) seconds outside {TOLERANCE}x twice: {attempts}")


def test_plan_command_prints_every_stage_and_writes_its_json(tmp_path, run_cli):
    out = tmp_path / "plan.json"
    code, text, err = run_cli(
        "plan", "--profile", "smoke", "--device", "cpu", "--seconds-per-phase", "0.02",
        "--out", out,
    )  # fmt: skip
    assert code == 0, err
    plan = json.loads(out.read_text())
    assert plan["profile"] == "smoke" and plan["sac_update_ms"] > 0
    for stage in plan["stages_seconds"]:
        assert stage in text
    assert "reference SAC update" in text and "estimates, not measurements" in text
    assert PhaseCosts.from_json(plan["phase_costs"]).tasks.keys() == {TASK}


def test_plan_command_plans_populations_and_refuses_a_gpu_it_lacks(tmp_path, run_cli):
    out = tmp_path / "plan.json"
    code, text, err = run_cli(
        "plan", "--profile", "smoke", "--device", "cpu", "--seconds-per-phase", "0.02",
        "--runs-per-population", "2", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    plan = json.loads(out.read_text())
    assert plan["runs_per_population"] == 2 and "populations of up to 2 runs" in text
    mbpo_task = load_profile("smoke").mbpo.tasks[0]
    sweep = PhaseCosts.from_json(plan["sweep_phase_costs"])
    assert 2 in sweep.thread_speedup and "each run on a thread" in text  # CPU: runs on threads
    assert mbpo_task not in sweep.population_updates
    code, _, err = run_cli(
        "plan", "--profile", "smoke", "--device", "cpu", "--gpus-per-run", "1",
        "--out", tmp_path / "gpu.json",
    )  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "GPU" in err
    assert not (tmp_path / "gpu.json").exists()


def test_plan_command_errors_are_one_line(tmp_path, run_cli):
    code, _, err = run_cli("plan", "--profile", "nope", "--out", tmp_path / "p.json")
    assert code == 2 and "unknown profile" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("plan", "--profile", "smoke", "--seconds-per-phase", "0")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()
