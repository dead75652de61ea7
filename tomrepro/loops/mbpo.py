"""Online MBPO with a pluggable model learner, from scratch or continued from a collected buffer.

Per env step t (MBPO, Janner et al. 2019, with the official TOM code's settings):
- at each epoch boundary (every `epoch_length` steps, and at the start and the end): test
  episodes of the actor's mean action, a curve row, a policy snapshot (a new policy version; the
  agent acts with its live actor, so rows of version v were chosen by the actor as it evolved
  from snapshot v on), a checkpoint of everything a resume needs, and the buffer so far;
- every `model_train_every` steps (from the end of the random phase): the learner's plan on the
  real buffer (weights, rollout starts), a weighted fit of the dynamics model (cold the first
  time, warm-started after), `rollout_batch` branched model rollouts into the model pool;
- one env step (uniform actions during the random phase, then the live actor with step-indexed
  noise), then, where the update schedule says so (`loops/update_schedule.py`: the official
  TOM schedule, bursts of 20 at epoch-local steps 0, 4, 8, ..., or a burst every step), a burst
  of `updates_per_step` SAC updates on 5 % real / 95 % model minibatches.

A continuation starts from the prefix of a collected buffer at snapshot K and the agent
checkpoint saved there (actor, critics, temperature, optimisers, and the env mid-episode), so
every learner continues from the same state; the run's own buffer holds the prefix plus the new
rows. Outputs (one directory per run): `curve.csv` / `curve.nc`, `buffer.h5` (schema v2),
`checkpoint.pt` (latest epoch), `model.pt`, `run.json` (config, completion, summary).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from tomrepro.core.atomic import atomic_path
from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import (
    BufferMetadata,
    PolicySnapshot,
    content_digest,
    read_buffer,
    read_snapshot,
    write_buffer,
)
from tomrepro.core.code_closure import code_digest
from tomrepro.core.config import ProfileConfig, SACConfig
from tomrepro.core.errors import BufferFormatError, ConfigError, TomreproError
from tomrepro.core.noise import StepNoise
from tomrepro.core.phase_timer import PhaseTimer
from tomrepro.core.seeding import derive_seed
from tomrepro.core.tasks import get_task
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.dynamics_model import DynamicsModel, model_inputs, model_targets
from tomrepro.learning.model_learners import (
    LearnerPlan,
    ModelLearner,
    PendingPlan,
    PlanInputs,
    build_learner,
    learner_fingerprint,
)
from tomrepro.learning.model_pool import MixedBatchSampler, ModelPool
from tomrepro.learning.model_rollout import draw_rows, rollout_model
from tomrepro.learning.model_training import FitJob, PreparedFit, prepare_fit
from tomrepro.learning.sac import SACRun
from tomrepro.learning.serialization import load_tensors, save_tensors
from tomrepro.learning.tom_weights import weight_summary
from tomrepro.loops.collect import CollectPaths
from tomrepro.loops.episode_recorder import EpisodeRecorder, restore_episode, save_episode
from tomrepro.loops.policy_evaluation import evaluate_policy
from tomrepro.loops.run_directory import RunDirectory, Start
from tomrepro.loops.update_schedule import UpdateSchedule

log = logging.getLogger(__name__)
PHASES = ("env", "sac", "weights", "model_fit", "rollout", "eval", "checkpoint")


@dataclass(frozen=True)
class ContinueFrom:
    """Where a continuation starts: a collected buffer (with its `checkpoints/`) and snapshot K."""

    buffer: Path
    snapshot: int
    env_steps: int


@dataclass(frozen=True)
class MBPOPaths:
    root: Path

    @property
    def buffer(self) -> Path:
        return self.root / "buffer.h5"

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def curve_csv(self) -> Path:
        return self.root / "curve.csv"

    @property
    def curve_nc(self) -> Path:
        return self.root / "curve.nc"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"


def run_status(out_dir: Path) -> dict[str, Any] | None:
    """The `run.json` of a run directory, or None if there is none (or it is unreadable)."""
    try:
        return json.loads(MBPOPaths(Path(out_dir)).run_json.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class LoopState:
    """The loop's plain values: a checkpoint saves this whole (as JSON) and a resume restores it."""

    step: int
    version: int = 0
    model_rounds: int = 0
    updates: int = 0
    curve: list[dict[str, Any]] = field(default_factory=list)
    last_round: dict[str, Any] = field(default_factory=dict)
    sac_stats: list[float] = field(default_factory=lambda: [float("nan")] * 4)
    last_train_return: float = float("nan")


