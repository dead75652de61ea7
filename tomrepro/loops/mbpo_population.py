"""Many MBPO runs of one task stepped in lockstep in one process, their agents one batched SAC.

Each run keeps everything of its own: env, buffer, model and model pool, generators, learner
state, curve, checkpoint and output directory (the files are those of a run alone). The runs'
actors and critics are the rows of one `SAC` population, so each SAC burst is one batched update
of all runs on their own minibatches; in a model round, TOM's discriminators and dual Q networks
train as stacked networks (`train_plans`), then the model fits (`train_fits`), each run on its
own data, weights and generators; on a GPU the runs' env-step actions come from one actor call.
Plans' set-up, rollouts, env steps and evaluation run per run, on parallel threads. A single
run is a population of one through this same loop (`MBPORun.run`).

That batching is for GPUs, whose small-network kernels are bound by launch overhead. On CPU a
batched update is no faster than the same updates one after another, and a run's torch ops gain
little from more intra-op threads (benchmarks/population.py, `tomrepro plan`), so there the
population steps each run alone (a population of one through the same loop) on its own thread,
as many at a time as its CPUs hold: measured as fast per run as separate processes.

A run that raises (a non-finite model, an env error) is marked failed — `failure.json` in its
directory with the error, its checkpoint kept for a resume — and leaves the population; the
others go on unchanged, since no run's arithmetic depends on its company (tests check this
bit for bit on CPU).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from tomrepro.core.atomic import atomic_path
from tomrepro.core.errors import ConfigError, TomreproError
from tomrepro.learning.model_learners import train_plans
from tomrepro.learning.model_training import train_fits
from tomrepro.learning.sac import SAC, SACBatch, SACRun
from tomrepro.loops.mbpo import MBPORun, ModelRound, PendingRound, RunState

log = logging.getLogger(__name__)
FAILURE = "failure.json"
GPU_RUNS_PER_POPULATION = 16
Item = TypeVar("Item")
Active = tuple[MBPORun, RunState]


def default_runs_per_population(device: str | None) -> int:
    """One run per process on CPUs (a CPU population steps each run alone on a thread, as fast
    per run as separate processes, which also keep a crash to one run), 16 on a GPU, whose
    small-network updates are bound by launch overhead (benchmarks/population.py measures both)."""
    from tomrepro.learning.devices import resolve_device

    cuda = resolve_device(device or "auto").type == "cuda" and torch.cuda.is_available()
    return GPU_RUNS_PER_POPULATION if cuda else 1


def batches_runs(device: torch.device) -> bool:
    """Whether a population on `device` steps its runs as one batched computation, actions
    included (a GPU), or each run alone on its own thread (CPU)."""
    return device.type != "cpu"


def population_workers(runs: int, cpus: int | None = None) -> int:
    """Threads a population of `runs` steps its runs (or their own phases) on: its CPUs
    (`cpus`, None: this machine's) over the torch threads each one uses, at most one per run."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(runs, cpus // torch.get_num_threads()))


def sweep_parallelism(
    cpus: int, gpus: int, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0
) -> int:
    """How many populations a sweep's Ray runs at a time: CPUs / cpus per run, and GPUs / gpus
    per run where runs ask for a GPU."""
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ConfigError("cpus per run must be positive and gpus per run not negative")
    parallel = int(cpus // cpus_per_run)
    if gpus_per_run > 0:
        parallel = min(parallel, int(gpus // gpus_per_run))
    return max(1, parallel)


def population_torch_threads(runs: int, cpus_per_run: float, batched: bool) -> int:
    """Torch threads of a sweep's population of `runs` holding `cpus_per_run` cores: all of them
    for a batched population or a run alone; on CPU, where runs step on threads of their own,
    the cores go to the runs first (one thread each while there are fewer cores than runs)."""
    cpus = max(1, int(cpus_per_run))
    return cpus if batched or runs < 2 else max(1, cpus // min(runs, cpus))


def population_cpus(cpus: int, parallel: int, populations: int) -> int:
    """The cores each population of a sweep steps its runs on: the machine's (or cluster's)
    `cpus` shared by the populations that run at once (`parallel`, at most all of them)."""
    return max(1, cpus // max(1, min(parallel, populations)))


def group_populations(
    items: Sequence[Item], key: Callable[[Item], Hashable], size: int
) -> list[list[Item]]:
    """`items` packed into populations of at most `size` that can share one agent (equal
    `key`: the same task, or the same source snapshot); order kept within each group. The one
    packing rule of the sweep and the planner."""
    if size < 1:
        raise ConfigError(f"runs per population must be at least 1, got {size}")
    groups: dict[Hashable, list[Item]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


class RunFailed(TomreproError):
    """Runs of a population failed (`errors`: one line per directory); the others finished
    (`finished`)."""

    def __init__(self, errors: dict[Path, str], finished: list[Path]) -> None:
        super().__init__("; ".join(f"{root}: {error}" for root, error in errors.items()))
        self.errors, self.finished = errors, finished


def run_population(
    runs: list[MBPORun], *, cpus: int | None = None, batched: bool | None = None
) -> list[Path]:
    """Run every run to its end on `cpus` cores (None: this machine's); returns their
    directories (in order). `batched` None: as `batches_runs` says for the runs' device. Raises
    `RunFailed` after the others have finished if any run failed."""
    if not runs:
        return []
    shapes = {run.agent_shape() for run in runs}
    if len(shapes) != 1:
        raise ConfigError(
            "runs of one population must share task, SAC config, device, length and schedule"
        )
    roots = [run.paths.root.resolve() for run in runs]
    if len(set(roots)) != len(roots):
        raise ConfigError("two runs of one population write to the same directory")
    failures: dict[Path, Exception] = {}
    with ExitStack() as locks:
        locked = []
        for run in runs:  # a directory held by another writer fails its run, not the others
            try:
                locks.enter_context(run.directory().lock(break_lock=run.break_lock))
                locked.append(run)
            except TomreproError as exc:
                failures[run.paths.root] = exc
        record, workers = len(runs) > 1, population_workers(len(locked), cpus)
        if batched is None:
            batched = bool(locked) and batches_runs(locked[0].device)
        if batched or len(locked) < 2:
            failures.update(_step_all(locked, record, workers) if locked else {})
        else:
            failures.update(_each_alone(locked, record, workers))
    if len(runs) == 1 and failures:  # a run alone fails as it always did: with its own error
        raise next(iter(failures.values()))
    finished = [r.paths.root for r in runs if r.paths.root not in failures]
    if failures:
        raise RunFailed({root: _one_line(exc) for root, exc in failures.items()}, finished)
    return [run.paths.root for run in runs]


def _each_alone(runs: list[MBPORun], record: bool, workers: int) -> dict[Path, Exception]:
    """Each run as a population of one, on `workers` threads; the errors of the runs that
    failed. An interrupt (Ctrl-C, or one run's thread raising one) stops the others at their
    next env step, their checkpoints kept for a resume, instead of waiting for them to end."""
    stop = threading.Event()
    failures: dict[Path, Exception] = {}
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_step_all, [run], record, 1, stop) for run in runs]
        try:
            for future in futures:
                failures.update(future.result())
        except BaseException:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return failures


def _step_all(
    runs: list[MBPORun], record: bool, workers: int, stop: threading.Event | None = None
) -> dict[Path, Exception]:
    """The lockstep loop, the runs' own phases on `workers` threads, until the runs end (or
    `stop` is set); the errors of the runs that failed, by directory."""
    first = runs[0]
    task, device = first.task, first.device
    shape = first.agent_shape()
    bounds = np.asarray(shape[2], dtype=np.float32), np.asarray(shape[3], dtype=np.float32)
    sac = SAC(
        task.obs_dim,
        task.act_dim,
        *bounds,
        first.sac_cfg,
        device,
        [run.sac_generator() for run in runs],
    )
    failures: dict[Path, Exception] = {}  # `record`: mark failed runs on disk (a run alone raises)
    active: list[tuple[MBPORun, RunState]] = []
    for r, run in enumerate(runs):
        state = _guarded(run, failures, lambda run=run, r=r: run.open(SACRun(sac, r)), False)
        if state is not None:
            active.append((run, state))
    if active and len(active) < len(runs):
        sac, active = _regroup(sac, active, bounds)
    updates = first.cfg.updates_per_step

    def begin(item: Active) -> bool | None:
        """One run's step up to its model round (finishing the run at its end)."""
        run, state = item
        going = _guarded(run, failures, lambda: run.before_round(state), record)
        if going is False:
            _guarded(run, failures, lambda: run.finish(state), record)
        return going

    def start(item: Active) -> PendingRound | None:
        run, state = item
        return _guarded(run, failures, lambda: run.start_round(state), record)

    def plan(pair: tuple[Active, PendingRound]) -> ModelRound | None:
        (run, state), pending = pair
        return _guarded(run, failures, lambda: run.plan_round(state, pending), record)

    def end_round(pair: tuple[Active, ModelRound]) -> bool | None:
        (run, state), model_round = pair
        return _guarded(run, failures, lambda: _done(run.finish_round, state, model_round), record)

    def step(pair: tuple[Active, np.ndarray | None]) -> bool | None:
        (run, state), action = pair
        return _guarded(run, failures, lambda: _done(run.step_env, state, action), record)

    def together(train: Callable[[list[Any]], Any], work: list[Any], pairs: list[Any]) -> list[Any]:
        """`train(work)`, the runs' shared computation; if it raises, all of `pairs`' runs fail
        with its error and none go on."""
        try:
            train(work)
        except Exception as exc:
            for (run, _), _ in pairs:
                _guarded(run, failures, _raiser(exc), record)
            return []
        return pairs

    # The runs' own phases (env steps, plans' set-up, rollouts, evaluation, checkpoints) run on
    # the CPU cores in parallel: MuJoCo and torch release the GIL, and no run touches another's
    # state. Each worker's torch ops use the process's torch threads, so the workers get the
    # cores those leave (more would thrash: 2.8x slower measured with 2 x 2 threads on 2 cores).
    # A round's TOM training and its model fits run together, as stacked networks, and on a GPU
    # the runs' actions at each env step come from one actor call. A batched population forced
    # onto CPU (the tests) acts run by run: elementwise kernels round a longer tensor's
    # vectorised body differently from a short one's tail, and each run must stay bit for bit
    # the run alone there.
    acts_together = batches_runs(device)
    with ThreadPoolExecutor(workers) if workers > 1 else nullcontext() as pool:

        def each(work: Callable[[Any], Any], items: list[Any]) -> list[Any]:
            return list(pool.map(work, items)) if pool else [work(item) for item in items]

        while active and not (stop and stop.is_set()):
            stepping = _kept(active, each(begin, active))
            due = [item for item in stepping if item[0].round_due(item[1])]
            if due:
                started = [(i, p) for i, p in zip(due, each(start, due), strict=True) if p]
                started = together(train_plans, [p.plan for _, p in started], started)
                planned = [(i, r) for (i, _), r in zip(started, each(plan, started), strict=True)]
                planned = [(i, r) for i, r in planned if r]
                planned = together(train_fits, [r.fit for _, r in planned], planned)
                ended = each(end_round, planned)
                done = {id(item) for (item, _), ok in zip(planned, ended, strict=True) if ok}
                due_ids = {id(item) for item in due}
                stepping = [i for i in stepping if id(i) not in due_ids or id(i) in done]
            actions: list[np.ndarray | None] = [None] * len(stepping)
            if acts_together and stepping:
                try:
                    tick = time.perf_counter()
                    actions = population_actions(sac, stepping)
                    share = (time.perf_counter() - tick) / len(stepping)
                    for _, state in stepping:
                        state.timer.add("env", share)
                except Exception as exc:  # a shared computation: its runs fail with its error
                    for run, _ in stepping:
                        _guarded(run, failures, _raiser(exc), record)
                    stepping, actions = [], []
            stepping = _kept(stepping, each(step, list(zip(stepping, actions, strict=True))))
            if len(stepping) != len(active):
                sac, active = _regroup(sac, stepping, bounds) if stepping else (sac, [])
                if not active:
                    break
            burst = first.bursts_now(active[0][1])
            stats, seconds = None, 0.0
            if burst:
                tick = time.perf_counter()
                for _ in range(updates):
                    stats = sac.update(
                        stack_batches([state.sampler.sample() for _, state in active])
                    )
                seconds = (time.perf_counter() - tick) / len(active)
            for r, (run, state) in enumerate(active):
                run.after_updates(state, None if stats is None else stats[r], seconds)
    return failures


def population_actions(sac: SAC, items: list[Active]) -> list[np.ndarray | None]:
    """Each run's policy action at its current step (None where its policy has not started),
    from one call of the population's actor on every run's observation and noise."""
    inputs = [run.policy_input(state) for run, state in items]
    rows = [
        (i, state.sac.run, x)
        for i, ((_, state), x) in enumerate(zip(items, inputs, strict=True))
        if x is not None
    ]
    out: list[np.ndarray | None] = [None] * len(items)
    if not rows:
        return out
    first = sac.actor.net.layers[0].weight
    members, obs_dim = first.shape[0], first.shape[1]
    act_dim = sac.actor.net.layers[-1].weight.shape[2] // 2
    obs = np.zeros((members, 1, obs_dim), dtype=np.float32)
    noise = np.zeros((members, 1, act_dim), dtype=np.float32)
    for _, r, (o, n) in rows:
        obs[r, 0], noise[r, 0] = o, n
    with torch.no_grad():
        actions = sac.actor.act(
            torch.as_tensor(obs, device=sac.device), torch.as_tensor(noise, device=sac.device)
        )
    array = actions.cpu().numpy()
    for i, r, _ in rows:
        out[i] = array[r, 0]
    return out


def _kept(items: list[Active], results: list[Any]) -> list[Active]:
    """The runs whose phase went on (a result that is not None or False)."""
    return [item for item, ok in zip(items, results, strict=True) if ok]


def _done(work: Callable[..., None], *args: Any) -> bool:
    """`work(*args)`, then True: a phase that returns nothing, as one that went on."""
    work(*args)
    return True


def _raiser(exc: Exception) -> Callable[[], None]:
    def work() -> None:
        raise exc

    return work


def _guarded(run: MBPORun, failures: dict[Path, Exception], work, record: bool):
    """`work()`, or None with the run's error kept (and `failure.json` written if `record`)."""
    try:
        return work()
    except Exception as exc:
        failures[run.paths.root] = exc
        if record:
            log.error("mbpo: run %s failed: %s", run.paths.root, _one_line(exc))
            with atomic_path(run.paths.root / FAILURE) as tmp:
                tmp.write_text(
                    json.dumps(
                        {"error": _one_line(exc), "traceback": traceback.format_exc()}, indent=2
                    )
                )
        return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _regroup(
    sac: SAC, active: list[tuple[MBPORun, RunState]], bounds: tuple[np.ndarray, np.ndarray]
) -> tuple[SAC, list[tuple[MBPORun, RunState]]]:
    """A new population agent of the runs still going, each moved over with its exact state."""
    states = [state.sac.state_dict() for _, state in active]
    obs_dim = sac.actor.net.layers[0].weight.shape[1]
    act_dim = sac.actor.net.layers[-1].weight.shape[2] // 2
    generators = [torch.Generator(device=sac.device) for _ in active]
    smaller = SAC(obs_dim, act_dim, *bounds, sac.cfg, sac.device, generators)
    for r, ((_, state), saved) in enumerate(zip(active, states, strict=True)):
        state.sac = SACRun(smaller, r)
        state.sac.load_state_dict(saved)
    return smaller, active


def stack_batches(batches: list[SACBatch]) -> SACBatch:
    """Per-run minibatches (B, ...) as one population minibatch (R, B, ...)."""
    return SACBatch(
        torch.stack([b.observations for b in batches]),
        torch.stack([b.actions for b in batches]),
        torch.stack([b.rewards for b in batches]),
        torch.stack([b.next_observations for b in batches]),
        torch.stack([b.masks for b in batches]),
    )
