"""One month of a monthly table as records in time order, planned as arrays and encoded as sent.

A customer-month becomes records spread over the month (see monthly_data.py): its outgoing calls,
incoming calls, SMS, customer-service calls, data sessions, a recharge and a bill, numbered in that
order. The month is replayed day by day, so every customer's records of a day come before any of
the next. Built and held until the month's last customer was done, the records took about 6.6 KB a
customer at 100,000 customers. Here the month is planned as four numbers a record (kind, customer,
index, day: 11 bytes held, about 36 at the peak while they are sorted), sorted by day, and each
record is encoded only as it is yielded, from the customer's totals.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Iterator
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

__all__ = ["RECORDS_PER_MONTH", "JUDGED_SPAN", "month_records"]

RECORDS_PER_MONTH = 8  # when the data has totals but no counts: this many records a month, spread evenly
JUDGED_SPAN = 29  # the days of a month that hold its records (see monthly_data.py)
LONGEST_CALL_S = 86_400  # a call lasts at most a day: a longer total takes more records
LARGEST_SESSION_B = 1 << 40
KINDS = ("out", "in", "sms", "cs", "data", "recharge", "bill")  # the order a customer-month's records are numbered in
_CHUNK = 65_536  # records turned into Python values at a time
_LARGEST_TOTAL = 1e12  # a counter's monthly total at most: data in bytes stays within int64

Record = tuple[str, bytes, bytes]


def month_records(customers: list[str], counters: list[dict[str, float]], month: str, start: date, days: int,
                  zone: ZoneInfo) -> Iterator[Record]:
    """(topic, key, value) of every record of the month of `start` (`days` long), day by day and,
    within a day, customer by customer in the order given; `counters[i]` are customer i's totals."""
    counts = _counts(counters)
    plan = _plan(counts["n"], days)
    # Per customer, as Python numbers: what each record is computed from as it is encoded.
    first, numbered = {}, np.zeros(len(customers), np.int64)  # the records numbered before each kind's
    for kind in KINDS:
        first[kind] = numbered.tolist()
        numbered += counts["n"][kind]
    split = {kind: [a.tolist() for a in np.divmod(total, np.maximum(counts["n"][kind], 1))]
             for kind, total in counts["total"].items()}
    offnet, dropped, contacts = (counts[name].astype(np.int64).tolist() for name in ("offnet_calls", "dropped",
                                                                                     "contacts"))
    times = _Times(start, zone)
    keys = [x.encode() for x in customers]
    for lo in range(0, len(plan["day"]), _CHUNK):
        part = [plan[name][lo:lo + _CHUNK].tolist() for name in ("kind", "who", "k", "day")]
        for kind, who, k, day in zip(*part):
            name = KINDS[kind]
            seq = first[name][who] + k + 1
            value = 0
            if name in split:  # near-equal integers that sum to the total exactly
                base, extra = split[name]
                value = base[who] + (k < extra[who])
            topic, body = _body(name, value, k < offnet[who], k < dropped[who], k % contacts[who],
                                counters[who], month)
            customer = customers[who]
            yield topic, keys[who], msgspec.json.encode({
                "event_id": f"mr-{customer}-{month}-{seq}", "customer_id": customer, "ts": times.at(day, seq),
                **body})


def _records(count: np.ndarray) -> np.ndarray:
    """How many records carry a month's minutes: the table's count, rounded (a monthly average can
    be under one) and at least one; `RECORDS_PER_MONTH` where the table has no count."""
    return np.where(count != 0, np.maximum(1, np.round(count)), RECORDS_PER_MONTH).astype(np.int64)


