"""`tomrepro sweep`: a grid of MBPO runs (task x learner x seed, or snapshot x learner x seed for
continuations) executed as Ray tasks.

An embedded local Ray by default (as many CPUs as the machine has), a cluster when an address is
given (or `RAY_ADDRESS` is set); `gpus_per_run` < 1 lets several runs share a GPU. Each run writes
its own directory and is resumable; complete runs are skipped before Ray starts, a failing run is
reported with its error while the others go on. The sweep ends with a summary JSON (one entry per
run: status, error, final and best return, speed; DVC metrics) and a tidy CSV of every run's
curve (DVC plots, the analysis); both default to files in the sweep directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from tqdm import tqdm

from tomrepro.core.atomic import atomic_path
from tomrepro.core.config import ProfileConfig, profile_from_dict
from tomrepro.core.errors import ConfigError, TomreproError
from tomrepro.learning.devices import resolve_device
from tomrepro.loops.mbpo import ContinueFrom, MBPOPaths, MBPORun, run_status
from tomrepro.loops.mbpo_population import (
    RunFailed,
    batches_runs,
    default_runs_per_population,
    group_populations,
    population_cpus,
    population_torch_threads,
    run_population,
    sweep_parallelism,
)

Kind = Literal["scratch", "continue"]


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid and the directory it writes."""

    kind: Kind
    task: str
    learner: str
    seed: int
    out_dir: str
    source: str | None = None
    snapshot: int | None = None

    @property
    def name(self) -> str:
        where = self.task if self.kind == "scratch" else f"k{self.snapshot}"
        return f"{where}/{self.learner}/s{self.seed}"


def plan_grid(
    profile: ProfileConfig, kind: Kind, root: Path, *, source: Path | None = None
) -> list[RunSpec]:
    """The runs of a sweep, from the profile's `mbpo` lists (override them with
    `with_overrides(profile, "mbpo", ...)`)."""
    if profile.mbpo is None:
        raise ConfigError(f"profile {profile.name!r} has no mbpo section")
    cfg = profile.mbpo
    root = root.resolve()
    if kind == "scratch":
        return [
            RunSpec(kind, t, m, s, str(root / t / m / f"s{s}"))
            for t in cfg.tasks
            for m in cfg.learners
            for s in cfg.seeds
        ]
    if source is None:
        raise ConfigError("a continuation sweep needs --source BUFFER (a collected buffer.h5)")
    if not cfg.continue_snapshots:
        raise ConfigError(
            "no snapshots to continue from: set mbpo.continue_snapshots or --snapshots"
        )
    return [
        RunSpec(kind, "", m, s, str(root / f"k{k}" / m / f"s{s}"), str(source.resolve()), k)
        for k in cfg.continue_snapshots
        for m in cfg.learners
        for s in cfg.seeds
    ]


def make_run(
    profile: ProfileConfig, spec: RunSpec, device: str | None, rerun_complete: bool = False
) -> MBPORun:
    start = None
    if spec.kind == "continue":
        assert spec.source is not None and spec.snapshot is not None
        assert profile.mbpo is not None
        start = ContinueFrom(Path(spec.source), spec.snapshot, profile.mbpo.continue_env_steps)
    return MBPORun(
        profile,
        Path(spec.out_dir),
        learner=spec.learner,
        task=spec.task or None,
        seed=spec.seed,
        start=start,
        device=device,
        overwrite=True,
        rerun_complete=rerun_complete,
        progress=False,
    )


def _execute(
    specs: list[dict[str, Any]],
    profile: dict[str, Any],
    device: str | None,
    threads: int,
    rerun: bool,
    cpus: int,
) -> dict[str, str | None]:
    """Body of one Ray task: run (or resume) a population of MBPO runs on `cpus` cores, its
    share of the machine; each run's error (None when it finished)."""
    import torch

    torch.set_num_threads(threads)
    cfg = profile_from_dict(profile)
    runs = [make_run(cfg, RunSpec(**spec), device, rerun) for spec in specs]
    names = {run.paths.root: RunSpec(**spec).name for run, spec in zip(runs, specs, strict=True)}
    try:
        run_population(runs, cpus=cpus)
    except RunFailed as failed:
        return {name: failed.errors.get(root) for root, name in names.items()}
    return dict.fromkeys(names.values())


def populations(specs: Sequence[RunSpec], size: int) -> list[list[RunSpec]]:
    """The grid packed into populations of at most `size` runs: the same task (scratch) or the
    same source snapshot (continuations); grid order kept."""
    return group_populations(specs, lambda s: (s.kind, s.task, s.snapshot), size)


@dataclass
class SweepResult:
    runs: list[dict[str, Any]]

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "failed"]


