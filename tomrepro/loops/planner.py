"""`tomrepro plan`: how long each stage of a profile would take on this machine, before it runs.

Whether the paper profile takes hours or weeks depends on the hardware at hand, so the planner
measures rather than guesses. Two parts, each changeable alone:
- `measure_phases` times a short stretch of every phase the stages are made of, with the
  profile's own sizes on the tasks it uses: an env step recorded into a buffer, the actor's action
  on one observation, a SAC update with its minibatch draw, a model-fit minibatch step, a row
  through the model, a model-rollout row, a TOM Q step, discriminator step and per-row read-out,
  and the finite-MDP stage's own Q step, discriminator step and exact dual solve;
- `estimate_stages` counts from the profile how many of each phase every stage runs, by the
  loops' own rules (update schedule, model-round cadence, snapshot steps, the sweep's parallel
  runs), and multiplies. The costs are plain data (`PhaseCosts`), so a test can hand it round
  numbers and a later population measurement can hand it others.

Every cap is counted as reached, so the figures lean high where a run may stop early: model fits
run all their epochs, an offline dual all its steps, test episodes their full length, rollouts
their full length. Not counted: writing files, process and Ray start-up, VaGraM's value gradients,
and the finite stage's closed-form checks other than its dual solves (about a millisecond per
MDP). The finite stage lives in the analysis layer, which this layer cannot call, so it is
estimated from its estimator phases, counted as `analysis/finite_claims.py` runs them.

A sweep steps its runs in populations (`loops/mbpo_population.py`). On a GPU: R runs of one
cell in lockstep, their SAC updates one batched call, their model rounds stacked, their own
phases (env steps, rollouts, evaluation) on min(R, CPUs) threads. On CPU: each run alone, on
min(R, CPUs) threads. The planner measures the batched update and the stacked model step at
every population size the sweep's packing makes (GPU), and how many runs' own phases the threads
do in the time one thread does one run's, for each kind: stepping (env steps, actions;
Python-bound, so threads can even slow each other down) and training (model-fit steps;
torch-bound); the speedup at fewer threads is interpolated. A population's wall time is then
its slowest run's (on CPU: its busiest thread's) or all its work over those speedups, whichever
is longer, plus (GPU) its batched updates. Populations run as many at a time
as the sweep's Ray would start them (CPUs / cpus per run, GPUs / gpus per run); on a GPU their
updates are also counted one after another on the devices, since populations sharing a GPU
share its time.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from tomrepro.core.atomic import atomic_path, make_parent
from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.config import FiniteMDPConfig, MBPOConfig, ModelConfig, ProfileConfig, SACConfig
from tomrepro.core.errors import ConfigError, TomreproError
from tomrepro.core.learners import TOMConfig, get_learner
from tomrepro.core.seeding import derive_seed
from tomrepro.core.tasks import Task, get_task
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.discriminator import discriminator_reward, train_discriminator
from tomrepro.learning.dual_rl import OccupancyRatioEstimator, TransitionTensors
from tomrepro.learning.dynamics_model import DynamicsModel, model_inputs, model_targets
from tomrepro.learning.finite_dual import Divergence, solve_dual
from tomrepro.learning.finite_features import DiscretePolicy, one_hot
from tomrepro.learning.finite_mdp import random_mdp, random_policy, transition_occupancy
from tomrepro.learning.model_rollout import rollout_model
from tomrepro.learning.model_training import FitJob, fit_on_columns, prepare_fit, train_fits
from tomrepro.learning.policy import SnapshotPolicy
from tomrepro.learning.sac import SAC, MinibatchSampler, SquashedGaussianActor
from tomrepro.loops.collect import snapshot_steps
from tomrepro.loops.episode_recorder import EpisodeRecorder
from tomrepro.loops.mbpo_population import (
    batches_runs,
    default_runs_per_population,
    group_populations,
    population_cpus,
    population_torch_threads,
    stack_batches,
    sweep_parallelism,
)
from tomrepro.loops.update_schedule import UpdateSchedule

PLAN_FORMAT = "tomrepro.plan/1"
# The stages whose work the planner counts, in pipeline order; dvc.yaml's others (inspecting the
# random buffer, plan, analyse, report) train nothing and take seconds to minutes.
STAGES = (
    "random_buffer",
    "collect",
    "offline_study",
    "mbpo_continue",
    "mbpo_scratch",
    "finite_mdp",
)
NOT_ESTIMATED = ("inspect_random_buffer", "plan", "analyse", "report")
SYNTHETIC_ROWS = 4096  # rows of the synthetic buffers phases are timed on
BATCHES = 5  # a phase's time is the median over this many batches of calls
TIMED_STEPS = 8  # optimiser steps per timed call of the TOM networks
# The finite stage's MDPs have 3-8 states and 2-4 actions (`finite_claims._draw`): timed mid-range.
FINITE_STATES, FINITE_ACTIONS = 6, 3
# Work per finite MDP as `analysis/finite_claims.py` runs it: exact dual solves per MDP of the
# recovery check (3 rewards x 2 divergences x 2 forms), estimator fits per C5 MDP (2 rewards x 2
# divergences, half with a discriminator) plus the one C6 fit with estimated weights (with one),
# population optima per C5 MDP (one per reward and divergence); the convergence table runs each
# divergence (one optimum each) on the no-discriminator reward.
RECOVERY_SOLVES = 12
ESTIMATOR_FITS, ESTIMATOR_DISCRIMINATOR_FITS, ESTIMATOR_OPTIMA = 5, 3, 4
DIVERGENCES = 2


@dataclass(frozen=True)
class TaskCosts:
    """Seconds of one unit of each phase on one task, with the profile's sizes."""

    env_step: float  # one env step recorded into a buffer (random actions, resets included)
    env_make: float  # a fresh env made, reset and closed (one per test episode)
    act: float  # the numpy snapshot actor on one observation (collect, offline evaluation)
    act_torch: float  # the live torch actor on one observation, on the device (MBPO)
    act_batch_row: float  # one row of a batched actor pass over MBPO's lockstep test episodes
    sac_update: float  # one SAC update with its minibatch draw
    model_step: float  # one minibatch step of a dynamics-model fit
    model_fit_setup: float  # a fit's own work besides its steps (split, normalisation, optimiser)
    model_row: float  # one row through the dynamics model (holdout, evaluation)
    rollout_row: float  # one model-rollout row: the actor's action and the model's sample
    tom_q_step: float  # one Adam step of TOM's dual Q network
    discriminator_step: float  # one Adam step of TOM's discriminator
    tom_row: float  # one row of a TOM round's read-out (discriminator reward and weight)


@dataclass(frozen=True)
class FiniteCosts:
    """Seconds of the finite-MDP stage's phases (on the CPU, as that stage runs)."""

    q_step: float  # one Q step of the estimator on one-hot features
    discriminator_step: float  # one discriminator step on one-hot features
    exact_solve: float  # one exact dual solve (either form, either divergence)