# The objects whose `state_dict()` a checkpoint saves under these names.
STATEFUL = ("sac", "model", "pool", "learner")


@dataclass
class RunState:
    """Everything that changes during a run."""

    env: Any
    sac: SACRun
    buffer: ReplayBuffer
    recorder: EpisodeRecorder
    obs: np.ndarray
    model: DynamicsModel
    pool: ModelPool
    sampler: MixedBatchSampler
    learner: ModelLearner
    generators: dict[str, torch.Generator]
    loop: LoopState
    timer: PhaseTimer = field(default_factory=lambda: PhaseTimer(PHASES))
    snapshots: list[PolicySnapshot] = field(default_factory=list)
    last_stats: torch.Tensor | None = None  # the latest burst's SAC statistics
    noise: tuple[StepNoise, StepNoise] = field(init=False)  # exploration: normal, uniform
    bar: Any = None


@dataclass(frozen=True)
class PendingRound:
    """A model round whose learner's plan waits for its training."""

    columns: dict[str, np.ndarray]
    plan: PendingPlan


@dataclass(frozen=True)
class ModelRound:
    """A model round between its plan and its rollouts: the rows, the learner's plan and the
    fit, prepared or (after `train_fits`) trained."""

    columns: dict[str, np.ndarray]
    plan: LearnerPlan
    fit: PreparedFit


