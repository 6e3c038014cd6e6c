"""Per-customer rolling usage windows: pure functions over a batch, no I/O.

A customer's state holds daily buckets for the last `N_DAYS` days and calendar-month
buckets for the last `N_MONTHS` months, by event time in the operator's zone. Counters are
integers in fixed units (tenths of a minute, 64 KiB of data, fen), so sums do not depend on
the order events are added in; bills count in months only; buckets roll off as a function
of the newest usage day. Together that makes the state independent of how topics
interleave and where batches split, which is what lets a replay after a crash give the
same state as an uninterrupted run.

The state is one fixed-size record (`STATE`) followed by a short msgpack tail for the
profile's text fields, so a whole batch decodes and encodes with a few numpy calls.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Sequence, Union
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from .events import Billing, Cdr, Outcome, Profile

__all__ = [
    "COUNTERS", "DAILY", "SCALE", "N_DAYS", "N_MONTHS", "STATE", "STATE_VERSION", "Envelope", "Windows",
    "ApplyResult", "StateTail", "rule_key", "SEQ_OFFSET", "apply", "month_index", "contacts_estimate", "usage_fingerprint",
]

N_DAYS = 35
N_MONTHS = 7  # the current month and six complete ones
N_TOPICS = 4
DEDUP = 16  # event-id hashes remembered per customer: about a day of an average customer's events
CONTACT_BITS = 128  # linear-counting bitmap per month (about 7% error at 100 contacts)
LAST_SEEN_KINDS = ("voice", "sms", "data", "billing")
VIP_TIERS = ("none", "silver", "gold", "diamond")
STATE_VERSION = 2

# Counters in months, in column order, grouped by storage width.
_M_COUNTS = ("out_calls", "in_calls", "sms_out", "sms_in", "cs_calls", "dropped_calls", "offnet_calls",
             "fwd_calls", "contacts")
_M_MINUTES = ("out_min", "in_min", "offnet_min")
_M_RARE_MINUTES = ("roam_min", "ld_min")  # 16 bits: saturate at 6,553 minutes a month
_M_MONEY = ("spend", "topup", "arrears")
COUNTERS: tuple[str, ...] = _M_COUNTS + _M_MINUTES + _M_RARE_MINUTES + ("data_mb",) + _M_MONEY
# The subset also kept by day: what daily and rolling features need.
_D_COUNTS = ("out_calls", "in_calls", "cs_calls", "dropped_calls")
_D_MINUTES = ("out_min", "offnet_min")
DAILY: tuple[str, ...] = _D_COUNTS + _D_MINUTES
C = {name: i for i, name in enumerate(COUNTERS)}
D = {name: i for i, name in enumerate(DAILY)}
#: Stored units per unit of the counter's name: 10 per minute, 16 per MB, 100 per yuan.
SCALE = {name: 10.0 for name in _M_MINUTES + _M_RARE_MINUTES} | {"data_mb": 16.0} | {name: 100.0 for name in _M_MONEY}

STATE = np.dtype([
    ("version", "u1"), ("flags", "u1"), ("seq", "<u8"),
    ("day0", "<i4"), ("month0", "<i4"),
    ("part", "<i4", (N_TOPICS,)), ("offset", "<i8", (N_TOPICS,)), ("newest", "<i4", (N_TOPICS,)),
    ("last_seen", "<u4", (len(LAST_SEEN_KINDS),)),
    ("activation", "<i4"), ("profile_ts", "<u4"), ("vip", "u1"), ("prepaid", "u1"), ("age", "u1"),
    ("value_level", "u1"),
    ("exit_ts", "<u4"), ("exit_reason", "<u2"), ("exit_kind", "u1"),
    ("alerted_level", "u1"), ("alerted_day", "<i4"),
    ("contacts", "u1", (2, CONTACT_BITS // 8)),
    ("dedup", "<u4", (DEDUP,)), ("dedup_pos", "u1"),
    ("d_counts", "u1", (N_DAYS, len(_D_COUNTS))), ("d_minutes", "<u2", (N_DAYS, len(_D_MINUTES))),
    ("m_counts", "<u2", (N_MONTHS, len(_M_COUNTS))), ("m_minutes", "<u4", (N_MONTHS, len(_M_MINUTES))),
    ("m_rare_minutes", "<u2", (N_MONTHS, len(_M_RARE_MINUTES))),
    ("m_data", "<u4", (N_MONTHS,)), ("m_money", "<u4", (N_MONTHS, len(_M_MONEY))),
])
SEQ_OFFSET = STATE.fields["seq"][1]  # where the write counter sits, for the store's compare-and-set
_D_BLOCKS = (("d_counts", _D_COUNTS), ("d_minutes", _D_MINUTES))
_M_BLOCKS = (("m_counts", _M_COUNTS), ("m_minutes", _M_MINUTES), ("m_rare_minutes", _M_RARE_MINUTES),
             ("m_data", ("data_mb",)), ("m_money", _M_MONEY))
_EXIT_KINDS = ("", "disconnect", "port_out")

Event = Union[Cdr, Billing, Profile, Outcome]


class Envelope(NamedTuple):
    """A decoded event and where it came from."""

    topic: int  # index into Settings.topics.inputs()
    partition: int
    offset: int
    event: Event


class StateTail(msgspec.Struct, array_like=True, frozen=True):
    """What does not fit a fixed record, kept after it: the profile's text fields, and the
    streaks of rules with `for` (rule key -> (evaluations in a row, period of the last))."""

    plan: str = ""
    region: str = ""
    segment: str = ""
    streaks: dict[int, tuple[int, int]] = {}


_tail_encoder = msgspec.msgpack.Encoder()
_tail_decoder = msgspec.msgpack.Decoder(StateTail)


def rule_key(rule_id: str) -> int:
    """How a rule is named in the state's streaks: short, and stable across reloads."""
    return zlib.crc32(rule_id.encode())


