"""Per-customer rolling usage windows: pure functions over a batch, no I/O.

A customer's state holds daily buckets for the last `N_DAYS` days and calendar-month
buckets for the last `N_MONTHS` months, by event time in the operator's zone. Counters are
integers in fixed units (tenths of a minute, 64 KiB of data, fen), so sums do not depend on
the order events are added in; bills count in months only; buckets roll off as a function
of the newest usage day. Together that makes the state independent of how topics
interleave and where batches split, which is what lets a replay after a crash give the
same state as an uninterrupted run. The state's layout, and loading and dumping a batch of
states, are in `state.py`.
"""

from __future__ import annotations

import itertools
import logging
import zlib
from dataclasses import dataclass, field
from typing import Sequence
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from stream_app.contracts.attributes import stored
from stream_app.contracts.calendar import local_clock, month_of_label, months_of_days
from stream_app.contracts.events import LEVELS, Billing, Cdr, Outcome, Profile
from stream_app.contracts.inputs import Input
from stream_app.errors import InvalidEvent
from stream_app.ingest.admission import Envelope, Erasure, Event
from stream_app.windows import columns
from stream_app.windows.id_memory import digest_of
from stream_app.windows.lifecycle import Moves, before_return, first_profile, forget_before, record_move
from stream_app.windows.scratch import KINDS, Scratch
from stream_app.windows.state import (
    CONTACT_BITS,
    COUNTERS,
    LAST_SEEN_KINDS,
    N_DAYS,
    N_MONTHS,
    N_TOPICS,
    VIP_TIERS,
    C,
    D,
    StateTail,
    Windows,
    contacts_estimate,
)

__all__ = ["Envelope", "ApplyResult", "apply", "erase_first", "roll_buckets"]

log = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    applied: int = 0
    replayed: int = 0  # at or below the stored offset: already in the state
    duplicates: int = 0  # an event id this customer had just seen
    refused: list[tuple[Envelope, InvalidEvent]] = field(default_factory=list)  # late, or raised while applied
    changed: set[int] = field(default_factory=set)  # rows whose state changed
    # Calls and messages with an off-net peer (windows/book.py), in no particular order: row, month,
    # competitor, peer id, tenths
    offnet: list[tuple[int, int, str, str, int]] = field(default_factory=list)
    moves: Moves = field(default_factory=Moves)  # exits and returns (windows/lifecycle.py)


# How much a CDR adds to a counter: one, its tenths of a minute, or its started 64 KiB blocks.
_ONE, _TENTHS, _BLOCKS = 0, 1, 2


def _cdr_counters(kind: str, mo: bool, off_net: bool, roaming: bool, long_distance: bool, forwarded: bool,
                  customer_service: bool, dropped: bool) -> list[tuple[str, int]]:
    """The counters a CDR with these traits adds to, and by how much."""
    if kind == "sms":
        return [("sms_out" if mo else "sms_in", _ONE)]
    if kind == "data":
        # Started 64 KiB blocks, as operators charge; and the session, which follows the customer's
        # use of the line the way calls and messages do, whatever its volume.
        return [("data_mb", _BLOCKS), ("data_sessions", _ONE)]
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
    return default if e.period is None else month_of_label(e.period)


@dataclass
class _Rows:
    """What a batch adds, gathered event by event and added in numpy at the end."""

    # row, day, month, kind (its traits' number), tenths of a minute, 64 KiB blocks
    cdrs: list[tuple[int, int, int, int, int, int]] = field(default_factory=list)
    others: list[tuple[int, int, int, int]] = field(default_factory=list)  # row, month, counter, value (months only)
    contacts: list[tuple[int, int, int]] = field(default_factory=list)  # row, month, crc32 of the number
    cdr_blocks: list[np.ndarray] = field(default_factory=list)  # more of `cdrs` and `contacts`, as arrays
    contact_blocks: list[np.ndarray] = field(default_factory=list)
    offnet: list[tuple[int, int, str, str, int]] = field(default_factory=list)  # see ApplyResult.offnet


