"""The `tomrepro` command line: parse options, load config, call one function, print."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import click

from tomrepro.core.errors import TomreproError

EXIT_USER_ERROR = 2
DEFAULT_PROFILE = "default"


class LearnerChoice(click.Choice):
    """The registered learners, read when an option is parsed, so a learner registered after
    this module was imported is a valid choice too."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        from tomrepro.core.learners import learner_names

        return learner_names()

    @choices.setter
    def choices(self, _: object) -> None:
        pass


def profile_option(help_text: str = "Profile name under pipelines/, or a YAML path."):
    return click.option("--profile", default=DEFAULT_PROFILE, show_default=True, help=help_text)


def device_option(default: str | None = None):
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default=default,
        show_default=default is not None,
        help="Torch device; `auto` takes CUDA when present (default: the profile's).",
    )


def learner_option(**kw: Any):
    return click.option("--learner", type=LearnerChoice(), **kw)


def run_control_options(func):
    """--overwrite, --rerun-complete, --quiet and --break-lock: how a run treats its output
    directory."""
    for option in reversed(
        [
            click.option(
                "--overwrite", is_flag=True, help="Replace output made with another config."
            ),
            click.option(
                "--rerun-complete",
                is_flag=True,
                help="Redo finished work (unfinished work is still resumed).",
            ),
            click.option("--quiet", is_flag=True, help="No progress bar."),
            click.option(
                "--break-lock",
                is_flag=True,
                help="Take the output directory over from a holder on another host that is gone.",
            ),
        ]
    ):
        func = option(func)
    return func


class _StderrHandler(logging.Handler):
    """Writes to whatever `sys.stderr` is at the time (test harnesses swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        print(self.format(record), file=sys.stderr)


def _log_to_stderr() -> None:
    logger = logging.getLogger("tomrepro")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("tomrepro: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tomrepro")
@click.option(
    "--time-log",
    type=click.Path(path_type=Path),
    default=None,
    help="On success, write the command's wall time as JSON here (the report's stage times).",
)
@click.pass_context
def cli(ctx: click.Context, time_log: Path | None) -> None:
    """Reproduce and analyse Transition Occupancy Matching (TOM) for model-based RL."""
    _log_to_stderr()
    ctx.obj = {"time_log": time_log, "started": time.time()}


@cli.result_callback()
@click.pass_context
def _write_time_log(ctx: click.Context, *_: object, **__: object) -> None:
    from tomrepro.core.stage_time import write_stage_time

    if ctx.obj["time_log"] is not None:
        write_stage_time(ctx.obj["time_log"], ctx.invoked_subcommand, ctx.obj["started"])


@cli.command()
def tasks() -> None:
    """List the registered tasks with their sizes."""
    from tomrepro.core.tasks import get_task, task_ids

    for task_id in task_ids():
        t = get_task(task_id)
        click.echo(
            f"{t.task_id:<26}{t.env_id:<22}obs {t.obs_dim:>3}  act {t.act_dim:>2}  "
            f"horizon {t.max_episode_steps}"
        )


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--allow-incomplete", is_flag=True, help="Also describe an unfinished file.")
@click.option(
    "--curve",
    type=click.IntRange(min=1),
    default=None,
    metavar="STEPS",
    help="Add the learning curve: returns of episodes ending in bins of STEPS env steps.",
)
def inspect(file: Path, as_json: bool, allow_incomplete: bool, curve: int | None) -> None:
    """Describe a replay-buffer file: task, size, episodes, returns, policy versions."""
    from tomrepro.core.buffer_file import read_buffer
    from tomrepro.core.buffer_summary import learning_curve, summarize, summary_text

    loaded = read_buffer(file, allow_incomplete=allow_incomplete)
    summary = summarize(loaded)
    if curve:
        summary["learning_curve"] = learning_curve(loaded.buffer.columns(), curve)
    click.echo(json.dumps(summary, indent=2) if as_json else summary_text(summary))


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
def validate(file: Path) -> None:
    """Check every rule of the buffer schema, including cross-row consistency; exit 2 if broken."""
    from tomrepro.core.buffer_file import read_buffer

    loaded = read_buffer(file, deep=True)
    checked = (
        "checksums verified"
        if loaded.metadata.schema_version >= 2
        else "schema 1: no checksums, unverified"
    )
    click.echo(
        f"ok: {file} ({len(loaded.buffer)} transitions of {loaded.metadata.task_id}; {checked})"
    )


@cli.command("random-buffer")
@profile_option()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output .h5 file.")
def random_buffer(profile: str, out: Path) -> None:
    """Record the profile's uniform-random-policy buffer (real MuJoCo) to a buffer file."""
    from tomrepro.core.config import load_profile
    from tomrepro.loops.rollout import write_random_buffer

    click.echo(f"wrote {write_random_buffer(load_profile(profile), out)}")


