"""Typed, validated run configuration, loaded from one profile file under `pipelines/`.

Every number a run uses lives in one YAML profile (`smoke`, `default`, `paper`), and each field
below documents itself. Unknown keys, wrong types and nonsensical values are refused with a single
line naming the offending key, so a typo can never silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tomrepro.core.config_section import (
    Discount,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Section,
    UnitInterval,
    check_distinct,
)
from tomrepro.core.errors import ConfigError, UnknownTaskError
from tomrepro.core.learners import (
    PMACConfig,
    TOMConfig,
    VaGraMConfig,
    check_learner_names,
    learner_sections,
)
from tomrepro.core.tasks import get_task

__all__ = ["PMACConfig", "TOMConfig", "VaGraMConfig"]  # learner sections, re-exported

# `load_profile`'s default folder. Passing this very object means "search as
# `core/profile_paths.find_profile` does"; any other folder is the only place looked.
PROFILE_DIR = Path("pipelines")


def _known_task(value: str) -> str:
    try:
        get_task(value)
    except UnknownTaskError as exc:
        raise ValueError(str(exc)) from None
    return value


class RandomBufferConfig(Section):
    """A buffer from a uniform-random policy: cheap, real MuJoCo data for checks and tests."""

    task: str = Field(description="Task id from the registry (`tomrepro tasks`).")
    env_steps: PositiveInt = Field(description="Number of environment steps to record.")

    _check_task = field_validator("task")(_known_task)


class CollectConfig(Section):
    """SAC data collection into a replay buffer with policy snapshots (DESIGN §4, step 1).

    One collect run per seed in `seeds`: the independent units of the offline study (C1, C2).
    """

    seeds: tuple[NonNegativeInt, ...] = Field(
        (0,),
        min_length=1,
        description="Seeds of the independent collect runs (`OUT/seed_{s}/` each); every random "
        "stream of a run, and its offline-study evaluation episodes, derive from its seed alone "
        "(the profile's `seed` is not used).",
    )
    task: str = Field(description="Task id from the registry (`tomrepro tasks`).")
    env_steps: PositiveInt = Field(description="Total env steps N to collect.")
    random_steps: NonNegativeInt = Field(
        5000, description="Uniform-random exploration steps before SAC acts and learns."
    )
    snapshot_every: PositiveInt = Field(
        description="Env steps M between policy snapshots; the agent acts with the latest one."
    )
    updates_per_step: NonNegativeInt = Field(
        1, description="SAC updates per env step (0 keeps the initial policy: inference only)."
    )

    _check_task = field_validator("task")(_known_task)

    @model_validator(mode="after")
    def _fits(self) -> CollectConfig:
        check_distinct(self, ("seeds",))
        if self.snapshot_every > self.env_steps:
            raise ValueError(
                f"snapshot_every ({self.snapshot_every}) is larger than "
                f"env_steps ({self.env_steps})"
            )
        if self.random_steps >= self.env_steps:
            raise ValueError(
                f"random_steps ({self.random_steps}) leaves no SAC steps in env_steps "
                f"({self.env_steps})"
            )
        return self


class SACConfig(Section):
    """Soft actor-critic, the backbone's agent (DESIGN §3, official TOM/MBPO values)."""

    gamma: Discount = Field(0.99, description="Discount factor, strictly inside (0, 1).")
    tau: Annotated[float, Field(gt=0, le=1)] = Field(0.005, description="Polyak rate of targets.")
    lr: PositiveFloat = Field(3.0e-4, description="Adam learning rate of actor, critics and alpha.")
    hidden_sizes: tuple[PositiveInt, ...] = Field(
        (256, 256), min_length=1, description="Hidden layer widths of actor and critics."
    )
    batch_size: PositiveInt = Field(256, description="Minibatch size of one SAC update.")
    critic_loss_clamp: PositiveFloat = Field(1000.0, description="Clamp on the critic loss.")


