"""Real operators' monthly aggregates replayed as the events churnwatch consumes.

Public churn data comes as one row per customer with a column per counter and month (or one
row per customer and month). A mapping file says which column is the id, which months there
are and how their columns are named, how each column maps onto our counters, the currency's
scale, and how to read the churn label. Each customer-month becomes CDR-equivalent records
(voice, SMS, data; off-net, dropped and customer-service calls; distinct contacts) spread
over the month, a bill and a recharge; a churner's line is disconnected in the label month.
Minutes, data and money in Redis then equal the table's totals (to the second, the byte and
the fen), which is what the replay test checks. Where the data has totals but no counts, the
totals are split into `RECORDS_PER_MONTH` records (so call counts say nothing then, and the
replay stays fast); where it has counts, each one is a record (a monthly average is rounded,
and a total always has a record to carry it). Records fall in the month's last `JUDGED_SPAN`
days, each in the middle of its share: a customer is judged on the first day after the last
month, whose 30-day windows (that day and the 29 before) then hold the whole month.
"""

from __future__ import annotations

import contextlib
import csv
import math
import re
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

import msgspec

from stream_app.contracts.attributes import AttributeRefused, admit
from stream_app.contracts.events import is_customer_id
from stream_app.offline.mapping import MONEY, LabelRule, Mapping, MappingError, load_mapping, next_month
from stream_app.offline.monthly_records import month_records

__all__ = ["Mapping", "MappingError", "MonthlyRow", "load_mapping", "read_rows", "monthly_events", "next_month"]

DEFAULT_TENURE_DAYS = 365  # a customer's age on the network before the first month, where the data has none


class MonthlyRow(msgspec.Struct, frozen=True):
    """One customer's counters per replayed month, and their label."""

    customer_id: str
    months: dict[str, dict[str, float]]  # YYYY-MM -> counter -> total
    churned: bool
    tenure_days: int = DEFAULT_TENURE_DAYS  # with the operator before the first month
    attributes: dict[str, float | str] = {}  # the mapping's attributes the row has a value for


def read_rows(data: Path, mapping: Mapping) -> list[MonthlyRow]:
    """Every customer of `data` through `mapping`; a column the mapping names but the file lacks
    is an error naming it and the file. The table is read a line at a time: a wide row becomes
    its customer's counters at once, and a long layout keeps only the columns the mapping names
    until a customer's months are all in (a 226-column line is about 20 KB in Python)."""
    with data.open(newline="") as f:
        reader = csv.DictReader(f)
        wanted = _check_columns(data, mapping, set(reader.fieldnames or []))
        ids = _Ids(data, mapping)
        if mapping.layout == "wide":
            rows = [_wide_row(mapping, ids.next(r), r) for r in _whole_lines(data, reader)]
        else:
            by_customer: dict[str, dict[str, dict[str, str]]] = {}
            for r in _whole_lines(data, reader):
                kept = {c: r[c] for c in wanted}
                by_customer.setdefault(ids.next(r), {})[r[mapping.month_column or ""]] = kept
            rows = [_long_row(mapping, cid, months) for cid, months in by_customer.items()]
    ids.check()
    return rows


def _whole_lines(data: Path, reader: csv.DictReader) -> Iterator[dict[str, str]]:
    """The table's lines; one with fewer cells than the header (cut short, or a stray line) stops
    the read, named, rather than be read with cells missing."""
    for r in reader:
        if None in r.values():
            cells = sum(v is not None for v in r.values())
            raise MappingError(f"{data}:{reader.line_num}: {cells} cells where the header has "
                               f"{len(reader.fieldnames or [])}; every line needs them all")
        yield r


def _check_columns(data: Path, mapping: Mapping, header: set[str]) -> set[str]:
    """The columns the mapping reads, all of which `data` must have."""
    wanted = {c for c in (mapping.id_column, mapping.month_column) if c is not None}
    months = list(mapping.months) if mapping.layout == "wide" else [""]
    for sources in mapping.counters.values():
        wanted |= {mapping.column(s.column, m) for s in sources for m in months}
    if mapping.label.column:
        wanted.add(mapping.label.column)
    if mapping.tenure:
        wanted.add(mapping.tenure.column)
    wanted |= {a.column for a in mapping.attributes.values()}
    for name in mapping.label.no_usage_in:
        wanted.add(mapping.column(name, mapping.label.month or ""))
    missing = sorted(wanted - header)
    if missing:
        raise MappingError(f"{data}: no column(s) {', '.join(repr(m) for m in missing)} named by the mapping")
    return wanted