@cli.command()
@profile_option()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Collect directory: one run per seed in OUT/seed_S/ (buffer.h5, checkpoints/, "
    "collect_log.json).",
)
@click.option("--task", default=None, help="Override collect.task.")
@click.option("--env-steps", type=int, default=None, help="Override collect.env_steps (N).")
@click.option("--random-steps", type=int, default=None, help="Override collect.random_steps.")
@click.option(
    "--snapshot-every", type=int, default=None, help="Override collect.snapshot_every (M)."
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=None,
    help="Collect only the run with this seed (OUT/seed_S/); default: all collect.seeds.",
)
@device_option()
@run_control_options
def collect(
    profile: str,
    out: Path,
    task: str | None,
    env_steps: int | None,
    random_steps: int | None,
    snapshot_every: int | None,
    seed: int | None,
    device: str | None,
    overwrite: bool,
    rerun_complete: bool,
    quiet: bool,
    break_lock: bool,
) -> None:
    """Run SAC on a task and record its replay buffer with policy snapshots, once per seed of
    collect.seeds (resumable; finished runs are kept)."""
    from tomrepro.core.config import load_profile, with_overrides
    from tomrepro.loops.collect import collect_runs

    cfg = with_overrides(
        load_profile(profile),
        "collect",
        task=task,
        env_steps=env_steps,
        random_steps=random_steps,
        snapshot_every=snapshot_every,
    )
    buffers = collect_runs(
        cfg,
        out,
        seeds=None if seed is None else (seed,),
        device=device,
        overwrite=overwrite,
        rerun_complete=rerun_complete,
        break_lock=break_lock,
        progress=not quiet,
    )
    for path in buffers.values():
        click.echo(f"wrote {path}")


@cli.command("train-model")
@click.argument("buffer", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Model file (.pt); the training curve goes beside it as .json.",
)
@profile_option("Profile whose `model` section sets architecture and budget.")
@click.option(
    "--prefix-end",
    type=click.IntRange(min=1),
    default=None,
    help="Use only transitions before this env step (the data at a snapshot).",
)
@click.option(
    "--weights",
    "weights_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Per-transition weights (.npy, or .npz with 'weights'); default: all 1 (MLE).",
)
@click.option("--family", type=click.Choice(["ensemble", "mdn"]), default=None)
@click.option("--weighting", type=click.Choice(["resample", "loss"]), default=None)
@click.option("--seed", type=int, default=None, help="Default: the profile's seed.")
@device_option()
def train_model_command(
    buffer: Path,
    out: Path,
    profile: str,
    prefix_end: int | None,
    weights_path: Path | None,
    family: str | None,
    weighting: str | None,
    seed: int | None,
    device: str | None,
) -> None:
    """Fit a dynamics model (weighted MLE) on a buffer or its prefix."""
    from tomrepro.core.config import load_profile
    from tomrepro.loops.model_stages import train_model

    path = train_model(
        load_profile(profile),
        buffer,
        out,
        prefix_end=prefix_end,
        weights_path=weights_path,
        family=family,
        weighting=weighting,
        seed=seed,
        device=device,
    )
    click.echo(f"wrote {path}")