class ModelConfig(Section):
    """Dynamics model and its (weighted) maximum-likelihood fit (DESIGN §3)."""

    family: Literal["ensemble", "mdn"] = Field(
        "ensemble", description="`ensemble`: MBPO's Gaussian ensemble; `mdn`: TOM's mixture net."
    )
    weighting: Literal["resample", "loss"] = Field(
        "resample",
        description="`resample`: minibatches drawn with probability ∝ clipped weights (official); "
        "`loss`: uniform minibatches, weights (mean 1) multiply the NLL.",
    )
    hidden_sizes: tuple[PositiveInt, ...] = Field(
        (200, 200, 200, 200), min_length=1, description="Hidden widths (SiLU)."
    )
    ensemble_size: PositiveInt = Field(7, description="Ensemble members E (ensemble only).")
    elites: PositiveInt = Field(5, description="Members kept for prediction, best on holdout.")
    components: PositiveInt = Field(10, description="Mixture components per output (mdn only).")
    lr: PositiveFloat = Field(1.0e-3, description="Adam learning rate.")
    batch_size: PositiveInt = Field(256, description="Minibatch size per member.")
    holdout_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.2, description="Share of the data held out for early stopping and elites."
    )
    max_holdout: PositiveInt = Field(5000, description="Cap on the holdout size.")
    max_epochs: PositiveInt = Field(100, description="Upper bound on training epochs per fit.")
    batches_per_epoch: PositiveInt | None = Field(
        None, description="Minibatches per epoch; null: one pass over the training split."
    )
    patience: PositiveInt = Field(5, description="Stop after this many epochs without a gain.")
    min_improvement: UnitInterval = Field(
        0.01, description="Relative holdout-loss gain that counts as improvement."
    )
    weight_clip: PositiveFloat = Field(10.0, description="Clip on weights before resampling.")
    holdout_metric: Literal["mse", "nll"] = Field(
        "mse",
        description="Weighted holdout metric for early stopping and elites: `mse` (MBPO's; always "
        "positive, so relative gains are meaningful) or `nll` (the official TOM mdn code's).",
    )

    @model_validator(mode="after")
    def _elites_fit(self) -> ModelConfig:
        members = self.ensemble_size if self.family == "ensemble" else 1
        if self.elites > members:
            raise ValueError(f"elites ({self.elites}) exceeds the {members} member(s) of the model")
        return self


class OfflineStudyConfig(Section):
    """Per-snapshot comparison of model learners on saved buffers, one per independent collect
    run (DESIGN §4, step 2)."""

    snapshots: tuple[PositiveInt, ...] = Field(
        min_length=1, description="Policy snapshot versions k to study (each uses D^R[:k])."
    )
    learners: tuple[str, ...] = Field(
        ("mle", "tom", "tom-nodisc", "pmac"),
        min_length=1,
        description="Model learners compared (registered names; none that needs a critic).",
    )
    seeds: tuple[NonNegativeInt, ...] = Field(
        (0,),
        min_length=1,
        description="Model seeds per (collect run, snapshot): nested inside a run, whose seed "
        "they are combined with (the units are the collect runs, `collect.seeds`).",
    )
    eval_episodes: PositiveInt = Field(
        10,
        description="Complete fresh on-policy episodes of pi_k per collect run to evaluate on "
        "(each its own start state, so the discounted occupancy is estimated from that many "
        "starts; seeded from the run's seed).",
    )
    eval_gamma: Discount = Field(0.99, description="Discount of the on-policy occupancy.")
    horizon: PositiveInt = Field(10, description="Longest open-loop horizon H.")
    age_bins: Annotated[int, Field(ge=2)] = Field(10, description="Age bins for C1 statistics.")

    _check_learners = field_validator("learners")(
        lambda names: check_learner_names(names, critic_available=False)
    )

    @model_validator(mode="after")
    def _distinct(self) -> OfflineStudyConfig:
        check_distinct(self, ("snapshots", "learners", "seeds"))
        return self


