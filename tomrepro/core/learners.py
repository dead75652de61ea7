"""The one registry of model learners: every name list, CLI choice, config check, dispatcher,
run fingerprint and report ordering derives from the entries declared here.

A learner is declared once, as a `LearnerSpec`: its name, the profile section that holds its
parameters (and that section's pydantic model), whether its plan needs a critic, and the entry
point that builds it: a "module:attribute" string, loaded only when the learner is built, so this
core module never imports the learning layer (gymnasium's registry does the same), or the class
itself (handy for a learner declared in a test or a notebook).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import Field

from tomrepro.core.config_section import (
    Discount,
    PositiveFloat,
    PositiveInt,
    Section,
)
from tomrepro.core.errors import ConfigError


class DualConvergence(Section):
    """When a one-off dual-RL fit (a saved snapshot: the offline study, `tomrepro weights`) has
    converged. Online the Q network persists across rounds (~80 000 Adam steps by snapshot 25
    in the official runs), so an offline estimate must be trained as far to measure that
    estimator and not its initialisation (near which w ≈ max(0, 1 + R))."""

    window: PositiveInt = Field(1000, description="Q steps between two checks.")
    min_spearman: Annotated[float, Field(gt=-1, le=1)] = Field(
        0.99, description="Rank correlation of the weights now and one window earlier."
    )
    max_loss_change: PositiveFloat = Field(
        0.01, description="Relative change of the mean dual loss between the last two windows."
    )
    max_steps: PositiveInt = Field(20_000, description="Cap on Q steps (reported if reached).")


class TOMConfig(Section):
    """TOM's weight estimation: discriminator, dual-RL Q network, recency baseline (DESIGN §3)."""

    recent_size: PositiveInt = Field(1000, description="K: the last K transitions form D^pi.")
    divergence: Literal["chi2", "kl"] = Field("chi2", description="f-divergence of the dual.")
    gamma: Discount = Field(0.99, description="Discount of the dual problem.")
    discriminator_steps: PositiveInt = Field(400, description="Adam steps per round.")
    discriminator_batch: PositiveInt = Field(256, description="Batch of each class per step.")
    discriminator_lr: PositiveFloat = Field(3.0e-4, description="Discriminator learning rate.")
    discriminator_width: PositiveInt = Field(256, description="Discriminator hidden width.")
    gradient_penalty: Annotated[float, Field(ge=0)] = Field(10.0, description="lambda of the GP.")
    negative_target: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="Soft BCE target of replay-buffer negatives."
    )
    q_steps: PositiveInt = Field(1000, description="Adam steps of the Q network per round.")
    q_batch: PositiveInt = Field(256, description="Q-network minibatch size.")
    q_lr: PositiveFloat = Field(3.0e-4, description="Q-network learning rate.")
    q_weight_decay: Annotated[float, Field(ge=0)] = Field(1.0e-4, description="L2 on Q.")
    q_hidden_sizes: tuple[PositiveInt, ...] = Field(
        (256, 256), min_length=1, description="Q-network hidden widths (ReLU)."
    )
    offline_convergence: DualConvergence | None = Field(
        default_factory=DualConvergence,
        description="One-off estimates train Q to this criterion; null: `q_steps` steps only.",
    )


class PMACConfig(Section):
    """PMAC / "live in the moment" (Wang et al. 2023): geometric decay with policy-version age."""

    decay: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.9, description="Mass kept by older versions when a new one begins (newest: 1 - decay)."
    )
    granularity: Literal["burst", "model_round", "snapshot"] = Field(
        "burst",
        description="What starts a policy version in MBPO: each SAC burst (the official code), "
        "each model round, or each saved snapshot. A saved buffer has only snapshots, so the "
        "offline study and `tomrepro weights` always group by snapshot.",
    )


class VaGraMConfig(Section):
    """VaGraM (Voelcker et al. 2022): the model's state error weighted by the value gradient."""

    gradient_quantile: Annotated[float, Field(gt=0, le=1)] = Field(
        0.95,
        description="Value-gradient norms above this quantile (over the round's rows) are "
        "scaled down to it (the authors' bound clipping).",
    )


