"""The report's seaborn figures, one function per figure, each drawn from the analysis datasets.

A figure function returns None when its data are absent, so the report shows what was measured
and says what was not. Bootstrap bands use a fixed seed: the same data give the same picture.
Offline-study figures average the model seeds inside each collect run first, so their bands are
over runs, the independent units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from tomrepro.analysis.claims import STEPS_SCOPE, ClaimResult, scope_name
from tomrepro.analysis.datasets import AnalysisData
from tomrepro.core.atomic import atomic_path
from tomrepro.core.learners import learner_names

BAND = ("ci", 95)


@dataclass(frozen=True)
class FigureSpec:
    """A figure's file stem, the claim it illustrates and its caption."""

    name: str
    claim: str
    caption: str
    draw: Callable[[AnalysisData, list[ClaimResult], dict[str, dict]], plt.Figure | None]


def _order(values) -> list[str]:
    present = [str(v) for v in values]
    order = learner_names()  # the registry's declaration order
    return [m for m in order if m in present] + [m for m in present if m not in order]


def _per_run(da) -> pd.DataFrame:
    """An offline-study variable averaged over the model seeds of each run, as a tidy table."""
    return da.mean("seed").to_dataframe().reset_index()


def weights_by_age(data: AnalysisData, *_: object) -> plt.Figure | None:
    if data.offline is None:
        return None
    weighted = [m for m in _order(data.offline.learner.values) if m != "mle"]
    if not weighted:
        return None
    df = _per_run(data.offline.weight_by_age.sel(learner=weighted))
    grid = sns.relplot(
        df,
        kind="line",
        x="age_bin",
        y="weight_by_age",
        hue="snapshot",
        col="learner",
        col_order=weighted,
        errorbar=BAND,
        seed=0,
        marker="o",
        palette="viridis",
        height=3.2,
        aspect=1.1,
    )
    grid.refline(y=1.0, color="grey", linestyle=":")
    grid.set(yscale="log")
    grid.set_axis_labels("age bin (0 = oldest, last = newest)", "mean weight (MLE = 1)")
    return grid.figure


def model_error(data: AnalysisData, *_: object) -> plt.Figure | None:
    if data.offline is None:
        return None
    parts = []
    for where in ("on_policy", "buffer"):
        df = _per_run(data.offline[f"{where}_state_mse"].rename("state_mse"))
        df["evaluated on"] = "on-policy rollouts" if where == "on_policy" else "buffer prefix"
        parts.append(df)
    df = pd.concat(parts, ignore_index=True)
    grid = sns.catplot(
        df,
        kind="point",
        x="snapshot",
        y="state_mse",
        hue="learner",
        hue_order=_order(data.offline.learner.values),
        col="evaluated on",
        errorbar=BAND,
        seed=0,
        dodge=0.3,
        sharey=False,
        height=3.4,
        aspect=1.2,
    )
    grid.set(yscale="log")
    grid.set_axis_labels("policy snapshot", "one-step state error (std units)")
    return grid.figure


def open_loop_error(data: AnalysisData, *_: object) -> plt.Figure | None:
    if data.offline is None:
        return None
    df = _per_run(data.offline.open_loop_state_mse)
    grid = sns.relplot(
        df,
        kind="line",
        x="horizon",
        y="open_loop_state_mse",
        hue="learner",
        hue_order=_order(data.offline.learner.values),
        col="snapshot",
        errorbar=BAND,
        seed=0,
        height=3.2,
        aspect=1.1,
    )
    grid.set(yscale="log")
    grid.set_axis_labels("open-loop horizon H", "state error on on-policy paths")
    return grid.figure


def _curves(data: AnalysisData, kind: str, claims: list[ClaimResult]) -> plt.Figure | None:
    ds = data.curves.get(kind)
    if ds is None:
        return None
    df = ds.return_mean.to_dataframe().reset_index().dropna(subset=["return_mean"])
    df["run"] = [scope_name(t, k) for t, k in zip(df.task, df.snapshot, strict=True)]
    grid = sns.relplot(
        df,
        kind="line",
        x="env_step",
        y="return_mean",
        hue="learner",
        hue_order=_order(df.learner.unique()),
        col="run",
        col_wrap=min(3, df.run.nunique()),
        errorbar=BAND,
        seed=0,
        facet_kws={"sharex": False, "sharey": False},
        height=3.4,
        aspect=1.2,
    )
    grid.set_titles("{col_name}")
    for result in claims:
        ax = grid.axes_dict.get(result.scope.removesuffix(STEPS_SCOPE))
        if result.claim_id == "C3" and ax is not None and "threshold" in result.evidence:
            ax.axhline(result.evidence["threshold"], color="grey", linestyle=":")
    grid.set_axis_labels("env steps", "test return (mean of episodes)")
    return grid.figure


def scratch_curves(data: AnalysisData, claims: list[ClaimResult], *_: object):
    return _curves(data, "scratch", claims)


def continue_curves(data: AnalysisData, claims: list[ClaimResult], *_: object):
    return _curves(data, "continue", claims)


def final_returns(data: AnalysisData, claims: list[ClaimResult], *_: object):
    results = [r for r in claims if r.claim_id == "C4" and "final_mle" in r.evidence]
    if not results:
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(3.8 * len(results), 3.4), squeeze=False)
    for ax, result in zip(axes.flat, results, strict=True):
        df = pd.DataFrame(
            [
                {"learner": m, "final return": v}
                for m in ("mle", "tom")
                for v in result.evidence[f"final_{m}"]
            ]
        )
        sns.stripplot(df, x="learner", y="final return", hue="learner", size=7, ax=ax)
        sns.pointplot(
            df,
            x="learner",
            y="final return",
            errorbar=BAND,
            seed=0,
            color="black",
            linestyle="none",
            marker="_",
            markersize=20,
            ax=ax,
        )
        ax.set_title(result.scope)
    fig.tight_layout()
    return fig