class MBPOConfig(Section):
    """Online MBPO with a pluggable model learner (DESIGN §3 "Backbone", §4 steps 3-4)."""

    tasks: tuple[str, ...] = Field(
        min_length=1, description="Tasks of from-scratch runs; the first is the single-run default."
    )
    env_steps: PositiveInt = Field(description="Env steps of a from-scratch run.")
    env_steps_per_task: dict[str, PositiveInt] = Field(
        default_factory=dict, description="Per-task overrides of env_steps (the paper's epochs)."
    )
    epoch_length: PositiveInt = Field(
        1000, description="Env steps per epoch: evaluation, checkpoint and policy version."
    )
    random_steps: NonNegativeInt = Field(5000, description="Initial uniform-random steps.")
    model_train_every: PositiveInt = Field(250, description="Env steps between model rounds.")
    model_max_epochs: PositiveInt = Field(
        20, description="Cap on epochs of one (warm-started) model round."
    )
    model_batches_per_epoch: PositiveInt | None = Field(
        None, description="Minibatches per model epoch in a round; null: a pass over the data."
    )
    rollout_batch: PositiveInt = Field(100_000, description="Model rollouts started per round.")
    rollout_length: PositiveInt = Field(1, description="Model rollout length (official TOM: 1).")
    rollout_schedule: tuple[NonNegativeInt, NonNegativeInt, PositiveInt, PositiveInt] | None = (
        Field(
            None,
            description="MBPO's schedule [first_epoch, last_epoch, min_length, max_length]: the "
            "length grows linearly between the epochs; null keeps rollout_length.",
        )
    )
    model_pool_size: PositiveInt = Field(400_000, description="Capacity of the model-data pool.")
    real_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        0.05, description="Share of real transitions in each SAC minibatch."
    )
    update_schedule: Literal["official", "every_step"] = Field(
        "official",
        description="`official`: TOM's train_policy_repeats, a burst of `updates_per_step` "
        "updates whenever the epoch's updates so far are at most `max_updates_per_step` x the "
        "epoch-local step (bursts at steps 0, 4, 8, ...: 5 per step on average); `every_step`: "
        "a burst after every env step (mbpo_pytorch in effect: 20 per step).",
    )
    updates_per_step: PositiveInt = Field(20, description="SAC updates in one burst.")
    max_updates_per_step: PositiveInt = Field(
        5, description="official schedule: the per-epoch cap on updates per epoch-local step."
    )
    eval_episodes: PositiveInt = Field(10, description="Deterministic test episodes per epoch.")
    eval_max_steps: PositiveInt | None = Field(
        None, description="Cap on the length of a test episode; null: the task's time limit."
    )
    learners: tuple[str, ...] = Field(
        ("mle", "tom"), min_length=1, description="Model learners of a sweep (registered names)."
    )
    seeds: tuple[NonNegativeInt, ...] = Field((0,), min_length=1, description="Seeds of a sweep.")
    continue_snapshots: tuple[PositiveInt, ...] = Field(
        (), description="Collect snapshots K that continuation runs start from."
    )
    continue_env_steps: PositiveInt = Field(
        5000, description="Env steps a continuation runs for after its snapshot."
    )

    _check_tasks = field_validator("tasks")(lambda values: tuple(map(_known_task, values)))
    _check_learners = field_validator("learners")(check_learner_names)

    @model_validator(mode="after")
    def _consistent(self) -> MBPOConfig:
        check_distinct(self, ("tasks", "learners", "seeds", "continue_snapshots"))
        for task in self.env_steps_per_task:
            _known_task(task)
        if self.rollout_schedule is not None:
            first, last, low, high = self.rollout_schedule
            if last < first or high < low:
                raise ValueError("rollout_schedule must be [first <= last, min <= max length]")
        return self

    def steps_for(self, task: str) -> int:
        return self.env_steps_per_task.get(task, self.env_steps)

    def rollout_length_at(self, epoch: int) -> int:
        """MBPO's linear schedule (epoch counted from the run's start), or the fixed length."""
        if self.rollout_schedule is None:
            return self.rollout_length
        first, last, low, high = self.rollout_schedule
        if epoch <= first or last == first:
            return low if epoch <= first else high
        share = min(1.0, (epoch - first) / (last - first))
        return int(low + share * (high - low))


class FiniteMDPConfig(Section):
    """Claims C5 and C6 on random finite MDPs, where every occupancy is exact.

    C5 runs the project's own dual-RL estimator (`estimator_*`: its budget on one-hot features;
    the other TOM settings are TOMConfig's defaults) on buffers sampled from each MDP.
    """

    mdps: PositiveInt = Field(200, description="Random MDPs per check.")
    seed: NonNegativeInt = Field(
        0, description="Seed of the MDP draws (C5 and C6 derive their own streams)."
    )
    gamma: Discount = Field(0.9, description="Discount of every random MDP and of its dual.")
    estimator_mdps: PositiveInt = Field(
        6, description="C5: random MDPs the neural estimator runs on (each fit takes seconds)."
    )
    estimator_samples: PositiveInt = Field(
        4000, description="C5: buffer rows N sampled from d^R per MDP."
    )
    estimator_recent_share: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.2,
        description="C5: share of pi's data in d^R; the buffer's last round(share * N) rows, drawn "
        "from d^pi, are D^pi (the rest from the older policies' mixture).",
    )
    estimator_initial_samples: PositiveInt = Field(
        1000, description="C5: draws s0 ~ mu0 given to the dual's initial term."
    )
    estimator_q_steps: PositiveInt = Field(1000, description="C5: Adam steps of the Q network.")
    estimator_q_hidden_sizes: tuple[PositiveInt, ...] = Field(
        (64, 64),
        min_length=1,
        description="C5: Q-network hidden widths (one-hot inputs need less than MuJoCo's).",
    )
    estimator_discriminator_steps: PositiveInt = Field(
        400, description="C5: Adam steps of the discriminator (discriminator reward)."
    )
    estimator_discriminator_width: PositiveInt = Field(
        64, description="C5: discriminator hidden width on one-hot inputs."
    )
    convergence_mdps: NonNegativeInt = Field(
        2,
        description="C5: MDPs of the convergence table (estimator vs population optimum, "
        "no-discriminator reward, both divergences); 0 skips it.",
    )
    convergence_samples: tuple[PositiveInt, ...] = Field(
        (1000, 4000, 16000), min_length=1, description="C5 convergence table: buffer sizes N."
    )
    convergence_q_steps: tuple[PositiveInt, ...] = Field(
        (200, 800, 3200), min_length=1, description="C5 convergence table: Q steps per fit."
    )

    @model_validator(mode="after")
    def _buffers_split(self) -> FiniteMDPConfig:
        check_distinct(self, ("convergence_samples", "convergence_q_steps"))
        for n in (self.estimator_samples, *self.convergence_samples):
            recent = round(self.estimator_recent_share * n)
            if not 0 < recent < n:
                raise ValueError(
                    f"estimator_recent_share {self.estimator_recent_share} of {n} rows leaves "
                    "D^pi or the older data empty"
                )
        return self


