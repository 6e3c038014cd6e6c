"""The competitors' valuable customers (the lifecycle's acquisition stage): the numbers on other
networks that our base talks to most widely, per competitor, with what they likely spend and
customers of ours who know them, for a member-get-member offer.

It is built from the off-net book the workers keep (windows/book.py): per number, the calls and
minutes with our base and a sketch of the customers of ours on them, over the months read.
Ranked, within each competitor, by how many distinct customers of ours talk to them, then by
minutes: someone a whole circle of our customers calls is someone with a circle, and breadth is
what people who spend more have; minutes alone are as often one talkative friend of one customer.
The value estimate turns their minutes with us into a month's spend: their minutes per 30 days,
divided by the share of their calls that are with our base (`CHURNWATCH_COMPETITOR_SHARE`, about
our market share), at the yuan per minute our own base paid last month.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Iterable, Sequence

import msgspec
import numpy as np

from stream_app.contracts.calendar import first_day, month_label, month_of_day
from stream_app.contracts.lists import CompetitorEntry
from stream_app.features.derive import month_counter
from stream_app.windows.book import ACQUAINTANCES, Entry, distinct, merge
from stream_app.windows.state import Windows

__all__ = ["Base", "OurBase", "competitor_list", "competitors_in", "contacts_of", "months_read", "still_ours"]


@dataclass
class Base:
    """What the list needs of our own base, from every customer's state."""

    ours: set[str] = field(default_factory=set)  # customers still with us: known, not gone
    spend: float = 0.0  # last complete month, yuan
    minutes: float = 0.0  # of calls, both ways, that month

    @property
    def yuan_per_minute(self) -> float:
        return self.spend / self.minutes if self.minutes else 0.0


class OurBase:
    """Reads our base chunk by chunk (`windows/scan.read_states`) into a `Base`."""

    def __init__(self, day: date) -> None:
        self.day, self.base = day, Base()

    def add(self, customers: list[str], raws: Sequence[bytes | None]) -> None:
        w = Windows.load(customers, raws)
        day = np.full(len(customers), self.day.toordinal(), np.int64)
        ours = still_ours(w)
        self.base.ours.update(customers[i] for i in np.nonzero(ours)[0])
        spend = month_counter(w, day, "spend", 1) + month_counter(w, day, "topup", 1)  # arpu_m1's, alone
        self.base.spend += float(spend[ours].sum())
        minutes = month_counter(w, day, "out_min", 1) + month_counter(w, day, "in_min", 1)
        self.base.minutes += float(minutes[ours].sum())


def still_ours(w: Windows) -> np.ndarray:
    """Which customers of `w` are still ours: known (a profile, not erased) and not gone."""
    return (w.rec["exit_ts"] == 0) & np.array([t is not None for t in w.text], bool)


def months_read(day: date, months: int) -> list[str]:
    """The months a list on `day` reads: `day`'s and the `months - 1` before it."""
    now = month_of_day(day.toordinal())
    return [month_label(now - k) for k in range(months - 1, -1, -1)]


def competitor_list(book: dict[str, Entry], base: Base, day: date, months: int, share: float, top: int,
                    competitor: str | None = None) -> list[CompetitorEntry]:
    """The list on `day` from the book of `months_read(day, months)`: per competitor (or only
    `competitor`), its `top` numbers, widest first. A number the CDRs put with several competitors
    (a switch that leaves the name out, a port between two) is one line, under the name most of its
    calls gave. A customer of ours who left is no longer ours: their number, now a competitor's, is
    listed like any other."""
    first = first_day(month_of_day(day.toordinal()) - months + 1)
    per_30 = 30 / max(1, day.toordinal() - first + 1)
    by_competitor: dict[str, list[CompetitorEntry]] = {}
    for number, (who, e) in _by_number(book).items():
        if (competitor is not None and who != competitor) or number in base.ours:
            continue
        monthly = e.minutes * per_30
        by_competitor.setdefault(who, []).append(CompetitorEntry(
            rank=1, day=day.isoformat(), since=date.fromordinal(first).isoformat(), competitor=who, number=number,
            customers_of_ours=distinct(e.sketch), calls=e.calls,
            minutes=round(e.minutes, 1), monthly_minutes=round(monthly, 1),
            value_estimate=round(monthly / share * base.yuan_per_minute, 2),
            known_by=[c for c in e.acquaintances if c in base.ours][:ACQUAINTANCES]))
    out = []
    for who in sorted(by_competitor):
        order = sorted(by_competitor[who], key=lambda c: (-c.customers_of_ours, -c.minutes, c.number))[:top]
        out += [msgspec.structs.replace(c, rank=rank) for rank, c in enumerate(order, 1)]
    return out


def _by_number(book: dict[str, Entry]) -> dict[str, tuple[str, Entry]]:
    """Number -> (its competitor: the name most of its calls gave, a named one before none; its
    records merged)."""
    named: dict[str, list[tuple[str, Entry]]] = {}
    for name, e in book.items():
        who, number = name.split("|", 1)
        named.setdefault(number, []).append((who, e))
    return {number: (max(records, key=lambda r: (r[0] != "", r[1].calls, r[0]))[0], merge(e for _, e in records))
            for number, records in named.items()}


def competitors_in(book: dict[str, Entry]) -> list[str]:
    """The competitors' names the book's numbers are listed under."""
    return sorted({who for who, _ in _by_number(book).values()})


def contacts_of(book: dict[str, Entry], numbers: Iterable[str]) -> dict[str, Entry]:
    """The book's record of each of `numbers` (whatever competitor the calls named)."""
    wanted = set(numbers)
    return {number: e for number, (_, e) in _by_number(book).items() if number in wanted}