def recovery(data: AnalysisData, *_: object) -> plt.Figure | None:
    if data.finite is None:
        return None
    df = data.finite.recovery_error.to_dataframe().reset_index()
    df["reward / divergence"] = df.reward + " / " + df.divergence
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    sns.barplot(df, x="reward / divergence", y="recovery_error", hue="form", ax=ax)
    ax.set(yscale="log", ylabel="max relative error of weights")
    ax.tick_params(axis="x", rotation=20)
    return fig


def bound(data: AnalysisData, *_: object) -> plt.Figure | None:
    if data.finite is None:
        return None
    ds = data.finite
    df = pd.concat(
        [
            pd.DataFrame(
                {"model mix": ds.model_mix.values, "slack": ds[f"slack_{f}"].values}
            ).assign(bound=name)
            for f, name in (("kl", "KL (Jensen)"), ("chi2", "chi2 (KL <= chi2)"))
        ],
        ignore_index=True,
    )
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    sns.stripplot(df, x="model mix", y="slack", hue="bound", dodge=True, size=3, ax=ax)
    ax.axhline(0.0, color="red", linestyle=":")
    ax.set(yscale="symlog", ylabel="log J(pi) - bound (>= 0 holds)")
    return fig


def wall_time(data: AnalysisData, _: list[ClaimResult], stage_times: dict[str, dict]):
    stages = pd.DataFrame(
        [{"stage": k, "minutes": v["wall_seconds"] / 60} for k, v in stage_times.items()]
    )
    phases = []
    for kind, ds in data.curves.items():
        names = [str(v) for v in ds.data_vars]
        cols = [v for v in names if v.startswith("seconds_") and v != "seconds_total"]
        for c in cols:
            # min_count: a grid cell without a run is NaN, not a run that took 0 s.
            per_run = ds[c].sum("env_step", min_count=1).mean(["task", "snapshot", "seed"])
            for learner, value in zip(ds.learner.values, per_run.values, strict=True):
                if np.isfinite(value) and value > 0:
                    phases.append(
                        {
                            "run": f"{kind}/{learner}",
                            "phase": c.removeprefix("seconds_"),
                            "minutes": value / 60,
                        }
                    )
    if stages.empty and not phases:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), width_ratios=[1, 1.3])
    if not stages.empty:
        sns.barplot(stages, y="stage", x="minutes", color="steelblue", ax=axes[0])
        axes[0].set_title("wall time per DVC stage")
    if phases:
        table = pd.DataFrame(phases).pivot_table(
            index="run", columns="phase", values="minutes", aggfunc="sum", fill_value=0.0
        )
        table.plot.barh(stacked=True, ax=axes[1], colormap="tab10")
        axes[1].set(xlabel="minutes per run (mean over runs)", title="MBPO time by phase")
        axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


FIGURES = (
    FigureSpec(
        "c1_weights_by_age",
        "C1",
        "Mean weight by transition age per snapshot (95% bootstrap band over collect runs, "
        "model seeds averaged within each run); 1 = MLE's uniform weight.",
        weights_by_age,
    ),
    FigureSpec(
        "c2_model_error",
        "C2",
        "One-step state error of each learner's model on fresh on-policy rollouts of the "
        "snapshot policy and on the buffer prefix (95% bootstrap band over collect runs).",
        model_error,
    ),
    FigureSpec(
        "c2_open_loop",
        "C2",
        "Open-loop state error along on-policy paths by horizon (band over collect runs).",
        open_loop_error,
    ),
    FigureSpec(
        "c3_scratch_curves",
        "C3",
        "MBPO from scratch: test return vs env steps (95% "
        "bootstrap band over seeds); dotted: the C3 threshold.",
        scratch_curves,
    ),
    FigureSpec(
        "c3_continue_curves",
        "C3",
        "MBPO continued from a collect snapshot: test return "
        "vs env steps; dotted: the C3 threshold.",
        continue_curves,
    ),
    FigureSpec(
        "c4_final_returns",
        "C4",
        "Final return per seed (mean of its last evaluations) with each learner's mean and its "
        "95% bootstrap interval (the verdict's interval is on the difference: see the table).",
        final_returns,
    ),
    FigureSpec(
        "c5_recovery",
        "C5",
        "Largest relative error of the dual-RL weights against the "
        "exact ratio, per reward and divergence.",
        recovery,
    ),
    FigureSpec(
        "c6_bound",
        "C6",
        "Slack of the lower bound on log J(pi) for every MDP draw, by how "
        "far the model is from the true dynamics.",
        bound,
    ),
    FigureSpec("wall_time", "time", "Wall time of each stage and of MBPO's phases.", wall_time),
)


def draw_all(
    data: AnalysisData,
    claims: list[ClaimResult],
    stage_times: dict[str, dict],
    out_dir: Path,
) -> dict[str, Path]:
    """Draw every figure with data to `out_dir/NAME.png`; returns the written paths by name."""
    sns.set_theme(style="whitegrid", context="notebook")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for spec in FIGURES:
        fig = spec.draw(data, claims, stage_times)
        if fig is None:
            continue
        path = out_dir / f"{spec.name}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        written[spec.name] = path
    return written