class PlanConfig(Section):
    """How `tomrepro plan` (and the pipeline's plan stage) measures this machine."""

    seconds_per_phase: Annotated[float, Field(ge=0.01, le=10)] = Field(
        0.5,
        description="How long each phase is timed, per task of the profile; longer is steadier "
        "on a busy machine.",
    )


class AnalysisConfig(Section):
    """The rules that turn measured data into claim verdicts (`tomrepro analyse`, DESIGN §9).

    Every smallest effect size of interest (SESOI) is fixed here, before any data are seen.
    """

    confidence: UnitInterval = Field(
        0.95, description="Two-sided level of every interval (one-sided tests at half the rest)."
    )
    min_offline_runs: Annotated[int, Field(ge=2)] = Field(
        6,
        description="C1/C2: fewer independent collect runs than this give `indicative` rows "
        "(a one-sided sign-flip test at 2.5 % needs 6).",
    )
    min_online_seeds: Annotated[int, Field(ge=2)] = Field(
        10, description="C3/C4: fewer paired seeds per arm than this give `indicative` rows."
    )
    sesoi_recency: UnitInterval = Field(
        0.1, description="C1: smallest mean Spearman correlation of TOM weight with recency."
    )
    sesoi_error_reduction: UnitInterval = Field(
        0.1, description="C2: smallest relative reduction of MLE's on-policy model error."
    )
    sesoi_area: PositiveFloat = Field(
        0.1,
        description="C3: smallest gain in area under (return - first evaluation), as a share "
        "of MLE's mean area.",
    )
    sesoi_steps: UnitInterval = Field(
        0.25, description="C3 (secondary): smallest relative saving of env steps to threshold."
    )
    return_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="C3 (secondary): absolute test-return threshold per task id (reach and "
        "stay); a task without one has no steps-to-threshold row.",
    )
    min_threshold_evaluations: Annotated[int, Field(ge=2)] = Field(
        8, description="C3 (secondary): fewest evaluations on the grid for a threshold row."
    )
    final_evaluations: PositiveInt = Field(
        3, description="C4: a run's final return is the mean of its last N evaluations."
    )
    slope_evaluations: Annotated[int, Field(ge=3)] = Field(
        5,
        description="C4: the last N evaluations must show no significant upward slope for a "
        "run group to count as converged.",
    )
    slope_tolerance: UnitInterval = Field(
        0.05,
        description="C4: largest rise over those N evaluations, as a share of MLE's mean gain "
        "over the first evaluation, that still counts as a plateau; an arm is not converged "
        "only when its rise's interval lies wholly above it.",
    )
    equivalence_margin: PositiveFloat = Field(
        0.1,
        description="C4: equivalence margin (and the superiority row's SESOI), as a share of "
        "MLE's mean gain over the first evaluation.",
    )
    task_maximum: dict[str, float] = Field(
        default_factory=dict,
        description="C4: the highest return a task allows; both arms within 1 % of it make the "
        "row `not applicable` (no asymptote can differ at a ceiling).",
    )
    ratio_error_tolerance: PositiveFloat = Field(
        0.3,
        description="C5: largest mean weighted relative error E_dR|w_hat - w| / E_dR[w] of the "
        "estimator's weights that counts as recovering the occupancy ratio.",
    )
    sesoi_model_fit: UnitInterval = Field(
        0.1,
        description="C6: smallest relative reduction of the model's return error (TOM-weighted "
        "vs plain MLE fit) that matters.",
    )
    sanity_tolerance: PositiveFloat = Field(
        1e-6,
        description="Sanity rows (identities and theorems): largest numerical violation allowed.",
    )

    @field_validator("return_thresholds", "task_maximum")
    @classmethod
    def _known_tasks(cls, value: dict[str, float]) -> dict[str, float]:
        for task in value:
            _known_task(task)
        return value