def month_index(year: int, month: int) -> int:
    """Months since year 0, so that consecutive months differ by one.

    >>> month_index(2026, 1) - month_index(2025, 12)
    1
    """
    return year * 12 + month - 1


def contacts_estimate(bitmaps: np.ndarray) -> np.ndarray:
    """Distinct contacts from linear-counting bitmaps (..., CONTACT_BITS // 8) uint8."""
    ones = np.unpackbits(bitmaps, axis=-1).sum(axis=-1)
    zeros = np.maximum(CONTACT_BITS - ones, 1)  # saturates near m ln m
    return np.round(-CONTACT_BITS * np.log(zeros / CONTACT_BITS)).astype(np.int64)


@dataclass
class Windows:
    """The states of the customers in one batch (row i = customer i)."""

    customers: list[str]
    rec: np.ndarray  # (n,) STATE records
    daily: np.ndarray  # (n, N_DAYS, len(DAILY)) int64, index 0 = day0
    monthly: np.ndarray  # (n, N_MONTHS, len(COUNTERS)) int64, index 0 = month0
    text: list[StateTail | None]

    @property
    def day0(self) -> np.ndarray:
        return self.rec["day0"]

    @property
    def month0(self) -> np.ndarray:
        return self.rec["month0"]

    @classmethod
    def load(cls, customers: list[str], raws: Sequence[bytes | None]) -> "Windows":
        empty = bytes(STATE.itemsize)
        fixed = b"".join(r[:STATE.itemsize] if r is not None else empty for r in raws)
        rec = np.frombuffer(fixed, STATE).copy()
        rec["version"] = STATE_VERSION
        text = [_tail_decoder.decode(r[STATE.itemsize:]) if r is not None and len(r) > STATE.itemsize else None
                for r in raws]
        daily = np.concatenate([rec[f].reshape(len(rec), N_DAYS, -1) for f, _ in _D_BLOCKS], axis=2).astype(np.int64)
        monthly = np.concatenate([rec[f].reshape(len(rec), N_MONTHS, -1) for f, _ in _M_BLOCKS], axis=2)
        return cls(customers, rec, daily, monthly.astype(np.int64), text)

    def streaks(self, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """(count, period) arrays (customers, rules) of the given rules' streaks; period -1: none."""
        count = np.zeros((len(self.customers), len(keys)), np.int64)
        period = np.full((len(self.customers), len(keys)), -1, np.int64)
        for i, tail in enumerate(self.text):
            if tail is None or not tail.streaks:
                continue
            for j, key in enumerate(keys):
                if key in tail.streaks:
                    count[i, j], period[i, j] = tail.streaks[key]
        return count, period

    def set_streaks(self, keys: Sequence[int], count: np.ndarray, period: np.ndarray, rows: Sequence[int]) -> None:
        """Keep the running streaks of `rows`; a broken one is dropped (tails stay small)."""
        for i in rows:
            old = self.text[i] or StateTail()
            running = {key: (int(count[i, j]), int(period[i, j])) for j, key in enumerate(keys) if count[i, j] > 0}
            if running or old.streaks:
                self.text[i] = msgspec.structs.replace(old, streaks=running)

    def dump(self, rows: Sequence[int]) -> list[tuple[int, bytes]]:
        """(expected write counter, new state) for each row, counters saturated to their widths."""
        start = 0
        for f, names in _D_BLOCKS:
            self.rec[f] = _saturate(self.daily[:, :, start:start + len(names)], self.rec.dtype[f].base).reshape(
                self.rec[f].shape)
            start += len(names)
        start = 0
        for f, names in _M_BLOCKS:
            self.rec[f] = _saturate(self.monthly[:, :, start:start + len(names)], self.rec.dtype[f].base).reshape(
                self.rec[f].shape)
            start += len(names)
        out = []
        for i in rows:
            expected = int(self.rec["seq"][i])
            self.rec["seq"][i] = expected + 1
            tail = _tail_encoder.encode(self.text[i]) if self.text[i] is not None else b""
            out.append((expected, self.rec[i:i + 1].tobytes() + tail))
        return out


def _saturate(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.clip(values, 0, np.iinfo(dtype).max).astype(dtype)


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

    @classmethod
    def of(cls, rec: np.ndarray) -> "_Scratch":
        return cls(rec["part"].tolist(), rec["offset"].tolist(), rec["newest"].tolist(), rec["dedup"].tolist(),
                   rec["dedup_pos"].tolist())

    def store(self, rec: np.ndarray) -> None:
        rec["part"], rec["offset"], rec["newest"] = self.part, self.offset, self.newest
        rec["dedup"], rec["dedup_pos"] = self.dedup, self.dedup_pos


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
        digest = zlib.crc32(env.event.event_id.encode()) or 1
        if digest in s.dedup[cust]:
            result.duplicates += 1
            continue
        s.dedup[cust][s.dedup_pos[cust]] = digest
        s.dedup_pos[cust] = (s.dedup_pos[cust] + 1) % DEDUP
        s.newest[cust][t] = max(newest, day)
        result.applied += 1
        rows.extend(_rows_of(w, cust, env.event, day, month, contacts))
    s.store(w.rec)
    _add(w, rows, contacts)
    return result


def _bit_of(peer: str) -> int:
    # crc32 is linear, so its low bits repeat over sequential numbers; a multiplicative
    # (Fibonacci) hash spreads them over the bitmap.
    return ((zlib.crc32(peer.encode()) * 2654435761) & 0xFFFFFFFF) >> (32 - CONTACT_BITS.bit_length() + 1)


def usage_fingerprint(raw: bytes) -> bytes:
    """The state without its write counter and evaluation bookkeeping (alert cooldown, rule
    streaks), which depend on how often and when it was written and evaluated: equal
    fingerprints mean the same events were counted."""
    rec = np.frombuffer(raw[:STATE.itemsize], STATE).copy()
    rec["seq"], rec["alerted_level"], rec["alerted_day"] = 0, 0, 0
    tail = _tail_decoder.decode(raw[STATE.itemsize:]) if len(raw) > STATE.itemsize else StateTail()
    return rec.tobytes() + _tail_encoder.encode(msgspec.structs.replace(tail, streaks={}))


def _rows_of(w: Windows, cust: int, e: Event, day: int, month: int, contacts: list) -> list[_Row]:
    ts = int(e.ts.timestamp())
    rec = w.rec
    if isinstance(e, Cdr):
        kind = LAST_SEEN_KINDS.index(e.kind)
        rec["last_seen"][cust, kind] = max(int(rec["last_seen"][cust, kind]), ts)
        if e.peer_id and e.kind != "data" and not e.customer_service:
            contacts.append((cust, month, _bit_of(e.peer_id)))
        return [_Row(cust, day if name in D else 0, month, C[name], v) for name, v in _cdr_rows(e)]
    if isinstance(e, Billing):
        rec["last_seen"][cust, 3] = max(int(rec["last_seen"][cust, 3]), ts)
        if e.kind in ("disconnect", "port_out") and int(rec["exit_ts"][cust]) < ts:
            rec["exit_ts"][cust], rec["exit_reason"][cust] = ts, e.reason_code or 0
            rec["exit_kind"][cust] = _EXIT_KINDS.index(e.kind)
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


def _add(w: Windows, rows: list[_Row], contacts: list[tuple[int, int, int]]) -> None:
    """Roll each touched customer's buckets forward, then scatter-add every row."""
    if not rows and not contacts:
        return
    cust, day, month, counter, value = (np.array(col, np.int64) for col in zip(*rows)) if rows else \
        (np.zeros(0, np.int64),) * 5
    new_day0 = w.rec["day0"].astype(np.int64)
    np.maximum.at(new_day0, cust, day)
    new_month0 = w.rec["month0"].astype(np.int64)
    np.maximum.at(new_month0, cust, month)
    _roll(w.daily, w.rec["day0"], new_day0)
    _roll(w.monthly, w.rec["month0"], new_month0)
    _roll(w.rec["contacts"], w.rec["month0"], new_month0)
    w.rec["day0"], w.rec["month0"] = new_day0, new_month0
    d_age = new_day0[cust] - day
    keep = (day > 0) & (d_age < N_DAYS)
    daily_col = np.array([D.get(COUNTERS[c], -1) for c in range(len(COUNTERS))])[counter]
    np.add.at(w.daily, (cust[keep], d_age[keep], daily_col[keep]), value[keep])
    m_age = new_month0[cust] - month
    keep = (m_age >= 0) & (m_age < N_MONTHS)
    np.add.at(w.monthly, (cust[keep], m_age[keep], counter[keep]), value[keep])
    if contacts:
        _count_contacts(w, np.array(contacts, np.int64), new_month0)


def _count_contacts(w: Windows, contacts: np.ndarray, month0: np.ndarray) -> None:
    cust, month, bit = contacts.T
    slot = month0[cust] - month
    keep = (slot >= 0) & (slot < 2)
    np.bitwise_or.at(w.rec["contacts"], (cust[keep], slot[keep], bit[keep] // 8), (1 << (bit[keep] % 8)).astype(np.uint8))
    touched = np.unique(cust)
    w.monthly[touched, :2, C["contacts"]] = contacts_estimate(w.rec["contacts"][touched])


def _roll(buckets: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
    """Shift bucket rows so that index 0 is the newest period again; old rows fall off."""
    for i in np.nonzero(new != old)[0]:
        shift = int(new[i] - old[i]) if old[i] else buckets.shape[1]
        if shift >= buckets.shape[1]:
            buckets[i] = 0
        else:
            buckets[i, shift:] = buckets[i, :-shift].copy()
            buckets[i, :shift] = 0