@dataclass(frozen=True)
class PhaseCosts:
    """What `measure_phases` measured: per-task and finite-stage costs, and how."""

    device: str
    threads: int  # torch threads the phases ran on
    population: int  # runs per population of the sweeps (1: one run per process)
    tasks: dict[str, TaskCosts]
    finite: FiniteCosts | None = None
    # task -> {runs: seconds of one batched SAC update of a population of that many runs}
    population_updates: dict[str, dict[int, float]] = field(default_factory=dict)
    # threads -> per kind of phase (`SPEEDUP_KINDS`), how many runs' phases that many threads
    # do in the time one thread does one run's
    thread_speedup: dict[int, dict[str, float]] = field(default_factory=dict)
    # task -> {runs: seconds of one minibatch step of that many model fits as one stack}
    population_fit_steps: dict[str, dict[int, float]] = field(default_factory=dict)

    def task(self, task_id: str) -> TaskCosts:
        if task_id not in self.tasks:
            raise TomreproError(f"no phase costs measured for task {task_id!r}")
        return self.tasks[task_id]

    def population_update(self, task_id: str, runs: int) -> float:
        """Seconds of one SAC update of `runs` runs of `task_id` as one batched call."""
        if runs == 1:
            return self.task(task_id).sac_update
        return _measured(self.population_updates, task_id, runs, "SAC update of a population")

    def population_fit_step(self, task_id: str, runs: int) -> float:
        """Seconds of one minibatch step of `runs` stacked model fits of `task_id`."""
        if runs == 1:
            return self.task(task_id).model_step
        return _measured(self.population_fit_steps, task_id, runs, "model step of a stack")

    def in_population(self, task_id: str, runs: int) -> PhaseCosts:
        """These costs as each of `runs` runs of a population sees them: its share of the
        stacked model step."""
        share = self.population_fit_step(task_id, runs) / runs
        tasks = {**self.tasks, task_id: replace(self.task(task_id), model_step=share)}
        return replace(self, tasks=tasks)

    def speedup(self, kind: str, threads: int) -> float:
        """The `kind` phases' speedup on `threads` threads: measured at the most threads a
        population uses, linear in between (1 at one thread)."""
        if threads <= 1:
            return 1.0
        if not self.thread_speedup:
            raise TomreproError(f"no thread speedup measured for {threads} threads")
        most = max(self.thread_speedup)
        if threads > most:
            raise TomreproError(f"thread speedup measured up to {most} threads, not {threads}")
        return 1.0 + (threads - 1) * (self.thread_speedup[most][kind] - 1.0) / (most - 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> PhaseCosts:
        finite = raw.get("finite")
        return cls(
            raw["device"],
            int(raw["threads"]),
            int(raw["population"]),
            {k: TaskCosts(**v) for k, v in raw["tasks"].items()},
            None if finite is None else FiniteCosts(**finite),
            {
                task: {int(runs): float(s) for runs, s in sizes.items()}
                for task, sizes in raw.get("population_updates", {}).items()
            },
            {
                int(threads): {kind: float(x) for kind, x in kinds.items()}
                for threads, kinds in raw.get("thread_speedup", {}).items()
            },
            {
                task: {int(runs): float(s) for runs, s in sizes.items()}
                for task, sizes in raw.get("population_fit_steps", {}).items()
            },
        )


def _measured(table: dict[str, dict[int, float]], task_id: str, runs: int, what: str) -> float:
    if runs not in table.get(task_id, {}):
        raise TomreproError(f"no {what} of {runs} runs measured on {task_id!r}")
    return table[task_id][runs]


# --- measuring ---------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(work: Callable[[], object], device: torch.device, budget: float) -> float:
    """Median over `BATCHES` batches of the mean seconds of one call of `work`, after a warm-up
    call; the batches together last about `budget` seconds. A median, so another process's
    burst on a shared machine does not become the machine's speed."""
    work()
    _sync(device)
    tick = time.perf_counter()
    work()
    _sync(device)
    once = time.perf_counter() - tick
    calls = max(1, int(budget / BATCHES / max(once, 1e-7)))
    means = []
    for _ in range(BATCHES):
        tick = time.perf_counter()
        for _ in range(calls):
            work()
        _sync(device)
        means.append((time.perf_counter() - tick) / calls)
    return float(np.median(means))


def _timed(work: Callable[[], object], device: torch.device) -> float:
    tick = time.perf_counter()
    work()
    _sync(device)
    return time.perf_counter() - tick


@contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run a block on `threads` torch threads (None: as set); yields the count in use."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _generator(seed: int, index: int, device: torch.device | None = None) -> torch.Generator:
    return torch.Generator(device=device or "cpu").manual_seed(derive_seed(seed, "planner", index))


def _random_buffer(obs_dim: int, act_dim: int, rng: np.random.Generator) -> ReplayBuffer:
    n = SYNTHETIC_ROWS
    columns = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "terminations": np.zeros(n, dtype=bool),
        "truncations": np.zeros(n, dtype=bool),
        "episode_ids": np.arange(n, dtype=np.int64) // 100,
        "episode_steps": np.arange(n, dtype=np.int64) % 100,
        "env_steps": np.arange(n, dtype=np.int64),
        "policy_versions": np.ones(n, dtype=np.int64),
    }
    return ReplayBuffer.from_columns(columns, check=False)


def measure_sac_update(
    obs_dim: int,
    act_dim: int,
    sac_cfg: SACConfig,
    device: torch.device,
    population: int = 1,
    budget: float = 0.5,
    seed: int = 0,
) -> float:
    """Seconds of one SAC update, minibatch draws included, on synthetic rows of these sizes:
    of one run, or of a population of runs as one batched call on their own minibatches."""
    if population < 1:
        raise ConfigError(f"a population needs at least one run, got {population}")
    rng = np.random.default_rng(derive_seed(seed, "planner", 1))
    ones = np.ones(act_dim, dtype=np.float32)
    buffer = _random_buffer(obs_dim, act_dim, rng)
    if population == 1:
        agent = SAC(obs_dim, act_dim, -ones, ones, sac_cfg, device, _generator(seed, 2, device))
        sampler = MinibatchSampler(buffer, sac_cfg.batch_size, device, _generator(seed, 3))
        return seconds_per_call(lambda: agent.update(sampler.sample()), device, budget)
    runs = range(population)
    generators = [_generator(seed, 100 + r, device) for r in runs]
    agents = SAC(obs_dim, act_dim, -ones, ones, sac_cfg, device, generators)
    samplers = [
        MinibatchSampler(buffer, sac_cfg.batch_size, device, _generator(seed, 200 + r))
        for r in runs
    ]
    return seconds_per_call(
        lambda: agents.update(stack_batches([s.sample() for s in samplers])), device, budget
    )