class ProfileConfig(Section):
    """One profile: everything a `dvc repro` on it uses.

    Besides the fixed sections below, a profile has one section per registered learner's
    parameters (`tom`, `pmac`, `vagram`, ...: `tomrepro.core.learners`); absent ones take their
    defaults, and `section(name)` returns them validated.
    """

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    name: str = Field(description="Profile name; the file's stem.")
    seed: NonNegativeInt = Field(description="Master seed; every generator derives from it.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Torch device; `auto` takes CUDA when present."
    )
    random_buffer: RandomBufferConfig
    collect: CollectConfig
    sac: SACConfig = Field(default_factory=SACConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    offline_study: OfflineStudyConfig | None = None
    mbpo: MBPOConfig | None = None
    finite_mdp: FiniteMDPConfig = Field(default_factory=FiniteMDPConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)

    @model_validator(mode="after")
    def _learner_sections(self) -> ProfileConfig:
        """Validate the extra keys as learner sections; any other extra key is unknown."""
        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        sections = learner_sections()
        for key in list(extra):
            if key not in sections:
                raise ValueError(f"{key}: unknown key")
        for key, model in sections.items():
            raw = extra.get(key, {})
            if isinstance(raw, model):
                continue
            if isinstance(raw, BaseModel):
                raw = raw.model_dump()
            try:
                extra[key] = model.model_validate(raw)
            except ValidationError as err:
                raise ValueError(_format_errors(err, prefix=key)) from None
        return self

    def section(self, name: str) -> Section:
        """A learner's parameter section by its name (see `LearnerSpec.section`)."""
        extra = self.__pydantic_extra__ or {}
        if name not in extra:
            raise ConfigError(f"profile {self.name!r} has no learner section {name!r}")
        return extra[name]

    @property
    def tom(self) -> TOMConfig:
        """TOM's estimator settings (also used outside the learners: `tomrepro weights`)."""
        return self.section("tom")  # type: ignore[return-value]


def _format_errors(err: ValidationError, prefix: str = "") -> str:
    parts = []
    for item in err.errors():
        key = ".".join(str(p) for p in (prefix, *item["loc"]) if p != "")
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown key"
        elif item["type"] == "value_error":
            msg = str(item.get("ctx", {}).get("error", msg))
            if not key:  # a whole-profile check names its own key
                parts.append(msg)
                continue
        elif "input" in item and not isinstance(item["input"], dict):
            msg = f"{msg} (got {item['input']!r})"
        parts.append(f"{key or '<root>'}: {msg}")
    return "; ".join(parts)


def _format_validation_error(source: str, err: ValidationError) -> str:
    return f"{source}: {_format_errors(err)}"


def resolve_profile_path(profile: str | Path, profile_dir: Path | None = None) -> Path:
    """A profile is a YAML path or a name: looked up in `profile_dir` alone when one is given,
    else (None or `PROFILE_DIR`) from the current directory up, then beside the package source
    (`tomrepro/core/profile_paths.py`), so a name works from any directory."""
    from tomrepro.core.profile_paths import find_profile, profile_in

    if profile_dir is None or profile_dir is PROFILE_DIR:
        return find_profile(profile)
    return profile_in(profile, profile_dir)


def load_profile(profile: str | Path, profile_dir: Path = PROFILE_DIR) -> ProfileConfig:
    """Load and validate a profile by name or path; any problem is one `ConfigError` line."""
    path = resolve_profile_path(profile, profile_dir)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a profile must be a mapping of sections")
    raw.setdefault("name", path.stem)
    return profile_from_dict(raw, source=str(path))


def with_overrides(profile: ProfileConfig, section: str | None, **values: Any) -> ProfileConfig:
    """A copy of `profile` with some fields of one section (None: top level) replaced, None
    values meaning keep; revalidated, so an override gets the same one-line errors as a file."""
    changes = {k: v for k, v in values.items() if v is not None}
    if not changes:
        return profile
    raw = profile.model_dump()
    if section is None:
        raw.update(changes)
    else:
        raw[section] = {**raw[section], **changes}
    return profile_from_dict(raw, source="options")


def profile_from_dict(raw: dict[str, Any], source: str = "<profile>") -> ProfileConfig:
    try:
        return ProfileConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err)) from None
