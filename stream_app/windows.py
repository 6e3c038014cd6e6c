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

import itertools
import zlib
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Sequence, Union
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from .events import Billing, Cdr, Outcome, Profile
from .rule_eval import LEVELS
from .state import (
    C, CONTACT_BITS, COUNTERS, D, DEDUP_RINGS, EPOCH_ORDINAL, EXIT_KINDS, LAST_SEEN_KINDS, N_DAYS, N_MONTHS, VIP_TIERS, StateTail, Windows,
    contacts_estimate, month_index,
)

__all__ = ["Envelope", "ApplyResult", "apply"]

Event = Union[Cdr, Billing, Profile, Outcome]


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """A decoded event and where it came from. A struct, not a NamedTuple: one is made per
    event, and a NamedTuple's constructor is a Python function call."""

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


class _LocalClock:
    """Unix seconds to (local day ordinal, month index) in a zone, cached by the hour.

    `astimezone` per event was a tenth of the cost of a batch. A zone's offset changes at
    most once in an hour, so an hour whose two ends share an offset is cached, and the rare
    hour with a change is converted event by event.
    """

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._offsets: dict[int, int | None] = {}
        self._months: dict[int, int] = {}

    def _offset(self, ts: int) -> int:
        return int(datetime.fromtimestamp(ts, self.zone).utcoffset().total_seconds())  # type: ignore[union-attr]

    def __call__(self, ts: int) -> tuple[int, int]:
        hour = ts // 3600
        offset = self._offsets.get(hour, -1)
        if offset == -1:
            if len(self._offsets) > 100_000:  # a century of hours: only a replay of years gets here
                self._offsets.clear(), self._months.clear()
            first, last = self._offset(hour * 3600), self._offset(hour * 3600 + 3599)
            offset = self._offsets[hour] = first if first == last else None
        if offset is None:
            offset = self._offset(ts)
        day = (ts + offset) // 86400 + EPOCH_ORDINAL
        month = self._months.get(day)
        if month is None:
            d = date.fromordinal(day)
            month = self._months[day] = month_index(d.year, d.month)
        return day, month


@lru_cache(maxsize=8)
def _clock(zone: ZoneInfo) -> _LocalClock:
    return _LocalClock(zone)


# How much a CDR adds to a counter: one, its tenths of a minute, or its started 64 KiB blocks.
_ONE, _TENTHS, _BLOCKS = 0, 1, 2


def _cdr_counters(kind: str, mo: bool, off_net: bool, roaming: bool, long_distance: bool, forwarded: bool,
                  customer_service: bool, dropped: bool) -> list[tuple[str, int]]:
    """The counters a CDR with these traits adds to, and by how much."""
    if kind == "sms":
        return [("sms_out" if mo else "sms_in", _ONE)]
    if kind == "data":
        return [("data_mb", _BLOCKS)]  # started 64 KiB blocks, as operators charge
    rows = [("out_min", _TENTHS), ("out_calls", _ONE)] if mo else [("in_min", _TENTHS), ("in_calls", _ONE)]
    if mo and off_net:
        rows += [("offnet_calls", _ONE), ("offnet_min", _TENTHS)]
    if roaming:
        rows.append(("roam_min", _TENTHS))
    if long_distance:
        rows.append(("ld_min", _TENTHS))
    if forwarded:
        rows.append(("fwd_calls", _ONE))
    if customer_service:
        rows.append(("cs_calls", _ONE))
    if dropped:
        rows.append(("dropped_calls", _ONE))
    return rows


def _cdr_kinds() -> tuple[dict[tuple, int], np.ndarray, np.ndarray]:
    """Every combination of a CDR's traits, numbered, with (kinds, 9) tables of the counters
    it adds to (-1: none) and how much: a batch's CDRs then become counter rows in numpy."""
    combos = list(itertools.product(("voice", "sms", "data"), *[(False, True)] * 7))
    width = max(len(_cdr_counters(*k)) for k in combos)
    counters = np.full((len(combos), width), -1, np.int64)
    units = np.zeros((len(combos), width), np.int64)
    for i, combo in enumerate(combos):
        for j, (name, unit) in enumerate(_cdr_counters(*combo)):
            counters[i, j], units[i, j] = C[name], unit
    return {k: i for i, k in enumerate(combos)}, counters, units


