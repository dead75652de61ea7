"""`tomrepro offline-study`: MLE, TOM, TOM without discriminator and PMAC models, per snapshot.

For each policy snapshot k of a buffer, each learner and each seed (a "cell"):
1. D^R = the prefix that existed when snapshot k became current; the learner's plan on it for
   pi_k (the same registered learner object MBPO uses: uniform for MLE, TOM's estimate under
   pi_k, PMAC's recency decay);
2. a dynamics model fitted with the profile's family, architecture and budget, and the cell's seed
   (the same seed for every learner, so learners differ only in their weights);
3. its errors on fresh on-policy episodes of pi_k in the real environment, weighted by the
   discounted occupancy gamma^t (one-step and open-loop for horizons 1..H), and on D^R itself
   (uniform weights); plus the weight statistics claim C1 needs (weight by age, newest / oldest
   ratio, Spearman correlation with recency, effective sample size).

The evaluation episodes of a snapshot are generated once (`eval/snapshot_K.h5`) and shared by all
learners and seeds. Each cell is written as `cells/k{K}_{learner}_s{seed}.json` when it finishes and
skipped when present, so a killed study resumes where it stopped; `study.nc` (netCDF, dims
learner x snapshot x seed x horizon x age_bin), tidy CSVs (`study.csv` per cell, `open_loop.csv`,
`weight_by_age.csv`) and `metrics.json` are assembled from the cells at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tomrepro.core.atomic import atomic_path
from tomrepro.core.buffer_file import (
    BufferFile,
    BufferMetadata,
    content_digest,
    read_buffer,
    read_snapshot,
    write_buffer,
)
from tomrepro.core.code_closure import code_digest
from tomrepro.core.config import OfflineStudyConfig, ProfileConfig
from tomrepro.core.errors import TomreproError
from tomrepro.core.noise import StepNoise
from tomrepro.core.seeding import derive_seed
from tomrepro.core.tasks import get_task
from tomrepro.learning.devices import resolve_device
from tomrepro.learning.dynamics_model import DynamicsModel
from tomrepro.learning.model_learners import (
    LearnerPlan,
    learner_fingerprint,
    plan_for_snapshot,
)
from tomrepro.learning.model_training import fit_on_columns
from tomrepro.learning.policy import SnapshotPolicy
from tomrepro.learning.sac import SquashedGaussianActor
from tomrepro.learning.tom_weights import recency_statistics, weight_summary
from tomrepro.loops.model_error import error_scale, evaluate_model, occupancy_weights
from tomrepro.loops.rollout import rollout
from tomrepro.loops.run_directory import RunDirectory, Start

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    snapshot: int
    learner: str
    seed: int

    @property
    def name(self) -> str:
        return f"k{self.snapshot}_{self.learner}_s{self.seed}"


def study_config(profile: ProfileConfig) -> dict[str, Any]:
    assert profile.offline_study is not None
    return {
        "stage": "offline_study",
        "code": code_digest([__name__]),
        "profile": profile.name,
        "seed": profile.seed,  # the evaluation episodes' (cells have their own seeds)
        "offline_study": profile.offline_study.model_dump(mode="json"),
        "model": profile.model.model_dump(mode="json"),
        "learners": [learner_fingerprint(n, profile) for n in profile.offline_study.learners],
    }


class OfflineStudy:
    """One study over one buffer; `run()` computes missing cells, then assembles the outputs."""

    def __init__(
        self,
        profile: ProfileConfig,
        buffer_path: Path,
        out_dir: Path,
        *,
        device: str | None = None,
        overwrite: bool = False,
        rerun_complete: bool = False,
        break_lock: bool = False,
        progress: bool = True,
    ) -> None:
        if profile.offline_study is None:
            raise TomreproError(f"profile {profile.name!r} has no offline_study section")
        self.profile, self.cfg = profile, profile.offline_study
        self.buffer_path, self.out = Path(buffer_path), Path(out_dir)
        self.device = resolve_device(device or profile.device)
        self.overwrite, self.rerun_complete, self.progress = overwrite, rerun_complete, progress
        self.break_lock = break_lock
        # Random draws differ between devices: cells made on another device are not reused.
        self.config = {**study_config(profile), "device": self.device.type}

    @property
    def dataset_path(self) -> Path:
        return self.out / "study.nc"

    @cached_property
    def directory(self) -> RunDirectory:
        """Built once: its fingerprint holds the buffer's content digest (a full read)."""
        return RunDirectory(
            self.out,
            {**self.config, "buffer_digest": content_digest(self.buffer_path)},
            "offline study",
            outputs=(
                "cells",
                "eval",
                "study.nc",
                "study.csv",
                "open_loop.csv",
                "weight_by_age.csv",
                "timings.csv",
                "metrics.json",
            ),
            precious=("cells", "study.nc"),
            finished=self.dataset_path.exists,
        )

    def _prepare(self, loaded: BufferFile) -> bool:
        """True if there is nothing to do; output of another config is refused unless
        `overwrite` (the DVC stage passes it, as for collect)."""
        for k in self.cfg.snapshots:
            loaded.snapshot_step(k)
        start = self.directory.prepare(overwrite=self.overwrite, rerun_complete=self.rerun_complete)
        if start is Start.DONE:
            return True
        (self.out / "cells").mkdir(exist_ok=True)
        (self.out / "eval").mkdir(exist_ok=True)
        return False

    def run(self) -> Path:
        """Holds the directory's lock for the whole run (another writer is refused)."""
        with self.directory.lock(break_lock=self.break_lock):
            return self._run()

    def _run(self) -> Path:
        loaded = read_buffer(self.buffer_path)
        if self._prepare(loaded):
            log.info("offline-study: %s is complete; nothing to do", self.dataset_path)
            return self.dataset_path
        cells = [
            Cell(k, m, s)
            for k, m, s in product(self.cfg.snapshots, self.cfg.learners, self.cfg.seeds)
        ]
        todo = [c for c in cells if not (self.out / "cells" / f"{c.name}.json").exists()]
        bar = tqdm(
            total=len(cells),
            initial=len(cells) - len(todo),
            unit="cell",
            desc="offline study",
            disable=not self.progress,
        )
        for cell in todo:
            bar.set_postfix_str(cell.name)
            result = self._run_cell(loaded, cell)
            with atomic_path(self.out / "cells" / f"{cell.name}.json") as tmp:
                tmp.write_text(json.dumps(result, indent=1))
            bar.update(1)
        bar.close()
        return self._assemble(loaded, cells)

    # --- one cell ------------------------------------------------------------------------------

    def _eval_episodes(self, loaded: BufferFile, snapshot: int) -> dict[str, np.ndarray]:
        """Fresh episodes of pi_k in the real env (stochastic, as it acted), cached per snapshot."""
        path = self.out / "eval" / f"snapshot_{snapshot}.h5"
        if not path.exists():
            task = get_task(loaded.metadata.task_id)
            policy = SnapshotPolicy(read_snapshot(self.buffer_path, snapshot).tensors)
            seed = derive_seed(self.profile.seed, "offline/eval", snapshot)
            noise = StepNoise(derive_seed(seed, "exploration"), task.act_dim, "normal")
            episodes = rollout(
                task,
                0,
                seed,
                act=lambda obs, t: policy.act(obs, noise.at(t)),
                policy_version=snapshot,
                episodes=self.cfg.eval_episodes,
            )
            write_buffer(
                path,
                episodes,
                BufferMetadata(
                    task.task_id, seed, {"stage": "offline_study_eval", "snapshot": snapshot}
                ),
            )
        return read_buffer(path).buffer.columns()

    def _plan(self, cols: dict[str, np.ndarray], cell: Cell) -> LearnerPlan:
        """The cell's learner, built fresh, planning for snapshot pi_k on the prefix."""
        actor = SquashedGaussianActor.from_tensors(
            read_snapshot(self.buffer_path, cell.snapshot).tensors
        )
        return plan_for_snapshot(
            cell.learner, self.profile, cols, actor, cell.snapshot, cell.seed, self.device
        )

    def _run_cell(self, loaded: BufferFile, cell: Cell) -> dict[str, Any]:
        start = time.perf_counter()
        prefix = loaded.buffer.prefix(loaded.snapshot_steps[cell.snapshot])
        cols = prefix.columns()
        plan = self._plan(cols, cell)
        weights = plan.weights_or_uniform(len(cols["rewards"]))
        keep = (
            "seconds",
            "reward_mean_recent",
            "reward_mean_older",
            "granularity",
            "q_convergence",
        )
        diagnostics = {k: plan.diagnostics[k] for k in keep if k in plan.diagnostics}
        if "q_loss" in plan.diagnostics:  # the dual's loss curve, as means over 100 steps
            loss = np.asarray(plan.diagnostics["q_loss"])
            chunks = np.array_split(loss, max(1, len(loss) // 100))
            diagnostics["q_loss_per_100_steps"] = [float(c.mean()) for c in chunks]
        weight_seconds = time.perf_counter() - start
        model = DynamicsModel(self.profile.model, prefix.obs_dim, prefix.act_dim)
        fit = fit_on_columns(
            model,
            cols,
            weights,
            torch.Generator().manual_seed(derive_seed(cell.seed, "model_fit")),
            self.device,
            clip_weights=plan.clip_weights,
        )
        episodes = self._eval_episodes(loaded, cell.snapshot)
        scale = error_scale(episodes)  # one scale per snapshot: methods compared in equal units
        on_policy = evaluate_model(
            model,
            episodes,
            occupancy_weights(episodes["episode_steps"], self.cfg.eval_gamma),
            self.cfg.horizon,
            self.device,
            scale,
        )
        on_buffer = evaluate_model(model, cols, np.ones(len(prefix)), 1, self.device, scale)
        recency = recency_statistics(weights, cols["env_steps"], self.cfg.age_bins)
        return {
            "snapshot": cell.snapshot,
            "learner": cell.learner,
            "seed": cell.seed,
            "env_step": loaded.snapshot_steps[cell.snapshot],
            "rows": len(prefix),
            "eval_start_states": int((episodes["episode_steps"] == 0).sum()),
            "eval_rows": len(episodes["rewards"]),
            "on_policy": on_policy.as_dict(),
            "buffer": on_buffer.as_dict(),
            "weight_by_age": recency["weight_by_age"].tolist(),
            "newest_oldest_ratio": recency["newest_oldest_ratio"],
            "spearman_recency": recency["spearman_recency"],
            "ess_share": weight_summary(weights)["effective_sample_share"],
            "fit_epochs": fit.epochs,
            "fit_seconds": fit.seconds,
            "weight_seconds": weight_seconds,
            "diagnostics": diagnostics,
        }

    # --- outputs -------------------------------------------------------------------------------

    def _assemble(self, loaded: BufferFile, cells: list[Cell]) -> Path:
        results = {
            c: json.loads((self.out / "cells" / f"{c.name}.json").read_text()) for c in cells
        }
        ds, timings = study_datasets(results, self.cfg, loaded.snapshot_steps)
        ds.attrs.update(
            {
                "buffer": str(self.buffer_path),
                "buffer_digest": content_digest(self.buffer_path),
                "task_id": loaded.metadata.task_id,
                "config": json.dumps(self.config, sort_keys=True),
                "versions": json.dumps(dict(loaded.metadata.versions), sort_keys=True),
                "age_bin_order": "0 = oldest transitions of the prefix, last = newest",
                "errors": "squared errors in units of the evaluated data's per-dimension std",
            }
        )
        tables = {
            "timings.csv": timings.to_dataframe(),
            "study.csv": ds.drop_dims(["horizon", "age_bin"]).to_dataframe(),
            "open_loop.csv": ds["open_loop_state_mse"].to_dataframe(),
            "weight_by_age.csv": ds["weight_by_age"].to_dataframe(),
        }
        for name, table in tables.items():
            with atomic_path(self.out / name) as tmp:
                table.reset_index().to_csv(tmp, index=False)
        with atomic_path(self.out / "metrics.json") as tmp:
            tmp.write_text(json.dumps(_metrics(ds), indent=2))
        with atomic_path(self.dataset_path) as tmp:
            ds.to_netcdf(tmp, engine="h5netcdf")
        return self.dataset_path


def study_datasets(
    results: dict[Cell, dict[str, Any]],
    cfg: OfflineStudyConfig,
    snapshot_steps: Mapping[int, int],
) -> tuple[Any, Any]:
    """The cells' results as the study dataset (learner x snapshot x seed [x horizon, age_bin])
    and, apart, their wall times (so that the dataset is deterministic)."""
    import xarray as xr

    # The dimension is `learner`, not `method`: xarray's `.sel(method=...)` means another thing.
    dims = ("learner", "snapshot", "seed")
    shape = (len(cfg.learners), len(cfg.snapshots), len(cfg.seeds))

    def grid(get, extra: int | None = None) -> np.ndarray:
        out = np.full(shape + ((extra,) if extra else ()), np.nan)
        for c, r in results.items():
            i, j, s = (
                cfg.learners.index(c.learner),
                cfg.snapshots.index(c.snapshot),
                cfg.seeds.index(c.seed),
            )
            value = np.asarray(get(r), dtype=np.float64)
            if extra:
                out[i, j, s, : len(value)] = value
            else:
                out[i, j, s] = value
        return out

    data_vars: dict[str, tuple[tuple[str, ...], np.ndarray]] = {
        f"{where}_{metric}": (dims, grid(lambda r, w=where, m=metric: r[w][m]))
        for where in ("on_policy", "buffer")
        for metric in ("state_mse", "reward_mse", "nll")
    }
    data_vars["open_loop_state_mse"] = (
        (*dims, "horizon"),
        grid(lambda r: r["on_policy"]["open_loop_state_mse"], cfg.horizon),
    )
    data_vars["weight_by_age"] = (
        (*dims, "age_bin"),
        grid(lambda r: r["weight_by_age"], cfg.age_bins),
    )
    for name in (
        "newest_oldest_ratio",
        "spearman_recency",
        "ess_share",
        "fit_epochs",
        "eval_start_states",
    ):
        data_vars[name] = (dims, grid(lambda r, n=name: r[n]))
    ds = xr.Dataset(
        data_vars,
        coords={
            "learner": list(cfg.learners),
            "snapshot": list(cfg.snapshots),
            "seed": list(cfg.seeds),
            "horizon": np.arange(1, cfg.horizon + 1),
            "age_bin": np.arange(cfg.age_bins),
            "env_step": ("snapshot", [snapshot_steps[k] for k in cfg.snapshots]),
        },
    )
    timings = xr.Dataset(
        {name: (dims, grid(lambda r, n=name: r[n])) for name in ("fit_seconds", "weight_seconds")},
        coords={k: ds.coords[k] for k in dims},
    )
    return ds, timings


def _metrics(ds: Any) -> dict[str, Any]:
    """Per snapshot and learner: mean and std over seeds of the headline numbers (for DVC)."""
    out: dict[str, Any] = {}
    for k in ds.snapshot.values.tolist():
        for m in ds.learner.values.tolist():
            cell = ds.sel(snapshot=k, learner=m)
            entry = {}
            for name in (
                "on_policy_state_mse",
                "buffer_state_mse",
                "newest_oldest_ratio",
                "spearman_recency",
                "ess_share",
            ):
                values = cell[name].values
                values = values[np.isfinite(values)]  # Spearman is undefined for MLE's weights
                entry[name] = (
                    {"mean": float(values.mean()), "std": float(values.std())}
                    if len(values)
                    else None
                )
            out[f"snapshot_{k}/{m}"] = entry
    return out
