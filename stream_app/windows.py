"""Per-customer rolling usage windows: pure functions over a batch, no I/O.

A customer's state holds daily buckets for the last `N_DAYS` days and calendar-month
buckets for the last `N_MONTHS` months, by event time in the operator's zone. Counters are
integers in fixed units (tenths of a minute, 64 KiB of data, fen), so sums do not depend on
the order events are added in; bills count in months only; buckets roll off as a function
of the newest usage day. Together that makes the state independent of how topics
interleave and where batches split, which is what lets a replay after a crash give the
same state as an uninterrupted run.

The state's layout, and loading and dumping a batch of states, are in `state.py`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Sequence, Union
from zoneinfo import ZoneInfo

import numpy as np

from .events import Billing, Cdr, Outcome, Profile
from .state import (
    C, CONTACT_BITS, COUNTERS, D, DEDUP_RINGS, EXIT_KINDS, LAST_SEEN_KINDS, N_DAYS, N_MONTHS, VIP_TIERS, StateTail, Windows,
    contacts_estimate, month_index,
)

__all__ = ["Envelope", "ApplyResult", "apply"]

Event = Union[Cdr, Billing, Profile, Outcome]


class Envelope(NamedTuple):
    """A decoded event and where it came from."""

    topic: int  # index into Settings.topics.inputs()
    partition: int
    offset: int
    event: Event


@dataclass
class ApplyResult:
    applied: int = 0
    replayed: int = 0  # at or below the stored offset: already in the state
    duplicates: int = 0  # an event id this customer had just seen
    late: list[tuple[Envelope, str]] = field(default_factory=list)
    changed: set[int] = field(default_factory=set)  # rows whose state changed


class _Row(NamedTuple):
    cust: int
    day: int  # 0: the row counts in months only
    month: int
    counter: int
    value: int


def _local(ts: datetime, zone: ZoneInfo) -> tuple[int, int]:
    local = ts.astimezone(zone)
    return local.toordinal(), month_index(local.year, local.month)


def _tenths(seconds: int) -> int:
    return (seconds + 3) // 6


def _cdr_rows(e: Cdr) -> list[tuple[str, int]]:
    if e.kind == "sms":
        return [("sms_out" if e.direction == "MO" else "sms_in", 1)]
    if e.kind == "data":
        return [("data_mb", -(-e.data_bytes // 65536))]  # started 64 KiB blocks, as operators charge
    tenths = _tenths(e.duration_s)
    mo = e.direction == "MO"
    rows = [("out_min", tenths), ("out_calls", 1)] if mo else [("in_min", tenths), ("in_calls", 1)]
    if mo and e.peer_network == "off_net":
        rows += [("offnet_calls", 1), ("offnet_min", tenths)]
    if e.roaming:
        rows.append(("roam_min", tenths))
    if e.long_distance:
        rows.append(("ld_min", tenths))
    if e.forwarded:
        rows.append(("fwd_calls", 1))
    if e.customer_service:
        rows.append(("cs_calls", 1))
    if e.termination == "dropped":
        rows.append(("dropped_calls", 1))
    return rows


_BILLING_COUNTER = {"bill": "spend", "recharge": "topup", "arrears": "arrears"}


def _bill_month(e: Billing, default: int) -> int:
    # A bill belongs to the month it charges for, not the day it was issued.
    if e.period is None:
        return default
    year, month = e.period.split("-")
    return month_index(int(year), int(month))


@dataclass
class _Scratch:
    """Per-batch Python copies of the header fields `apply` reads per event (numpy scalars are slow)."""

    part: list[list[int]]
    offset: list[list[int]]
    newest: list[list[int]]
    dedup: list[list[int]]
    dedup_pos: list[int]
    last_seen: list[list[int]]

    @classmethod
    def of(cls, rec: np.ndarray) -> "_Scratch":
        return cls(rec["part"].tolist(), rec["offset"].tolist(), rec["newest"].tolist(), rec["dedup"].tolist(),
                   rec["dedup_pos"].tolist(), rec["last_seen"].tolist())

    def remember(self, cust: int, topic: int, digest: int) -> bool:
        """Add an event id to the topic's ring; False if the ring already holds it (a resend)."""
        start, size, shift, bits = DEDUP_RINGS[topic]
        ids = self.dedup[cust]
        if digest in ids[start:start + size]:
            return False
        mask = (1 << bits) - 1
        at = (self.dedup_pos[cust] >> shift) & mask
        ids[start + at] = digest
        self.dedup_pos[cust] = (self.dedup_pos[cust] & ~(mask << shift) & 0xFF) | (((at + 1) % size) << shift)
        return True

    def store(self, rec: np.ndarray) -> None:
        rec["part"], rec["offset"], rec["newest"] = self.part, self.offset, self.newest
        rec["dedup"], rec["dedup_pos"], rec["last_seen"] = self.dedup, self.dedup_pos, self.last_seen