class MBPORun:
    """One MBPO run; `run()` goes from wherever its directory left off to the end."""

    def __init__(
        self,
        profile: ProfileConfig,
        out_dir: Path,
        *,
        learner: str,
        task: str | None = None,
        seed: int | None = None,
        start: ContinueFrom | None = None,
        device: str | None = None,
        overwrite: bool = False,
        rerun_complete: bool = False,
        break_lock: bool = False,
        progress: bool = True,
    ) -> None:
        if profile.mbpo is None:
            raise ConfigError(f"profile {profile.name!r} has no mbpo section")
        self.profile, self.cfg = profile, profile.mbpo
        self.paths = MBPOPaths(Path(out_dir))
        self.learner_name, self.start = learner, start
        self.seed = profile.seed if seed is None else seed
        self.device = resolve_device(device or profile.device)
        self.overwrite, self.rerun_complete, self.progress = overwrite, rerun_complete, progress
        self.break_lock = break_lock
        self.source: dict[str, Any] | None = None
        if start is None:
            self.task = get_task(task or self.cfg.tasks[0])
            self.sac_cfg = profile.sac
            self.first_step, self.end_step = 0, self.cfg.steps_for(self.task.task_id)
        else:
            self._open_source(start, task)
        self.config = self._run_config()
        self.schedule = UpdateSchedule(
            self.cfg.update_schedule,
            self.cfg.updates_per_step,
            self.cfg.max_updates_per_step,
            self.cfg.epoch_length,
            self.first_step,
            self.cfg.random_steps if start is None else self.first_step,
        )

    # --- configuration ---------------------------------------------------------------------------

    def _open_source(self, start: ContinueFrom, task: str | None) -> None:
        """Check the collected buffer and its agent checkpoint at snapshot K."""
        loaded = read_buffer(start.buffer)
        step_k = loaded.snapshot_step(start.snapshot)
        meta = loaded.metadata
        if task is not None and task != meta.task_id:
            raise ConfigError(f"{start.buffer} holds {meta.task_id}, not {task}")
        ckpt_path = CollectPaths(start.buffer.parent).checkpoint(start.snapshot)
        if not ckpt_path.is_file():
            raise TomreproError(
                f"no agent checkpoint {ckpt_path} for snapshot {start.snapshot}: continuation "
                "needs the checkpoints/ directory that `tomrepro collect` writes next to its buffer"
            )
        ckpt = load_tensors(ckpt_path, "agent checkpoint")
        try:
            ckpt_step = int(ckpt["env_step"])
            sac_cfg = SACConfig.model_validate(json.loads(ckpt["config"])["sac"])
            if not all(isinstance(ckpt[k], dict) for k in ("sac", "loop", "env")):
                raise TypeError("its sac, loop or env entry is not a mapping")
        except (KeyError, TypeError, ValueError) as exc:  # pydantic's errors are ValueErrors
            raise TomreproError(
                f"{ckpt_path}: not a tomrepro agent checkpoint ({_first_line(exc)})"
            ) from None
        if ckpt_step != step_k:
            raise TomreproError(
                f"{ckpt_path} is at env step {ckpt_step}, snapshot {start.snapshot} "
                f"began at {step_k}"
            )
        self.task = get_task(meta.task_id)
        self.sac_cfg = sac_cfg
        self.first_step, self.end_step = step_k, step_k + start.env_steps
        self.source = {
            "buffer": str(start.buffer),
            "digest": content_digest(start.buffer),
            "snapshot": start.snapshot,
            "env_step": step_k,
            "loaded": loaded,
            "checkpoint": ckpt,
            "checkpoint_path": ckpt_path,
        }

    def _run_config(self) -> dict[str, Any]:
        """What determines the run's results; stored and compared on resume."""
        config: dict[str, Any] = {
            "stage": "mbpo",
            "code": code_digest([__name__]),
            "kind": "scratch" if self.start is None else "continue",
            "task": self.task.task_id,
            "learner": learner_fingerprint(self.learner_name, self.profile),
            "seed": self.seed,
            "device": self.device.type,
            "env_steps": self.end_step - self.first_step,
            "mbpo": self.cfg.model_dump(mode="json", exclude={"learners", "seeds", "tasks"}),
            "sac": self.sac_cfg.model_dump(mode="json"),
            "model": self.profile.model.model_dump(mode="json"),
        }
        if self.source is not None:
            config["source"] = {k: self.source[k] for k in ("digest", "snapshot", "env_step")}
        return config

    def directory(self) -> RunDirectory:
        return RunDirectory(
            self.paths.root,
            self.config,
            "MBPO run",
            outputs=("buffer.h5", "checkpoint.pt", "model.pt", "curve.csv", "curve.nc", "run.json"),
            precious=("buffer.h5", "run.json"),
            finished=lambda: run_status(self.paths.root) is not None,  # run.json: finished
        )

    def finished(self) -> bool:
        """A complete run of this exact config is already on disk (and no rerun is asked for)."""
        return not self.rerun_complete and self.directory().is_done()

    def _prepare_directory(self) -> tuple[Start, dict[str, Any] | None]:
        """Done / resume / fresh, and the checkpoint a resume starts from."""
        directory = self.directory()
        start = directory.prepare(overwrite=self.overwrite, rerun_complete=self.rerun_complete)
        if start is not Start.RESUME:
            return start, None
        try:
            ckpt = load_tensors(self.paths.checkpoint, "MBPO checkpoint")
        except TomreproError:  # none yet, or cut short by a kill: start over
            return directory.start_fresh(), None
        return start, ckpt

    # --- building the state -----------------------------------------------------------------------

    def sac_generator(self) -> torch.Generator:
        """This run's SAC sampling generator (its row of a population's agent)."""
        return torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, "sac"))

    def agent_shape(self) -> tuple[Any, ...]:
        """What runs sharing one population agent must agree on."""
        env = self.task.make_env()
        bounds = env.action_space
        env.close()
        return (
            self.task.obs_dim,
            self.task.act_dim,
            tuple(bounds.low.astype(np.float32).tolist()),
            tuple(bounds.high.astype(np.float32).tolist()),
            self.sac_cfg.model_dump_json(),
            self.device,
            self.first_step,
            self.end_step,
            self.schedule,
            self.cfg.epoch_length,
        )

    def _build(self, resuming: bool, sac: SACRun) -> RunState:
        """A fresh state; a continuation loads its source unless a checkpoint will replace it."""
        task, seed, cfg = self.task, self.seed, self.cfg
        env = task.make_env()
        dev = self.device
        prefix_rows = 0
        if self.source is not None:
            prefix = self.source["loaded"].buffer.prefix(self.first_step)
            prefix_rows = len(prefix)
        buffer = ReplayBuffer(
            prefix_rows + self.end_step - self.first_step, task.obs_dim, task.act_dim
        )
        generators = {
            "sampler": torch.Generator().manual_seed(derive_seed(seed, "mbpo/minibatches")),
            "starts": torch.Generator().manual_seed(derive_seed(seed, "mbpo/starts")),
            "rollout": torch.Generator(device=dev).manual_seed(derive_seed(seed, "mbpo/rollout")),
            "model_fit": torch.Generator().manual_seed(derive_seed(seed, "model_fit")),
        }
        pool = ModelPool(cfg.model_pool_size, task.obs_dim, task.act_dim, dev)
        sampler = MixedBatchSampler(
            buffer, pool, self.sac_cfg.batch_size, cfg.real_ratio, dev, generators["sampler"]
        )
        model = DynamicsModel(self.profile.model, task.obs_dim, task.act_dim).to(dev)
        learner = build_learner(self.learner_name, self.profile, seed, dev)
        obs = env.reset(seed=derive_seed(seed, "env"))[0]
        state = RunState(
            env,
            sac,
            buffer,
            EpisodeRecorder(env, buffer),
            obs,
            model,
            pool,
            sampler,
            learner,
            generators,
            LoopState(step=self.first_step),
        )
        if self.source is not None and not resuming:
            self._load_source(state, prefix)
        return state

    def _load_source(self, state: RunState, prefix: ReplayBuffer) -> None:
        """The collected prefix, the agent at snapshot K (with this run's sampling seed), and
        the env exactly where the collector left it."""
        assert self.source is not None
        ckpt = self.source["checkpoint"]
        state.buffer.extend(prefix.columns())
        sac_state = {**ckpt["sac"], "generator": state.sac.generator.get_state()}
        try:
            state.sac.load_state_dict(sac_state)
            state.obs = restore_episode(ckpt, ckpt["loop"], state.env, state.recorder)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            raise TomreproError(
                f"{self.source['checkpoint_path']}: agent checkpoint does not fit task "
                f"{self.task.task_id}'s agent and env ({_first_line(exc)})"
            ) from None
        k = self.source["snapshot"]
        state.loop.version = k
        source = Path(self.source["buffer"])
        state.snapshots.extend(read_snapshot(source, v) for v in range(1, k + 1))

    # --- the loop ---------------------------------------------------------------------------------

    def run(self) -> Path:
        """A population of one: the same loop that steps many runs together."""
        from tomrepro.loops.mbpo_population import run_population

        return run_population([self])[0]

    def open(self, sac: SACRun) -> RunState | None:
        """Done (None), resumed or fresh: the state this run steps from, on its row `sac` of
        the population's agent. The caller holds the directory's lock."""
        start, ckpt = self._prepare_directory()
        if start is Start.DONE:
            log.info("mbpo: %s is complete; nothing to do", self.paths.root)
            return None
        state = self._build(resuming=ckpt is not None, sac=sac)
        if ckpt is not None:
            self._resume(state, ckpt)
        task = self.task
        state.noise = (
            StepNoise(derive_seed(self.seed, "exploration"), task.act_dim, "normal"),
            StepNoise(derive_seed(self.seed, "exploration"), task.act_dim, "uniform"),
        )
        state.bar = tqdm(
            total=self.end_step - self.first_step,
            initial=state.loop.step - self.first_step,
            unit="step",
            disable=not self.progress,
            desc=f"mbpo {self.learner_name} {task.task_id} s{self.seed}",
            mininterval=1.0,
        )
        return state

    def before_round(self, state: RunState) -> bool:
        """Everything of one env step before its model round (snapshot, evaluation,
        checkpoint); False once the run has reached its end."""
        cfg, random_until = self.cfg, self.schedule.policy_start
        step = state.loop.step
        boundary = (step - self.first_step) % cfg.epoch_length == 0 or step == self.end_step
        # A new policy version when the actor starts acting and at each epoch after that.
        taken = state.snapshots[-1].env_step if state.snapshots else -1
        acting = step >= random_until and step < self.end_step
        if acting and (boundary or step == random_until) and taken < step:
            state.loop.version += 1
            state.snapshots.append(
                PolicySnapshot(state.loop.version, step, state.sac.actor_arrays())
            )
        evaluated = boundary and (not state.loop.curve or state.loop.curve[-1]["env_step"] != step)
        if evaluated:
            self._evaluate(state)
            state.bar.set_postfix(ret=f"{state.loop.curve[-1]['return_mean']:.1f}", refresh=False)
        if step == self.end_step:
            return False
        if evaluated:
            self._checkpoint(state)
        return True

    def round_due(self, state: RunState) -> bool:
        """Whether this step starts with a model round (the same step in every run of a
        population: they share length and schedule)."""
        start = self.schedule.policy_start
        step = state.loop.step
        return step >= start and (step - start) % self.cfg.model_train_every == 0

    def policy_input(self, state: RunState) -> tuple[np.ndarray, np.ndarray] | None:
        """(observation, noise) the actor acts on at this step; None before the policy starts."""
        step = state.loop.step
        return None if step < self.schedule.policy_start else (state.obs, state.noise[0].at(step))

    def step_env(self, state: RunState, action: np.ndarray | None = None) -> None:
        """The env step itself: a uniform action before the policy starts, then the actor's
        (`action`: the actor's action for `policy_input`, already computed by the population)."""
        tick = time.perf_counter()
        step = state.loop.step
        normal, uniform = state.noise
        if step < self.schedule.policy_start:
            low, high = state.env.action_space.low, state.env.action_space.high
            action = low + (high - low) * uniform.at(step)
        elif action is None:
            action = self._policy_action(state, normal.at(step))
        state.obs, finished = state.recorder.step(state.obs, action, step, state.loop.version)
        if finished is not None:
            state.loop.last_train_return = finished
        state.timer.add("env", time.perf_counter() - tick)

    def bursts_now(self, state: RunState) -> bool:
        return bool(self.schedule.burst_at(state.loop.step))

    def after_updates(self, state: RunState, stats: torch.Tensor | None, seconds: float) -> None:
        """Book the burst (its last update's stats and this run's share of its time) and move
        to the next step."""
        if stats is not None:
            state.last_stats = stats
            state.loop.updates += self.cfg.updates_per_step
            state.timer.add("sac", seconds)
        step = state.loop.step
        epoch_ends = (step + 1 - self.first_step) % self.cfg.epoch_length == 0
        if (epoch_ends or step + 1 == self.end_step) and state.last_stats is not None:
            state.loop.sac_stats = state.last_stats.tolist()
        state.loop.step += 1
        state.bar.update(1)

    def finish(self, state: RunState) -> Path:
        state.bar.close()
        state.env.close()
        self._finish(state)
        return self.paths.root

    def _policy_action(self, state: RunState, noise: np.ndarray) -> np.ndarray:
        """The live actor's action for the current observation and this step's noise."""
        with torch.no_grad():
            obs = torch.as_tensor(state.obs, dtype=torch.float32, device=self.device)
            eps = torch.as_tensor(noise, device=self.device)
            return state.sac.actor.act(obs[None], eps[None])[0].cpu().numpy()

    def start_round(self, state: RunState) -> PendingRound:
        """A model round up to its learner's training (TOM's round trains with the
        population's other rounds, `train_plans`)."""
        tick = time.perf_counter()
        columns = state.buffer.columns()
        pending = state.learner.start(
            PlanInputs(
                columns,
                state.sac.actor,
                state.loop.version,
                state.sac.critic,
                state.sac.critic_target,
                groups=lambda granularity: self._version_groups(columns, granularity),
            )
        )
        state.timer.add("weights", time.perf_counter() - tick)
        return PendingRound(columns, pending)

    def plan_round(self, state: RunState, pending: PendingRound) -> ModelRound:
        """The learner's plan once trained, and the fit prepared (the fit itself trains with
        the population's other fits, `train_fits`)."""
        cfg = self.cfg
        tick = time.perf_counter()
        columns, plan = pending.columns, pending.plan.finish()
        trained = pending.plan.training_seconds()
        state.timer.add("weights", time.perf_counter() - tick + trained)
        cold = state.loop.model_rounds == 0
        job = FitJob(
            state.model,
            model_inputs(columns["observations"], columns["actions"]),
            model_targets(
                columns["observations"], columns["next_observations"], columns["rewards"]
            ),
            plan.row_weights,
            state.generators["model_fit"],
            target_weights=plan.target_weights,
            warm_start=not cold,
            max_epochs=None if cold else cfg.model_max_epochs,
            batches_per_epoch=None if cold else cfg.model_batches_per_epoch,
            clip_weights=plan.clip_weights,
        )
        return ModelRound(columns, plan, prepare_fit(job, self.device))

    def finish_round(self, state: RunState, model_round: ModelRound) -> None:
        """The rest of a model round once its fit has trained: rollouts into the pool, and
        the round's record."""
        cfg, timer = self.cfg, state.timer
        columns, plan, fit = model_round.columns, model_round.plan, model_round.fit.log
        timer.add("model_fit", fit.seconds)
        tick = time.perf_counter()
        rows = draw_rows(
            plan.start_probs, len(columns["rewards"]), cfg.rollout_batch, state.generators["starts"]
        )
        starts = torch.as_tensor(columns["observations"])[rows].to(self.device)
        length = cfg.rollout_length_at((state.loop.step - self.first_step) // cfg.epoch_length)
        rollouts = rollout_model(
            state.model,
            state.sac.actor,
            starts,
            length,
            self.task.terminated_torch,
            state.generators["rollout"],
        )
        state.pool.add(rollouts)
        timer.add("rollout", time.perf_counter() - tick)
        state.loop.model_rounds += 1
        elites = fit.elites
        holdout = fit.holdout_loss[fit.epochs - 1] if fit.epochs else []
        state.loop.last_round = {
            "model_train_loss": fit.train_loss[-1] if fit.train_loss else float("nan"),
            "model_holdout_loss": float(np.mean([holdout[e] for e in elites]))
            if holdout
            else float("nan"),
            "model_epochs": fit.epochs,
            "rollout_length": length,
            "rollout_rows": int(rollouts["observations"].shape[0]),
        }
        if plan.row_weights is not None:
            summary = weight_summary(plan.row_weights)
            state.loop.last_round["weight_ess_share"] = summary["effective_sample_share"]
            state.loop.last_round["weight_max"] = summary["quantiles"]["1.0"]
        elif plan.target_weights is not None:
            state.loop.last_round["weight_ess_share"] = float("nan")
            state.loop.last_round["weight_max"] = float(plan.target_weights.max())
        else:
            state.loop.last_round["weight_ess_share"] = 1.0
            state.loop.last_round["weight_max"] = 1.0

    def _version_groups(self, columns: dict[str, np.ndarray], granularity: str) -> np.ndarray:
        """Each row's policy-version group: rows before the policy phase (random steps, or a
        continuation's prefix) are group 0, like the official code's exploration data."""
        steps = columns["env_steps"]
        start = self.schedule.policy_start
        if granularity == "snapshot":
            return columns["policy_versions"].astype(np.int64)
        if granularity == "model_round":
            rounds = (steps - start) // self.cfg.model_train_every + 1
            return np.where(steps >= start, rounds, 0).astype(np.int64)
        return np.where(steps >= start, self.schedule.bursts_before(steps), 0).astype(np.int64)

    def _evaluate(self, state: RunState) -> None:
        """Test episodes and a curve row; the epoch's phase timings go into the row."""
        tick = time.perf_counter()
        returns, lengths = evaluate_policy(
            self.task,
            state.sac.actor_arrays(),
            self.cfg.eval_episodes,
            derive_seed(self.seed, "mbpo/eval", state.loop.step),
            self.cfg.eval_max_steps,
        )
        state.timer.add("eval", time.perf_counter() - tick)
        epoch_seconds = state.timer.lap()
        row: dict[str, Any] = {
            "env_step": state.loop.step,
            "steps_done": state.loop.step - self.first_step,
            "policy_version": state.loop.version,
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "return_max": float(returns.max()),
            "episode_length_mean": float(lengths.mean()),
            "train_return_last": state.loop.last_train_return,
            "model_rounds": state.loop.model_rounds,
            "sac_updates": state.loop.updates,
            "pool_size": len(state.pool),
            **{k: state.loop.last_round.get(k, float("nan")) for k in _ROUND_KEYS},
            **dict(
                zip(
                    ("critic_loss", "actor_loss", "alpha", "entropy"),
                    state.loop.sac_stats,
                    strict=True,
                )
            ),
            **{f"seconds_{k}": v for k, v in epoch_seconds.items()},
            "seconds_total": sum(state.timer.total.values()),
        }
        state.loop.curve.append(row)

    # --- persistence ------------------------------------------------------------------------------

    def _metadata(self, complete: bool) -> BufferMetadata:
        config = {**self.config, "acting": "live actor; policy_versions = last snapshot taken"}
        return BufferMetadata(self.task.task_id, self.seed, config, complete=complete)

    def _checkpoint(self, state: RunState) -> None:
        tick = time.perf_counter()
        payload = {
            "config": json.dumps(self.config, sort_keys=True),
            "env_step": state.loop.step,  # also in `loop`; here for tools that peek
            **{name: getattr(state, name).state_dict() for name in STATEFUL},
            "generators": {k: g.get_state() for k, g in state.generators.items()},
            **save_episode(state.env, state.obs),
            "loop": json.dumps(
                {
                    "loop": asdict(state.loop),
                    "timer": state.timer.state_dict(),
                    "episode": state.recorder.episode,
                    "episode_step": state.recorder.episode_step,
                    "episode_return": state.recorder.episode_return,
                }
            ),
        }
        # Buffer first, checkpoint second: a checkpoint always finds its rows on disk.
        write_buffer(self.paths.buffer, state.buffer, self._metadata(False), state.snapshots)
        save_tensors(payload, self.paths.checkpoint)
        state.timer.add("checkpoint", time.perf_counter() - tick)

    def _resume(self, state: RunState, ckpt: dict[str, Any]) -> None:
        try:
            rows = read_buffer(self.paths.buffer, allow_incomplete=True).buffer.columns()
        except BufferFormatError as exc:
            raise TomreproError(f"cannot resume {self.paths.root}: {exc}") from None
        saved = json.loads(ckpt["loop"])
        state.loop = LoopState(**saved["loop"])
        state.timer.load_state_dict(saved["timer"])
        keep = rows["env_steps"] < state.loop.step
        state.buffer.extend({k: v[keep] for k, v in rows.items()})
        for name in STATEFUL:
            getattr(state, name).load_state_dict(ckpt[name])
        for k, g in state.generators.items():
            g.set_state(ckpt["generators"][k])
        state.obs = restore_episode(ckpt, saved, state.env, state.recorder)
        state.snapshots = [
            read_snapshot(self.paths.buffer, v) for v in range(1, state.loop.version + 1)
        ]
        log.info("mbpo: resuming %s at env step %d", self.paths.root, state.loop.step)

    def _finish(self, state: RunState) -> None:
        write_buffer(self.paths.buffer, state.buffer, self._metadata(True), state.snapshots)
        state.model.save(self.paths.model, {"run": self.config})
        curve = pd.DataFrame(state.loop.curve)
        write_curve(curve, self.paths, self.config)
        steps = self.end_step - self.first_step
        state.timer.lap()
        total = state.timer.total
        wall = sum(total.values())
        summary = {
            "final_return_mean": float(curve["return_mean"].iloc[-1]),
            "best_return_mean": float(curve["return_mean"].max()),
            "env_steps": steps,
            "sac_updates": state.loop.updates,
            "model_rounds": state.loop.model_rounds,
            "seconds": {k: round(v, 3) for k, v in total.items()},
            "seconds_total": round(wall, 3),
            "env_steps_per_minute": 60 * steps / wall if wall > 0 else float("nan"),
            "time_share": {k: round(v / wall, 4) for k, v in total.items()} if wall else {},
        }
        with atomic_path(self.paths.run_json) as tmp:
            tmp.write_text(
                json.dumps({"config": self.config, "complete": True, "summary": summary}, indent=2)
            )
        self.paths.checkpoint.unlink(missing_ok=True)
        log.info("mbpo: %s done, final return %.1f", self.paths.root, summary["final_return_mean"])


_ROUND_KEYS = (
    "model_train_loss",
    "model_holdout_loss",
    "model_epochs",
    "rollout_length",
    "rollout_rows",
    "weight_ess_share",
    "weight_max",
)
TIMING_COLUMNS = (*(f"seconds_{k}" for k in PHASES), "seconds_total")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def write_curve(curve: pd.DataFrame, paths: MBPOPaths, config: dict[str, Any]) -> None:
    """The evaluation curve as tidy CSV and as a netCDF dataset over `env_step`."""
    with atomic_path(paths.curve_csv) as tmp:
        curve.to_csv(tmp, index=False)
    ds = curve.set_index("env_step").to_xarray()
    ds.attrs.update(
        {k: str(config[k]) for k in ("kind", "task", "seed")}
        | {"learner": config["learner"]["name"], "config": json.dumps(config, sort_keys=True)}
    )
    with atomic_path(paths.curve_nc) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