def measure_stacked_fit_step(
    model_cfg: ModelConfig,
    task: Task,
    device: torch.device,
    runs: int,
    budget: float = 0.5,
    seed: int = 0,
) -> float:
    """Seconds of one minibatch step of `runs` model fits trained as one stack (`train_fits`),
    on synthetic rows: from rounds of one epoch of few and of many steps, the faster of two
    each, so that setup and holdout passes cancel."""
    rng = np.random.default_rng(derive_seed(seed, "planner", 13))
    columns = _random_buffer(task.obs_dim, task.act_dim, rng).columns()
    inputs = model_inputs(columns["observations"], columns["actions"])
    targets = model_targets(
        columns["observations"], columns["next_observations"], columns["rewards"]
    )
    models = [DynamicsModel(model_cfg, task.obs_dim, task.act_dim) for _ in range(runs)]

    def stack(batches: int) -> None:
        generators = [_generator(seed, 300 + r) for r in range(runs)]
        jobs = [
            FitJob(m, inputs, targets, None, g, max_epochs=1, batches_per_epoch=batches)
            for m, g in zip(models, generators, strict=True)
        ]
        train_fits([prepare_fit(job, device) for job in jobs])

    few = min(_timed(lambda: stack(1), device) for _ in range(2))
    batches = int(np.clip(budget / 2 / max(few, 1e-6), 4, 500))
    many = min(_timed(lambda: stack(1 + batches), device) for _ in range(2))
    return max(many - few, 1e-9) / batches


SPEEDUP_KINDS = ("stepping", "training")


def _thread_speedup(
    units: list[Callable[[int], None]], device: torch.device, budget: float
) -> float:
    """How many threads' units of work (`units[i](n)` does n units on thread i's own state) go
    in the time one thread does its own: threads x alone / together, from the best of three
    timings each way so that another process's burst does not count. Below 1 where threads
    slow each other down (the GIL)."""
    threads = len(units)
    once = _timed(lambda: units[0](3), device) / 3
    n = max(3, int(budget / 4 / max(once, 1e-7)))
    with ThreadPoolExecutor(threads) as pool:
        alone = min(_timed(lambda: units[0](n), device) for _ in range(3))
        together = min(
            _timed(lambda: list(pool.map(lambda unit: unit(n), units)), device) for _ in range(3)
        )
    return threads * alone / together


def measure_thread_speedup(
    profile: ProfileConfig, task: Task, device: torch.device, threads: int, budget: float
) -> dict[str, float]:
    """The speedup of `threads` runs' own phases on as many threads, per kind of phase:
    `stepping` (an action from the torch actor and a MuJoCo step: Python-bound, as are the
    evaluation episodes) and `training` (minibatch steps of a model fit: torch-bound, as are
    rollouts and TOM's rounds); each thread works on its own env or model."""
    seed = profile.seed
    actor = _random_actor(profile, task, device)
    envs = [task.make_env() for _ in range(threads)]
    starts = [
        env.reset(seed=derive_seed(seed, "planner", 1000 + i))[0] for i, env in enumerate(envs)
    ]
    state = list(starts)

    def stepping(i: int) -> Callable[[int], None]:
        @torch.no_grad()
        def steps(n: int) -> None:
            for _ in range(n):
                obs = torch.as_tensor(state[i], dtype=torch.float32, device=device)
                action = actor.act(obs[None], torch.zeros(1, task.act_dim, device=device))[0]
                state[i], _, terminated, truncated, _ = envs[i].step(action.cpu().numpy())
                if terminated or truncated:
                    state[i] = envs[i].reset(seed=derive_seed(seed, "planner", 1000 + i))[0]

        return steps

    rng = np.random.default_rng(derive_seed(seed, "planner", 15))
    columns = _random_buffer(task.obs_dim, task.act_dim, rng).columns()

    def training(i: int) -> Callable[[int], None]:
        model = DynamicsModel(profile.model, task.obs_dim, task.act_dim).to(device)
        generator = _generator(seed, 2000 + i)

        def fit(n: int) -> None:
            fit_on_columns(
                model, columns, None, generator, device, max_epochs=1, batches_per_epoch=n
            )

        return fit

    try:
        return {
            "stepping": _thread_speedup([stepping(i) for i in range(threads)], device, budget),
            "training": _thread_speedup([training(i) for i in range(threads)], device, budget),
        }
    finally:
        for env in envs:
            env.close()


def _env_phases(task: Task, seed: int, budget: float) -> tuple[float, float]:
    """Seconds of an env step recorded into a buffer, and of making, resetting and closing one."""
    cpu = torch.device("cpu")
    env = task.make_env()
    rng = np.random.default_rng(derive_seed(seed, "planner", 4))
    low, high = env.action_space.low, env.action_space.high
    actions = (low + (high - low) * rng.random((SYNTHETIC_ROWS, task.act_dim))).astype(np.float32)
    recorder = EpisodeRecorder(env, ReplayBuffer(SYNTHETIC_ROWS, task.obs_dim, task.act_dim))
    state = {"obs": env.reset(seed=derive_seed(seed, "planner", 5))[0]}
    count = itertools.count()

    def step() -> None:
        i = next(count)
        state["obs"], _ = recorder.step(state["obs"], actions[i % SYNTHETIC_ROWS], i, 0)

    def make() -> None:
        fresh = task.make_env()
        fresh.reset(seed=derive_seed(seed, "planner", 6))
        fresh.close()

    try:
        # A handful of makes only: some MuJoCo models print a warning each time one compiles.
        return seconds_per_call(step, cpu, budget), seconds_per_call(make, cpu, 0.0)
    finally:
        env.close()


def _actor_phases(
    actor: SquashedGaussianActor, obs_dim: int, eval_rows: int, device: torch.device, budget: float
) -> tuple[float, float, float]:
    """Seconds of the numpy actor and of the torch actor on one observation, and of one row of a
    batched numpy pass over `eval_rows` observations."""
    cpu = torch.device("cpu")
    policy = SnapshotPolicy({k: v.detach().cpu().numpy() for k, v in actor.state_dict().items()})
    act_dim = policy.act_dim
    obs, noise = np.zeros(obs_dim, dtype=np.float32), np.zeros(act_dim, dtype=np.float32)
    rows = np.zeros((eval_rows, obs_dim), dtype=np.float32)
    zeros = np.zeros((eval_rows, act_dim), dtype=np.float32)

    @torch.no_grad()
    def act_torch() -> np.ndarray:  # what the MBPO loop does for one env step
        o = torch.as_tensor(obs, dtype=torch.float32, device=device)
        eps = torch.as_tensor(noise, device=device)
        return actor.act(o[None], eps[None])[0].cpu().numpy()

    return (
        seconds_per_call(lambda: policy.act(obs, noise), cpu, budget),
        seconds_per_call(act_torch, device, budget),
        seconds_per_call(lambda: policy.act_batch(rows, zeros), cpu, budget) / eval_rows,
    )