_CDR_KIND, _CDR_COUNTERS, _CDR_UNITS = _cdr_kinds()
_DAILY_COLUMN = np.array([D.get(name, -1) for name in COUNTERS], np.int64)


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


@dataclass
class _Rows:
    """What a batch adds, gathered event by event and added in numpy at the end."""

    # row, day, month, kind (its traits' number), tenths of a minute, 64 KiB blocks
    cdrs: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    others: list[tuple[int, int, int, int]] = field(default_factory=list)  # row, month, counter, value (months only)
    contacts: list[tuple[int, int, int]] = field(default_factory=list)  # row, month, crc32 of the number


def apply(w: Windows, batch: Sequence[tuple[int, Envelope]], zone: ZoneInfo, grace_days: int) -> ApplyResult:
    """Apply a batch of (row, envelope) pairs, in offset order, to the windows `w`.

    Skipped: events at or below a customer's stored offset (a replay) and event ids the
    customer has just seen (a producer's resend). Returned as late: events older than the
    topic's newest day for that customer minus `grace_days`.
    """
    result = ApplyResult()
    s = _Scratch.of(w.rec)
    local = _clock(zone)
    rows = _Rows()
    # The loop runs once per event: locals instead of attribute lookups, and the CDR's rows
    # inline, roughly halve its cost.
    part, offset, newest_day, last_seen, remember = s.part, s.offset, s.newest, s.last_seen, s.remember
    changed, cdrs, contacts = result.changed, rows.cdrs, rows.contacts
    crc32, kind_index, cdr_kind = zlib.crc32, _KIND_INDEX, _CDR_KIND
    for cust, env in batch:
        t = env.topic
        if part[cust][t] == env.partition and env.offset <= offset[cust][t] and newest_day[cust][t]:
            result.replayed += 1
            continue
        part[cust][t], offset[cust][t] = env.partition, env.offset
        changed.add(cust)
        e = env.event
        ts = int(e.ts.timestamp())
        day, month = local(ts)
        newest = newest_day[cust][t]
        if newest and day < newest - grace_days:
            result.late.append((env, f"event day is {newest - day} days before the newest seen, grace is {grace_days}"))
            continue
        if not remember(cust, t, crc32(e.event_id.encode()) or 1):
            result.duplicates += 1
            continue
        if day > newest:
            newest_day[cust][t] = day
        result.applied += 1
        if not isinstance(e, Cdr):
            _add_other(w, s, rows, cust, e, ts, month)
            continue
        seen = last_seen[cust]
        kind = kind_index[e.kind]
        if seen[kind] < ts:
            seen[kind] = ts
        if e.peer_id and kind != 2 and not e.customer_service:  # 2: data
            contacts.append((cust, month, crc32(e.peer_id.encode())))
        traits = (e.kind, e.direction == "MO", e.peer_network == "off_net", e.roaming, e.long_distance, e.forwarded,
                  e.customer_service, e.termination == "dropped")
        cdrs.append((cust, day, month, cdr_kind[traits], (e.duration_s + 3) // 6, -(-e.data_bytes // 65536)))
    s.store(w.rec)
    _add(w, rows)
    return result


def _bit_of(crc: np.ndarray) -> np.ndarray:
    """A contact's bit in the bitmap from the crc32 of its number."""
    # crc32 is linear, so its low bits repeat over sequential numbers; a multiplicative
    # (Fibonacci) hash spreads them over the bitmap.
    spread = (crc.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return (spread >> np.uint64(32 - CONTACT_BITS.bit_length() + 1)).astype(np.int64)


_KIND_INDEX = {kind: i for i, kind in enumerate(LAST_SEEN_KINDS)}
TOP_LEVEL = len(LEVELS) - 1


def _add_other(w: Windows, s: _Scratch, rows: _Rows, cust: int, e: Event, ts: int, month: int) -> None:
    rec = w.rec
    if isinstance(e, Billing):
        s.last_seen[cust][3] = max(s.last_seen[cust][3], ts)
        if e.kind in ("disconnect", "port_out") and int(rec["exit_ts"][cust]) < ts:
            rec["exit_ts"][cust], rec["exit_reason"][cust] = ts, e.reason_code or 0
            rec["exit_kind"][cust] = EXIT_KINDS.index(e.kind)
        counter = _BILLING_COUNTER.get(e.kind)
        # Billing counts in months only: bills are monthly, and a billing topic that runs
        # ahead of the CDRs (a catch-up after downtime) must not roll the usage days forward.
        if counter:
            rows.others.append((cust, _bill_month(e, month), C[counter], round(e.amount * 100)))
    elif isinstance(e, Profile) and int(rec["profile_ts"][cust]) <= ts:
        rec["profile_ts"][cust], rec["activation"][cust] = ts, e.activation_date.toordinal()
        rec["vip"][cust], rec["prepaid"][cust] = VIP_TIERS.index(e.vip_tier), e.prepaid
        rec["age"][cust], rec["value_level"][cust] = e.age or 0, e.value_level or 0
        # Only the profile's fields: a plan change must not drop the streaks or cohort memberships.
        w.text[cust] = msgspec.structs.replace(w.text[cust] or StateTail(), plan=e.plan, region=e.region,
                                               segment=e.segment)
    elif isinstance(e, Outcome):
        _close_the_loop(w, cust, e, ts)


def _close_the_loop(w: Windows, cust: int, e: Outcome, ts: int) -> None:
    """Keep the latest outcome; an accepted offer also raises the alert cooldown to the top
    level, so the customer is not warned again, not even on an escalation, within the cooldown
    of the alert that was answered (its day stays the alert's: event time, not the agent's)."""
    tail = w.text[cust] or StateTail()
    if ts < tail.outcome_ts:
        return  # an older outcome read late: the newer one stands
    w.text[cust] = msgspec.structs.replace(tail, outcome=e.result, outcome_ts=ts)
    if e.result == "accepted" and w.rec["alerted_day"][cust]:
        w.rec["alerted_level"][cust] = TOP_LEVEL


def _counter_rows(cdrs: np.ndarray, other_rows: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, ...]:
    """(row, day, month, counter, value) arrays of every counter a batch adds to, from its
    CDRs (`_Rows.cdrs` as an array) and its other rows; day 0: the counter counts in months only."""
    kinds = cdrs[:, 3]
    event, slot = np.nonzero(_CDR_COUNTERS[kinds] >= 0)
    counter = _CDR_COUNTERS[kinds[event], slot]
    amounts = np.stack([np.ones(len(cdrs), np.int64), cdrs[:, 4], cdrs[:, 5]], axis=1)
    value = amounts[event, _CDR_UNITS[kinds[event], slot]]
    day = np.where(_DAILY_COLUMN[counter] >= 0, cdrs[event, 1], 0)
    others = np.array(other_rows, np.int64).reshape(-1, 4)
    return (np.concatenate([cdrs[event, 0], others[:, 0]]), np.concatenate([day, np.zeros(len(others), np.int64)]),
            np.concatenate([cdrs[event, 2], others[:, 1]]), np.concatenate([counter, others[:, 2]]),
            np.concatenate([value, others[:, 3]]))


def _add(w: Windows, rows: _Rows) -> None:
    """Roll each touched customer's buckets forward, then scatter-add every row."""
    if not rows.cdrs and not rows.others:
        return
    cdrs = np.array(rows.cdrs, np.int64).reshape(-1, 6)
    cdr_rows, cdr_days = cdrs[:, 0], cdrs[:, 1]
    cust, day, month, counter, value = _counter_rows(cdrs, rows.others)
    new_day0 = w.rec["day0"].astype(np.int64)
    # Every usage record moves the day on, an SMS or data session too: the contact bitmaps
    # follow the day's month, and a record that did not move it could land in a month the
    # bitmaps do not have yet, or not, depending on what else its batch held.
    if rows.cdrs:
        np.maximum.at(new_day0, cdr_rows, cdr_days)
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
    daily_col = _DAILY_COLUMN[counter]
    keep = (day > 0) & (d_age < N_DAYS) & (daily_col >= 0)
    np.add.at(w.daily, (cust[keep], d_age[keep], daily_col[keep]), value[keep])
    m_age = new_month0[cust] - month
    keep = (m_age >= 0) & (m_age < N_MONTHS)
    np.add.at(w.monthly, (cust[keep], m_age[keep], counter[keep]), value[keep])
    if rows.contacts:
        contacts = np.array(rows.contacts, np.int64)
        contacts[:, 2] = _bit_of(contacts[:, 2])
        _count_contacts(w, contacts, usage_month, new_month0)


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