@dataclass(frozen=True)
class LearnerSpec:
    """One model learner, declared once."""

    name: str
    summary: str
    entry_point: str | Callable[..., Any]
    section: str | None = None  # profile section with the parameters; None: it has none
    params: type[Section] | None = None  # that section's model (learners may share a section)
    needs_critic: bool = False  # its plan reads a critic (MBPO has one; a snapshot does not)
    options: Mapping[str, Any] = field(default_factory=dict)  # fixed arguments of the builder

    def __post_init__(self) -> None:
        if (self.section is None) != (self.params is None):
            raise ValueError(f"learner {self.name!r}: give both section and params, or neither")

    def builder(self) -> Callable[..., Any]:
        if not isinstance(self.entry_point, str):
            return self.entry_point
        module, _, attribute = self.entry_point.partition(":")
        return getattr(importlib.import_module(module), attribute)


_REGISTRY: dict[str, LearnerSpec] = {}


def register_learner(spec: LearnerSpec) -> LearnerSpec:
    """Add a learner; a name or a section taken with another parameter model is refused."""
    if spec.name in _REGISTRY:
        raise ConfigError(f"a learner named {spec.name!r} is already registered")
    if spec.section is not None:
        for other in _REGISTRY.values():
            if other.section == spec.section and other.params is not spec.params:
                raise ConfigError(
                    f"section {spec.section!r} already holds {other.name!r}'s parameters"
                )
    _REGISTRY[spec.name] = spec
    return spec


def unregister_learner(name: str) -> None:
    _REGISTRY.pop(name, None)


@contextmanager
def registered(spec: LearnerSpec) -> Iterator[LearnerSpec]:
    """A learner that exists only inside the `with` block (tests, notebooks)."""
    register_learner(spec)
    try:
        yield spec
    finally:
        unregister_learner(spec.name)


def learner_names() -> tuple[str, ...]:
    """Every registered name, in declaration order (the report's order too)."""
    return tuple(_REGISTRY)


def learner_registry() -> Mapping[str, LearnerSpec]:
    return MappingProxyType(_REGISTRY)


def get_learner(name: str) -> LearnerSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown learner {name!r}; choose from {', '.join(_REGISTRY)}") from None


def learner_sections() -> dict[str, type[Section]]:
    """Profile section name -> the parameter model it is validated with."""
    return {s.section: s.params for s in _REGISTRY.values() if s.section and s.params}


def check_learner_names(
    names: tuple[str, ...], *, critic_available: bool = True
) -> tuple[str, ...]:
    """Config validation: known names, and a critic where a learner needs one."""
    for name in names:
        if name not in _REGISTRY:
            raise ValueError(f"unknown learner {name!r}; choose from {', '.join(_REGISTRY)}")
        if _REGISTRY[name].needs_critic and not critic_available:
            raise ValueError(
                f"learner {name!r} needs a critic, which a policy snapshot does not have"
            )
    return names


_MODULE = "tomrepro.learning.model_learners"
for _spec in (
    LearnerSpec("mle", "MBPO's maximum likelihood: uniform weights", f"{_MODULE}:ModelLearner"),
    LearnerSpec(
        "tom",
        "TOM: occupancy-ratio weights from dual RL with a discriminator reward",
        f"{_MODULE}:TOMLearner",
        "tom",
        TOMConfig,
        options={"use_discriminator": True},
    ),
    LearnerSpec(
        "tom-nodisc",
        "TOM without discriminator: reward 1 on D^pi, 0 elsewhere",
        f"{_MODULE}:TOMLearner",
        "tom",
        TOMConfig,
        options={"use_discriminator": False},
    ),
    LearnerSpec(
        "pmac",
        "PMAC: geometric decay with policy-version age",
        f"{_MODULE}:PMACLearner",
        "pmac",
        PMACConfig,
    ),
    LearnerSpec(
        "vagram",
        "VaGraM: value-gradient weights on state outputs",
        f"{_MODULE}:VaGraMLearner",
        "vagram",
        VaGraMConfig,
        needs_critic=True,
    ),
):
    register_learner(_spec)