@cli.command("eval-model")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Errors as JSON.")
@click.option(
    "--weighting",
    type=click.Choice(["occupancy", "uniform"]),
    default="occupancy",
    show_default=True,
    help="occupancy: gamma^t on episode step t (on-policy data); uniform: the buffer.",
)
@click.option("--gamma", type=float, default=0.99, show_default=True)
@click.option(
    "--horizon", type=int, default=10, show_default=True, help="Longest open-loop horizon."
)
@click.option(
    "--prefix-end",
    type=click.IntRange(min=1),
    default=None,
    help="Evaluate only on transitions before this env step.",
)
@click.option(
    "--netcdf",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the errors as a netCDF file (xarray, h5netcdf).",
)
@device_option("auto")
def eval_model_command(
    model: Path,
    data: Path,
    out: Path,
    weighting: str,
    gamma: float,
    horizon: int,
    prefix_end: int | None,
    netcdf: Path | None,
    device: str,
) -> None:
    """One-step and open-loop errors of a model on a buffer's transitions."""
    from tomrepro.loops.model_stages import eval_model

    path = eval_model(
        model,
        data,
        out,
        weighting=weighting,
        gamma=gamma,
        horizon=horizon,
        prefix_end=prefix_end,
        netcdf=netcdf,
        device=device,
    )
    click.echo(f"wrote {path}")


@cli.command("weights")
@click.argument("buffer", type=click.Path(path_type=Path))
@click.option(
    "--snapshot",
    type=int,
    required=True,
    help="Policy snapshot K: weights for the data that existed when it became current.",
)
@learner_option(required=True, help="A registered learner that needs no critic (mle: uniform).")
@click.option(
    "--divergence",
    type=click.Choice(["chi2", "kl"]),
    default=None,
    help="Default: the profile's tom.divergence.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help=".npz with `weights` (diagnostics go beside it as .json).",
)
@profile_option()
@click.option("--seed", type=int, default=None, help="Default: the profile's seed.")
@device_option()
def weights_command(
    buffer: Path,
    snapshot: int,
    learner: str,
    divergence: str | None,
    out: Path,
    profile: str,
    seed: int | None,
    device: str | None,
) -> None:
    """Per-transition weights of a model learner (TOM, PMAC, MLE, ...) at a snapshot."""
    from tomrepro.core.config import load_profile
    from tomrepro.loops.weights_stage import compute_weights

    path = compute_weights(
        load_profile(profile),
        buffer,
        snapshot,
        learner,
        out,
        divergence=divergence,
        seed=seed,
        device=device,
    )
    click.echo(f"wrote {path}")


@cli.command("offline-study")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Study directory (study.nc, study.csv, metrics.json, runs/seed_R/{cells,eval}/).",
)
@profile_option()
@device_option()
@run_control_options
def offline_study_command(
    sources: tuple[Path, ...],
    out: Path,
    profile: str,
    device: str | None,
    overwrite: bool,
    rerun_complete: bool,
    quiet: bool,
    break_lock: bool,
) -> None:
    """Per-snapshot MLE vs TOM vs PMAC models, errors on pi_k's occupancy, over independent
    collect runs. SOURCES: a collect directory (every run of the profile's collect.seeds), run
    directories or buffer files (each run named by the seed it was collected with)."""
    from tomrepro.core.config import load_profile
    from tomrepro.loops.offline_study import OfflineStudy

    study = OfflineStudy(
        load_profile(profile),
        list(sources),
        out,
        device=device,
        overwrite=overwrite,
        rerun_complete=rerun_complete,
        break_lock=break_lock,
        progress=not quiet,
    )
    click.echo(f"wrote {study.run()}")


@cli.command("finite-mdp")
@profile_option("Profile whose finite_mdp section gives --mdps and --seed.")
@click.option("--mdps", type=click.IntRange(min=1), default=None, help="Override finite_mdp.mdps.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Override finite_mdp.seed.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Also write JSON.")
def finite_mdp_command(profile: str, mdps: int | None, seed: int | None, out: Path | None) -> None:
    """Claims C5 (the estimator vs the exact ratio) and C6 (weighted model fits) on finite MDPs."""
    from tomrepro.analysis.finite_claims import run_finite_checks
    from tomrepro.core.config import load_profile

    cfg = load_profile(profile).finite_mdp
    cfg = cfg.model_copy(
        update={
            "mdps": cfg.mdps if mdps is None else mdps,
            "seed": cfg.seed if seed is None else seed,
        }
    )
    for line in run_finite_checks(cfg, out):
        click.echo(line)


