"""The operator's own customer attributes as settings declare them (`CHURNWATCH_ATTRIBUTES`, or a
YAML file): kinds, words and what a customer without a value counts as. contracts/attributes.py
says how the model sees each kind."""

from __future__ import annotations

import re
import zlib
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Attribute", "attribute_key", "checked_attributes", "MAX_DAYS", "MAX_NUMBER", "MAX_ATTRIBUTES"]

#: An attribute's name: what profiles send it as (`Profile.attributes`) and the model column's root.
ATTRIBUTE_NAME = r"^[a-z][a-z0-9_]{0,39}$"
MAX_ATTRIBUTES = 32  # declared at most; a profile sends at most as many
MAX_CATEGORY_VALUES = 32  # a category's declared values, each a model column
MAX_NUMBER = 1e12  # a number attribute's magnitude at most: past it a profile is refused, not learned from
MAX_DAYS = 3650  # a date's distance the model sees, at most, either way: ten years off says no more
A = TypeVar("A", bound="Attribute")


class Attribute(BaseModel):
    """One of the operator's own customer attributes (contracts/attributes.py says how the model
    sees each kind): `number` (handset age, credit score), `date` (contract end: the model sees
    the days to it) or `category` (credit class, handset tier: one column per declared value)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["number", "date", "category"]
    words: str = Field(default="", max_length=80, description="how agents read it in a reason; the name if empty")
    log: bool = False  # number: the model sees log(1 + value), for heavy-tailed amounts
    # What the model takes a customer without a value to have: a number in its own units (default
    # 0), a date as days to it (default MAX_DAYS: no contract end known is none coming).
    missing: float | None = Field(default=None, ge=-MAX_NUMBER, le=MAX_NUMBER, allow_inf_nan=False)
    values: tuple[Annotated[str, Field(max_length=64)], ...] = Field(default=(), max_length=MAX_CATEGORY_VALUES)

    @model_validator(mode="after")
    def _values_for_categories(self) -> "Attribute":
        if (self.kind == "category") != bool(self.values):
            raise ValueError("a category lists its `values` (the rest read as none of them); other kinds list none")
        if self.kind == "category" and (self.log or self.missing is not None):
            raise ValueError("a category takes no `log` or `missing`: a customer without a value has none of them")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"repeated values in {list(self.values)}")
        return self


def attribute_key(name: str) -> int:
    """An attribute's key in the customer's state: short, and the same wherever it is declared."""
    return zlib.crc32(name.encode())


def checked_attributes(value: dict[str, A]) -> dict[str, A]:
    """`value` in the order of its names, which the model's columns follow wherever they were
    declared; a ValueError naming names that are not ones, or too many of them."""
    bad = [name for name in value if not (isinstance(name, str) and re.match(ATTRIBUTE_NAME, name))]
    if bad:
        raise ValueError(f"attribute names {bad}: expected lower-case letters, digits and _, a letter first, "
                         "at most 40")
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"{len(value)} attributes declared; at most {MAX_ATTRIBUTES}")
    keys = {attribute_key(name) for name in value}
    if len(keys) != len(value):
        raise ValueError(f"two of the attribute names {sorted(value)} share a key in the state; rename one")
    return dict(sorted(value.items()))
