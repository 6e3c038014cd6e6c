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
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Iterable
from zoneinfo import ZoneInfo

import msgspec

from stream_app.alerts.call_plan import LEVEL_ORDER, alert_day
from stream_app.alerts.campaign import latest_outcomes
from stream_app.connect.topics import WINBACK_DAYS
from stream_app.contracts.events import Alert, ChurnEvent, Outcome
from stream_app.contracts.lists import WinbackEntry
from stream_app.windows.book import ACQUAINTANCES, Entry, distinct

__all__ = ["HALF_LIFE_DAYS", "WARNED_DAYS", "winback_list", "with_contacts"]

HALF_LIFE_DAYS = 30
WARNED_DAYS = WINBACK_DAYS  # an alert this many days before the exit at most counts as a warning of it


def winback_list(churns: Iterable[ChurnEvent], alerts: Iterable[Alert], outcomes: Iterable[Outcome], as_of: date,
                 days: int, zone: ZoneInfo) -> list[WinbackEntry]:
    """Every voluntary leaver and revenue churner of the `days` days up to `as_of`, highest priority
    first; a customer once, at their latest churn."""
    first = as_of.toordinal() - days + 1
    latest: dict[str, ChurnEvent] = {}
    for c in churns:
        if first <= c.day <= as_of.toordinal() and (c.customer_id not in latest or c.day >= latest[c.customer_id].day):
            latest[c.customer_id] = c
    latest = {k: c for k, c in latest.items() if c.by_choice}  # their latest churn decides, an involuntary one too
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