def _parts(total: np.ndarray, parts: np.ndarray | int, most: int) -> np.ndarray:
    """Into how many records `total` is split: none without a total, else `parts`, more if one
    record would exceed `most`."""
    return np.where(total > 0, np.maximum(parts, -(-total // most)), 0)


def _counts(counters: list[dict[str, float]]) -> dict:
    """Per customer: the totals the records split and how many records each kind takes."""

    def c(name: str) -> np.ndarray:
        """A counter, one value a customer: 0 where the table has none or no number, within
        [0, 10^12] (read_rows gives no other, but rows can be made by hand)."""
        values = np.array([x.get(name, 0.0) for x in counters], np.float64)
        return np.clip(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), 0.0, _LARGEST_TOTAL)

    out_s = np.round(c("out_min") * 60).astype(np.int64)
    in_s = np.round(c("in_min") * 60).astype(np.int64)
    data_b = np.round(c("data_mb") * 1024 * 1024).astype(np.int64)
    n = {"out": _parts(out_s, _records(c("out_calls")), LONGEST_CALL_S),
         "in": _parts(in_s, _records(c("in_calls")), LONGEST_CALL_S),
         "sms": np.round(c("sms_out")).astype(np.int64), "cs": np.round(c("cs_calls")).astype(np.int64),
         "data": _parts(data_b, _records(c("data_sessions")), LARGEST_SESSION_B),
         "recharge": (c("topup") != 0).astype(np.int64), "bill": (c("spend") != 0).astype(np.int64)}
    offnet_s = np.minimum(out_s, np.round(c("offnet_min") * 60).astype(np.int64))
    # The off-net calls: the off-net share of the minutes, in calls (the first ones).
    offnet_calls = np.round(n["out"] * offnet_s / np.maximum(out_s, 1)) * (out_s > 0)
    return {"n": n, "total": {"out": out_s, "in": in_s, "data": data_b}, "offnet_calls": offnet_calls,
            "dropped": np.round(c("dropped_calls")), "contacts": np.maximum(1, np.trunc(c("contacts")))}


def _plan(n: dict[str, np.ndarray], days: int) -> dict[str, np.ndarray]:
    """One entry a record, sorted by day, then customer, then number: its kind (index in `KINDS`),
    customer (`who`), index `k` among its kind's records and day: 11 bytes a record."""
    span = min(days, JUDGED_SPAN)
    parts: list[dict[str, np.ndarray]] = []
    for kind_index, kind in enumerate(KINDS):
        who = np.repeat(np.arange(len(n[kind]), dtype=np.int32), n[kind])
        k = np.arange(len(who)) - np.repeat(np.cumsum(n[kind]) - n[kind], n[kind])
        # Record k of n falls in the middle of its share of the judged span; the bill on the last day.
        day = np.full(len(who), days - 1) if kind == "bill" else days - span + (2 * k + 1) * span // (2 * n[kind][who])
        parts.append({"kind": np.full(len(who), kind_index, np.int8), "who": who, "k": k.astype(np.int32),
                      "day": day.astype(np.int16)})
    plan = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    del parts
    order = np.lexsort((plan["k"], plan["kind"], plan["who"], plan["day"]))
    for name in plan:
        plan[name] = plan[name][order]
    return plan


def _body(kind: str, value: int, offnet: bool, dropped: bool, peer: int, c: dict[str, float],
          month: str) -> tuple[str, dict]:
    """A record's topic and what it says beyond its id, customer and time."""
    if kind == "out":  # the first calls are the off-net ones, and the dropped ones
        return "cdr", {"kind": "voice", "direction": "MO", "duration_s": value, "peer_id": f"p{peer}",
                       "peer_network": "off_net" if offnet else "on_net",
                       "termination": "dropped" if dropped else "normal"}
    if kind == "in":
        return "cdr", {"kind": "voice", "direction": "MT", "duration_s": value}
    if kind == "sms":
        return "cdr", {"kind": "sms", "direction": "MO"}
    if kind == "cs":
        return "cdr", {"kind": "voice", "direction": "MO", "duration_s": 0, "customer_service": True}
    if kind == "data":
        return "cdr", {"kind": "data", "data_bytes": value}
    if kind == "recharge":
        return "billing", {"kind": "recharge", "amount": round(c["topup"], 2)}
    # The month's bill arrives at the end of it, so it counts in that month.
    return "billing", {"kind": "bill", "amount": round(c["spend"], 2), "period": month}


class _Times:
    """A record's time: its day, at an hour and minute its number spreads over the day. Only 60
    distinct times a day, so each is formatted once."""

    def __init__(self, start: date, zone: ZoneInfo) -> None:
        self.start, self.zone = start, zone
        self.formatted: dict[tuple[int, int], str] = {}

    def at(self, day: int, seq: int) -> str:
        key = (day, seq % 60)
        text = self.formatted.get(key)
        if text is None:
            when = datetime.combine(self.start + timedelta(days=day), time(8 + seq % 12, seq % 60), self.zone)
            text = self.formatted[key] = when.isoformat()
        return text
