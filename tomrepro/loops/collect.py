"""`tomrepro collect`: SAC on a task, recorded into a replay buffer with policy snapshots.

Timeline for N env steps, snapshot interval M and R random steps:
- until the first snapshot (the first multiple of M that is >= R): uniform-random actions,
  policy version 0 (no snapshot); SAC learns from step R on;
- at every step k with k % M == 0 and k >= R, before acting: the actor is frozen into snapshot
  version v (1, 2, ...), which chooses every action until the next snapshot, while SAC keeps
  training each step (from step R on). So each row's `policy_versions` names the exact parameters
  that chose its action, and `prefix(k)` is exactly the data that existed when snapshot v began.
- at each snapshot the agent's full state is checkpointed and the buffer so far is written
  (marked incomplete); a killed run resumes from the last checkpoint and ends with the same file.

Exploration noise comes from `StepNoise` (a function of seed and step), so neither resuming nor
recomputing actions from a snapshot needs generator state.

A profile makes one independent run per seed of `collect.seeds` (the offline study's units), each
in its own run directory `OUT/seed_{s}/` with its own fingerprint and lock; every stream of a run
derives from its seed. A killed `collect_runs` keeps the finished runs and resumes the one it was
in.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tomrepro.core.atomic import atomic_path
from tomrepro.core.buffer import ReplayBuffer
from tomrepro.core.buffer_file import (
    BufferMetadata,
    PolicySnapshot,
    read_buffer,
    read_metadata,
    read_snapshot,
    write_buffer,
)
from tomrepro.core.code_closure import code_digest
from tomrepro.core.config import ProfileConfig
from tomrepro.core.errors import TomreproError
from tomrepro.core.noise import StepNoise
from tomrepro.core.phase_timer import PhaseTimer
from tomrepro.core.seeding import derive_seed
from tomrepro.core.tasks import get_task
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.policy import SnapshotPolicy
from tomrepro.learning.sac import SAC, MinibatchSampler
from tomrepro.learning.serialization import load_tensors, save_tensors
from tomrepro.loops.episode_recorder import EpisodeRecorder, restore_episode, save_episode
from tomrepro.loops.run_directory import FINGERPRINT, RunDirectory, Start

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CollectPaths:
    """Everything `collect` writes lives in one directory."""

    root: Path

    @property
    def buffer(self) -> Path:
        return self.root / "buffer.h5"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def log(self) -> Path:
        return self.root / "collect_log.json"

    def checkpoint(self, version: int) -> Path:
        return self.checkpoints / f"agent_v{version:06d}.pt"


def run_dir(root: Path, seed: int) -> Path:
    """Where collect run `seed` lives in a collect directory."""
    return Path(root) / f"seed_{seed}"


def collected_buffer(profile: ProfileConfig, root: Path, seed: int | None = None) -> Path:
    """The buffer of one collect run in a collect directory (default: the first seed's)."""
    seed = profile.collect.seeds[0] if seed is None else seed
    path = CollectPaths(run_dir(root, seed)).buffer
    if not path.is_file():
        raise TomreproError(
            f"{root}: collect run {seed} has no buffer ({path} is missing); run "
            f"`tomrepro collect --profile {profile.name} --out {root}`"
        )
    return path


def collected_buffers(profile: ProfileConfig, root: Path) -> dict[int, Path]:
    """Run seed -> buffer of every collect run of the profile in a collect directory."""
    return {s: collected_buffer(profile, root, s) for s in profile.collect.seeds}


def run_config(profile: ProfileConfig, seed: int) -> dict[str, Any]:
    """What determines one run's data; stored in the file and compared on resume. The list of
    seeds is left out, so adding runs to a profile keeps the finished ones."""
    return {
        "stage": "collect",
        "code": code_digest([__name__]),
        "profile": profile.name,
        "seed": seed,
        "collect": profile.collect.model_dump(exclude={"seeds"}),
        "sac": profile.sac.model_dump(mode="json"),
    }


def snapshot_steps(random_steps: int, every: int, total: int) -> list[int]:
    """Env steps at which snapshots 1, 2, ... are taken."""
    first = -(-random_steps // every) * every
    return list(range(first, total, every))


@dataclass
class _Run:
    """Everything a collection carries from step to step, and what a checkpoint saves."""

    env: Any
    sac: SAC
    sampler: MinibatchSampler
    buffer: ReplayBuffer
    recorder: EpisodeRecorder
    obs: np.ndarray
    snapshots: list[PolicySnapshot] = field(default_factory=list)
    policy: SnapshotPolicy | None = None
    step: int = 0
    version: int = 0
    version_step: int = -1  # env step at which the current snapshot was taken
    updates: int = 0


class Collector:
    """One collection run; `run()` goes from wherever the output directory left off to the end.
    `seed` is the run's seed (default: the first of `collect.seeds`)."""

    def __init__(
        self,
        profile: ProfileConfig,
        out_dir: Path,
        *,
        seed: int | None = None,
        device: str | None = None,
        overwrite: bool = False,
        rerun_complete: bool = False,
        break_lock: bool = False,
        progress: bool = True,
    ) -> None:
        self.profile, self.cfg = profile, profile.collect
        self.seed = self.cfg.seeds[0] if seed is None else seed
        if self.seed < 0:
            raise TomreproError(f"a collect seed is non-negative (got {self.seed})")
        self.paths = CollectPaths(Path(out_dir))
        self.task = get_task(self.cfg.task)
        self.device = resolve_device(device or profile.device)
        self.overwrite, self.rerun_complete, self.progress = overwrite, rerun_complete, progress
        self.break_lock = break_lock
        # Generator states differ between devices: a run is resumed only on the device it began on.
        self.config = {**run_config(profile, self.seed), "device": self.device.type}
        self.timer = PhaseTimer(("env", "sac_updates", "writing"))

    # --- deciding where to start -------------------------------------------------------------

    def directory(self) -> RunDirectory:
        return RunDirectory(
            self.paths.root,
            self.config,
            "collection",
            outputs=("buffer.h5", "checkpoints", "collect_log.json"),
            precious=("buffer.h5",),
            finished=self._finished,
        )

    def _finished(self) -> bool:
        if not self.paths.buffer.exists():
            return False
        return read_metadata(self.paths.buffer, allow_incomplete=True).complete

    def _prepare_directory(self) -> Start:
        """Done / resume / fresh from the stored config; `rerun_complete` redoes a finished run
        (DVC reruns a stage after code changes, which the stored config cannot see)."""
        start = self.directory().prepare(
            overwrite=self.overwrite, rerun_complete=self.rerun_complete
        )
        self.paths.checkpoints.mkdir(exist_ok=True)
        if start is Start.RESUME and not self.paths.buffer.exists():
            return Start.FRESH  # killed before the first snapshot: nothing to resume
        return start

    def _latest_usable_checkpoint(self, rows_end: int) -> dict[str, Any] | None:
        """Newest checkpoint of this config whose env step the written buffer covers. One that
        cannot be read (cut short by a kill) or lacks an entry is passed over like a missing
        one: an older one will do, and with none the run starts over."""
        config = json.dumps(self.config, sort_keys=True)
        for path in sorted(self.paths.checkpoints.glob("agent_v*.pt"), reverse=True):
            try:
                ckpt = load_tensors(path, "agent checkpoint")
            except TomreproError:
                continue
            missing = _missing_entries(ckpt)
            if missing:
                log.warning("collect: %s lacks %s; passed over", path, ", ".join(missing))
                continue
            if ckpt["config"] == config and int(ckpt["env_step"]) <= rows_end:
                return ckpt
        return None

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> Path:
        """Holds the directory's lock for the whole run (another writer is refused)."""
        with self.directory().lock(break_lock=self.break_lock):
            return self._run()

    def _run(self) -> Path:
        start = self._prepare_directory()
        if start is Start.DONE:
            log.info("collect: %s is complete; nothing to do", self.paths.buffer)
            return self.paths.buffer
        cfg, task, seed = self.cfg, self.task, self.seed
        env = task.make_env()
        low = env.action_space.low.astype(np.float32)
        high = env.action_space.high.astype(np.float32)
        # Network init draws from a CPU generator; SAC's own sampling needs one on its device.
        sac = SAC(
            task.obs_dim,
            task.act_dim,
            low,
            high,
            self.profile.sac,
            self.device,
            torch.Generator(device=self.device).manual_seed(derive_seed(seed, "sac")),
        )
        buffer = ReplayBuffer(cfg.env_steps, task.obs_dim, task.act_dim)
        sampler = MinibatchSampler(
            buffer,
            self.profile.sac.batch_size,
            self.device,
            torch.Generator().manual_seed(derive_seed(seed, "collect/minibatches")),
        )
        run = _Run(env, sac, sampler, buffer, EpisodeRecorder(env, buffer), self._reset(env))
        if start is Start.RESUME:
            self._resume(run)
        normal = StepNoise(derive_seed(seed, "exploration"), task.act_dim, "normal")
        uniform = StepNoise(derive_seed(seed, "exploration"), task.act_dim, "uniform")
        snapshot_at = set(snapshot_steps(cfg.random_steps, cfg.snapshot_every, cfg.env_steps))
        bar = tqdm(
            total=cfg.env_steps,
            initial=run.step,
            unit="step",
            disable=not self.progress,
            desc=f"collect {task.task_id} seed {seed}",
            mininterval=1.0,
        )
        stats = torch.zeros(4)
        while run.step < cfg.env_steps:
            step = run.step
            if step in snapshot_at and step != run.version_step:
                run.version, run.version_step = run.version + 1, step
                run.snapshots.append(PolicySnapshot(run.version, step, sac.actor_arrays()))
                run.policy = SnapshotPolicy(run.snapshots[-1].tensors)
                self._checkpoint(run)
            tick = time.perf_counter()
            if run.policy is None:
                action = low + (high - low) * uniform.at(step)
            else:
                action = run.policy.act(run.obs, normal.at(step))
            run.obs, finished = run.recorder.step(run.obs, action, step, run.version)
            if finished is not None:
                bar.set_postfix(ret=f"{finished:.1f}", refresh=False)
            tock = time.perf_counter()
            self.timer.add("env", tock - tick)
            learning = cfg.updates_per_step and step >= cfg.random_steps
            if learning and len(buffer) >= self.profile.sac.batch_size:
                for _ in range(cfg.updates_per_step):
                    stats = sac.update(sampler.sample())
                run.updates += cfg.updates_per_step
                self.timer.add("sac_updates", time.perf_counter() - tock)
            run.step += 1
            bar.update(1)
        bar.close()
        env.close()
        self._finish(run, stats)
        return self.paths.buffer

    def _reset(self, env: Any) -> np.ndarray:
        return env.reset(seed=derive_seed(self.seed, "env"))[0]

    def _metadata(self, complete: bool) -> BufferMetadata:
        return BufferMetadata(self.task.task_id, self.seed, self.config, complete=complete)

    def _checkpoint(self, run: _Run) -> None:
        """Agent state at the current snapshot, then the buffer so far (marked incomplete)."""
        tick = time.perf_counter()
        payload = {
            "env_step": run.step,
            "policy_version": run.version,
            "sac": run.sac.state_dict(),
            "sampler_generator": run.sampler.generator.get_state(),
            **save_episode(run.env, run.obs),
            "loop": {
                "episode": run.recorder.episode,
                "episode_step": run.recorder.episode_step,
                "episode_return": run.recorder.episode_return,
                "updates": run.updates,
            },
            "config": json.dumps(self.config, sort_keys=True),
        }
        save_tensors(payload, self.paths.checkpoint(run.version))
        if len(run.buffer):
            write_buffer(
                self.paths.buffer, run.buffer, self._metadata(complete=False), run.snapshots
            )
        self.timer.add("writing", time.perf_counter() - tick)

    def _resume(self, run: _Run) -> None:
        """Restore the newest consistent checkpoint into `run` (leave it fresh if there is none)."""
        rows = read_buffer(self.paths.buffer, allow_incomplete=True).buffer.columns()
        rows_end = int(rows["env_steps"][-1]) + 1 if len(rows["env_steps"]) else 0
        ckpt = self._latest_usable_checkpoint(rows_end)
        if ckpt is None:
            return
        step = int(ckpt["env_step"])
        keep = rows["env_steps"] < step
        run.buffer.extend({k: v[keep] for k, v in rows.items()})
        run.sac.load_state_dict(ckpt["sac"])
        run.sampler.generator.set_state(ckpt["sampler_generator"])
        loop = ckpt["loop"]
        run.obs = restore_episode(ckpt, loop, run.env, run.recorder)
        run.step, run.version_step, run.updates = step, step, int(loop["updates"])
        run.version = int(ckpt["policy_version"])
        run.snapshots.extend(read_snapshot(self.paths.buffer, v) for v in range(1, run.version + 1))
        run.policy = SnapshotPolicy(run.snapshots[-1].tensors)
        log.info("collect: resuming at env step %d (policy version %d)", step, run.version)

    def _finish(self, run: _Run, stats: torch.Tensor) -> None:
        tick = time.perf_counter()
        final = self.paths.checkpoints / "agent_final.pt"
        save_tensors({"env_step": run.step, "sac": run.sac.state_dict()}, final)
        write_buffer(self.paths.buffer, run.buffer, self._metadata(complete=True), run.snapshots)
        self.timer.add("writing", time.perf_counter() - tick)
        timings = self.timer.lap()
        critic_loss, actor_loss, alpha, entropy = (float(x) for x in stats)
        summary = {
            "env_steps": run.step,
            "sac_updates": run.updates,
            "policy_versions": run.version,
            "last_losses": {
                "critic": critic_loss,
                "actor": actor_loss,
                "alpha": alpha,
                "entropy": entropy,
            },
            "device": str(self.device),
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "note": "timings cover this invocation only (a resumed run counts from its restart)",
        }
        with atomic_path(self.paths.log) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        log.info(
            "collect: timings env %.1fs, sac updates %.1fs, writing %.1fs",
            *(timings[k] for k in ("env", "sac_updates", "writing")),
        )


# What `_resume` reads from an agent checkpoint, at the top level and under "loop".
_CHECKPOINT_ENTRIES = (
    "config",
    "env_step",
    "policy_version",
    "sac",
    "sampler_generator",
    "env",
    "observation",
    "loop",
)
_LOOP_ENTRIES = ("episode", "episode_step", "episode_return", "updates")


def _missing_entries(ckpt: dict[str, Any]) -> list[str]:
    """The entries `_resume` needs that an agent checkpoint lacks (none for a whole one)."""
    missing = [k for k in _CHECKPOINT_ENTRIES if k not in ckpt]
    loop = ckpt.get("loop")
    if isinstance(loop, dict):
        missing += [f"loop.{k}" for k in _LOOP_ENTRIES if k not in loop]
    elif "loop" in ckpt:
        missing.append("loop (not a mapping)")
    return missing


# Names a collect directory held when it was one run (before runs were the offline study's units).
_SINGLE_RUN = ("buffer.h5", "checkpoints", "collect_log.json", FINGERPRINT)


def collect_runs(
    profile: ProfileConfig,
    out_dir: Path,
    *,
    seeds: tuple[int, ...] | None = None,
    overwrite: bool = False,
    **options: Any,
) -> dict[int, Path]:
    """Every collect run of the profile (or only `seeds`) into `out_dir/seed_{s}/`, one after
    another: run seed -> buffer. Each run decides done / resume / fresh on its own, so a killed
    call keeps its finished runs. `options` go to each `Collector`."""
    root = Path(out_dir)
    seeds = profile.collect.seeds if seeds is None else seeds
    _replace_single_run(root, overwrite)
    return {
        s: Collector(profile, run_dir(root, s), seed=s, overwrite=overwrite, **options).run()
        for s in seeds
    }


def _replace_single_run(root: Path, overwrite: bool) -> None:
    """A directory that is itself one run is not a collect directory: refused, or cleared of
    that run with `overwrite` (its `seed_*` runs, if any, are left alone)."""
    found = [n for n in _SINGLE_RUN if (root / n).exists()]
    if not found:
        return
    if not overwrite:
        raise TomreproError(
            f"{root} holds a single collect run ({', '.join(found)}), not runs in seed_*/; "
            "choose another --out or pass --overwrite to replace it"
        )
    for name in found:
        path = root / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
