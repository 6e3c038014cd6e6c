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
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Callable, Iterator
from zoneinfo import ZoneInfo

import msgspec

from stream_app.contracts.attributes import AttributeRefused, admit
from stream_app.contracts.events import CUSTOMER_ID_PATTERN
from stream_app.offline.mapping import MONEY, LabelRule, Mapping, MappingError, load_mapping, next_month

__all__ = ["Mapping", "MappingError", "MonthlyRow", "load_mapping", "read_rows", "monthly_events", "next_month"]

RECORDS_PER_MONTH = 8  # when the data has totals but no counts: this many records a month, spread evenly
JUDGED_SPAN = 29  # the days of a month that hold its records (see the module's docstring)
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
    is an error naming it and the file."""
    with data.open(newline="") as f:
        reader = csv.DictReader(f)
        header = set(reader.fieldnames or [])
        records = list(reader)
    _check_columns(data, mapping, header)
    ids = [mapping.id_prefix + (r[mapping.id_column] if mapping.id_column else f"row{k:07d}")
           for k, r in enumerate(records, 1)]
    _check_ids(data, mapping, ids)
    if mapping.layout == "wide":
        return [_wide_row(mapping, cid, r) for cid, r in zip(ids, records)]
    by_customer: dict[str, dict[str, dict[str, str]]] = {}
    for cid, r in zip(ids, records):
        by_customer.setdefault(cid, {})[r[mapping.month_column or ""]] = r
    return [_long_row(mapping, cid, rows) for cid, rows in by_customer.items()]


def _check_columns(data: Path, mapping: Mapping, header: set[str]) -> None:
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


def _check_ids(data: Path, mapping: Mapping, ids: list[str]) -> None:
    """Every id must be one the worker accepts: otherwise each of its records would go to dead
    letter and the replay would judge customers it never saw."""
    bad = [i for i in ids if not re.match(CUSTOMER_ID_PATTERN, i)]
    if bad:
        shown = ", ".join(repr(i) for i in bad[:3])
        raise MappingError(f"{data}: {len(bad):,} of {len(ids):,} customer ids (column {mapping.id_column!r}) are not "
                           f"5 to 64 letters, digits, _ or -, e.g. {shown}; an `id_prefix` in the mapping "
                           f"lengthens short ones")


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
        days = (next_month(start) - start).days
        per_day: list[list[tuple[str, bytes, bytes]]] = [[] for _ in range(days)]
        for r in rows:
            if month in r.months:
                for day, record in _customer_month(r.customer_id, month, r.months[month], start, days, zone):
                    per_day[day].append(record)
        for day in per_day:
            yield from day
        if month_done is not None:
            month_done(month)
    end = next_month(datetime.strptime(months[-1], "%Y-%m").date())
    for r in rows:
        if r.churned and exits:
            yield "billing", r.customer_id.encode(), msgspec.json.encode({
                "event_id": f"mr-x-{r.customer_id}", "customer_id": r.customer_id, "kind": label.exit_kind,
                "reason_code": label.exit_reason_code, "voluntary": label.exit_reason_code < 300,
                "ts": datetime.combine(end + timedelta(days=14), time(12), zone).isoformat()})


def _customer_month(customer: str, month: str, c: dict[str, float], start: date, days: int,
                    zone: ZoneInfo) -> Iterator[tuple[int, tuple[str, bytes, bytes]]]:
    """(day index, record) of one customer-month: totals split into records spread over the month."""
    seq = 0
    span = min(days, JUDGED_SPAN)

    def at(k: int, n: int) -> int:
        """The day of record k of n of a counter: the middle of its share of the judged span."""
        return days - span + (2 * k + 1) * span // (2 * n)

    def record(day: int, topic: str, body: dict) -> tuple[int, tuple[str, bytes, bytes]]:
        nonlocal seq
        seq += 1
        ts = datetime.combine(start + timedelta(days=day), time(8 + seq % 12, seq % 60), zone)
        return day, (topic, customer.encode(), msgspec.json.encode({
            "event_id": f"mr-{customer}-{month}-{seq}", "customer_id": customer, "ts": ts.isoformat(), **body}))

    contacts = max(1, int(c.get("contacts", 0)))
    out_seconds = round(c.get("out_min", 0) * 60)
    offnet_seconds = min(out_seconds, round(c.get("offnet_min", 0) * 60))
    dropped = round(c.get("dropped_calls", 0))
    chunks = _split(out_seconds, _records(c, "out_calls"))
    for k, secs in enumerate(chunks):
        off = k < _calls_for(offnet_seconds, out_seconds, len(chunks))
        yield record(at(k, len(chunks)), "cdr", {
            "kind": "voice", "direction": "MO", "duration_s": secs, "peer_id": f"p{k % contacts}",
            "peer_network": "off_net" if off else "on_net", "termination": "dropped" if k < dropped else "normal"})
    in_seconds = round(c.get("in_min", 0) * 60)
    chunks = _split(in_seconds, _records(c, "in_calls"))
    for k, secs in enumerate(chunks):
        yield record(at(k, len(chunks)), "cdr", {"kind": "voice", "direction": "MT", "duration_s": secs})
    sms = round(c.get("sms_out", 0))
    for k in range(sms):
        yield record(at(k, sms), "cdr", {"kind": "sms", "direction": "MO"})
    cs = round(c.get("cs_calls", 0))
    for k in range(cs):
        yield record(at(k, cs), "cdr", {"kind": "voice", "direction": "MO", "duration_s": 0, "customer_service": True})
    data_bytes = round(c.get("data_mb", 0) * 1024 * 1024)
    sessions = RECORDS_PER_MONTH
    chunks = _split(data_bytes, sessions, most=1 << 40)
    for k, size in enumerate(chunks):
        yield record(at(k, len(chunks)), "cdr", {"kind": "data", "data_bytes": size})
    if c.get("topup"):
        yield record(at(0, 1), "billing", {"kind": "recharge", "amount": round(c["topup"], 2)})
    if c.get("spend"):  # the month's bill arrives at the end of it, so it counts in that month
        yield record(days - 1, "billing", {"kind": "bill", "amount": round(c["spend"], 2), "period": month})


def _records(c: dict[str, float], count: str) -> int:
    """How many records carry a month's minutes: the table's count, rounded (a monthly average
    can be under one) and at least one; `RECORDS_PER_MONTH` where the table has no count."""
    return max(1, round(c[count])) if c.get(count) else RECORDS_PER_MONTH


def _calls_for(part: int, whole: int, calls: int) -> int:
    """How many of `calls` carry `part` of `whole` seconds (off-net calls)."""
    return round(calls * part / whole) if whole else 0


def _split(total: int, parts: int, most: int = 86_400) -> list[int]:
    """`total` in `parts` near-equal integers that sum to it exactly, more parts if one would
    exceed `most` (a call lasts at most a day)."""
    if parts <= 0 or total <= 0:
        return []
    parts = max(parts, math.ceil(total / most))
    base, extra = divmod(total, parts)
    return [base + (1 if k < extra else 0) for k in range(parts)]