def apply(w: Windows, batch: Sequence[tuple[int, Envelope]], zone: ZoneInfo, grace_days: int) -> ApplyResult:
    """Apply a batch of (row, envelope) pairs, in offset order, to the windows `w`.

    Skipped: events at or below a customer's stored offset (a replay) and event ids the
    customer has just seen (a producer's resend). Returned as late: events older than the
    topic's newest day for that customer minus `grace_days`.
    """
    result = ApplyResult()
    s = _Scratch.of(w.rec)
    rows: list[_Row] = []
    contacts: list[tuple[int, int, int]] = []
    usage_days: list[tuple[int, int]] = []  # (row, day) of every usage record, daily counters or not
    for cust, env in batch:
        t = env.topic
        if s.part[cust][t] == env.partition and env.offset <= s.offset[cust][t] and s.newest[cust][t]:
            result.replayed += 1
            continue
        s.part[cust][t], s.offset[cust][t] = env.partition, env.offset
        result.changed.add(cust)
        day, month = _local(env.event.ts, zone)
        newest = s.newest[cust][t]
        if newest and day < newest - grace_days:
            result.late.append((env, f"event day is {newest - day} days before the newest seen, grace is {grace_days}"))
            continue
        if not s.remember(cust, t, zlib.crc32(env.event.event_id.encode()) or 1):
            result.duplicates += 1
            continue
        s.newest[cust][t] = max(newest, day)
        result.applied += 1
        rows.extend(_rows_of(w, s, cust, env.event, day, month, contacts))
        if isinstance(env.event, Cdr):
            usage_days.append((cust, day))
    s.store(w.rec)
    _add(w, rows, contacts, usage_days)
    return result


def _bit_of(peer: str) -> int:
    # crc32 is linear, so its low bits repeat over sequential numbers; a multiplicative
    # (Fibonacci) hash spreads them over the bitmap.
    return ((zlib.crc32(peer.encode()) * 2654435761) & 0xFFFFFFFF) >> (32 - CONTACT_BITS.bit_length() + 1)


def _rows_of(w: Windows, s: _Scratch, cust: int, e: Event, day: int, month: int, contacts: list) -> list[_Row]:
    ts = int(e.ts.timestamp())
    rec = w.rec
    if isinstance(e, Cdr):
        kind = LAST_SEEN_KINDS.index(e.kind)
        s.last_seen[cust][kind] = max(s.last_seen[cust][kind], ts)
        if e.peer_id and e.kind != "data" and not e.customer_service:
            contacts.append((cust, month, _bit_of(e.peer_id)))
        return [_Row(cust, day if name in D else 0, month, C[name], v) for name, v in _cdr_rows(e)]
    if isinstance(e, Billing):
        s.last_seen[cust][3] = max(s.last_seen[cust][3], ts)
        if e.kind in ("disconnect", "port_out") and int(rec["exit_ts"][cust]) < ts:
            rec["exit_ts"][cust], rec["exit_reason"][cust] = ts, e.reason_code or 0
            rec["exit_kind"][cust] = EXIT_KINDS.index(e.kind)
        counter = _BILLING_COUNTER.get(e.kind)
        # Billing counts in months only: bills are monthly, and a billing topic that runs
        # ahead of the CDRs (a catch-up after downtime) must not roll the usage days forward.
        return [_Row(cust, 0, _bill_month(e, month), C[counter], round(e.amount * 100))] if counter else []
    if isinstance(e, Profile) and int(rec["profile_ts"][cust]) <= ts:
        rec["profile_ts"][cust], rec["activation"][cust] = ts, e.activation_date.toordinal()
        rec["vip"][cust], rec["prepaid"][cust] = VIP_TIERS.index(e.vip_tier), e.prepaid
        rec["age"][cust], rec["value_level"][cust] = e.age or 0, e.value_level or 0
        old = w.text[cust]
        w.text[cust] = StateTail(e.plan, e.region, e.segment, old.streaks if old else {})
    return []