def apply(w: Windows, batch: Sequence[tuple[int, Envelope]], zone: ZoneInfo, grace_days: int) -> ApplyResult:
    """Apply a batch of (row, envelope) pairs, in offset order, to the windows `w`.

    Skipped: events at or below a customer's stored offset (a replay) and event ids the
    customer has seen within the grace window (a producer's resend). Refused: events older than the topic's
    newest day for that customer minus `grace_days` (late), usage and bills from before the customer
    came back (windows/lifecycle.py), and any event whose applying raised; the rest of the batch goes on.
    Most CDRs go column-wise (windows/columns.py), the rest one by one, with the same effect."""
    try:
        planned = columns.plan(w, batch, zone, grace_days)
    except Exception as exc:  # noqa: BLE001 - the states are untouched: every event goes one by one instead
        log.warning("a batch's CDRs raised %s column-wise; applied one by one", type(exc).__name__, exc_info=True)
        planned = columns.Planned([], list(range(len(batch))))
    result, rows = ApplyResult(), _Rows()
    s = Scratch.of(w)
    refused_at = _one_by_one(w, s, rows, result, batch, planned.rest, zone, grace_days)
    s.store(w, grace_days)
    planned.commit(w)
    _merge(result, rows, planned, batch, refused_at)
    _add(w, rows)
    forget_before(w, result.moves, local_clock(zone))
    result.offnet = rows.offnet
    return result


def _merge(result: ApplyResult, rows: _Rows, planned: columns.Planned, batch: Sequence[tuple[int, Envelope]],
           refused_at: list[int]) -> None:
    """Add what the column-wise events did to what the others did (refused at `refused_at` of the batch)."""
    result.applied += planned.applied
    result.replayed += planned.replayed
    result.duplicates += planned.duplicates
    result.changed.update(planned.changed)
    if planned.refused:  # in batch order, as the dead letters are sent
        merged = sorted([*zip(refused_at, result.refused), *((k, (batch[k][1], why)) for k, why in planned.refused)],
                        key=lambda refused: refused[0])
        result.refused = [refused for _, refused in merged]
    rows.cdr_blocks.append(planned.cdrs)
    rows.contact_blocks.append(planned.contacts)
    rows.offnet += planned.offnet


