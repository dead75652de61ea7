"""`tomrepro offline-study`: MLE, TOM, TOM without discriminator and PMAC models, per snapshot.

The units are independent collect runs (one buffer each, named by the run's seed); inside each,
for each policy snapshot k, each learner and each model seed, a "cell":
1. D^R = the prefix that existed when snapshot k became current; the learner's plan on it for
   pi_k (the same registered learner object MBPO uses: uniform for MLE, TOM's estimate under
   pi_k, PMAC's recency decay);
2. a dynamics model fitted with the profile's family, architecture and budget, and the cell's seed
   (derived from the run's seed and the model seed; the same for every learner, so learners differ
   only in their weights);
3. its errors on fresh on-policy episodes of pi_k in the real environment, weighted by the
   discounted occupancy gamma^t (one-step and open-loop for horizons 1..H), and on D^R itself
   (uniform weights); plus the weight statistics claim C1 needs (weight by age, newest / oldest
   ratio, Spearman correlation with recency, effective sample size).

The evaluation episodes of a (run, snapshot) are generated once, seeded from the run's seed alone
(`runs/seed_R/eval/snapshot_K.h5`), and shared by all learners and model seeds of that run. Each
run has its own run directory `runs/seed_R/` (fingerprint: the study config and its buffer's
content digest); each cell is written as `runs/seed_R/cells/k{K}_{learner}_s{seed}.json` when it
finishes and skipped when present, so a killed study resumes where it stopped and adding runs
keeps the finished ones. `study.nc` (netCDF, dims run x learner x snapshot x seed [x horizon |
age_bin]), tidy CSVs (`study.csv` per cell, `open_loop.csv`, `weight_by_age.csv`, each with a
`run` column) and `metrics.json` are assembled from the cells at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
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
    read_metadata,
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
from tomrepro.loops.collect import CollectPaths, collected_buffers
from tomrepro.loops.model_error import error_scale, evaluate_model, occupancy_weights
from tomrepro.loops.rollout import rollout
from tomrepro.loops.run_directory import RunDirectory, Start

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One fit: collect run (its seed), snapshot, learner and model seed."""

    run: int
    snapshot: int
    learner: str
    seed: int

    @property
    def name(self) -> str:
        """The cell's file stem inside its run's directory."""
        return f"k{self.snapshot}_{self.learner}_s{self.seed}"

    @property
    def fit_seed(self) -> int:
        """Seed of the learner and the model fit: from the run and the model seed, so runs share
        no stream, and the same for every learner of (run, snapshot, model seed)."""
        return derive_seed(self.run, "offline/cell", self.seed)


@dataclass(frozen=True)
class StudyPaths:
    """Where a study directory keeps what."""

    root: Path

    @property
    def dataset(self) -> Path:
        return self.root / "study.nc"

    def run(self, run: int) -> Path:
        return self.root / "runs" / f"seed_{run}"

    def cell(self, cell: Cell) -> Path:
        return self.run(cell.run) / "cells" / f"{cell.name}.json"

    def eval_episodes(self, run: int, snapshot: int) -> Path:
        return self.run(run) / "eval" / f"snapshot_{snapshot}.h5"


def study_config(profile: ProfileConfig) -> dict[str, Any]:
    assert profile.offline_study is not None
    return {
        "stage": "offline_study",
        "code": code_digest([__name__]),
        "profile": profile.name,
        "offline_study": profile.offline_study.model_dump(mode="json"),
        "model": profile.model.model_dump(mode="json"),
        "learners": [learner_fingerprint(n, profile) for n in profile.offline_study.learners],
    }


def study_buffers(profile: ProfileConfig, sources: Sequence[Path]) -> dict[int, Path]:
    """Collect run seed -> buffer, by seed: a collect directory gives every run of the profile
    (`seed_S/buffer.h5`), a run directory its buffer, a buffer file itself; a run's seed is the
    one its buffer was collected with."""
    if not sources:
        raise TomreproError("no buffers: give a collect directory or buffer files")
    found: dict[int, Path] = {}
    for source in map(Path, sources):
        if source.is_dir() and not CollectPaths(source).buffer.exists():
            runs = collected_buffers(profile, source)
        else:
            path = CollectPaths(source).buffer if source.is_dir() else source
            runs = {read_metadata(path).seed: path}
        for seed, path in runs.items():
            recorded = read_metadata(path).seed
            if recorded != seed:
                raise TomreproError(f"{path} was collected with seed {recorded}, not {seed}")
            if seed in found:
                raise TomreproError(
                    f"collect run {seed} given twice ({found[seed]} and {path}); the runs of a "
                    "study are independent, with distinct seeds"
                )
            found[seed] = path
    return dict(sorted(found.items()))


