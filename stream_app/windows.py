"""Per-customer rolling usage windows: pure functions over a batch, no I/O.

A customer's state holds daily buckets for the last `N_DAYS` days and calendar-month
buckets for the last `N_MONTHS` months, one row of counters each, by event time in the
operator's zone. Adding is commutative and buckets roll off as a function of the newest
day seen, so the state does not depend on how topics interleave or where batches split;
that is what lets a replay after a crash give the same state as an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Sequence, Union
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from .events import Billing, Cdr, Outcome, Profile

__all__ = [
    "COUNTERS", "N_DAYS", "N_MONTHS", "C", "CustomerState", "Envelope", "Windows",
    "ApplyResult", "apply", "month_index", "encode_state", "decode_state",
]

COUNTERS: tuple[str, ...] = (
    "out_min", "out_calls", "in_min", "in_calls", "sms_out", "sms_in", "data_mb",
    "spend", "topup", "cs_calls", "dropped_calls", "offnet_calls", "offnet_min",
    "roam_min", "ld_min", "fwd_calls", "arrears",
)
#: Counter name -> column index.
C: dict[str, int] = {name: i for i, name in enumerate(COUNTERS)}
N_DAYS = 35
N_MONTHS = 7
N_TOPICS = 4
LAST_SEEN_KINDS = ("voice", "sms", "data", "billing")
STATE_VERSION = 1

Event = Union[Cdr, Billing, Profile, Outcome]


class Envelope(NamedTuple):
    """A decoded event and where it came from."""

    topic: int  # index into Settings.topics.inputs()
    partition: int
    offset: int
    event: Event


class ProfileState(msgspec.Struct, array_like=True, frozen=True):
    ts: int
    activation_day: int
    plan: str
    region: str
    vip_tier: str
    segment: str
    age: int
    value_level: int
    prepaid: bool


class ExitState(msgspec.Struct, array_like=True, frozen=True):
    ts: int
    kind: str
    reason_code: int


class CustomerState(msgspec.Struct, array_like=True):
    """What Redis stores per customer, msgpack-encoded (see `encode_state`)."""

    v: int = STATE_VERSION
    seq: int = 0
    day0: int = 0  # ordinal of the newest daily bucket; 0 before any usage
    month0: int = 0  # month_index of the newest monthly bucket
    daily: bytes = b""
    monthly: bytes = b""
    # Per input topic: partition, last applied offset, newest day seen (for lateness).
    offsets: list[int] = msgspec.field(default_factory=lambda: [-1, -1, 0] * N_TOPICS)
    last_seen: list[int] = msgspec.field(default_factory=lambda: [0] * len(LAST_SEEN_KINDS))
    profile: ProfileState | None = None
    exit: ExitState | None = None
    alerted_level: int = 0
    alerted_day: int = 0


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(CustomerState)


def encode_state(state: CustomerState) -> bytes:
    return _encoder.encode(state)


def decode_state(raw: bytes) -> CustomerState:
    return _decoder.decode(raw)


def month_index(year: int, month: int) -> int:
    """Months since year 0, so that consecutive months differ by one.

    >>> month_index(2026, 1) - month_index(2025, 12)
    1
    """
    return year * 12 + month - 1


@dataclass
class Windows:
    """The states of the customers in one batch, as arrays (row i = customer i)."""

    customers: list[str]
    states: list[CustomerState]
    daily: np.ndarray  # (n, N_DAYS, len(COUNTERS)) float32, index 0 = day0
    monthly: np.ndarray  # (n, N_MONTHS, len(COUNTERS)) float64, index 0 = month0
    day0: np.ndarray
    month0: np.ndarray

    @classmethod
    def load(cls, customers: list[str], raws: Sequence[CustomerState | None]) -> "Windows":
        n, k = len(customers), len(COUNTERS)
        daily = np.zeros((n, N_DAYS, k), np.float32)
        monthly = np.zeros((n, N_MONTHS, k), np.float64)
        states = [s if s is not None else CustomerState() for s in raws]
        for i, s in enumerate(states):
            if s.daily:
                daily[i] = np.frombuffer(s.daily, np.float32).reshape(N_DAYS, k)
            if s.monthly:
                monthly[i] = np.frombuffer(s.monthly, np.float64).reshape(N_MONTHS, k)
        day0 = np.array([s.day0 for s in states], np.int64)
        month0 = np.array([s.month0 for s in states], np.int64)
        return cls(customers, states, daily, monthly, day0, month0)

    def dump(self) -> list[CustomerState]:
        """States with the arrays written back and the write counter advanced."""
        for i, s in enumerate(self.states):
            s.daily = self.daily[i].tobytes()
            s.monthly = self.monthly[i].tobytes()
            s.day0, s.month0 = int(self.day0[i]), int(self.month0[i])
            s.seq += 1
        return self.states


@dataclass
class ApplyResult:
    applied: int = 0
    replayed: int = 0  # at or below the stored offset: already in the state
    late: list[tuple[Envelope, str]] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)  # rows whose state changed


def _local(ts: datetime, zone: ZoneInfo) -> tuple[int, int]:
    local = ts.astimezone(zone)
    return local.toordinal(), month_index(local.year, local.month)


def _cdr_rows(e: Cdr) -> list[tuple[int, float]]:
    if e.kind == "sms":
        return [(C["sms_out"] if e.direction == "MO" else C["sms_in"], 1.0)]
    if e.kind == "data":
        return [(C["data_mb"], e.data_bytes / 1e6)]
    minutes = e.duration_s / 60.0
    rows = [(C["out_min"], minutes), (C["out_calls"], 1.0)] if e.direction == "MO" else \
        [(C["in_min"], minutes), (C["in_calls"], 1.0)]
    if e.direction == "MO" and e.peer_network == "off_net":
        rows += [(C["offnet_calls"], 1.0), (C["offnet_min"], minutes)]
    if e.roaming:
        rows.append((C["roam_min"], minutes))
    if e.long_distance:
        rows.append((C["ld_min"], minutes))
    if e.forwarded:
        rows.append((C["fwd_calls"], 1.0))
    if e.customer_service:
        rows.append((C["cs_calls"], 1.0))
    if e.termination == "dropped":
        rows.append((C["dropped_calls"], 1.0))
    return rows


_BILLING_COUNTER = {"bill": "spend", "recharge": "topup", "arrears": "arrears"}


def _bill_month(e: Billing, default: int) -> int:
    # A bill belongs to the month it charges for, not the day it was issued.
    if e.period is None:
        return default
    year, month = e.period.split("-")
    return month_index(int(year), int(month))


class _Row(NamedTuple):
    cust: int
    day: int
    month: int
    counter: int
    value: float


def apply(w: Windows, batch: Sequence[tuple[int, Envelope]], zone: ZoneInfo, grace_days: int) -> ApplyResult:
    """Apply a batch of (row, envelope) pairs, in offset order, to the windows `w`.

    Events at or below a customer's stored offset are skipped; events older than the
    topic's newest day for that customer minus `grace_days` are returned as late.
    """
    result = ApplyResult()
    rows: list[_Row] = []
    for cust, env in batch:
        state = w.states[cust]
        base = env.topic * 3
        part, last, newest = state.offsets[base:base + 3]
        if part == env.partition and env.offset <= last:
            result.replayed += 1
            continue
        state.offsets[base], state.offsets[base + 1] = env.partition, env.offset
        result.changed.add(cust)
        day, month = _local(env.event.ts, zone)
        if newest and day < newest - grace_days:
            result.late.append((env, f"event day is {newest - day} days before the newest seen, grace is {grace_days}"))
            continue
        state.offsets[base + 2] = max(newest, day)
        result.applied += 1
        rows.extend(_rows_of(cust, env.event, day, month, state))
    _add(w, rows)
    return result


def _rows_of(cust: int, e: Event, day: int, month: int, state: CustomerState) -> list[_Row]:
    ts = int(e.ts.timestamp())
    if isinstance(e, Cdr):
        kind = LAST_SEEN_KINDS.index(e.kind)
        state.last_seen[kind] = max(state.last_seen[kind], ts)
        return [_Row(cust, day, month, c, v) for c, v in _cdr_rows(e)]
    if isinstance(e, Billing):
        state.last_seen[3] = max(state.last_seen[3], ts)
        if e.kind in ("disconnect", "port_out") and (state.exit is None or state.exit.ts < ts):
            state.exit = ExitState(ts, e.kind, e.reason_code or 0)
        counter = _BILLING_COUNTER.get(e.kind)
        if counter is None:
            return []
        # Billing counts in months only: bills are monthly, and a billing topic that runs
        # ahead of the CDRs (a catch-up after downtime) must not roll the usage days forward.
        return [_Row(cust, 0, _bill_month(e, month), C[counter], e.amount)]
    if isinstance(e, Profile) and (state.profile is None or state.profile.ts <= ts):
        state.profile = ProfileState(
            ts, e.activation_date.toordinal(), e.plan, e.region, e.vip_tier, e.segment,
            e.age or 0, e.value_level or 0, e.prepaid,
        )
    return []


def _add(w: Windows, rows: list[_Row]) -> None:
    """Roll each touched customer's buckets forward, then scatter-add every row."""
    if not rows:
        return
    cust, day, month, counter, value = (np.array(col) for col in zip(*rows))
    new_day0 = w.day0.copy()
    np.maximum.at(new_day0, cust, day)  # day 0: a row for the monthly buckets only
    new_month0 = w.month0.copy()
    np.maximum.at(new_month0, cust, month)
    _roll(w.daily, w.day0, new_day0)
    _roll(w.monthly, w.month0, new_month0)
    w.day0, w.month0 = new_day0, new_month0
    d_age = new_day0[cust] - day
    keep = (day > 0) & (d_age < N_DAYS)
    np.add.at(w.daily, (cust[keep], d_age[keep], counter[keep]), value[keep])
    m_age = new_month0[cust] - month
    keep = (m_age >= 0) & (m_age < N_MONTHS)
    np.add.at(w.monthly, (cust[keep], m_age[keep], counter[keep]), value[keep])


def _roll(buckets: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
    """Shift bucket rows so that index 0 is the newest period again; old rows fall off."""
    for i in np.nonzero(new != old)[0]:
        shift = int(new[i] - old[i]) if old[i] else buckets.shape[1]
        if shift >= buckets.shape[1]:
            buckets[i] = 0
        else:
            buckets[i, shift:] = buckets[i, :-shift].copy()
            buckets[i, :shift] = 0