@cli.command()
@profile_option("Profile whose stages are estimated.")
@device_option()
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the plan as JSON (the analysis reads datasets/PROFILE/plan.json).",
)
@click.option(
    "--seconds-per-phase",
    type=click.FloatRange(min=0.01, max=10),
    default=None,
    help="How long each phase is timed, per task of the profile [default: the profile's "
    "plan.seconds_per_phase].",
)
@click.option(
    "--runs-per-population",
    type=click.IntRange(min=1),
    default=None,
    help="Runs per population of the sweeps, as `tomrepro sweep` takes it [default: 1 on CPU, "
    "16 on GPU].",
)
@click.option("--cpus-per-run", type=click.FloatRange(min=0, min_open=True), default=1.0)
@click.option("--gpus-per-run", type=click.FloatRange(min=0), default=0.0)
def plan(
    profile: str,
    device: str | None,
    out: Path | None,
    seconds_per_phase: float | None,
    runs_per_population: int | None,
    cpus_per_run: float,
    gpus_per_run: float,
) -> None:
    """Estimate each stage's wall time on this machine from a few seconds of each phase; the
    MBPO sweeps as `tomrepro sweep` would run them with the same options."""
    from tomrepro.core.config import load_profile
    from tomrepro.learning.reference_speed import sac_update_ms
    from tomrepro.loops.planner import make_plan, plan_lines, write_plan

    if out is not None and out.is_dir():
        raise click.UsageError(f"--out {out} is a directory; give a file such as plan.json")
    cfg = load_profile(profile)
    budget = cfg.plan.seconds_per_phase if seconds_per_phase is None else seconds_per_phase
    result = make_plan(
        cfg,
        device or cfg.device,
        budget=budget,
        reference=sac_update_ms,
        runs_per_population=runs_per_population,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
    )
    for line in plan_lines(result):
        click.echo(line)
    if out is not None:
        click.echo(f"wrote {write_plan(result, out)}")


_DATA_DIR = click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="The profile's stage outputs, e.g. datasets/default.",
)


@cli.command()
@profile_option("Profile whose `analysis` rules apply.")
@_DATA_DIR
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Output folder [default: DATA/analysis].",
)
def analyse(profile: str, data_dir: Path, out: Path | None) -> None:
    """Stage outputs -> netCDF datasets -> claims C1-C6 judged by the profile's rules."""
    from tomrepro.analysis.analyse import analyse as run_analysis
    from tomrepro.analysis.analyse import row_id
    from tomrepro.core.config import load_profile

    if not data_dir.is_dir():
        raise click.UsageError(f"{data_dir}: no such data folder")
    out = out or data_dir / "analysis"
    for result in run_analysis(load_profile(profile), data_dir, out):
        click.echo(f"{row_id(result):<55} {result.verdict}")
    click.echo(f"wrote {out}")


@cli.command()
@profile_option("Profile the report describes.")
@_DATA_DIR
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("reports"),
    show_default=True,
    help="Folder for index.html, report.md and figures/.",
)
def report(profile: str, data_dir: Path, out: Path) -> None:
    """Figures and the report (self-contained HTML and Markdown) from `tomrepro analyse`."""
    from tomrepro.core.config import load_profile
    from tomrepro.report.build import build_report

    html_path, md_path = build_report(load_profile(profile), data_dir, out)
    click.echo(f"wrote {html_path} and {md_path}")


_SNAPSHOTS_FROM = click.option(
    "--snapshots-from",
    type=click.Path(path_type=Path),
    default=None,
    help="Attach the policy snapshots of this buffer file (e.g. the one that was exported).",
)


@cli.command("import-minari")
@click.argument("dataset")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Buffer file.")
@click.option("--task", default=None, help="Registry task, when the env id does not map to one.")
@_SNAPSHOTS_FROM
def import_minari_command(
    dataset: str, out: Path, task: str | None, snapshots_from: Path | None
) -> None:
    """A local Minari dataset (directory or id under MINARI_DATASETS_PATH) -> buffer file."""
    from tomrepro.core.minari_io import import_minari

    click.echo(f"wrote {import_minari(dataset, out, task, snapshots_from)}")


@cli.command("import-d4rl")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--task", required=True, help="Registry task the data comes from.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Buffer file.")
@_SNAPSHOTS_FROM
def import_d4rl_command(file: Path, task: str, out: Path, snapshots_from: Path | None) -> None:
    """A D4RL-style flat HDF5 file -> buffer file (episodes split at terminals and timeouts)."""
    from tomrepro.core.d4rl_io import import_d4rl

    path, dropped = import_d4rl(file, out, task, snapshots_from)
    if dropped:
        click.echo(f"dropped {dropped} episode-final rows whose next observation is unknown")
    click.echo(f"wrote {path}")


