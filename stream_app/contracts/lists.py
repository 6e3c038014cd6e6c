"""The lifecycle's lists beside the warnings (DOMAIN.md, lifecycle stages): who to win back after
they left (exit) and who is growing towards the mid/high-end line (build-up), one line each, as
the call centre and sales teams receive them on their topics."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

__all__ = ["WinbackEntry", "GrowthEntry"]

Day = Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")]


class WinbackEntry(Struct, frozen=True):
    """One line of the win-back list (alerts/winback.py): a customer who left, what they were worth
    and what was known and done before they went."""

    rank: Annotated[int, Meta(ge=1)]
    day: Day  # the list's day
    customer_id: str
    left_on: Day
    kind: Literal["disconnect", "port_out", "revenue"]
    reason_code: int | None
    monthly_value: float  # spend in the last complete month before they left
    tenure_days: int
    region: str
    segment: str
    days_since: int
    warned: Literal["high", "medium", "low"] | None  # the strongest warning before they left, if any
    control: bool  # warned in the control group: never called
    called: Literal["not_reached", "contacted", "accepted", "declined"] | None  # the latest outcome of a call
    priority: float  # monthly value x the chance they still come back, halving every `winback.HALF_LIFE_DAYS`


class GrowthEntry(Struct, frozen=True):
    """One line of the growth list (alerts/growth.py): a potential mid/high-end postpaid customer whose
    spend is rising, how close they are to the line and how fast they approach it, and an upsell."""

    rank: Annotated[int, Meta(ge=1)]
    day: Day  # the list's day
    month: Annotated[str, Meta(pattern=r"^\d{4}-\d{2}$")]  # the last complete month the figures end with
    customer_id: str
    arpu_3m: float  # average monthly spend over the last 3 complete months (100 to 120: potential mid/high-end)
    arpu_m1: float  # spend in the last complete month
    growth: float  # spend gained per month over those 3 months (yuan)
    mou_out_m1: float  # outgoing minutes in the last complete month (mid/high-end needs 100)
    months_to_line: float  # at this pace, months until a month's spend and minutes make them mid/high-end
    driver: Literal["voice", "data"]  # what rose more last month: outgoing minutes or data
    upsell: str  # the growth table's suggested offer (alert_rules/growth.yaml)
    vip_tier: str
    region: str
    tenure_days: int
