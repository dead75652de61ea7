"""Every known way a run differs from the official TOM code (kausiksivakumar/TOM, on
mbpo_pytorch) or from the paper's scale, in one list; the report prints those that apply.

Each entry names the profile setting that controls it (None: fixed in this code) and says,
from the profile alone, whether it applies. `examples` gives one override under which it
applies and one under which it does not, so a test can toggle every entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tomrepro.core.config import MBPOConfig, PMACConfig, ProfileConfig

PAPER_TASKS = ("Hopper-v5", "Walker2d-v5", "HalfCheetah-v5", "AntTruncatedObs-v5")


@dataclass(frozen=True)
class Deviation:
    key: str
    describe: Callable[[ProfileConfig], str]
    applies: Callable[[ProfileConfig], bool]
    setting: str | None  # the profile key that controls it; None: fixed in the code
    # (overrides under which it applies, overrides under which it does not), as
    # {"section.key": value}; empty for fixed entries.
    examples: tuple[dict[str, Any], dict[str, Any]] = field(default_factory=lambda: ({}, {}))


def _m(p: ProfileConfig) -> MBPOConfig:
    """The mbpo section of a profile an entry only describes when it has one."""
    assert p.mbpo is not None
    return p.mbpo


def _pmac(p: ProfileConfig) -> PMACConfig:
    return p.section("pmac")  # type: ignore[return-value]


def _mbpo_learners(p: ProfileConfig) -> tuple[str, ...]:
    return _m(p).learners if p.mbpo is not None else ()


def _all_learners(p: ProfileConfig) -> set[str]:
    offline = p.offline_study.learners if p.offline_study is not None else ()
    return {*_mbpo_learners(p), *offline}


def _has_mbpo(p: ProfileConfig) -> bool:
    return p.mbpo is not None


DEVIATIONS: tuple[Deviation, ...] = (
    Deviation(
        "sac_schedule",
        lambda p: (
            f"SAC trains a burst of {_m(p).updates_per_step} updates after every env step "
            "(the official code: bursts of 20, at most 5 updates per epoch-local step, i.e. 5 per "
            "step on average)."
        ),
        lambda p: _has_mbpo(p) and _m(p).update_schedule == "every_step",
        "mbpo.update_schedule",
        (
            {
                "mbpo.update_schedule": "every_step",
                "mbpo.updates_per_step": 20,
                "mbpo.max_updates_per_step": 5,
            },
            {
                "mbpo.update_schedule": "official",
                "mbpo.updates_per_step": 20,
                "mbpo.max_updates_per_step": 5,
            },
        ),
    ),
    Deviation(
        "sac_burst",
        lambda p: (
            f"SAC bursts of {_m(p).updates_per_step} updates capped at "
            f"{_m(p).max_updates_per_step} per epoch-local step (official: 20 and 5)."
        ),
        lambda p: (
            _has_mbpo(p)
            and _m(p).update_schedule == "official"
            and (_m(p).updates_per_step, _m(p).max_updates_per_step) != (20, 5)
        ),
        "mbpo.updates_per_step",
        (
            {"mbpo.updates_per_step": 10, "mbpo.update_schedule": "official"},
            {"mbpo.updates_per_step": 20, "mbpo.max_updates_per_step": 5},
        ),
    ),
    Deviation(
        "exploration",
        lambda p: (
            "The exploration steps take uniformly random actions; the official code "
            "samples the untrained SAC policy. Curves' env steps include them (the official x-axis "
            "starts after exploration)."
        ),
        _has_mbpo,
        None,
    ),
    Deviation(
        "pmac_granularity",
        lambda p: (
            f"PMAC starts a policy version at every {_pmac(p).granularity} in "
            "MBPO (official: after every SAC burst)."
        ),
        lambda p: "pmac" in _mbpo_learners(p) and _pmac(p).granularity != "burst",
        "pmac.granularity",
        (
            {"pmac.granularity": "model_round", "mbpo.learners": ("mle", "pmac")},
            {"pmac.granularity": "burst", "mbpo.learners": ("mle", "pmac")},
        ),
    ),
    Deviation(
        "pmac_offline",
        lambda p: (
            "In the offline study PMAC's policy versions are the buffer's snapshots: a "
            "saved buffer has no SAC bursts (official: a version per burst)."
        ),
        lambda p: p.offline_study is not None and "pmac" in p.offline_study.learners,
        "offline_study.learners",
        (
            {"offline_study.learners": ("mle", "tom", "pmac")},
            {"offline_study.learners": ("mle", "tom")},
        ),
    ),
    Deviation(
        "discriminator_layers",
        lambda p: (
            "TOM's discriminator trains all of its layers; the official code gives only "
            "the final two to its optimiser (the per-input layers stay random)."
        ),
        lambda p: "tom" in _all_learners(p),
        None,
    ),
    Deviation(
        "tom_clip_order",
        lambda p: (
            f"Row weights are normalised to mean 1, then clipped at "
            f"{p.model.weight_clip} for resampling; the official code clips TOM's raw weights, "
            "then normalises."
        ),
        lambda p: (
            p.model.weighting == "resample" and bool(_all_learners(p) & {"tom", "tom-nodisc"})
        ),
        "model.weighting",
        ({"model.weighting": "resample"}, {"model.weighting": "loss"}),
    ),
    Deviation(
        "truncation",
        lambda p: (
            "A time-limit truncation is not a termination (the bootstrap continues); the "
            "official Hopper stores the 1000-step limit as done."
        ),
        lambda p: True,
        None,
    ),
    Deviation(
        "model_family",
        lambda p: (
            f"Dynamics model: MBPO's ensemble ({p.model.ensemble_size} members, "
            f"{p.model.elites} elites); the official TOM code fits one mixture-density network "
            "for TOM and its baselines."
        ),
        lambda p: p.model.family == "ensemble",
        "model.family",
        ({"model.family": "ensemble"}, {"model.family": "mdn", "model.elites": 1}),
    ),
    Deviation(
        "patience",
        lambda p: (
            f"Model fits stop after {p.model.patience} epochs without a 1 % holdout gain "
            "and restore each member's best epoch; the official MDN stops after 6 and keeps "
            "the last."
        ),
        lambda p: p.model.patience != 6,
        "model.patience",
        ({"model.patience": 5}, {"model.patience": 6}),
    ),
    Deviation(
        "fresh_adam",
        lambda p: (
            "Each MBPO model round starts a fresh Adam on the warm-started weights (the "
            "official code keeps the optimiser) and refits the normalisation (as mbpo_pytorch)."
        ),
        _has_mbpo,
        None,
    ),
    Deviation(
        "live_actor",
        lambda p: (
            "MBPO acts with its live actor; a policy version names the snapshot its actor "
            "started from (taken at every epoch), not its exact parameters."
        ),
        _has_mbpo,
        None,
    ),
    Deviation(
        "rollout_length",
        lambda p: (
            f"Model rollouts of length {_m(p).rollout_length} or MBPO's schedule "
            f"{_m(p).rollout_schedule} (official TOM: length 1)."
        ),
        lambda p: (
            _has_mbpo(p) and (_m(p).rollout_length != 1 or _m(p).rollout_schedule is not None)
        ),
        "mbpo.rollout_length",
        ({"mbpo.rollout_length": 3}, {"mbpo.rollout_length": 1, "mbpo.rollout_schedule": None}),
    ),
    Deviation(
        "vagram",
        lambda p: (
            "VaGraM follows its authors' code (squared error of the mean weighted by the "
            "value gradient, deterministic model) on MBPO's ensemble; the TOM repository's vaml.py "
            "multiplies an MDN's per-dimension NLL by the gradient and misaligns the reward and "
            "state columns."
        ),
        lambda p: "vagram" in _mbpo_learners(p),
        "mbpo.learners",
        ({"mbpo.learners": ("mle", "vagram")}, {"mbpo.learners": ("mle", "tom")}),
    ),
    Deviation(
        "offline_dual",
        lambda p: (
            "Offline TOM weights: each cell's dual Q trains to a convergence criterion "
            "(see the cells' q_convergence) "
            "instead of persisting across rounds as online."
            if p.tom.offline_convergence is not None
            else f"Offline TOM weights come from {p.tom.q_steps} Q steps from a fresh network "
            "(online, Q persists across rounds: tens of thousands of steps)."
        ),
        lambda p: (
            p.offline_study is not None
            and bool(set(p.offline_study.learners) & {"tom", "tom-nodisc"})
        ),
        "offline_study.learners",
        (
            {"offline_study.learners": ("mle", "tom-nodisc", "pmac")},
            {"offline_study.learners": ("mle", "pmac")},
        ),
    ),
    Deviation(
        "bootstrap_verdicts",
        lambda p: (
            "Verdicts use bootstrap intervals over seeds (MBPO) or snapshot x seed cells "
            "(offline study); the paper reports means and standard errors without a decision rule."
        ),
        lambda p: True,
        None,
    ),
    Deviation(
        "tasks",
        lambda p: (
            f"MBPO from scratch on {', '.join(_m(p).tasks)}; the paper's curves are on "
            "MuJoCo locomotion tasks (Hopper 125 epochs, the others 300)."
        ),
        lambda p: _has_mbpo(p) and not set(_m(p).tasks) & set(PAPER_TASKS),
        "mbpo.tasks",
        ({"mbpo.tasks": ("InvertedPendulum-v5",)}, {"mbpo.tasks": ("Hopper-v5",)}),
    ),
    Deviation(
        "collect_scale",
        lambda p: (
            f"The offline study's buffer: {p.collect.env_steps} env steps of SAC on "
            f"{p.collect.task} (the paper's analyses use Hopper runs of 100k+ steps)."
        ),
        lambda p: p.collect.task != "Hopper-v5" or p.collect.env_steps < 100_000,
        "collect.env_steps",
        (
            {"collect.env_steps": 50_000, "collect.task": "Hopper-v5"},
            {"collect.env_steps": 100_000, "collect.task": "Hopper-v5"},
        ),
    ),
)


def applicable_deviations(profile: ProfileConfig) -> list[Deviation]:
    return [d for d in DEVIATIONS if d.applies(profile)]