@cli.command("export-minari")
@click.argument("buffer", type=click.Path(path_type=Path))
@click.option("--dataset-id", required=True, help="Minari id, e.g. tomrepro/hopper/sac-v0.")
def export_minari_command(buffer: Path, dataset_id: str) -> None:
    """A buffer file -> a local Minari dataset (under MINARI_DATASETS_PATH)."""
    from tomrepro.core.minari_io import export_minari

    click.echo(f"wrote {export_minari(buffer, dataset_id)}")


@cli.command("export-d4rl")
@click.argument("buffer", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="HDF5 file.")
def export_d4rl_command(buffer: Path, out: Path) -> None:
    """A buffer file -> a D4RL-style flat HDF5 file (with next_observations and provenance)."""
    from tomrepro.core.d4rl_io import export_d4rl

    click.echo(f"wrote {export_d4rl(buffer, out)}")


def _mbpo_profile(profile: str, seed: int | None, divergence: str | None, **mbpo: object):
    from tomrepro.core.config import load_profile, with_overrides

    cfg = with_overrides(load_profile(profile), None, seed=seed)
    cfg = with_overrides(cfg, "tom", divergence=divergence)
    if cfg.mbpo is None:
        raise TomreproError(f"profile {cfg.name!r} has no mbpo section")
    return with_overrides(cfg, "mbpo", **mbpo)


