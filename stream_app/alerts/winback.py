"""The win-back list (the lifecycle's exit stage): customers who left in a recent window, ranked
for the call centre by what winning them back is worth.

It is built from what the live pipeline wrote: the churn events the workers emit as exits and
revenue churn happen (with the reason code, the spend of the last complete month before, or of
the months before the cut for a revenue churner, the tenure and the region), the alerts raised
before the exit and the call outcomes recorded for them up to the list's day. A customer whose
latest churn is involuntary (credit, fraud and non-use: reason codes 3xx, or a disconnect
without a reason, as the churn report counts it) is not on it: the operator ended that line.

The priority is the monthly value times the chance the customer can still be won back, taken to
halve every `HALF_LIFE_DAYS` after they left: a leaver's new contract and number settle in, and a
call a week after is worth more than one after a quarter. The half-life is an assumption stated
here, not fitted; `--days` bounds the window.

A customer who ported out kept their number: customers of ours who still call them show in the
off-net book under it (`with_contacts`), the leaver's usual contacts who are still ours.

Those who come back (windows/lifecycle.py) are counted per week in the campaign report
(`won_back_weeks`): how many, on which line, how many the lists had named before, and what they
were worth when they left.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from typing import Iterable
from zoneinfo import ZoneInfo

import msgspec

from stream_app.alerts.call_plan import LEVEL_ORDER, alert_day
from stream_app.alerts.campaign import latest_outcomes
from stream_app.connect.topics import WINBACK_DAYS
from stream_app.contracts.events import Alert, ChurnEvent, Outcome, WonBack
from stream_app.contracts.lists import WinbackEntry
from stream_app.windows.book import ACQUAINTANCES, Entry, distinct

__all__ = ["HALF_LIFE_DAYS", "WARNED_DAYS", "WonBackWeek", "winback_list", "with_contacts", "won_back_weeks"]

HALF_LIFE_DAYS = 30
WARNED_DAYS = WINBACK_DAYS  # an alert this many days before the exit at most counts as a warning of it


def winback_list(churns: Iterable[ChurnEvent], alerts: Iterable[Alert], outcomes: Iterable[Outcome], as_of: date,
                 days: int, zone: ZoneInfo, returns: Iterable[WonBack] = ()) -> list[WinbackEntry]:
    """Every voluntary leaver and revenue churner of the `days` days up to `as_of`, highest priority
    first; a customer once, at their latest churn, and not once they have come back (`returns`)."""
    first = as_of.toordinal() - days + 1
    latest: dict[str, ChurnEvent] = {}
    for c in churns:
        if first <= c.day <= as_of.toordinal() and (c.customer_id not in latest or c.day >= latest[c.customer_id].day):
            latest[c.customer_id] = c
    back = {}
    for r in returns:
        if r.day <= as_of.toordinal():
            back[r.previous_customer_id] = max(back.get(r.previous_customer_id, 0), r.day)
    # Their latest churn decides, an involuntary one too; a return after it takes them off.
    latest = {k: c for k, c in latest.items() if c.by_choice and back.get(k, 0) < c.day}
    before: dict[str, list[Alert]] = {}
    for a in alerts:
        c = latest.get(a.customer_id)
        if c is not None and c.day - WARNED_DAYS <= alert_day(a, zone).toordinal() <= c.day:
            before.setdefault(a.customer_id, []).append(a)
    end = datetime.combine(as_of, time.max, zone)
    answered = latest_outcomes(o for o in outcomes if o.ts <= end)  # what was known on the list's day
    entries = [_entry(c, before.get(c.customer_id, []), answered, as_of) for c in latest.values()]
    entries.sort(key=lambda e: (-e.priority, e.customer_id))
    return [_ranked(e, rank) for rank, e in enumerate(entries, 1)]


def _entry(c: ChurnEvent, warnings: list[Alert], answered: dict[str, Outcome], as_of: date) -> WinbackEntry:
    since = as_of.toordinal() - c.day
    strongest = max(warnings, key=lambda a: (LEVEL_ORDER[a.level], a.event_time), default=None)
    calls = sorted((answered[a.alert_id] for a in warnings if a.alert_id in answered), key=lambda o: o.ts)
    return WinbackEntry(
        rank=1, day=as_of.isoformat(), customer_id=c.customer_id, left_on=date.fromordinal(c.day).isoformat(),
        kind=c.kind, reason_code=c.reason_code, monthly_value=c.arpu, tenure_days=c.tenure_days, region=c.region,
        segment=c.segment, days_since=since, warned=strongest.level if strongest else None,
        control=any(a.holdout for a in warnings), called=calls[-1].result if calls else None,
        priority=round(c.arpu * 0.5 ** (since / HALF_LIFE_DAYS), 2))


def with_contacts(entries: Iterable[WinbackEntry], found: dict[str, Entry], ours: set[str]) -> list[WinbackEntry]:
    """The port-outs of `entries` with their contacts from the book: `found`, the book's record of
    each leaver's number since they left (alerts/competitor.contacts_of); `ours`, who of the
    customers named there is still ours."""
    out = []
    for e in entries:
        if e.kind == "port_out":
            book = found.get(e.customer_id, Entry())
            e = msgspec.structs.replace(e, contacts_with_us=distinct(book.sketch),
                                        known_by=[c for c in book.acquaintances if c in ours][:ACQUAINTANCES])
        out.append(e)
    return out


def _ranked(entry: WinbackEntry, rank: int) -> WinbackEntry:
    return msgspec.structs.replace(entry, rank=rank)


@dataclass
class WonBackWeek:
    """The customers who came back in one ISO week (`2026-W23`), or in `all` of them."""

    week: str
    won_back: int = 0
    same_number: int = 0  # ported back or reconnected
    new_line: int = 0  # the same person on a new line, as their profile said
    listed: int = 0  # on a win-back list produced after they left and before they came back (`--produce`)
    monthly_value: float = 0.0  # what they spent in the month before the one they left in, yuan

    def to_json(self) -> dict:
        return asdict(self) | {"monthly_value": round(self.monthly_value, 2)}


def won_back_weeks(returns: Iterable[WonBack], churns: Iterable[ChurnEvent],
                   lists: Iterable[WinbackEntry]) -> list[WonBackWeek]:
    """Per week of return, oldest first, then `all`; a customer recorded twice (a replay) once."""
    exits: dict[str, list[ChurnEvent]] = {}
    for c in churns:
        if c.kind != "revenue":
            exits.setdefault(c.customer_id, []).append(c)
    listed: dict[str, list[int]] = {}
    for e in lists:
        listed.setdefault(e.customer_id, []).append(date.fromisoformat(e.day).toordinal())
    weeks: dict[str, WonBackWeek] = {}
    for b in {(r.customer_id, r.day): r for r in returns}.values():
        week = "%d-W%02d" % date.fromordinal(b.day).isocalendar()[:2]
        exit_ = max((c for c in exits.get(b.previous_customer_id, ()) if c.day <= b.day), key=lambda c: c.day,
                    default=None)  # the exit they came back from
        since = exit_.day if exit_ else (b.left_on or 0)
        named = any(since <= d <= b.day for d in listed.get(b.previous_customer_id, ()))
        for row in (weeks.setdefault(week, WonBackWeek(week)), weeks.setdefault("all", WonBackWeek("all"))):
            row.won_back += 1
            row.same_number += b.previous_customer_id == b.customer_id
            row.new_line += b.previous_customer_id != b.customer_id
            row.listed += named
            row.monthly_value += exit_.arpu if exit_ else 0.0
    return sorted(weeks.values(), key=lambda r: (r.week == "all", r.week))