class OfflineStudy:
    """One study over one or more collect runs; `run()` computes the missing cells of every run,
    then assembles the outputs. `source`: a collect directory, or buffer files (a list)."""

    def __init__(
        self,
        profile: ProfileConfig,
        source: Path | Sequence[Path],
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
        self.sources = [Path(source)] if isinstance(source, str | Path) else list(source)
        self.out, self.paths = Path(out_dir), StudyPaths(Path(out_dir))
        self.device = resolve_device(device or profile.device)
        self.overwrite, self.rerun_complete, self.progress = overwrite, rerun_complete, progress
        self.break_lock = break_lock
        # Random draws differ between devices: cells made on another device are not reused.
        self.config = {**study_config(profile), "device": self.device.type}

    @property
    def dataset_path(self) -> Path:
        return self.paths.dataset

    @cached_property
    def buffers(self) -> dict[int, Path]:
        """Run seed -> buffer file."""
        return study_buffers(self.profile, self.sources)

    @cached_property
    def digests(self) -> dict[int, str]:
        """Run seed -> the buffer's content digest (a full read of each, done once)."""
        return {run: content_digest(path) for run, path in self.buffers.items()}

    @cached_property
    def directory(self) -> RunDirectory:
        """The study's own directory: its fingerprint names the runs and their data, so a new
        set of runs reassembles the outputs while each run keeps its finished cells."""
        return RunDirectory(
            self.out,
            {**self.config, "runs": {str(r): d for r, d in self.digests.items()}},
            "offline study",
            outputs=(
                "study.nc",
                "study.csv",
                "open_loop.csv",
                "weight_by_age.csv",
                "timings.csv",
                "metrics.json",
                "cells",  # a study made before runs were units kept these here
                "eval",
            ),
            precious=("study.nc", "cells"),
            finished=self.dataset_path.exists,
        )

    def run_directory(self, run: int) -> RunDirectory:
        """One run's cells and evaluation episodes; finished when every cell is written."""
        cells = self.cells(run)
        return RunDirectory(
            self.paths.run(run),
            {**self.config, "run": run, "buffer_digest": self.digests[run]},
            "offline-study run",
            outputs=("cells", "eval"),
            precious=("cells",),
            finished=lambda: all(self.paths.cell(c).exists() for c in cells),
        )

    def cells(self, run: int) -> list[Cell]:
        return [
            Cell(run, k, m, s)
            for k, m, s in product(self.cfg.snapshots, self.cfg.learners, self.cfg.seeds)
        ]

    def _load(self) -> dict[int, BufferFile]:
        """Every run's buffer, checked to be of one task and to hold the studied snapshots."""
        loaded = {run: read_buffer(path) for run, path in self.buffers.items()}
        tasks = {b.metadata.task_id for b in loaded.values()}
        if len(tasks) > 1:
            raise TomreproError(f"the runs of one study are of one task (got {sorted(tasks)})")
        for buffer in loaded.values():
            for k in self.cfg.snapshots:
                buffer.snapshot_step(k)
        return loaded

    def run(self) -> Path:
        """Holds the directory's lock for the whole run (another writer is refused)."""
        with self.directory.lock(break_lock=self.break_lock):
            return self._run()

    def _run(self) -> Path:
        loaded = self._load()
        control = {"overwrite": self.overwrite, "rerun_complete": self.rerun_complete}
        if self.directory.prepare(**control) is Start.DONE:
            log.info("offline-study: %s is complete; nothing to do", self.dataset_path)
            return self.dataset_path
        todo: list[Cell] = []
        for run in loaded:
            self.run_directory(run).prepare(**control)
            for name in ("cells", "eval"):
                (self.paths.run(run) / name).mkdir(exist_ok=True)
            todo += [c for c in self.cells(run) if not self.paths.cell(c).exists()]
        total = len(loaded) * len(self.cells(next(iter(loaded))))
        bar = tqdm(
            total=total,
            initial=total - len(todo),
            unit="cell",
            desc="offline study",
            disable=not self.progress,
        )
        for cell in todo:
            bar.set_postfix_str(f"run {cell.run} {cell.name}")
            result = self._run_cell(loaded[cell.run], cell)
            with atomic_path(self.paths.cell(cell)) as tmp:
                tmp.write_text(json.dumps(result, indent=1))
            bar.update(1)
        bar.close()
        return self._assemble(loaded)

    # --- one cell ------------------------------------------------------------------------------

    def _eval_episodes(self, loaded: BufferFile, run: int, snapshot: int) -> dict[str, np.ndarray]:
        """Fresh episodes of pi_k in the real env (stochastic, as it acted), seeded from the run's
        seed and cached per (run, snapshot)."""
        path = self.paths.eval_episodes(run, snapshot)
        if not path.exists():
            task = get_task(loaded.metadata.task_id)
            policy = SnapshotPolicy(read_snapshot(loaded.path, snapshot).tensors)
            seed = derive_seed(run, "offline/eval", snapshot)
            noise = StepNoise(derive_seed(seed, "exploration"), task.act_dim, "normal")
            episodes = rollout(
                task,
                0,
                seed,
                act=lambda obs, t: policy.act(obs, noise.at(t)),
                policy_version=snapshot,
                episodes=self.cfg.eval_episodes,
            )
            provenance = {"stage": "offline_study_eval", "run": run, "snapshot": snapshot}
            write_buffer(path, episodes, BufferMetadata(task.task_id, seed, provenance))
        return read_buffer(path).buffer.columns()

    def _plan(self, loaded: BufferFile, cols: dict[str, np.ndarray], cell: Cell) -> LearnerPlan:
        """The cell's learner, built fresh, planning for snapshot pi_k on the prefix."""
        actor = SquashedGaussianActor.from_tensors(
            read_snapshot(loaded.path, cell.snapshot).tensors
        )
        return plan_for_snapshot(
            cell.learner, self.profile, cols, actor, cell.snapshot, cell.fit_seed, self.device
        )

    def _run_cell(self, loaded: BufferFile, cell: Cell) -> dict[str, Any]:
        start = time.perf_counter()
        prefix = loaded.buffer.prefix(loaded.snapshot_steps[cell.snapshot])
        cols = prefix.columns()
        plan = self._plan(loaded, cols, cell)
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
            torch.Generator().manual_seed(derive_seed(cell.fit_seed, "model_fit")),
            self.device,
            clip_weights=plan.clip_weights,
        )
        episodes = self._eval_episodes(loaded, cell.run, cell.snapshot)
        scale = error_scale(episodes)  # one scale per (run, snapshot): learners in equal units
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
            "run": cell.run,
            "snapshot": cell.snapshot,
            "learner": cell.learner,
            "seed": cell.seed,
            "fit_seed": cell.fit_seed,
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

    def _assemble(self, loaded: dict[int, BufferFile]) -> Path:
        results = {
            c: json.loads(self.paths.cell(c).read_text()) for run in loaded for c in self.cells(run)
        }
        steps = {run: b.snapshot_steps for run, b in loaded.items()}
        ds, timings = study_datasets(results, self.cfg, steps)
        first = next(iter(loaded.values()))
        ds.attrs.update(
            {
                "buffers": json.dumps({str(r): str(b.path) for r, b in loaded.items()}),
                "buffer_digests": json.dumps({str(r): d for r, d in self.digests.items()}),
                "task_id": first.metadata.task_id,
                "config": json.dumps(self.config, sort_keys=True),
                "versions": json.dumps(
                    {str(r): dict(b.metadata.versions) for r, b in loaded.items()}, sort_keys=True
                ),
                "run": "the seed of an independent collect run (the unit of claims C1, C2)",
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
    snapshot_steps: Mapping[int, Mapping[int, int]],
) -> tuple[Any, Any]:
    """The cells' results as the study dataset (run x learner x snapshot x seed [x horizon,
    age_bin]; `snapshot_steps`: run seed -> snapshot -> env step) and, apart, their wall times
    (so that the dataset is deterministic)."""
    import xarray as xr

    runs = list(snapshot_steps)
    # The dimension is `learner`, not `method`: xarray's `.sel(method=...)` means another thing.
    dims = ("run", "learner", "snapshot", "seed")
    shape = (len(runs), len(cfg.learners), len(cfg.snapshots), len(cfg.seeds))

    def grid(get, extra: int | None = None) -> np.ndarray:
        out = np.full(shape + ((extra,) if extra else ()), np.nan)
        for c, r in results.items():
            at = (
                runs.index(c.run),
                cfg.learners.index(c.learner),
                cfg.snapshots.index(c.snapshot),
                cfg.seeds.index(c.seed),
            )
            value = np.asarray(get(r), dtype=np.float64)
            if extra:
                out[(*at, slice(0, len(value)))] = value
            else:
                out[at] = value
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
    env_steps = [[snapshot_steps[run][k] for k in cfg.snapshots] for run in runs]
    ds = xr.Dataset(
        data_vars,
        coords={
            "run": runs,
            "learner": list(cfg.learners),
            "snapshot": list(cfg.snapshots),
            "seed": list(cfg.seeds),
            "horizon": np.arange(1, cfg.horizon + 1),
            "age_bin": np.arange(cfg.age_bins),
            "env_step": (("run", "snapshot"), np.asarray(env_steps, dtype=np.int64)),
        },
    )
    timings = xr.Dataset(
        {name: (dims, grid(lambda r, n=name: r[n])) for name in ("fit_seconds", "weight_seconds")},
        coords={k: ds.coords[k] for k in dims},
    )
    return ds, timings


def _metrics(ds: Any) -> dict[str, Any]:
    """Per snapshot and learner, the headline numbers (for DVC): each run's mean over its model
    seeds, then the mean and std over runs (the independent units)."""
    out: dict[str, Any] = {}
    for k in ds.snapshot.values.tolist():
        for m in ds.learner.values.tolist():
            cell = ds.sel(snapshot=k, learner=m)
            entry: dict[str, Any] = {"runs": int(ds.sizes["run"])}
            for name in (
                "on_policy_state_mse",
                "buffer_state_mse",
                "newest_oldest_ratio",
                "spearman_recency",
                "ess_share",
            ):
                per_run = cell[name].mean("seed", skipna=True).values
                per_run = per_run[np.isfinite(per_run)]  # Spearman is undefined for MLE's weights
                entry[name] = (
                    {"mean": float(per_run.mean()), "std_over_runs": float(per_run.std())}
                    if len(per_run)
                    else None
                )
            out[f"snapshot_{k}/{m}"] = entry
    return out
