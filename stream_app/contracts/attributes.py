"""The operator's own customer attributes: checked at the edge, kept in the customer's state and
seen by the model as columns of its own (docs/model.md, "The operator's own attributes").

The service's features are usage; what the operator knows of a customer beyond it (handset age,
contract end, credit class, plan family ...) often tells as much (on a public set of 50,000
customers, a batch model on the usage alone reached about 0.60 AUC, on all columns about 0.68).
Attributes are declared in settings (`Settings.attributes`), sent on each profile
(`Profile.attributes`), and seen by the model as:
- a `number`: its value, or log(1 + value) with `log`; `missing` (0) where the customer has none;
- a `date`: the days from the scoring day to it (negative once passed), within +-MAX_DAYS;
  `missing` (MAX_DAYS: none coming) where the customer has none;
- a `category`: one column per declared value, 1 for the customer's; any other value, or none,
  leaves them all 0, so a new plan family is no error and needs no restart.
An attribute a profile sends but settings do not declare is dropped at the edge; a declared one
of the wrong kind sends the profile to dead letter, naming the attribute. The state keeps each
value under the CRC of its name (5 bytes of key), so declaring one more costs nothing until
profiles carry it.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Mapping, Sequence

import numpy as np

from stream_app.errors import ChurnwatchError
from stream_app.settings.attributes import MAX_DAYS, MAX_NUMBER, Attribute
from stream_app.settings.attributes import attribute_key as key

__all__ = ["PREFIX", "AttributeRefused", "admit", "category_text", "stored", "columns", "matrix", "is_attribute",
           "describe", "key"]

PREFIX = "attr:"  # model columns of attributes: no built-in feature is named so

Stored = Mapping[int, "float | str"]  # an attribute's key -> its admitted value, as the state keeps them


class AttributeRefused(ChurnwatchError, ValueError):
    """A declared attribute whose value is not of its kind."""

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(detail)
        self.field = f"attributes.{name}"


def stored(admitted: Mapping[str, float | str | None]) -> dict[int, float | str]:
    """A profile's admitted attributes as the state keeps them: under their keys."""
    return {key(name): value for name, value in admitted.items() if value is not None}


def admit(sent: Mapping[str, float | str | None], declared: Mapping[str, Attribute]) -> dict[str, float | str]:
    """The declared attributes of a profile, each as the state keeps it (a date as its day
    number); `AttributeRefused` for one that is not of its kind. A value of None is no value."""
    out: dict[str, float | str] = {}
    for name, value in sent.items():
        spec = declared.get(name)
        if spec is None or value is None:
            continue
        if spec.kind == "category":
            out[name] = category_text(value)
        elif spec.kind == "number":
            if isinstance(value, str) or not abs(value) <= MAX_NUMBER:  # NaN too
                raise AttributeRefused(name, f"got {value!r}; {name} is a number within +-{MAX_NUMBER:g}")
            out[name] = float(value)
        else:
            try:
                out[name] = float(date.fromisoformat(str(value)).toordinal())
            except ValueError:
                raise AttributeRefused(name, f"got {value!r}; {name} is a date, YYYY-MM-DD") from None
    return out


def category_text(value: float | str) -> str:
    """A category value as text: a class sent as the number 1 (JSON numbers decode as floats) is "1"."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def columns(declared: Mapping[str, Attribute]) -> tuple[str, ...]:
    """The model columns of the declared attributes, in a fixed order."""
    out: list[str] = []
    for name, spec in declared.items():
        out += [f"{PREFIX}{name}={v}" for v in spec.values] if spec.kind == "category" else [f"{PREFIX}{name}"]
    return tuple(out)


def matrix(kept: Sequence[Stored | None], day: np.ndarray,
           declared: Mapping[str, Attribute]) -> dict[str, np.ndarray]:
    """Each attribute column for each customer (`kept`: their stored attributes, None for none)
    as of their scoring day (`day`, ordinals), by column name."""
    n = len(kept)
    out: dict[str, np.ndarray] = {}
    for name, spec in declared.items():
        k = key(name)
        raw = [a.get(k) if a else None for a in kept]
        if spec.kind == "category":
            at = {v: j for j, v in enumerate(spec.values)}
            hot = np.zeros((n, len(spec.values) + 1))  # the last column: none of the declared values
            hot[np.arange(n), [at.get(r, -1) for r in raw]] = 1.0  # type: ignore[arg-type]
            out |= {f"{PREFIX}{name}={v}": hot[:, j] for j, v in enumerate(spec.values)}
            continue
        values = np.array([r if isinstance(r, float) else np.nan for r in raw], np.float64).reshape(n)
        if spec.kind == "date":
            values = np.clip(values - day, -MAX_DAYS, MAX_DAYS)
            missing = MAX_DAYS if spec.missing is None else spec.missing
        else:
            missing = spec.missing or 0.0
            if spec.log:
                values, missing = np.log1p(np.maximum(values, 0.0)), math.log1p(max(missing, 0.0))
        out[f"{PREFIX}{name}"] = np.where(np.isnan(values), missing, values)
    return out


def is_attribute(column: str) -> bool:
    return column.startswith(PREFIX)


def describe(column: str, value: float, declared: Mapping[str, Attribute]) -> str:
    """How an agent reads an attribute column that raised a score: "credit class: C",
    "contract end: in 12 days"."""
    name, _, category = column.removeprefix(PREFIX).partition("=")
    spec = declared.get(name)
    words = (spec.words if spec else "") or name.replace("_", " ")
    if category:
        return f"{words}: {category}" if value else f"{words}: not {category}"
    if not math.isfinite(value):
        return words
    if spec is not None and spec.kind == "date":
        days = round(value)
        return f"{words}: in {days} days" if days >= 0 else f"{words}: {-days} days ago"
    return f"{words}: {math.expm1(min(value, 700.0)) if spec is not None and spec.log else value:g}"