def _add(w: Windows, rows: list[_Row], contacts: list[tuple[int, int, int]],
         usage_days: list[tuple[int, int]]) -> None:
    """Roll each touched customer's buckets forward, then scatter-add every row."""
    if not rows and not contacts:
        return
    cust, day, month, counter, value = (np.array(col, np.int64) for col in zip(*rows)) if rows else \
        (np.zeros(0, np.int64),) * 5
    new_day0 = w.rec["day0"].astype(np.int64)
    # Every usage record moves the day on, an SMS or data session too: the contact bitmaps
    # follow the day's month, and a record that did not move it could land in a month the
    # bitmaps do not have yet, or not, depending on what else its batch held.
    if usage_days:
        ud = np.array(usage_days, np.int64)
        np.maximum.at(new_day0, ud[:, 0], ud[:, 1])
    new_month0 = w.rec["month0"].astype(np.int64)
    np.maximum.at(new_month0, cust, month)
    _roll(w.daily, w.rec["day0"], new_day0)
    _roll(w.monthly, w.rec["month0"], new_month0)
    # Contact bitmaps follow the month of usage, not month0: a bill read ahead of the usage (a
    # catch-up) would otherwise roll the month still being used out of the two bitmaps.
    usage_month = _month_of_days(new_day0)
    _roll(w.rec["contacts"], _month_of_days(w.rec["day0"].astype(np.int64)), usage_month)
    w.rec["day0"], w.rec["month0"] = new_day0, new_month0
    d_age = new_day0[cust] - day
    keep = (day > 0) & (d_age < N_DAYS)
    daily_col = np.array([D.get(COUNTERS[c], -1) for c in range(len(COUNTERS))])[counter]
    np.add.at(w.daily, (cust[keep], d_age[keep], daily_col[keep]), value[keep])
    m_age = new_month0[cust] - month
    keep = (m_age >= 0) & (m_age < N_MONTHS)
    np.add.at(w.monthly, (cust[keep], m_age[keep], counter[keep]), value[keep])
    if contacts:
        _count_contacts(w, np.array(contacts, np.int64), usage_month, new_month0)


def _month_of_days(ordinals: np.ndarray) -> np.ndarray:
    """`month_index` of day ordinals (0 where there is no day yet)."""
    days = np.datetime64("0001-01-01", "D") + (np.maximum(ordinals, 1) - 1).astype("timedelta64[D]")
    months = days.astype("datetime64[M]").astype(np.int64) + month_index(1970, 1)
    return np.where(ordinals > 0, months, 0)


def _count_contacts(w: Windows, contacts: np.ndarray, usage_month: np.ndarray, month0: np.ndarray) -> None:
    cust, month, bit = contacts.T
    slot = usage_month[cust] - month
    keep = (slot >= 0) & (slot < 2)
    np.bitwise_or.at(w.rec["contacts"], (cust[keep], slot[keep], bit[keep] // 8), (1 << (bit[keep] % 8)).astype(np.uint8))
    touched = np.unique(cust)
    estimates = contacts_estimate(w.rec["contacts"][touched])
    for slot in (0, 1):  # where the bitmap's month sits among the monthly buckets
        idx = month0[touched] - usage_month[touched] + slot
        ok = (idx >= 0) & (idx < N_MONTHS)
        w.monthly[touched[ok], idx[ok], C["contacts"]] = estimates[ok, slot]


def _roll(buckets: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
    """Shift bucket rows so that index 0 is the newest period again; old rows fall off."""
    for i in np.nonzero(new != old)[0]:
        shift = int(new[i] - old[i]) if old[i] else buckets.shape[1]
        if shift >= buckets.shape[1]:
            buckets[i] = 0
        else:
            buckets[i, shift:] = buckets[i, :-shift].copy()
            buckets[i, :shift] = 0