class _Ids:
    """Each line's customer id, checked as it is read. Every id must be one the worker accepts:
    otherwise each of its records would go to dead letter and the replay would judge customers
    it never saw."""

    def __init__(self, data: Path, mapping: Mapping) -> None:
        self.data, self.mapping = data, mapping
        self.lines = 0
        self.bad: list[str] = []

    def next(self, record: dict[str, str]) -> str:
        self.lines += 1
        m = self.mapping
        cid = m.id_prefix + (record[m.id_column] if m.id_column else f"row{self.lines:07d}")
        if not is_customer_id(cid):
            self.bad.append(cid)
        return cid

    def check(self) -> None:
        if self.bad:
            shown = ", ".join(repr(i) for i in self.bad[:3])
            raise MappingError(f"{self.data}: {len(self.bad):,} of {self.lines:,} customer ids (column "
                               f"{self.mapping.id_column!r}) are not 5 to 64 letters, digits, _ or -, e.g. {shown}; "
                               f"an `id_prefix` in the mapping lengthens short ones")


def _tenure_days(mapping: Mapping, record: dict[str, str]) -> int:
    """Days with the operator before the first replayed month."""
    tenure = mapping.tenure
    if tenure is None:
        return DEFAULT_TENURE_DAYS
    days = _number(record.get(tenure.column)) * (30.44 if tenure.unit == "months" else 1)
    return max(0, round(days - (mapping.replayed_days if tenure.at == "end" else 0)))


def _number(text: str | None) -> float:
    try:
        value = float(text) if text not in (None, "") else 0.0
    except ValueError:
        return 0.0
    return value if math.isfinite(value) else 0.0


def _counters(mapping: Mapping, record: dict[str, str], month: str) -> dict[str, float]:
    out = {}
    for counter, sources in mapping.counters.items():
        total = sum(_number(record.get(mapping.column(s.column, month))) * s.scale for s in sources)
        if counter in MONEY:
            total /= mapping.currency_per_yuan
        out[counter] = max(0.0, total)  # refunds and corrections can make a month negative
    return out


def _churned(mapping: Mapping, record: dict[str, str]) -> bool:
    label = mapping.label
    if label.column:
        return record.get(label.column, "").strip() == label.churned_value
    return all(_number(record.get(mapping.column(c, label.month or ""))) == 0 for c in label.no_usage_in)


def _wide_row(mapping: Mapping, customer: str, record: dict[str, str]) -> MonthlyRow:
    months = {calendar: _counters(mapping, record, suffix) for suffix, calendar in mapping.months.items()}
    return MonthlyRow(customer, months, _churned(mapping, record), _tenure_days(mapping, record),
                      _attributes(mapping, record))


def _attributes(mapping: Mapping, record: dict[str, str]) -> dict[str, float | str]:
    """The row's value of each mapped attribute. A cell the service would refuse (a word for a
    number, a date not YYYY-MM-DD, over 64 characters) is no value, as an empty one is: refused,
    it would send the customer's whole profile to dead letter."""
    out: dict[str, float | str] = {}
    for name, a in mapping.attributes.items():
        text = (record.get(a.column) or "").strip()
        value = text if a.kind != "number" or not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text) \
            else float(text)
        with contextlib.suppress(AttributeRefused):
            if text and len(text) <= 64 and admit({name: value}, {name: a}):
                out[name] = value
    return out


def _long_row(mapping: Mapping, customer: str, rows: dict[str, dict[str, str]]) -> MonthlyRow:
    months = {calendar: _counters(mapping, rows[name], "") for name, calendar in mapping.months.items()
              if name in rows}
    last = rows[max(rows)]
    return MonthlyRow(customer, months, _churned(mapping, last), _tenure_days(mapping, last),
                      _attributes(mapping, last))


def monthly_events(rows: list[MonthlyRow], label: LabelRule, zone: ZoneInfo, exits: bool = True,
                   month_done: Callable[[str], None] | None = None) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value) records in time order: profiles first, then each month day by day, then
    (with `exits`) the churners' exits in the month after the last. One month's records are held at
    a time; `month_done` hears of each month once its records are all out."""
    months = sorted({m for r in rows for m in r.months})
    first = datetime.strptime(months[0], "%Y-%m").date()
    for r in rows:
        yield "customers", r.customer_id.encode(), msgspec.json.encode({
            "event_id": f"mr-p-{r.customer_id}", "customer_id": r.customer_id,
            "ts": datetime.combine(first, time.min, zone).isoformat(),
            "activation_date": str(first - timedelta(r.tenure_days)),
            "plan": "replayed", "region": "unknown", "attributes": r.attributes})
    for month in months:
        start = datetime.strptime(month, "%Y-%m").date()
        held = [r for r in rows if month in r.months]
        yield from month_records([r.customer_id for r in held], [r.months[month] for r in held], month, start,
                                 (next_month(start) - start).days, zone)
        if month_done is not None:
            month_done(month)
    end = next_month(datetime.strptime(months[-1], "%Y-%m").date())
    for r in rows:
        if r.churned and exits:
            yield "billing", r.customer_id.encode(), msgspec.json.encode({
                "event_id": f"mr-x-{r.customer_id}", "customer_id": r.customer_id, "kind": label.exit_kind,
                "reason_code": label.exit_reason_code, "voluntary": label.exit_reason_code < 300,
                "ts": datetime.combine(end + timedelta(days=14), time(12), zone).isoformat()})