def _model_phases(
    model_cfg: ModelConfig,
    actor: SquashedGaussianActor,
    task: Task,
    rollout_rows: int,
    device: torch.device,
    budget: float,
    seed: int,
) -> tuple[float, float, float, float]:
    """Seconds of one minibatch step of a model fit and of a fit's own setup, of one row through
    the model, and of one model-rollout row. Step and setup come from fits on synthetic rows: a
    fit of one minibatch (timed often: setup, a step and a holdout pass) and a fit of two epochs
    of many minibatches (the faster of two, so that another process's burst does not count)."""
    rng = np.random.default_rng(derive_seed(seed, "planner", 7))
    columns = _random_buffer(task.obs_dim, task.act_dim, rng).columns()
    model = DynamicsModel(model_cfg, task.obs_dim, task.act_dim).to(device)
    generator = _generator(seed, 8)

    def fit(epochs: int, batches: int) -> None:
        fit_on_columns(
            model, columns, None, generator, device, max_epochs=epochs, batches_per_epoch=batches
        )

    x = torch.as_tensor(model_inputs(columns["observations"], columns["actions"]), device=device)
    y = torch.as_tensor(
        model_targets(columns["observations"], columns["next_observations"], columns["rewards"]),
        device=device,
    )
    row = seconds_per_call(lambda: model.nll(x, y), device, budget) / len(x)
    holdout = min(int(len(x) * model_cfg.holdout_ratio), model_cfg.max_holdout) * row
    single = seconds_per_call(lambda: fit(1, 1), device, budget / 2)
    batches = int(np.clip(budget / 4 / single, 2, 2000))
    many = min(_timed(lambda: fit(2, batches), device) for _ in range(2))
    # single = setup + step + holdout; many = setup + 2 (batches x step + holdout)
    step = max((many - single - holdout) / (2 * batches - 1), many / (2 * batches) / 10)
    setup = max(0.0, single - step - holdout)
    starts = torch.as_tensor(
        rng.normal(size=(rollout_rows, task.obs_dim)), dtype=torch.float32, device=device
    )
    rollout_generator = _generator(seed, 9, device)
    rollout = seconds_per_call(
        lambda: rollout_model(model, actor, starts, 1, task.terminated_torch, rollout_generator),
        device,
        budget,
    )
    return step, setup, row, rollout / rollout_rows