def _one_by_one(w: Windows, s: Scratch, rows: _Rows, result: ApplyResult, batch: Sequence[tuple[int, Envelope]],
                positions: list[int], zone: ZoneInfo, grace_days: int) -> list[int]:
    """Apply the events at `positions` of the batch one at a time (what `columns` does not take);
    returns the positions of those refused."""
    local = local_clock(zone)
    # The loop runs once per event: locals instead of attribute lookups, and the CDR's rows
    # inline, roughly halve its cost. (A `try` costs nothing in Python 3.11 until it catches.)
    part, offset, newest_day, last_seen, remember, back = s.part, s.offset, s.newest, s.last_seen, s.remember, s.back
    changed, cdrs, contacts, offnet = result.changed, rows.cdrs, rows.contacts, rows.offnet
    crc32, digest, kind_index, cdr_kind = zlib.crc32, digest_of, _KIND_INDEX, _CDR_KIND
    refused_at = []
    for k in positions:
        cust, env = batch[k]
        try:
            t = env.topic
            at = cust * N_TOPICS + t
            if part[at] == env.partition and env.offset <= offset[at] and newest_day[at]:
                result.replayed += 1
                continue
            part[at], offset[at] = env.partition, env.offset
            changed.add(cust)
            e = env.event
            if isinstance(e, Erasure):
                _erase(w, s, rows, cust, t)
                result.moves.drop(cust)
                continue
            ts = env.ts
            day, month = local(ts)
            newest = newest_day[at]
            if newest and day < newest - grace_days:
                why = f"event day is {newest - day} days before the newest seen, grace is {grace_days}"
                result.refused.append((env, InvalidEvent("late", "ts", why)))
                refused_at.append(k)
                continue
            if ts < back[cust] and t <= Input.BILLING:  # usage or bills of the life before the customer came back
                result.refused.append((env, before_return(back[cust])))
                refused_at.append(k)
                continue
            if not remember(cust, t, day, digest(e.event_id)):
                result.duplicates += 1
                continue
            if day > newest:
                newest_day[at] = day
            result.applied += 1
            if not isinstance(e, Cdr):
                _add_other(w, s, rows, result.moves, cust, e, ts, month)
                continue
            kind = kind_index[e.kind]
            seen_at = cust * KINDS + kind
            if last_seen[seen_at] < ts:
                last_seen[seen_at] = ts
            if e.peer_id and kind != 2 and not e.customer_service:  # 2: data
                contacts.append((cust, month, crc32(e.peer_id.encode())))
                if e.peer_network == "off_net":
                    offnet.append((cust, month, e.competitor or "", e.peer_id, (e.duration_s + 3) // 6))
            traits = (e.kind, e.direction == "MO", e.peer_network == "off_net", e.roaming, e.long_distance,
                      e.forwarded, e.customer_service, e.termination == "dropped")
            cdrs.append((cust, day, month, cdr_kind[traits], (e.duration_s + 3) // 6, -(-e.data_bytes // 65536)))
        except Exception as exc:  # noqa: BLE001 - one event must not stop the batch
            log.warning("an event raised %s while it was applied", type(exc).__name__, exc_info=True)
            result.refused.append((env, InvalidEvent("apply_failed", None, f"{type(exc).__name__}: {exc}")))
            refused_at.append(k)
    return refused_at


def erase_first(w: Windows, erasures: Sequence[tuple[int, Envelope]]) -> list[str]:
    """Erase, before the batch is applied, the customers it holds a new tombstone for, so that
    nothing of what they were is compared with (reports) or sent on; `apply` erases again at
    the tombstone's place, dropping whatever the batch held for them before it. Returns the
    customers erased."""
    out = []
    for cust, env in erasures:
        rec = w.rec[cust]
        if rec["part"][env.topic] == env.partition and env.offset <= rec["offset"][env.topic] and rec["newest"][env.topic]:
            continue  # a replayed tombstone: the customer may have come back since
        w.erase(cust)
        out.append(w.customers[cust])
    return out


def _erase(w: Windows, s: "Scratch", rows: "_Rows", cust: int, topic: int) -> None:
    w.erase(cust)
    s.forget(cust)
    s.back[cust] = 0
    s.last_seen[cust * KINDS:(cust + 1) * KINDS] = [0] * KINDS
    # The topic's offset counts as known from here on (a replayed tombstone is skipped).
    s.newest[cust * N_TOPICS + topic] = max(s.newest[cust * N_TOPICS + topic], 1)
    for gathered in (rows.cdrs, rows.others, rows.contacts, rows.offnet):  # in place: `apply` holds them by name
        gathered[:] = [r for r in gathered if r[0] != cust]


def _bit_of(crc: np.ndarray) -> np.ndarray:
    """A contact's bit in the bitmap from the crc32 of its number."""
    # crc32 is linear, so its low bits repeat over sequential numbers; a multiplicative
    # (Fibonacci) hash spreads them over the bitmap.
    spread = (crc.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return (spread >> np.uint64(32 - CONTACT_BITS.bit_length() + 1)).astype(np.int64)


_KIND_INDEX = {kind: i for i, kind in enumerate(LAST_SEEN_KINDS)}
TOP_LEVEL = len(LEVELS) - 1
_BILLED = LAST_SEEN_KINDS.index("billing")


def _add_other(w: Windows, s: Scratch, rows: _Rows, moves: Moves, cust: int, e: Event, ts: int, month: int) -> None:
    rec = w.rec
    if isinstance(e, Billing):
        s.last_seen[cust * KINDS + _BILLED] = max(s.last_seen[cust * KINDS + _BILLED], ts)
        if record_move(w, cust, e, ts, moves):
            s.back[cust] = ts
        counter = _BILLING_COUNTER.get(e.kind)
        # Billing counts in months only: a billing topic ahead of the CDRs (a catch-up) must not roll the days on.
        if counter:
            rows.others.append((cust, _bill_month(e, month), C[counter], round(e.amount * 100)))
    elif isinstance(e, Profile) and int(rec["profile_ts"][cust]) <= ts:
        first_profile(w, cust, e, ts, moves)
        rec["profile_ts"][cust], rec["activation"][cust] = ts, e.activation_date.toordinal()
        rec["vip"][cust], rec["prepaid"][cust] = VIP_TIERS.index(e.vip_tier), e.prepaid
        rec["age"][cust], rec["value_level"][cust] = e.age or 0, e.value_level or 0
        # Only the profile's fields: a plan change must not drop the streaks or cohort memberships.
        w.text[cust] = msgspec.structs.replace(w.text[cust] or StateTail(), plan=e.plan, region=e.region,
                                               segment=e.segment, attributes=stored(e.attributes),
                                               manager=e.account_manager)
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
    cdrs = np.concatenate([np.array(rows.cdrs, np.int64).reshape(-1, 6), *rows.cdr_blocks])
    if not len(cdrs) and not rows.others:
        return
    cdr_rows, cdr_days = cdrs[:, 0], cdrs[:, 1]
    cust, day, month, counter, value = _counter_rows(cdrs, rows.others)
    new_day0 = w.rec["day0"].astype(np.int64)
    # Every usage record moves the day on, an SMS or data session too: the contact bitmaps
    # follow the day's month, and a record that did not move it could land in a month the
    # bitmaps do not have yet, or not, depending on what else its batch held.
    if len(cdrs):
        np.maximum.at(new_day0, cdr_rows, cdr_days)
    new_month0 = w.rec["month0"].astype(np.int64)
    np.maximum.at(new_month0, cust, month)
    roll_buckets(w.daily, w.rec["day0"], new_day0)
    roll_buckets(w.monthly, w.rec["month0"], new_month0)
    # Contact bitmaps follow the month of usage, not month0: a bill read ahead of the usage (a
    # catch-up) would otherwise roll the month still being used out of the two bitmaps.
    usage_month = _month_of_days(new_day0)
    roll_buckets(w.rec["contacts"], _month_of_days(w.rec["day0"].astype(np.int64)), usage_month)
    w.rec["day0"], w.rec["month0"] = new_day0, new_month0
    d_age = new_day0[cust] - day
    daily_col = _DAILY_COLUMN[counter]
    keep = (day > 0) & (d_age < N_DAYS) & (daily_col >= 0)
    np.add.at(w.daily, (cust[keep], d_age[keep], daily_col[keep]), value[keep])
    m_age = new_month0[cust] - month
    keep = (m_age >= 0) & (m_age < N_MONTHS)
    np.add.at(w.monthly, (cust[keep], m_age[keep], counter[keep]), value[keep])
    contacts = np.concatenate([np.array(rows.contacts, np.int64).reshape(-1, 3), *rows.contact_blocks])
    if len(contacts):
        contacts[:, 2] = _bit_of(contacts[:, 2])
        _count_contacts(w, contacts, usage_month, new_month0)


def _month_of_days(ordinals: np.ndarray) -> np.ndarray:
    """`month_index` of day ordinals (0 where there is no day yet)."""
    return np.where(ordinals > 0, months_of_days(ordinals), 0)


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


def roll_buckets(buckets: np.ndarray, old: np.ndarray, new: np.ndarray) -> None:
    """Shift bucket rows so that index 0 is the newest period again; old rows fall off. All rows
    at once: bucket j of a row moved on by `shift` takes what was bucket j - shift."""
    rows = np.nonzero(new != old)[0]
    width = buckets.shape[1]
    shift = np.where(old[rows] != 0, new[rows].astype(np.int64) - old[rows], width)
    source = np.arange(width)[None, :] - shift[:, None]
    kept = (source >= 0) & (source < width)  # (a period cannot move back, but a row must not wrap if it did)
    moved = buckets[rows[:, None], np.clip(source, 0, width - 1)]
    moved[~kept] = 0
    buckets[rows] = moved
