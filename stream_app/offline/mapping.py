"""A mapping file: how a public data set's columns become the counters, label, tenure and
attributes churnwatch replays (`mappings/`, docs/real-data.md); read and checked whole, every
problem named with its field."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stream_app.contracts.events import REASON_CODES
from stream_app.errors import ChurnwatchError
from stream_app.settings import Attribute, checked_attributes

__all__ = ["COUNTERS", "MONEY", "LabelRule", "MappedAttribute", "Mapping", "MappingError", "Source", "Tenure",
           "load_mapping", "next_month"]

#: Counters a column may feed; minutes, MB and money are totals for the month, the rest counts.
COUNTERS = ("out_min", "in_min", "offnet_min", "data_mb", "spend", "topup", "out_calls", "in_calls", "sms_out",
            "cs_calls", "dropped_calls", "contacts", "data_sessions")
MONEY = ("spend", "topup")


class MappingError(ChurnwatchError, ValueError):
    """A mapping file that cannot be used, with every problem located."""


class Source(BaseModel):
    """One source column (a month's suffix is added for wide layouts), times a scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str
    scale: float = 1.0


class LabelRule(BaseModel):
    """How the churn label is read: a column and the value meaning churned, or "no usage at all in
    these columns in `month`" (the usual label of the monthly sample)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str | None = None
    churned_value: str = "1"
    no_usage_in: list[str] = []
    month: str | None = None  # the label month's suffix (wide layout, `no_usage_in`)
    meaning: str
    exit_kind: Literal["disconnect", "port_out"] = "disconnect"  # how a churner's line ends in the replay
    exit_reason_code: int  # the code the exit carries (REASON_CODES); the data rarely says why

    @field_validator("exit_reason_code")
    @classmethod
    def _known_code(cls, value: int) -> int:
        if value not in REASON_CODES:
            raise ValueError(f"unknown reason code {value}; expected one of {', '.join(map(str, REASON_CODES))}")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> "LabelRule":
        if (self.column is None) == (not self.no_usage_in):
            raise ValueError("give either `column` (with `churned_value`) or `no_usage_in` (with `month`)")
        if self.no_usage_in and self.month is None:
            raise ValueError("`no_usage_in` needs the `month` whose usage decides the label")
        return self


class Tenure(BaseModel):
    """The column holding how long each customer has been with the operator, as of the end of the
    last replayed month (`at: end`, as data sets usually give it) or the start of the first."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    column: str
    unit: Literal["days", "months"] = "months"
    at: Literal["start", "end"] = "end"


class MappedAttribute(Attribute):
    """An attribute (settings.py) and its column: as it is, even in a wide layout; a long one's last month."""

    column: str


class Mapping(BaseModel):
    """A mapping file (see `mappings/`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str
    layout: Literal["wide", "long"] = "wide"
    id_column: str | None  # None: the file has no id, and customers are named by row number
    id_prefix: str = ""  # put before each id: ids must be 5 to 64 letters, digits, _ or - (1 -> cust1)
    month_column: str | None = None  # long layout: the column naming each row's month
    column_pattern: str = "{column}_{month}"  # wide layout: how a month's column is named
    months: dict[str, str] = Field(min_length=1)  # the data's month name or suffix -> YYYY-MM replayed as
    currency_per_yuan: float = Field(default=1.0, gt=0)  # units of the data's money in one yuan
    counters: dict[str, list[Source]]
    label: LabelRule
    tenure: Tenure | None = None  # None: every customer joined DEFAULT_TENURE_DAYS before the first month
    attributes: dict[str, MappedAttribute] = {}  # the data's other columns, for the model to learn from

    _attribute_names = field_validator("attributes")(checked_attributes)

    @property
    def declared(self) -> dict[str, Attribute]:
        """The attributes as settings declare them (`Settings.attributes`)."""
        return {name: Attribute.model_validate(a.model_dump(exclude={"column"})) for name, a in self.attributes.items()}

    @field_validator("months")
    @classmethod
    def _calendar_months(cls, value: dict[str, str]) -> dict[str, str]:
        for name, month in value.items():
            try:
                datetime.strptime(month, "%Y-%m")
            except ValueError:
                raise ValueError(f"month {name!r} is replayed as {month!r}; expected YYYY-MM") from None
        return value

    @field_validator("counters")
    @classmethod
    def _known_counters(cls, value: dict[str, list[Source]]) -> dict[str, list[Source]]:
        unknown = sorted(set(value) - set(COUNTERS))
        if unknown:
            raise ValueError(f"unknown counter(s) {', '.join(unknown)}; expected some of {', '.join(COUNTERS)}")
        return value

    @model_validator(mode="after")
    def _layout(self) -> "Mapping":
        if self.layout == "long" and self.month_column is None:
            raise ValueError("a long layout needs `month_column`")
        return self

    @cached_property
    def replayed_days(self) -> int:
        """Days from the first replayed month's start to the last one's end."""
        months = sorted(self.months.values())
        first = datetime.strptime(months[0], "%Y-%m").date()
        return (next_month(datetime.strptime(months[-1], "%Y-%m").date()) - first).days

    def column(self, source: str, month: str) -> str:
        if self.layout == "long" or not month:
            return source
        return self.column_pattern.format(column=source, month=month)


def load_mapping(path: Path) -> Mapping:
    """The mapping in `path`, or a MappingError naming each bad field."""
    try:
        raw = yaml.safe_load(path.read_text())
        return Mapping.model_validate(raw)
    except yaml.YAMLError as exc:
        raise MappingError(f"{path}: not YAML: {exc}") from None
    except ValidationError as exc:
        problems = [f"{path}: {'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
        raise MappingError("\n".join(problems)) from None


def next_month(day: date) -> date:
    """The first day of the month after `day`'s."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)
