"""The base of every profile section and the constrained number types they share."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
UnitInterval = Annotated[float, Field(gt=0, lt=1)]
Discount = UnitInterval


class Section(BaseModel):
    """A strict, frozen block of a profile: unknown keys and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _lists_to_tuples(cls, raw: Any) -> Any:
        """YAML gives lists; sequence fields are tuples (hashable, immutable)."""
        if not isinstance(raw, dict):
            return raw
        return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def check_distinct(section: BaseModel, names: tuple[str, ...]) -> None:
    for name in names:
        values = getattr(section, name)
        if len(set(values)) != len(values):
            raise ValueError(f"{name} has repeated entries: {list(values)}")
