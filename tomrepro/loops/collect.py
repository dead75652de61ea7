"""`tomrepro collect`: SAC on a task, recorded into a replay buffer with policy snapshots.

Timeline for N env steps, snapshot interval M and R random steps:
- steps [0, R): uniform-random actions, policy version 0 (no snapshot);
- at every step k with k % M == 0 and k >= R, before acting: the actor is frozen into snapshot
  version v (1, 2, ...), which chooses every action until the next snapshot, while SAC keeps
  training each step (from step R on). So each row's `policy_versions` names the exact parameters
  that chose its action, and `prefix(k)` is exactly the data that existed when snapshot v began.
- at each snapshot the agent's full state is checkpointed and the buffer so far is written
  (marked incomplete); a killed run resumes from the last checkpoint and ends with the same file.

Exploration noise comes from `StepNoise` (a function of seed and step), so neither resuming nor
recomputing actions from a snapshot needs generator state.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
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
from tomrepro.core.config import ProfileConfig
from tomrepro.core.env_state import capture_env_state, restore_env_state
from tomrepro.core.errors import TomreproError
from tomrepro.core.noise import StepNoise
from tomrepro.core.tasks import get_task
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.policy import SnapshotPolicy
from tomrepro.learning.sac import SAC, MinibatchSampler
from tomrepro.learning.serialization import save_tensors

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


def run_config(profile: ProfileConfig) -> dict[str, Any]:
    """What determines the collected data; stored in the file and compared on resume."""
    return {
        "stage": "collect",
        "profile": profile.name,
        "seed": profile.seed,
        "collect": profile.collect.model_dump(),
        "sac": profile.sac.model_dump(mode="json"),
    }


def snapshot_steps(random_steps: int, every: int, total: int) -> list[int]:
    """Env steps at which snapshots 1, 2, ... are taken."""
    first = -(-random_steps // every) * every
    return list(range(first, total, every))


@dataclass
class _LoopState:
    step: int = 0
    version: int = 0
    version_step: int = -1  # env step at which the current snapshot was taken
    episode: int = 0
    episode_step: int = 0
    episode_return: float = 0.0
    updates: int = 0


class Collector:
    """One collection run; `run()` goes from wherever the output directory left off to the end."""

    def __init__(
        self,
        profile: ProfileConfig,
        out_dir: Path,
        *,
        device: str | None = None,
        overwrite: bool = False,
        rerun_complete: bool = False,
        progress: bool = True,
    ) -> None:
        self.profile, self.cfg = profile, profile.collect
        self.paths = CollectPaths(Path(out_dir))
        self.task = get_task(self.cfg.task)
        self.device = resolve_device(device or profile.device)
        self.overwrite, self.rerun_complete, self.progress = overwrite, rerun_complete, progress
        self.config = run_config(profile)
        self.timings = {"env": 0.0, "sac_updates": 0.0, "writing": 0.0}

    # --- deciding where to start -------------------------------------------------------------

    def _prepare_directory(self) -> str:
        """'done', 'resume' or 'fresh'; refuses to touch output made with another config unless
        `overwrite`; `rerun_complete` redoes a finished run (DVC reruns a stage after code changes,
        which the stored config cannot see)."""
        try:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            self.paths.checkpoints.mkdir(exist_ok=True)
        except OSError as exc:
            raise TomreproError(
                f"cannot create output directory {self.paths.root}: {exc}"
            ) from None
        if not self.paths.buffer.exists():
            return "fresh"
        meta = read_metadata(self.paths.buffer, allow_incomplete=True)
        same = json.dumps(meta.config, sort_keys=True) == json.dumps(self.config, sort_keys=True)
        if not same and not self.overwrite:
            raise TomreproError(
                f"{self.paths.root} holds a collection with a different config; "
                "choose another --out or pass --overwrite"
            )
        if same and not meta.complete:
            return "resume"
        if same and not self.rerun_complete:
            return "done"
        shutil.rmtree(self.paths.checkpoints)
        self.paths.checkpoints.mkdir()
        return "fresh"

    def _latest_usable_checkpoint(self, rows_end: int) -> Path | None:
        """Newest checkpoint whose env step the written buffer covers."""
        for path in sorted(self.paths.checkpoints.glob("agent_v*.pt"), reverse=True):
            step = int(torch.load(path, weights_only=True, map_location="cpu")["env_step"])
            if step <= rows_end:
                return path
        return None

    # --- the run -------------------------------------------------------------------------------

    def run(self) -> Path:
        start = self._prepare_directory()
        if start == "done":
            log.info("collect: %s is complete; nothing to do", self.paths.buffer)
            return self.paths.buffer
        cfg, task = self.cfg, self.task
        seed = self.profile.seed
        env = task.make_env()
        low, high = (
            env.action_space.low.astype(np.float32),
            env.action_space.high.astype(np.float32),
        )
        # Network init draws from a CPU generator; SAC's own sampling needs one on its device.
        sac = SAC(
            task.obs_dim,
            task.act_dim,
            low,
            high,
            self.profile.sac,
            self.device,
            torch.Generator(device=self.device).manual_seed(seed),
        )
        buffer = ReplayBuffer(cfg.env_steps, task.obs_dim, task.act_dim)
        sampler = MinibatchSampler(
            buffer,
            self.profile.sac.batch_size,
            self.device,
            torch.Generator().manual_seed(seed + 1),
        )
        normal = StepNoise(seed, task.act_dim, "normal")
        uniform = StepNoise(seed, task.act_dim, "uniform")
        snapshots: list[PolicySnapshot] = []
        state = _LoopState()
        obs, _ = env.reset(seed=seed)
        policy: SnapshotPolicy | None = None
        if start == "resume":
            resumed = self._resume(env, sac, sampler, buffer, snapshots, state)
            if resumed is not None:
                obs, policy = resumed
        snapshot_at = set(snapshot_steps(cfg.random_steps, cfg.snapshot_every, cfg.env_steps))
        bar = tqdm(
            total=cfg.env_steps,
            initial=state.step,
            unit="step",
            disable=not self.progress,
            desc=f"collect {task.task_id}",
            mininterval=1.0,
        )
        stats = torch.zeros(4)
        while state.step < cfg.env_steps:
            step = state.step
            if step in snapshot_at and step != state.version_step:
                state.version, state.version_step = state.version + 1, step
                snapshots.append(PolicySnapshot(state.version, step, sac.actor_arrays()))
                policy = SnapshotPolicy(snapshots[-1].tensors)
                self._checkpoint(env, sac, sampler, buffer, snapshots, state, obs)
            tick = time.perf_counter()
            if policy is None:
                action = low + (high - low) * uniform.at(step)
            else:
                action = policy.act(obs, normal.at(step))
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(
                obs,
                action,
                reward,
                next_obs,
                terminated,
                truncated,
                state.episode,
                state.episode_step,
                step,
                state.version,
            )
            state.episode_return += float(reward)
            if terminated or truncated:
                bar.set_postfix(ret=f"{state.episode_return:.1f}", refresh=False)
                obs, _ = env.reset()
                state.episode, state.episode_step, state.episode_return = state.episode + 1, 0, 0.0
            else:
                obs, state.episode_step = next_obs, state.episode_step + 1
            tock = time.perf_counter()
            self.timings["env"] += tock - tick
            learning = cfg.updates_per_step and step >= cfg.random_steps
            if learning and len(buffer) >= self.profile.sac.batch_size:
                for _ in range(cfg.updates_per_step):
                    stats = sac.update(sampler.sample())
                state.updates += cfg.updates_per_step
                self.timings["sac_updates"] += time.perf_counter() - tock
            state.step += 1
            bar.update(1)
        bar.close()
        env.close()
        self._finish(sac, buffer, snapshots, state, stats)
        return self.paths.buffer

    def _metadata(self, complete: bool) -> BufferMetadata:
        return BufferMetadata(self.task.task_id, self.profile.seed, self.config, complete=complete)

    def _checkpoint(
        self,
        env: Any,
        sac: SAC,
        sampler: MinibatchSampler,
        buffer: ReplayBuffer,
        snapshots: list[PolicySnapshot],
        state: _LoopState,
        obs: np.ndarray,
    ) -> None:
        """Agent state at the current snapshot, then the buffer so far (marked incomplete)."""
        tick = time.perf_counter()
        env_state = capture_env_state(env)
        payload = {
            "env_step": state.step,
            "policy_version": state.version,
            "sac": sac.state_dict(),
            "sampler_generator": sampler.generator.get_state(),
            "env": {**env_state, "physics": torch.from_numpy(env_state["physics"])},
            "observation": torch.from_numpy(np.asarray(obs, dtype=np.float64)),
            "loop": {
                "episode": state.episode,
                "episode_step": state.episode_step,
                "episode_return": state.episode_return,
                "updates": state.updates,
            },
            "config": json.dumps(self.config, sort_keys=True),
        }
        save_tensors(payload, self.paths.checkpoint(state.version))
        if len(buffer):
            write_buffer(self.paths.buffer, buffer, self._metadata(complete=False), snapshots)
        self.timings["writing"] += time.perf_counter() - tick

    def _resume(
        self,
        env: Any,
        sac: SAC,
        sampler: MinibatchSampler,
        buffer: ReplayBuffer,
        snapshots: list[PolicySnapshot],
        state: _LoopState,
    ) -> tuple[np.ndarray, SnapshotPolicy] | None:
        """Restore the newest consistent checkpoint; None if there is none (start afresh)."""
        written = read_buffer(self.paths.buffer, allow_incomplete=True)
        rows = written.buffer.columns()
        rows_end = int(rows["env_steps"][-1]) + 1 if len(rows["env_steps"]) else 0
        path = self._latest_usable_checkpoint(rows_end)
        if path is None:
            return None
        ckpt = torch.load(path, weights_only=True, map_location="cpu")
        step = int(ckpt["env_step"])
        keep = rows["env_steps"] < step
        buffer.extend({k: v[keep] for k, v in rows.items()})
        sac.load_state_dict(ckpt["sac"])
        sampler.generator.set_state(ckpt["sampler_generator"])
        env_state = dict(ckpt["env"])
        env_state["physics"] = env_state["physics"].numpy()
        restore_env_state(env, env_state)
        state.step, state.version = step, int(ckpt["policy_version"])
        state.version_step = step
        loop = ckpt["loop"]
        state.episode, state.episode_step = int(loop["episode"]), int(loop["episode_step"])
        state.episode_return, state.updates = float(loop["episode_return"]), int(loop["updates"])
        snapshots.extend(read_snapshot(self.paths.buffer, v) for v in range(1, state.version + 1))
        log.info("collect: resuming at env step %d (policy version %d)", step, state.version)
        return ckpt["observation"].numpy(), SnapshotPolicy(snapshots[-1].tensors)

    def _finish(
        self,
        sac: SAC,
        buffer: ReplayBuffer,
        snapshots: list[PolicySnapshot],
        state: _LoopState,
        stats: torch.Tensor,
    ) -> None:
        tick = time.perf_counter()
        final = self.paths.checkpoints / "agent_final.pt"
        save_tensors({"env_step": state.step, "sac": sac.state_dict()}, final)
        write_buffer(self.paths.buffer, buffer, self._metadata(complete=True), snapshots)
        self.timings["writing"] += time.perf_counter() - tick
        critic_loss, actor_loss, alpha, entropy = (float(x) for x in stats)
        summary = {
            "env_steps": state.step,
            "sac_updates": state.updates,
            "policy_versions": state.version,
            "last_losses": {
                "critic": critic_loss,
                "actor": actor_loss,
                "alpha": alpha,
                "entropy": entropy,
            },
            "device": str(self.device),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
            "note": "timings cover this invocation only (a resumed run counts from its restart)",
        }
        with atomic_path(self.paths.log) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
        log.info(
            "collect: timings env %.1fs, sac updates %.1fs, writing %.1fs",
            *(self.timings[k] for k in ("env", "sac_updates", "writing")),
        )