def run_sweep(
    profile: ProfileConfig,
    specs: list[RunSpec],
    root: Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    device: str | None = None,
    rerun_complete: bool = False,
    progress: bool = True,
    summary_path: Path | None = None,
    curves_path: Path | None = None,
    verbose: bool = False,
    runs_per_population: int | None = None,
) -> SweepResult:
    """Run every spec not yet complete through Ray, packed into populations of
    `runs_per_population` (default: from the device); write the summary and the curves.
    `gpus_per_run` and `cpus_per_run` are the resources of one Ray task (a population)."""
    check_resources(num_cpus, cpus_per_run, gpus_per_run)
    if runs_per_population is not None and runs_per_population < 1:
        raise ConfigError(f"--runs-per-population must be at least 1, got {runs_per_population}")
    address = address or os.environ.get("RAY_ADDRESS")
    if gpus_per_run > 0 and not address:
        import torch

        if not torch.cuda.is_available():  # checked before Ray starts (and prints anything)
            raise TomreproError(f"--gpus-per-run {gpus_per_run} asked for, but there is no GPU")
    results: dict[str, dict[str, Any]] = {}
    todo = []
    for spec in specs:
        run = make_run(profile, spec, device, rerun_complete)  # checks inputs before Ray starts
        if run.finished():
            results[spec.name] = {"run": spec.name, "status": "skipped", **asdict(spec)}
        else:
            todo.append(spec)
    if todo:
        results.update(
            _run_with_ray(
                profile,
                todo,
                address,
                num_cpus,
                cpus_per_run,
                gpus_per_run,
                device,
                rerun_complete,
                progress,
                verbose,
                runs_per_population or default_runs_per_population(device),
            )
        )
    ordered = [results[s.name] for s in specs]
    for entry in ordered:
        status = run_status(Path(entry["out_dir"]))
        if status and status.get("complete"):
            entry["summary"] = status.get("summary")
    root.mkdir(parents=True, exist_ok=True)
    with atomic_path(summary_path or root / "sweep.json") as tmp:
        tmp.write_text(json.dumps(_metrics(ordered), indent=2))
    write_sweep_curves(specs, curves_path or root / "curves.csv")
    return SweepResult(ordered)


def check_resources(num_cpus: int | None, cpus_per_run: float, gpus_per_run: float) -> None:
    """Ray refuses negative or NaN resources only after it has started, with a traceback."""
    if num_cpus is not None and num_cpus < 1:
        raise ConfigError(f"--num-cpus must be at least 1, got {num_cpus}")
    if not 0 < cpus_per_run < math.inf:  # NaN fails too
        raise ConfigError(f"--cpus-per-run must be a positive number, got {cpus_per_run}")
    if not 0 <= gpus_per_run < math.inf:
        raise ConfigError(f"--gpus-per-run must be zero or a positive number, got {gpus_per_run}")


def _metrics(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per run: status (and error), final / best return, env steps per minute."""
    out = {}
    for entry in entries:
        summary = entry.get("summary") or {}
        row: dict[str, Any] = {"status": entry["status"]}
        if "error" in entry:
            row["error"] = entry["error"]
        for key in ("final_return_mean", "best_return_mean", "env_steps_per_minute"):
            if key in summary:
                row[key] = summary[key]
        out[entry["run"]] = row
    return out


def _run_with_ray(
    profile: ProfileConfig,
    specs: list[RunSpec],
    address: str | None,
    num_cpus: int | None,
    cpus_per_run: float,
    gpus_per_run: float,
    device: str | None,
    rerun_complete: bool,
    progress: bool,
    verbose: bool = False,
    runs_per_population: int = 1,
) -> dict[str, dict[str, Any]]:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Ray's own start-up lines go to its log files unless asked for; the user sees our lines.
    quiet: dict[str, Any] = {
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "log_to_driver": verbose,
    }
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False, **quiet)
    if gpus_per_run > 0 and not ray.cluster_resources().get("GPU"):
        raise TomreproError(f"--gpus-per-run {gpus_per_run} asked for, but Ray sees no GPU")
    if gpus_per_run > 0:
        device = "cuda"
    task = ray.remote(_execute).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
    raw = profile.model_dump(mode="json")
    # A cluster's driver may have no GPU of its own: runs given a GPU are batched there.
    batched = gpus_per_run > 0 or batches_runs(resolve_device(device or profile.device))
    threads = population_torch_threads(runs_per_population, cpus_per_run, batched)
    groups = populations(specs, runs_per_population)
    # The populations running at once share the cluster's cores (the planner counts the same).
    resources = ray.cluster_resources()
    cpus = int(resources.get("CPU", 1))
    parallel = sweep_parallelism(cpus, int(resources.get("GPU", 0)), cpus_per_run, gpus_per_run)
    share = population_cpus(cpus, parallel, len(groups))
    pending = {
        task.remote([asdict(s) for s in group], raw, device, threads, rerun_complete, share): group
        for group in groups
    }
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(specs), unit="run", disable=not progress, desc="sweep")
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            group = pending.pop(done[0])
            try:
                errors = ray.get(done[0])
            except Exception as exc:  # the whole population's task died: all its runs failed
                errors = dict.fromkeys((s.name for s in group), _one_line(exc))
            for spec in group:
                entry: dict[str, Any] = {"run": spec.name, **asdict(spec), "status": "done"}
                if errors.get(spec.name) is not None:
                    entry["status"] = "failed"
                    entry["error"] = errors[spec.name]
                    bar.write(f"sweep: {spec.name} failed: {entry['error']}")
                results[spec.name] = entry
            failed = sum(r["status"] == "failed" for r in results.values())
            bar.set_postfix(failed=failed, refresh=False)
            bar.update(len(group))
    finally:
        bar.close()
        if started_here:
            ray.shutdown()
    return results


def _one_line(exc: BaseException) -> str:
    """The root cause of a Ray task failure (Ray wraps it) as one line."""
    cause = getattr(exc, "cause", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[-1] if lines else ''}"


def write_sweep_curves(specs: Sequence[RunSpec], path: Path) -> None:
    """Every complete run's curve with its grid coordinates, as one tidy CSV."""
    frames = []
    for spec in specs:
        paths = MBPOPaths(Path(spec.out_dir))
        if not paths.curve_csv.is_file():
            continue
        curve = pd.read_csv(paths.curve_csv)
        status = run_status(paths.root) or {}
        curve.insert(0, "seed", spec.seed)
        curve.insert(0, "learner", spec.learner)
        curve.insert(0, "task", status.get("config", {}).get("task", spec.task))
        curve.insert(0, "snapshot", spec.snapshot if spec.snapshot is not None else -1)
        frames.append(curve)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