def _tom_phases(
    tom: TOMConfig,
    actor: Any,
    observations: torch.Tensor,
    actions: torch.Tensor,
    device: torch.device,
    budget: float,
    seed: int,
) -> tuple[float, float, float]:
    """Seconds of one dual Q step, of one discriminator step, and of one row of a round's read-out
    (discriminator reward and weight), on the given rows (N, obs), (N, act)."""
    n, obs_dim, act_dim = observations.shape[0], observations.shape[1], actions.shape[1]
    next_obs = observations.roll(1, 0)
    sas = torch.cat((observations, actions, next_obs), dim=1)
    data = TransitionTensors(
        observations, actions, torch.zeros(n, device=device), next_obs, torch.ones(n, device=device)
    )
    estimator = OccupancyRatioEstimator(obs_dim, act_dim, tom, device, derive_seed(seed, "planner"))
    initial = observations[: max(1, n // 10)]
    q_step = seconds_per_call(
        lambda: estimator.fit(data, initial, actor, steps=TIMED_STEPS), device, budget
    )
    short = tom.model_copy(update={"discriminator_steps": TIMED_STEPS})
    recent = sas[-min(n, tom.recent_size) :]
    generator = _generator(seed, 10)
    discriminator_step = seconds_per_call(
        lambda: train_discriminator(recent, sas, short, obs_dim, act_dim, generator), device, budget
    )
    disc, _ = train_discriminator(recent, sas, short, obs_dim, act_dim, generator)
    readout = seconds_per_call(
        lambda: (discriminator_reward(disc, sas), estimator.weights(data, actor)), device, budget
    )
    return q_step / TIMED_STEPS, discriminator_step / TIMED_STEPS, readout / n


def _random_actor(
    profile: ProfileConfig, task: Task, device: torch.device
) -> SquashedGaussianActor:
    ones = np.ones(task.act_dim, dtype=np.float32)
    actor = SquashedGaussianActor(
        task.obs_dim, task.act_dim, tuple(profile.sac.hidden_sizes), -ones, ones
    )
    actor.net.reset_parameters(_generator(profile.seed, 11))
    return actor.to(device)


def _measure_task(
    profile: ProfileConfig, task: Task, device: torch.device, budget: float
) -> TaskCosts:
    """Every phase on one task with the profile's sizes (random weights and synthetic rows:
    only the sizes matter to the time); the SAC update of one run."""
    seed = profile.seed
    env_step, env_make = _env_phases(task, seed, budget)
    actor = _random_actor(profile, task, device)
    eval_rows = profile.mbpo.eval_episodes if profile.mbpo is not None else 1
    act, act_torch, act_batch_row = _actor_phases(actor, task.obs_dim, eval_rows, device, budget)
    sac_update = measure_sac_update(
        task.obs_dim, task.act_dim, profile.sac, device, 1, budget, seed
    )
    rollout_rows = min(profile.mbpo.rollout_batch if profile.mbpo else SYNTHETIC_ROWS, 20_000)
    model_step, model_fit_setup, model_row, rollout_row = _model_phases(
        profile.model, actor, task, rollout_rows, device, budget, seed
    )
    rng = np.random.default_rng(derive_seed(seed, "planner", 12))
    rows = max(SYNTHETIC_ROWS, profile.tom.recent_size)
    tom_q_step, discriminator_step, tom_row = _tom_phases(
        profile.tom,
        actor,
        torch.as_tensor(rng.normal(size=(rows, task.obs_dim)), dtype=torch.float32, device=device),
        torch.as_tensor(
            rng.uniform(-1, 1, (rows, task.act_dim)), dtype=torch.float32, device=device
        ),
        device,
        budget,
        seed,
    )
    return TaskCosts(
        env_step,
        env_make,
        act,
        act_torch,
        act_batch_row,
        sac_update,
        model_step,
        model_fit_setup,
        model_row,
        rollout_row,
        tom_q_step,
        discriminator_step,
        tom_row,
    )


def _finite_tom_config(cfg: FiniteMDPConfig, recent: int) -> TOMConfig:
    """TOM's settings of the finite stage's estimator (`finite_claims.estimator_config`)."""
    return TOMConfig(
        recent_size=recent,
        gamma=cfg.gamma,
        discriminator_steps=cfg.estimator_discriminator_steps,
        discriminator_width=cfg.estimator_discriminator_width,
        q_steps=cfg.estimator_q_steps,
        q_hidden_sizes=cfg.estimator_q_hidden_sizes,
        offline_convergence=None,
    )


def _measure_finite(cfg: FiniteMDPConfig, budget: float) -> FiniteCosts:
    """The finite stage's phases on a mid-sized MDP of its draws, on the CPU as it runs."""
    cpu = torch.device("cpu")
    rng = np.random.default_rng(derive_seed(cfg.seed, "planner", 13))
    mdp = random_mdp(rng, FINITE_STATES, FINITE_ACTIONS, cfg.gamma)
    pi = random_policy(rng, FINITE_STATES, FINITE_ACTIONS)
    n = cfg.estimator_samples
    observations = torch.as_tensor(one_hot(rng.integers(FINITE_STATES, size=n), FINITE_STATES))
    actions = torch.as_tensor(one_hot(rng.integers(FINITE_ACTIONS, size=n), FINITE_ACTIONS))
    tom = _finite_tom_config(cfg, round(cfg.estimator_recent_share * n))
    q_step, discriminator_step, _ = _tom_phases(
        tom, DiscretePolicy(pi), observations, actions, cpu, budget, cfg.seed
    )
    replay = transition_occupancy(mdp, random_policy(rng, FINITE_STATES, FINITE_ACTIONS))
    reward = rng.normal(size=replay.shape)

    divergences: tuple[Divergence, ...] = ("chi2", "kl")
    forms: tuple[Literal["expected", "sampled"], ...] = ("expected", "sampled")

    def solves() -> None:
        for divergence, form in itertools.product(divergences, forms):
            solve_dual(mdp, pi, replay, reward, divergence, form)

    return FiniteCosts(q_step, discriminator_step, seconds_per_call(solves, cpu, budget) / 4)


def profile_tasks(profile: ProfileConfig) -> list[str]:
    """Every task a stage of the profile steps, in first-use order."""
    tasks = [profile.random_buffer.task, profile.collect.task]
    if profile.mbpo is not None:
        tasks += list(profile.mbpo.tasks)
    return list(dict.fromkeys(tasks))


def measure_phases(
    profile: ProfileConfig,
    device: str | torch.device,
    *,
    threads: int | None = None,
    budget: float = 0.5,
    population: int = 1,
) -> PhaseCosts:
    """Time every phase of the profile's stages on this machine: about `budget` seconds each,
    per task of the profile, on `threads` torch threads (None: as set)."""
    if not 0 < budget <= 10:
        raise ConfigError(f"the time per phase must be in (0, 10] seconds, got {budget}")
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    updates: dict[str, dict[int, float]] = {}
    fit_steps: dict[str, dict[int, float]] = {}
    speedup: dict[int, dict[str, float]] = {}
    with torch_threads(threads) as used:
        tasks = {
            t: _measure_task(profile, get_task(t), torch_device, budget)
            for t in profile_tasks(profile)
        }
        finite = _measure_finite(profile.finite_mdp, budget)
        if population > 1 and profile.mbpo is not None:
            # Only a batched population (a GPU's) has stacked updates and fits to measure.
            stacked = population_sizes(profile, population) if batches_runs(torch_device) else {}
            for task_id, sizes in stacked.items():
                task = get_task(task_id)
                updates[task_id] = {
                    runs: measure_sac_update(
                        task.obs_dim, task.act_dim, profile.sac, torch_device, runs, budget
                    )
                    for runs in sorted(sizes - {1})
                }
                fit_steps[task_id] = {
                    runs: measure_stacked_fit_step(profile.model, task, torch_device, runs, budget)
                    for runs in sorted(sizes - {1})
                }
            most = min(population, max(1, (os.cpu_count() or 1) // used))
            if most > 1:
                task = get_task(profile.mbpo.tasks[0])
                speedup[most] = measure_thread_speedup(profile, task, torch_device, most, budget)
    return PhaseCosts(
        torch_device.type, used, population, tasks, finite, updates, speedup, fit_steps
    )


def population_sizes(profile: ProfileConfig, size: int) -> dict[str, set[int]]:
    """Per task, the population sizes the sweeps of the profile pack their runs into."""
    out: dict[str, set[int]] = {}
    for kind in ("continue", "scratch"):
        for task, _, learners in sweep_populations(profile, kind, size):
            out.setdefault(task, set()).add(len(learners))
    return out


# --- counting ----------------------------------------------------------------------------------


def _mbpo(profile: ProfileConfig) -> MBPOConfig:
    if profile.mbpo is None:
        raise ConfigError(f"profile {profile.name!r} has no mbpo section")
    return profile.mbpo


def snapshot_step(profile: ProfileConfig, snapshot: int) -> int:
    """The env step at which collect snapshot `snapshot` (1, 2, ...) began."""
    c = profile.collect
    steps = snapshot_steps(c.random_steps, c.snapshot_every, c.env_steps)
    if not 1 <= snapshot <= len(steps):
        raise ConfigError(f"collect makes {len(steps)} snapshots; there is no snapshot {snapshot}")
    return steps[snapshot - 1]


def fit_seconds(
    costs: TaskCosts,
    model: ModelConfig,
    rows: np.ndarray | int,
    epochs: int | None = None,
    batches: int | None = None,
) -> np.ndarray:
    """A model fit on `rows` buffer rows that runs all its epochs: its setup, and each epoch's
    minibatch steps and holdout pass. `epochs` and `batches` override the model section's caps, as
    `fit_dynamics` takes them."""
    rows = np.asarray(rows)
    hold = np.minimum((rows * model.holdout_ratio).astype(np.int64), model.max_holdout)
    steps = batches or model.batches_per_epoch or np.maximum(1, (rows - hold) // model.batch_size)
    epochs = epochs or model.max_epochs
    return costs.model_fit_setup + epochs * (steps * costs.model_step + hold * costs.model_row)


def tom_round_seconds(
    costs: TaskCosts, tom: TOMConfig, rows: np.ndarray | int, discriminator: bool, q_steps: int
) -> np.ndarray:
    """One TOM round on `rows` rows: its discriminator, `q_steps` dual steps, one read-out."""
    disc = tom.discriminator_steps * costs.discriminator_step if discriminator else 0.0
    return disc + q_steps * costs.tom_q_step + np.asarray(rows) * costs.tom_row


def _discriminator(learner: str) -> bool | None:
    """None for a learner without a dual round (MLE; PMAC's and VaGraM's weights: not counted),
    else whether its round trains a discriminator."""
    spec = get_learner(learner)
    if spec.section != "tom":
        return None
    return bool(spec.options.get("use_discriminator", True))


def _evaluation_seconds(costs: TaskCosts, episodes: int, steps: int) -> float:
    """`episodes` lockstep test episodes of at most `steps` steps, counted at full length."""
    return episodes * (costs.env_make + steps * (costs.env_step + costs.act_batch_row))


def estimate_mbpo_run(
    profile: ProfileConfig,
    costs: PhaseCosts,
    learner: str,
    *,
    task: str | None = None,
    snapshot: int | None = None,
) -> float:
    """Seconds of one MBPO run (`loops/mbpo.py`) alone: from scratch on `task` (default: the
    first of mbpo.tasks), or continued from collect snapshot `snapshot` for
    mbpo.continue_env_steps."""
    parts = _mbpo_run_parts(profile, costs, learner, task, snapshot)
    sac = parts.updates * costs.task(parts.task).sac_update
    return parts.stepping + parts.training + parts.fits + sac


def estimate_population(
    profile: ProfileConfig,
    costs: PhaseCosts,
    learners: Sequence[str],
    *,
    task: str | None = None,
    snapshot: int | None = None,
    threads: int | None = None,
) -> tuple[float, float]:
    """(wall seconds, seconds of its SAC updates) of a population of one run per entry of
    `learners` in one cell (`loops/mbpo_population.py`) on `threads` threads (default: as the
    loop starts them on this machine at `costs.threads` torch threads): batched on a GPU, each
    run alone on its own thread on CPU."""
    cpus = os.cpu_count() or 1
    threads = min(len(learners), threads or max(1, cpus // costs.threads))
    if not batches_runs(torch.device(costs.device)):
        return _threaded_population(profile, costs, learners, task, snapshot, threads)
    cell = profile.collect.task if snapshot is not None else task or _mbpo(profile).tasks[0]
    update = costs.population_update(cell, len(learners))
    shared = costs.in_population(cell, len(learners))
    parts = [_mbpo_run_parts(profile, shared, m, task, snapshot) for m in learners]
    # A round's TOM training and model fits run as stacks; each run's model steps are counted
    # at its share of the stack's measured step (TOM's at a run's own), so they add up.
    together = (
        sum(p.stepping for p in parts) / costs.speedup("stepping", threads)
        + sum(p.training for p in parts) / costs.speedup("training", threads)
        + sum(p.fits for p in parts)
    )
    own = max(max(p.stepping + p.training + p.fits for p in parts), together)
    sac = parts[0].updates * update
    return own + sac, sac


def _threaded_population(
    profile: ProfileConfig,
    costs: PhaseCosts,
    learners: Sequence[str],
    task: str | None,
    snapshot: int | None,
    threads: int,
) -> tuple[float, float]:
    """A CPU population: its runs, each alone, on `threads` threads in order. The longer of
    the busiest thread's runs and all runs' work at the threads' measured speedups (stepping;
    everything else is torch-bound, counted as training)."""
    parts = [_mbpo_run_parts(profile, costs, m, task, snapshot) for m in learners]
    sacs = [p.updates * costs.task(p.task).sac_update for p in parts]
    runs = [p.stepping + p.training + p.fits + sac for p, sac in zip(parts, sacs, strict=True)]
    together = sum(p.stepping for p in parts) / costs.speedup("stepping", threads) + sum(
        r - p.stepping for p, r in zip(parts, runs, strict=True)
    ) / costs.speedup("training", threads)
    return max(parallel_wall(runs, threads), together), sum(sacs)


@dataclass(frozen=True)
class RunParts:
    """One MBPO run's work apart from its SAC updates, in the two kinds threads share
    differently, and its SAC updates."""

    task: str
    stepping: float  # seconds of env steps, actions and evaluation episodes
    training: float  # seconds of model rollouts
    fits: float  # seconds of the work a population stacks: TOM rounds and model fits
    updates: int


def _mbpo_run_parts(
    profile: ProfileConfig,
    costs: PhaseCosts,
    learner: str,
    task: str | None,
    snapshot: int | None,
) -> RunParts:
    """One MBPO run counted by the loop's rules."""
    cfg = _mbpo(profile)
    if snapshot is None:
        task_id = task or cfg.tasks[0]
        first, end, policy_start, policy_rows = 0, cfg.steps_for(task_id), cfg.random_steps, 0
    else:
        task_id = profile.collect.task
        first = snapshot_step(profile, snapshot)
        end, policy_start = first + cfg.continue_env_steps, first
        policy_rows = first - snapshot_step(profile, 1)  # collected rows with policy version >= 1
    c, limit = costs.task(task_id), cfg.eval_max_steps or get_task(task_id).max_episode_steps
    schedule = UpdateSchedule(
        cfg.update_schedule,
        cfg.updates_per_step,
        cfg.max_updates_per_step,
        cfg.epoch_length,
        first,
        policy_start,
    )
    steps = np.arange(first, end)
    stepping = len(steps) * c.env_step + int(np.sum(steps >= policy_start)) * c.act_torch
    training = fitting = 0.0
    updates = int(schedule.burst_at(steps).sum()) * cfg.updates_per_step
    # A model round before each of these env steps; the buffer then holds that many rows.
    rounds = np.arange(max(first, policy_start), end, cfg.model_train_every)
    if len(rounds):
        fits = fit_seconds(
            c, profile.model, rounds, cfg.model_max_epochs, cfg.model_batches_per_epoch
        )
        fits[0] = fit_seconds(c, profile.model, rounds[0])  # the first fit is cold: model caps
        lengths = [cfg.rollout_length_at(int(e)) for e in (rounds - first) // cfg.epoch_length]
        fitting = float(fits.sum())
        training += cfg.rollout_batch * sum(lengths) * c.rollout_row
        discriminator = _discriminator(learner)
        if discriminator is not None:
            tom = profile.tom
            active = rounds[policy_rows + rounds - policy_start >= tom.recent_size]
            fitting += float(tom_round_seconds(c, tom, active, discriminator, tom.q_steps).sum())
    evaluations = len(range(first, end + 1, cfg.epoch_length)) + int(
        (end - first) % cfg.epoch_length != 0
    )
    stepping += evaluations * _evaluation_seconds(c, cfg.eval_episodes, limit)
    return RunParts(task_id, stepping, training, fitting, updates)


def estimate_collect_run(profile: ProfileConfig, costs: PhaseCosts) -> float:
    """Seconds of one collect run (`loops/collect.py`): env steps, acting once the first
    snapshot exists, and `updates_per_step` SAC updates a step from random_steps on."""
    cfg = profile.collect
    c = costs.task(cfg.task)
    snapshots = snapshot_steps(cfg.random_steps, cfg.snapshot_every, cfg.env_steps)
    acting = cfg.env_steps - (snapshots[0] if snapshots else cfg.env_steps)
    learning = max(0, cfg.env_steps - max(cfg.random_steps, profile.sac.batch_size - 1))
    updates = learning * cfg.updates_per_step
    return cfg.env_steps * c.env_step + acting * c.act + updates * c.sac_update


def estimate_offline_run(profile: ProfileConfig, costs: PhaseCosts) -> float:
    """Seconds of one collect run's share of the offline study (`loops/offline_study.py`): per
    snapshot, fresh evaluation episodes at full length, then per learner and model seed a plan,
    a cold model fit and the model's errors on the episodes and on the prefix."""
    if profile.offline_study is None:
        raise ConfigError(f"profile {profile.name!r} has no offline_study section")
    study, tom = profile.offline_study, profile.tom
    task = get_task(profile.collect.task)
    c = costs.task(task.task_id)
    eval_rows = study.eval_episodes * task.max_episode_steps
    q_steps, checks = tom.q_steps, 0
    if tom.offline_convergence is not None:  # windows of Q steps, a read-out after each
        rule = tom.offline_convergence
        checks = -(-rule.max_steps // rule.window)
        q_steps = checks * rule.window
    seconds = 0.0
    for snapshot in study.snapshots:
        rows = snapshot_step(profile, snapshot)
        seconds += c.env_make + eval_rows * (c.env_step + c.act)
        cell = float(fit_seconds(c, profile.model, rows))
        cell += (eval_rows * (2 + study.horizon) + 3 * rows) * c.model_row
        for learner in study.learners:
            discriminator = _discriminator(learner)
            plan = 0.0
            if discriminator is not None:
                plan = float(tom_round_seconds(c, tom, rows, discriminator, q_steps))
                plan += checks * rows * c.tom_row
            seconds += len(study.seeds) * (cell + plan)
    return seconds


def finite_estimator_mdp_seconds(cfg: FiniteMDPConfig, costs: FiniteCosts) -> float:
    """One more C5 estimator MDP: its estimator fits, their population optima, and the C6 fit
    with estimated weights on it."""
    fits = ESTIMATOR_FITS * cfg.estimator_q_steps * costs.q_step
    discriminators = ESTIMATOR_DISCRIMINATOR_FITS * cfg.estimator_discriminator_steps
    return fits + discriminators * costs.discriminator_step + ESTIMATOR_OPTIMA * costs.exact_solve


def finite_mdp_seconds(costs: FiniteCosts) -> float:
    """One more MDP of `finite_mdp.mdps` (the exact checks): its recovery solves."""
    return RECOVERY_SOLVES * costs.exact_solve


def estimate_finite_stage(cfg: FiniteMDPConfig, costs: FiniteCosts) -> float:
    """The finite stage: exact checks on every MDP, the estimator MDPs, the convergence table."""
    table = sum(cfg.convergence_q_steps) * len(cfg.convergence_samples) * costs.q_step
    convergence = DIVERGENCES * (table + costs.exact_solve)
    return (
        cfg.mdps * finite_mdp_seconds(costs)
        + cfg.estimator_mdps * finite_estimator_mdp_seconds(cfg, costs)
        + cfg.convergence_mdps * convergence
    )


def parallel_wall(durations: list[float], workers: int) -> float:
    """Wall time of jobs started in order, each on the first free of `workers` (Ray's queue)."""
    free = [0.0] * max(1, min(workers, len(durations)))
    for seconds in durations:
        heapq.heappush(free, heapq.heappop(free) + seconds)
    return max(free) if durations else 0.0


def mbpo_cells(profile: ProfileConfig, kind: str) -> list[tuple[str, int | None]]:
    """The (task, snapshot) cells of a sweep (`sweep.plan_grid`); snapshot None: from scratch."""
    cfg = _mbpo(profile)
    if kind == "scratch":
        return [(t, None) for t in cfg.tasks]
    return [(profile.collect.task, k) for k in cfg.continue_snapshots]


def sweep_populations(
    profile: ProfileConfig, kind: str, size: int
) -> list[tuple[str, int | None, list[str]]]:
    """(task, snapshot, learner of each run) of every population a sweep of `kind` packs its
    grid (cell x learner x seed, as `sweep.plan_grid`) into, at most `size` runs each."""
    cfg = _mbpo(profile)
    runs = [
        (task, snapshot, learner)
        for task, snapshot in mbpo_cells(profile, kind)
        for learner in cfg.learners
        for _ in cfg.seeds
    ]
    groups = group_populations(runs, lambda run: run[:2], size)
    return [(g[0][0], g[0][1], [run[2] for run in g]) for g in groups]


def estimate_sweep(
    profile: ProfileConfig, costs: PhaseCosts, kind: str, parallel: int, cpus: int, gpus: int = 0
) -> float:
    """Wall seconds of a sweep: its populations of `costs.population` runs, `parallel` at a time
    in grid order, sharing `cpus` cores (and, on a GPU, the updates of `gpus` devices)."""
    pops = sweep_populations(profile, kind, costs.population)
    threads = max(1, population_cpus(cpus, parallel, len(pops)) // costs.threads)
    estimates = [
        estimate_population(profile, costs, learners, task=task, snapshot=snapshot, threads=threads)
        for task, snapshot, learners in pops
    ]
    wall = parallel_wall([w for w, _ in estimates], parallel)
    if costs.device == "cuda" and gpus > 0:
        wall = max(wall, sum(s for _, s in estimates) / gpus)
    return wall


def estimate_stages(
    profile: ProfileConfig,
    costs: PhaseCosts,
    *,
    sweep_costs: PhaseCosts | None = None,
    parallel_runs: int | None = None,
    cpus: int | None = None,
    gpus: int = 0,
) -> dict[str, float]:
    """Estimated wall seconds of each stage the profile has (`STAGES`). Collect runs and the
    offline study run one after another in one process on `costs`; a sweep's populations (runs,
    at population 1) run `parallel_runs` at a time (default: every CPU, as the sweep's local Ray
    does) on `sweep_costs` (default: `costs`; a sweep gives each one thread), on `cpus` cores
    (default: this machine's) and `gpus` devices."""
    sweep_costs = sweep_costs or costs
    cpus = cpus or os.cpu_count() or 1
    workers = parallel_runs or cpus
    random_task = costs.task(profile.random_buffer.task)
    stages = {
        "random_buffer": profile.random_buffer.env_steps * random_task.env_step,
        "collect": len(profile.collect.seeds) * estimate_collect_run(profile, costs),
    }
    if profile.offline_study is not None:
        stages["offline_study"] = len(profile.collect.seeds) * estimate_offline_run(profile, costs)
    if profile.mbpo is not None:
        for kind in ("continue", "scratch"):
            stages[f"mbpo_{kind}"] = estimate_sweep(profile, sweep_costs, kind, workers, cpus, gpus)
    if costs.finite is not None:
        stages["finite_mdp"] = estimate_finite_stage(profile.finite_mdp, costs.finite)
    return {stage: stages[stage] for stage in STAGES if stage in stages}


def unit_costs(
    profile: ProfileConfig, costs: PhaseCosts, sweep_costs: PhaseCosts | None = None
) -> dict[str, Any]:
    """Seconds of one more unit of each claim, its runs one after another: an offline unit (a
    collect run and its offline study), a finite MDP (exact checks) and a C5 estimator MDP,
    and per MBPO cell one more seed of every learner of the sweep."""
    sweep_costs = sweep_costs or costs
    units: dict[str, Any] = {"offline_run": estimate_collect_run(profile, costs)}
    if profile.offline_study is not None:
        units["offline_run"] += estimate_offline_run(profile, costs)
    if costs.finite is not None:
        units["finite_mdp"] = finite_mdp_seconds(costs.finite)
        units["finite_estimator_mdp"] = finite_estimator_mdp_seconds(
            profile.finite_mdp, costs.finite
        )
    if profile.mbpo is not None:
        learners = list(profile.mbpo.learners)
        units["mbpo_seed"] = [
            {
                "kind": kind,
                "task": task,
                "snapshot": snapshot,
                "learners": learners,
                "seconds": sum(
                    estimate_mbpo_run(profile, sweep_costs, m, task=task, snapshot=snapshot)
                    for m in learners
                ),
            }
            for kind in ("scratch", "continue")
            for task, snapshot in mbpo_cells(profile, kind)
        ]
    return units


# --- the plan ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """A profile's estimate on this machine, with the costs it came from."""

    profile: str
    costs: PhaseCosts
    sweep_costs: PhaseCosts
    parallel_runs: int  # populations of a sweep at a time
    stages: dict[str, float]
    units: dict[str, Any]
    sac_update_ms: float | None = None  # the machine's reference speed, measured beside
    machine: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "profile": self.profile,
            "note": "planner estimates from phase costs measured on this machine, not "
            "measurements; caps are counted as reached (upper bounds where runs stop early)",
            "machine": self.machine,
            "sac_update_ms": self.sac_update_ms,
            "parallel_runs": self.parallel_runs,
            "runs_per_population": self.sweep_costs.population,
            "stages_seconds": self.stages,
            "total_seconds": sum(self.stages.values()),
            "not_estimated": list(NOT_ESTIMATED),
            "units_seconds": self.units,
            "phase_costs": self.costs.to_json(),
            "sweep_phase_costs": self.sweep_costs.to_json(),
        }


def make_plan(
    profile: ProfileConfig,
    device: str,
    *,
    budget: float = 0.5,
    reference: Callable[[], float] | None = None,
    runs_per_population: int | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
) -> Plan:
    """Measure and count, for sweeps run as `tomrepro sweep` would with these options
    (`runs_per_population` None: the sweep's default for the device). The phases are measured
    on the torch threads set here for the stages of this process, and once more on a sweep
    run's threads (int(cpus_per_run)) where those differ."""
    size = runs_per_population or default_runs_per_population(device)
    if size < 1:
        raise ConfigError(f"--runs-per-population must be at least 1, got {size}")
    cpus = os.cpu_count() or 1
    torch_device = resolve_device(device)
    gpus = torch.cuda.device_count() if torch_device.type == "cuda" else 0
    if gpus_per_run > 0 and not gpus:
        raise TomreproError(f"--gpus-per-run {gpus_per_run} asked for, but there is no GPU")
    parallel = sweep_parallelism(cpus, gpus, cpus_per_run, gpus_per_run)
    sweep_threads = population_torch_threads(size, cpus_per_run, batches_runs(torch_device))
    same = torch.get_num_threads() == sweep_threads
    costs = measure_phases(profile, torch_device, budget=budget, population=size if same else 1)
    sweep_costs = costs
    if not same:
        sweep_costs = measure_phases(
            profile, torch_device, threads=sweep_threads, budget=budget, population=size
        )
    return Plan(
        profile.name,
        costs,
        sweep_costs,
        parallel,
        estimate_stages(
            profile,
            costs,
            sweep_costs=sweep_costs,
            parallel_runs=parallel,
            cpus=cpus,
            gpus=gpus,
        ),
        unit_costs(profile, costs, sweep_costs),
        None if reference is None else reference(),
        {
            "cpus": cpus,
            "gpus": gpus,
            "machine": platform.machine(),
            "torch": torch.__version__,
            "cpus_per_run": cpus_per_run,
            "gpus_per_run": gpus_per_run,
        },
    )


def write_plan(plan: Plan, path: Path) -> Path:
    """The plan as JSON, written atomically."""
    make_parent(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(plan.to_json(), indent=2))
    return path


def duration(seconds: float) -> str:
    """Seconds as a person reads them: 42 s, 7.5 min, 3.2 h, 2.1 d, 5.0 wk."""
    for unit, size in (("wk", 604_800), ("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"


def _per_unit(seconds: float) -> str:
    for unit, size in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def plan_lines(plan: Plan) -> list[str]:
    """The plan as a table a person reads: stages, then the phase costs behind them."""
    costs = plan.costs
    reference = (
        f"; reference SAC update {plan.sac_update_ms:.1f} ms (256 x 256, batch 256, CPU)"
        if plan.sac_update_ms is not None
        else ""
    )
    lines = [
        f"plan for profile {plan.profile!r} on {costs.device} ({plan.machine.get('cpus')} CPUs, "
        f"{costs.threads} torch threads){reference}",
        "planner estimates, not measurements: caps counted as reached (upper bounds where a run "
        "stops early); file writes and start-up not counted",
        f"  {'stage':<16}{'estimated wall time':>22}",
    ]
    lines += [f"  {stage:<16}{duration(s):>22}" for stage, s in plan.stages.items()]
    lines.append(f"  {'total':<16}{duration(sum(plan.stages.values())):>22}")
    lines.append(f"  not estimated: {', '.join(NOT_ESTIMATED)} (no training; seconds to minutes)")
    sweep = plan.sweep_costs
    if sweep.population == 1:
        lines.append(
            f"MBPO sweeps: {plan.parallel_runs} runs at a time, one run per process, "
            f"{sweep.threads} torch thread(s) each"
        )
    else:
        speedup = "; ".join(
            f"{t} threads do " + ", ".join(f"{x:.2f} runs' {kind}" for kind, x in kinds.items())
            for t, kinds in sweep.thread_speedup.items()
        )
        batched = batches_runs(torch.device(sweep.device))
        how = "one batched SAC update" if batched else "each run on a thread"
        lines.append(
            f"MBPO sweeps: populations of up to {sweep.population} runs ({how}), "
            f"{plan.parallel_runs} at a time, {sweep.threads} torch thread(s) each; "
            f"own phases: {speedup or 'one thread'}"
        )
        for task, sizes in sweep.population_updates.items():
            each = ", ".join(f"{r} runs {_per_unit(x)}" for r, x in sizes.items())
            lines.append(f"  SAC update of a population on {task}: {each}")
        for task, sizes in sweep.population_fit_steps.items():
            each = ", ".join(f"{r} fits {_per_unit(x)}" for r, x in sizes.items())
            lines.append(f"  model step of a stack of fits on {task}: {each}")
    names = [f.name for f in fields(TaskCosts)]
    tasks = list(costs.tasks)
    lines.append("measured phase costs (per unit)")
    width = max(len(t) for t in tasks) + 2
    lines.append(f"  {'phase':<20}" + "".join(f"{t:>{width}}" for t in tasks))
    for name in names:
        values = [getattr(costs.tasks[t], name) for t in tasks]
        lines.append(f"  {name:<20}" + "".join(f"{_per_unit(v):>{width}}" for v in values))
    if costs.finite is not None:
        finite = ", ".join(f"{k} {_per_unit(v)}" for k, v in asdict(costs.finite).items())
        lines.append(f"  finite MDPs: {finite}")
    return lines
