"""The lifecycle's lists beside the warnings (DOMAIN.md, lifecycle stages): who to win back after
they left (exit), who is growing towards the mid/high-end line (build-up) and which of the
competitors' customers our base knows best (acquisition), one line each, as the call centre and
sales teams receive them on their topics."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta, Struct

__all__ = ["WinbackEntry", "GrowthEntry", "CompetitorEntry"]

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
    # Since they ported out, from the off-net book (windows/book.py): customers of ours on calls with
    # their number (an estimate), and up to 3 of them still ours, a reason to come back. None: not
    # looked up (not a port-out, or no book read).
    contacts_with_us: int | None = None
    known_by: list[str] = []


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


class CompetitorEntry(Struct, frozen=True):
    """One line of the competitor list (alerts/competitor.py): a number on a competitor's network
    that our base talks to, how widely and how much, what they likely spend, and customers of ours
    who know them (for a member-get-member offer)."""

    rank: Annotated[int, Meta(ge=1)]  # within its competitor
    day: Day  # the list's day
    since: Day  # the first day counted (the first of the oldest month read)
    competitor: str  # as the CDRs name it; "" when they did not
    number: str  # the off-net number, pseudonymised like our customers when pseudonyms are on
    customers_of_ours: int  # distinct customers of ours on calls with them (an estimate, exact for a few)
    calls: int  # calls and messages with our base
    minutes: float  # minutes of calls with our base
    monthly_minutes: float  # those minutes per 30 days counted
    value_estimate: float  # monthly spend if their calls with us are `CHURNWATCH_COMPETITOR_SHARE` of theirs,
    # at the yuan per minute of our own base last month
    known_by: list[str]  # customers of ours on calls with them who are still ours (at most 3)