def _mbpo_options(func):
    """Options shared by `mbpo` and `continue`."""
    options = [
        profile_option(),
        click.option(
            "--out", type=click.Path(path_type=Path), required=True, help="Run directory."
        ),
        learner_option(default="mle", show_default=True),
        click.option(
            "--divergence",
            type=click.Choice(["chi2", "kl"]),
            default=None,
            help="TOM's f-divergence (default: the profile's tom.divergence).",
        ),
        click.option("--seed", type=int, default=None, help="Default: the profile's seed."),
        device_option(),
        run_control_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_mbpo(
    options: dict[str, object], env_steps_key: str, start_from: tuple[Path, int] | None = None
) -> None:
    """The body of `mbpo` and `continue`: a from-scratch run, or one continued from snapshot K."""
    from tomrepro.loops.mbpo import ContinueFrom, MBPORun

    opts = dict(options)
    cfg = _mbpo_profile(
        cast(str, opts.pop("profile")),
        cast("int | None", opts.pop("seed")),
        cast("str | None", opts.pop("divergence")),
        **{env_steps_key: opts.pop("env_steps")},
    )
    assert cfg.mbpo is not None
    start = None
    if start_from is not None:
        start = ContinueFrom(*start_from, cfg.mbpo.continue_env_steps)
    root = MBPORun(
        cfg,
        cast(Path, opts.pop("out")),
        learner=cast(str, opts.pop("learner")),
        task=cast("str | None", opts.pop("task", None)),
        start=start,
        device=cast("str | None", opts.pop("device")),
        overwrite=bool(opts.pop("overwrite")),
        rerun_complete=bool(opts.pop("rerun_complete")),
        break_lock=bool(opts.pop("break_lock")),
        progress=not opts.pop("quiet"),
    ).run()
    click.echo(f"wrote {root}")


@cli.command()
@_mbpo_options
@click.option("--task", default=None, help="Default: the first of mbpo.tasks.")
@click.option("--env-steps", type=int, default=None, help="Override mbpo.env_steps.")
def mbpo(**options: object) -> None:
    """Run MBPO from scratch with a model learner (resumable; a finished run is skipped)."""
    _run_mbpo(options, "env_steps")


@cli.command("continue")
@click.argument("buffer", type=click.Path(path_type=Path))
@click.option("--snapshot", type=click.IntRange(min=1), required=True, help="Snapshot K.")
@_mbpo_options
@click.option(
    "--env-steps", type=int, default=None, help="Env steps after K (mbpo.continue_env_steps)."
)
def continue_command(buffer: Path, snapshot: int, **options: object) -> None:
    """Continue a collected run with MBPO from snapshot K of BUFFER and its agent checkpoint."""
    _run_mbpo(options, "continue_env_steps", (buffer, snapshot))


def _csv(kind: type):
    def parse(ctx: click.Context, param: click.Parameter, value: str | None):
        if value is None:
            return None
        try:
            return [kind(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise click.BadParameter(f"expected comma-separated values, got {value!r}") from None

    return parse


@cli.command()
@profile_option()
@click.option("--kind", type=click.Choice(["scratch", "continue"]), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Sweep directory.")
@click.option(
    "--source",
    type=click.Path(path_type=Path),
    default=None,
    help="Collected buffer.h5, or a collect directory: its first run's (continuations).",
)
@click.option("--tasks", callback=_csv(str), default=None, help="Comma list; default mbpo.tasks.")
@click.option("--learners", callback=_csv(str), default=None, help="Default: mbpo.learners.")
@click.option("--seeds", callback=_csv(int), default=None, help="Default: mbpo.seeds.")
@click.option("--snapshots", callback=_csv(int), default=None, help="Default: continue_snapshots.")
@click.option("--env-steps", type=int, default=None, help="Override mbpo.env_steps.")
@click.option(
    "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)."
)
@click.option("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all).")
@click.option("--cpus-per-run", type=float, default=1.0, show_default=True)
@click.option("--gpus-per-run", type=float, default=0.0, show_default=True)
@click.option(
    "--runs-per-population",
    type=int,
    default=None,
    help="Runs stepped together in one process (one batched SAC); default 1 on CPU, 16 on GPU.",
)
@device_option()
@click.option("--rerun-complete", is_flag=True, help="Redo finished runs.")
@click.option(
    "--summary",
    type=click.Path(path_type=Path),
    default=None,
    help="Summary JSON per run (default OUT/sweep.json).",
)
@click.option(
    "--curves",
    type=click.Path(path_type=Path),
    default=None,
    help="Tidy CSV of all curves (default OUT/curves.csv).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--verbose", is_flag=True, help="Show Ray's own log lines.")
def sweep(
    profile: str,
    kind: str,
    out: Path,
    source: Path | None,
    tasks: list[str] | None,
    learners: list[str] | None,
    seeds: list[int] | None,
    snapshots: list[int] | None,
    env_steps: int | None,
    address: str | None,
    num_cpus: int | None,
    cpus_per_run: float,
    gpus_per_run: float,
    runs_per_population: int | None,
    device: str | None,
    rerun_complete: bool,
    summary: Path | None,
    curves: Path | None,
    quiet: bool,
    verbose: bool,
) -> None:
    """Run a grid of MBPO runs through Ray; finished runs are skipped, failures reported."""
    from tomrepro.sweep import Kind, plan_grid, run_sweep

    cfg = _mbpo_profile(
        profile,
        None,
        None,
        env_steps=env_steps,
        tasks=tasks,
        learners=learners,
        seeds=seeds,
        continue_snapshots=snapshots,
    )
    if source is not None and source.is_dir():
        from tomrepro.loops.collect import collected_buffer

        source = collected_buffer(cfg, source)  # the first seed of collect.seeds
    specs = plan_grid(cfg, cast(Kind, kind), out, source=source)
    result = run_sweep(
        cfg,
        specs,
        out,
        address=address,
        num_cpus=num_cpus,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        device=device,
        rerun_complete=rerun_complete,
        progress=not quiet,
        summary_path=summary,
        curves_path=curves,
        verbose=verbose,
        runs_per_population=runs_per_population,
    )
    for entry in result.runs:
        info = entry.get("summary") or {}
        final = info.get("final_return_mean")
        detail = f"final return {final:.1f}" if final is not None else entry.get("error", "")
        click.echo(f"{entry['run']:<40} {entry['status']:<8} {detail}")
    if result.failed:
        raise TomreproError(f"{len(result.failed)} of {len(result.runs)} runs failed")


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr and exit code 2, never a traceback."""
    if hasattr(signal, "SIGXFSZ") and threading.current_thread() is threading.main_thread():
        # Past a file-size limit a write then fails with EFBIG (one line) instead of a kill.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        result = cli.main(args=argv, prog_name="tomrepro", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("tomrepro: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"tomrepro: error: {exc.format_message()}", err=True)
        return EXIT_USER_ERROR
    except TomreproError as exc:
        click.echo(f"tomrepro: error: {exc}", err=True)
        return EXIT_USER_ERROR
    return result if isinstance(result, int) else 0


def run() -> None:
    """Console-script entry: exit with `main`'s status."""
    sys.exit(main())


if __name__ == "__main__":
    run()
