"""The per-customer state record: its layout, and loading and dumping a batch of them.

One fixed-size numpy record per customer (`STATE`) followed by a short msgpack tail
(`StateTail`), so a whole batch decodes and encodes with a few numpy calls. Counters are
integers in fixed units (tenths of a minute, 64 KiB of data, fen): sums are exact and do
not depend on the order events are added in. `windows.apply` is what changes them.

Stored, the record leaves out its zero bytes (`windows.packing`): most of it is counters of
months and days a customer has not used yet and the high bytes of small counts (in a month of
simulated traffic, 211 of its 1,016 bytes after the write counter are not zero).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Sequence

import msgspec
import numpy as np

from stream_app.contracts.inputs import Input
from stream_app.errors import NotReady
from stream_app.windows.counters import narrowed_into, widened
from stream_app.windows.id_memory import ID_DIGEST, as_bytes, grouped
from stream_app.windows.packing import Packing, converted, pack, unpack, unpack_batch

__all__ = [
    "COUNTERS", "DAILY", "C", "D", "SCALE", "N_DAYS", "N_MONTHS", "N_TOPICS", "REVENUE_CHURN_FLAG",
    "ID_DIGEST", "CONTACT_BITS", "LAST_SEEN_KINDS", "VIP_TIERS", "EXIT_KINDS", "STATE", "STATE_VERSION", "SEQ_OFFSET",
    "NEVER_WRITTEN", "NewerState", "StateTail", "Windows", "rule_key", "contacts_estimate",
    "record_and_tail", "stored_seq", "RENEWAL_SLACK_S", "usage_fingerprint", "WRITTEN_LAYOUTS",
]

N_DAYS = 35
N_MONTHS = 7  # the current month and six complete ones
#: Bit of the state's `flags`: this revenue-churn episode has been reported.
REVENUE_CHURN_FLAG = 1
N_TOPICS = len(Input)  # offsets, newest times and event ids kept per input topic
CONTACT_BITS = 128  # linear-counting bitmap per month (about 7% error at 100 contacts)
LAST_SEEN_KINDS = ("voice", "sms", "data", "billing")
VIP_TIERS = ("none", "silver", "gold", "diamond")
STATE_VERSION = 6  # 6: event ids as bytes; 5: SMS and data sessions by day too; 4: the record without its zero bytes

# Counters in months, in column order, grouped by storage width.
_M_COUNTS = ("out_calls", "in_calls", "sms_out", "sms_in", "cs_calls", "dropped_calls", "offnet_calls",
             "fwd_calls", "contacts")
_M_MINUTES = ("out_min", "in_min", "offnet_min")
_M_RARE_MINUTES = ("roam_min", "ld_min")  # 16 bits: saturate at 6,553 minutes a month
_M_MONEY = ("spend", "topup", "arrears")
COUNTERS: tuple[str, ...] = _M_COUNTS + _M_MINUTES + _M_RARE_MINUTES + ("data_mb",) + _M_MONEY + ("data_sessions",)
# The subset also kept by day: what daily and rolling features need.
_D_COUNTS = ("out_calls", "in_calls", "cs_calls", "dropped_calls")
_D_MINUTES = ("out_min", "offnet_min")
_D_MESSAGES = ("sms_out", "sms_in", "data_sessions")  # 16 bits: a heavy data user opens hundreds a day
DAILY: tuple[str, ...] = _D_COUNTS + _D_MINUTES + _D_MESSAGES
C = {name: i for i, name in enumerate(COUNTERS)}
D = {name: i for i, name in enumerate(DAILY)}
#: Stored units per unit of the counter's name: 10 per minute, 16 per MB, 100 per yuan.
SCALE = {name: 10.0 for name in _M_MINUTES + _M_RARE_MINUTES} | {"data_mb": 16.0} | {name: 100.0 for name in _M_MONEY}

_HEADER = [
    ("version", "u1"), ("flags", "u1"), ("seq", "<u8"),
    ("day0", "<i4"), ("month0", "<i4"),
    ("part", "<i4", (N_TOPICS,)), ("offset", "<i8", (N_TOPICS,)), ("newest", "<i4", (N_TOPICS,)),
    ("last_seen", "<u4", (len(LAST_SEEN_KINDS),)),
    ("activation", "<i4"), ("profile_ts", "<u4"), ("vip", "u1"), ("prepaid", "u1"), ("age", "u1"),
    ("value_level", "u1"),
    ("exit_ts", "<u4"), ("exit_reason", "<u2"), ("exit_kind", "u1"),
    ("alerted_level", "u1"), ("alerted_day", "<i4"),
    ("contacts", "u1", (2, CONTACT_BITS // 8)),
]
_BUCKETS_4 = [
    ("d_counts", "u1", (N_DAYS, len(_D_COUNTS))), ("d_minutes", "<u2", (N_DAYS, len(_D_MINUTES))),
    ("m_counts", "<u2", (N_MONTHS, len(_M_COUNTS))), ("m_minutes", "<u4", (N_MONTHS, len(_M_MINUTES))),
    ("m_rare_minutes", "<u2", (N_MONTHS, len(_M_RARE_MINUTES))),
    ("m_data", "<u4", (N_MONTHS,)), ("m_money", "<u4", (N_MONTHS, len(_M_MONEY))),
]
#: Layout 5's fields. `messages_since`: the first day whose SMS and data sessions are kept by day, the
#: day after the newest usage of a state converted from an earlier layout (0: kept from the first).
_BUCKETS = _BUCKETS_4 + [("d_messages", "<u2", (N_DAYS, len(_D_MESSAGES))), ("m_sessions", "<u4", (N_MONTHS,)),
                         ("messages_since", "<i4")]
STATE = np.dtype(_HEADER + _BUCKETS)
_STATE_4 = np.dtype(_HEADER + _BUCKETS_4)
SEQ_OFFSET = STATE.fields["seq"][1]  # where the write counter sits, for the store's compare-and-set
_KEPT = SEQ_OFFSET + 8  # a packed record keeps its bytes up to here as they are


#: Earlier layouts a worker still reads (and writes back in the current one): version 2 kept a
#: ring of 16 event-id hashes in the record, which forgot a resend after a dozen other events;
#: version 3 stored the record whole; version 4 kept neither SMS nor data sessions by day; version 5
#: has this record, and its tail the event ids as a map (`StateTail.seen`).
_WHOLE = {2: np.dtype(_HEADER + [("dedup", "<u4", (16,)), ("dedup_pos", "u1")] + _BUCKETS_4), 3: _STATE_4}
_PACKED_STATE = Packing(STATE, _KEPT)  # layouts 5 and 6 have the same record
_PACKED = {4: Packing(_STATE_4, _KEPT), 5: _PACKED_STATE, STATE_VERSION: _PACKED_STATE}
#: Layouts a worker can write (`CHURNWATCH_STATE_LAYOUT`), for a rolling upgrade from a release that reads no newer.
WRITTEN_LAYOUTS = (3, 4, 5, STATE_VERSION)
_IDS_AS_BYTES = 6  # the first layout that keeps the event ids as bytes (`StateTail.ids`), not as a map
# A first byte up to this above the current layout is taken for a newer release's layout (which must
# not be overwritten), one beyond it for bytes that are no state at all (set aside).
_NEWEST_PLAUSIBLE = STATE_VERSION + 8
_D_BLOCKS = (("d_counts", _D_COUNTS), ("d_minutes", _D_MINUTES), ("d_messages", _D_MESSAGES))
_M_BLOCKS = (("m_counts", _M_COUNTS), ("m_minutes", _M_MINUTES), ("m_rare_minutes", _M_RARE_MINUTES),
             ("m_data", ("data_mb",)), ("m_money", _M_MONEY), ("m_sessions", ("data_sessions",)))
EXIT_KINDS = ("", "disconnect", "port_out")
_KEPT_ON_ERASURE = ("version", "seq", "part", "offset", "newest")

class StateTail(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """What does not fit a fixed record, kept after it: the profile's text fields, the streaks
    of rules with `for` (rule key -> (evaluations in a row, period of the last)), the
    snapshot cohorts the reports follow the customer in, and the latest call outcome. New
    fields go last, with defaults: a tail written before them still decodes. Out of the cycle
    collector's sight (`gc=False`): a batch loads and replaces thousands, and their fields, plain
    values and maps of them, can never lead back to one."""

    plan: str = ""
    region: str = ""
    segment: str = ""
    streaks: dict[int, tuple[int, int]] = {}
    cohorts: tuple[int, ...] = ()  # snapshot cohorts (month indices) the customer was photographed in ...
    cohort_lost: tuple[int, ...] = ()  # ... and those of them already counted as lost (reports/facts.py)
    outcome: str = ""  # the latest call outcome from retention.outcomes (not_reached ... accepted) ...
    outcome_ts: int = 0  # ... and when the agent recorded it, epoch seconds
    #: Layouts up to 5: the event ids applied within the grace window, (day ordinal * N_TOPICS +
    #: topic) -> `ID_DIGEST`-byte digests one after another. Layout 6 keeps them in `ids`; a state
    #: read is converted, and one written in layout 5 converted back.
    seen: dict[int, bytes] = {}
    #: The operator's own attributes of the latest profile, under their keys (contracts/attributes.py).
    attributes: dict[int, float | str] = {}
    manager: str = ""  # the profile's account manager
    report_region: str = ""  # the region the report counters count this customer's facts in (reports/facts.py)
    joined: int = 0  # the activation day of their first profile (a later one may be a return): when they joined
    back_ts: int = 0  # when they last came back on their number (windows/lifecycle.py), epoch seconds
    #: The event ids applied within the grace window, so that a resend is never counted twice
    #: however much lies between, grouped by day and topic (windows/id_memory.py). Days a topic's
    #: late grace has closed are dropped (their events are refused as late anyway).
    ids: bytes = b""


_tail_encoder = msgspec.msgpack.Encoder()
_tail_decoder = msgspec.msgpack.Decoder(StateTail)


def rule_key(rule_id: str) -> int:
    """How a rule is named in the state's streaks: short, and stable across reloads."""
    return zlib.crc32(rule_id.encode())


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
    expected: list[bytes] = field(default_factory=list)  # the write counter's bytes as read, per row
    quarantined: list[tuple[int, str]] = field(default_factory=list)  # (row, why) of states that could not be read
    #: Per row, the newest event day over its topics as read (0: none): `renewed` compares with it.
    newest_read: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def day0(self) -> np.ndarray:
        return self.rec["day0"]

    @property
    def month0(self) -> np.ndarray:
        return self.rec["month0"]

    @classmethod
    def load(cls, customers: list[str], raws: Sequence[bytes | None]) -> "Windows":
        """The states as stored. One of an earlier layout is converted; one that cannot be read
        (a layout this worker does not know, cut short, a tail that does not decode) is
        quarantined: its customer starts afresh, and `quarantined` says who and why, so that the
        caller can set the bytes aside. Either way the write goes to the key read, as a
        compare-and-set against the write counter's bytes as they were (`expected`). One in a
        layout newer than this worker's raises `NewerState`: it must not be overwritten."""
        n = len(raws)
        text: list[StateTail | None] = [None] * n
        expected = [stored_seq(raw) for raw in raws]
        quarantined: list[tuple[int, str]] = []
        rec = np.zeros(n, STATE)
        flat = rec.view(np.uint8).reshape(n, STATE.itemsize)
        # The current layout's records for the whole batch in one pass; the rest one by one below.
        blobs = [raw or b"" for raw in raws]
        lengths = unpack_batch(b"".join(blobs), np.fromiter(map(len, blobs), np.int64, n), STATE_VERSION,
                               _PACKED[STATE_VERSION], flat).tolist()
        layouts: dict[int, tuple[list[int], list[bytes]]] = {}  # earlier layout -> (rows, record parts as stored)
        for i, (raw, length) in enumerate(zip(raws, lengths)):
            if raw is None:
                continue
            try:
                if length < 0:
                    length = _record_length(raw)
                    rows, parts = layouts.setdefault(raw[0], ([], []))
                    rows.append(i)
                    parts.append(raw[:length])
                if len(raw) > length:
                    text[i] = tail = _tail_decoder.decode(raw[length:])
                    if tail.seen and raw[0] < _IDS_AS_BYTES:  # the event ids as a map: an earlier layout
                        text[i] = msgspec.structs.replace(tail, seen={}, ids=as_bytes(tail.seen))
            except _Unreadable as why:
                quarantined.append((i, str(why)))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                quarantined.append((i, f"its tail does not decode: {exc}"))
        for layout, (rows, parts) in layouts.items():  # a few numpy calls per layout, not per state
            rec[rows] = _upgraded(parts, layout)
        if quarantined:
            flat[[i for i, _ in quarantined]] = 0  # read or not, such a customer starts afresh
        rec["version"] = STATE_VERSION
        for i, _ in quarantined:  # the count goes on from the bytes that were there
            rec["seq"][i] = int.from_bytes(expected[i].ljust(8, b"\0"), "little")
        return cls(customers, rec, widened(rec, _D_BLOCKS, N_DAYS), widened(rec, _M_BLOCKS, N_MONTHS), text, expected,
                   quarantined, rec["newest"].max(axis=1).astype(np.int64))

    def subset(self, rows: Sequence[int]) -> "Windows":
        """A copy of some rows (a row may repeat): changes to it do not reach this batch."""
        idx = np.asarray(rows, np.int64)  # indexed by an array, each is a copy already
        return Windows([self.customers[i] for i in rows], self.rec[idx], self.daily[idx],
                       self.monthly[idx], [self.text[i] for i in rows], [self.expected[i] for i in rows],
                       newest_read=self.newest_read[idx])

    def renewed(self, rows: Sequence[int]) -> list[int]:
        """The rows whose stored state's expiry starts again when written: those whose newest event
        day moved on since read, or who had none. Set at every write, the expiry took Redis a
        quarter of the write's time; set once a customer's day, it outlives their last event by
        at least the idle expiry when the time to live adds `RENEWAL_SLACK_S` and the clock skew
        allowed (`store.state_ttl_s`)."""
        idx = np.asarray(rows, np.int64)
        before = self.newest_read[idx]
        return idx[(self.rec["newest"][idx].max(axis=1) > before) | (before == 0)].tolist()

    def erase(self, row: int) -> None:
        """Forget everything of a customer but where their topics were read up to (and the write
        counter): a replay of their older records is then still skipped."""
        kept = {name: self.rec[name][row].copy() for name in _KEPT_ON_ERASURE}
        self.rec[row] = np.zeros((), STATE)
        for name, value in kept.items():
            self.rec[name][row] = value
        self.daily[row] = 0
        self.monthly[row] = 0
        self.text[row] = None

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
        """Keep the running streaks of `rows`; a broken one is dropped (tails stay small). Only the
        rows with a streak running or kept are touched: most have neither."""
        text, idx = self.text, np.asarray(rows, np.int64)
        kept = np.fromiter((bool(text[i] is not None and text[i].streaks) for i in rows), bool, len(idx))
        for i in idx[kept | (count[idx] > 0).any(axis=1)].tolist():
            on = np.nonzero(count[i] > 0)[0].tolist()
            running = {keys[j]: (int(count[i, j]), int(period[i, j])) for j in on}
            self.text[i] = msgspec.structs.replace(text[i] or StateTail(), streaks=running)

    def mark_alerted(self, alerted: dict[int, tuple[int, int]]) -> None:
        """Keep each row's newest alert (level, day): the cooldown reads it."""
        for i, (level, day) in alerted.items():
            self.rec["alerted_level"][i], self.rec["alerted_day"][i] = level, day

    def mark_revenue_churn(self, reported: dict[int, bool]) -> None:
        """Keep whether each row's revenue-churn episode has been reported (so it is, once)."""
        for i, on in reported.items():
            if on:
                self.rec["flags"][i] |= REVENUE_CHURN_FLAG
            else:
                self.rec["flags"][i] &= np.uint8(0xFF ^ REVENUE_CHURN_FLAG)

    def id_memories(self) -> list[bytes]:
        """Each row's memory of event ids as stored (`StateTail.ids`; empty without a tail)."""
        return [t.ids if t is not None else b"" for t in self.text]

    def keep_tails(self, tails: dict[int, StateTail]) -> None:
        """Replace the tails of some rows (their cohort memberships, for instance)."""
        for i, tail in tails.items():
            self.text[i] = tail

    def dump(self, rows: Sequence[int], layout: int = STATE_VERSION) -> list[tuple[bytes, bytes]]:
        """(the write counter's bytes as read, new state) for each row, counters saturated to their
        widths: in this release's layout, or in an earlier one for a rolling upgrade from a release
        that reads only that (`CHURNWATCH_STATE_LAYOUT`: 5 with the event ids as a map, 4 also
        without SMS and data sessions by day, 3 the same whole). Every worker reads them all."""
        if layout not in WRITTEN_LAYOUTS:
            raise ValueError(f"states are written in layout {' or '.join(map(str, WRITTEN_LAYOUTS))}, not {layout}")
        narrowed_into(self.daily, self.rec, _D_BLOCKS)
        narrowed_into(self.monthly, self.rec, _M_BLOCKS)
        idx = np.asarray(rows, np.int64)
        self.rec["seq"][idx] += 1  # rows are distinct: each counter moves on once
        picked = converted(self.rec[idx], _PACKED[layout].dtype if layout in _PACKED else _WHOLE[layout])
        picked["version"] = layout
        parts = pack(picked, _PACKED[layout]) if layout in _PACKED else [r.tobytes() for r in picked]
        tails = [self.text[i] for i in rows]
        if layout < _IDS_AS_BYTES:  # a release before reads the event ids from the map
            tails = [msgspec.structs.replace(t, seen=grouped(t.ids), ids=b"") if t is not None and t.ids else t
                     for t in tails]
        return [(self.expected[i], part + (_tail_encoder.encode(tail) if tail is not None else b""))
                for i, part, tail in zip(rows, parts, tails)]


#: What a state's time to live adds to the idle expiry (`Windows.renewed`): the day of the
#: customer's newest event, a long one where the clocks change, and the time before its first write.
RENEWAL_SLACK_S = 2 * 86_400
NEVER_WRITTEN = bytes(8)  # the write counter of a customer never written, as the store compares it


def stored_seq(raw: bytes | None) -> bytes:
    """The write counter's bytes as the store's scripts read them (GETRANGE): 8, fewer for a value
    cut short, and `NEVER_WRITTEN` for no value or one too short to reach it."""
    return raw[SEQ_OFFSET:SEQ_OFFSET + 8] if raw is not None and len(raw) > SEQ_OFFSET else NEVER_WRITTEN


class NewerState(NotReady):
    """A stored state in a layout newer than this worker's: a newer release wrote it, and this
    worker must neither read nor overwrite it. The batch waits (readiness says why) until the
    worker is replaced by one that reads it."""


class _Unreadable(Exception):
    """A stored state this worker cannot read."""


def _record_length(raw: bytes) -> int:
    """Bytes of a stored state's record part, before its tail; `_Unreadable` if it cannot hold one."""
    packing = _PACKED.get(raw[0]) if raw else None
    if packing is not None:
        end = _KEPT + packing.bitmap  # of the bitmap
        if len(raw) < end:
            raise _Unreadable(f"{len(raw)} bytes; a version {raw[0]} record has at least {end}")
        if raw[end - 1] & packing.padding:
            raise _Unreadable("its bitmap marks bytes past the record")
        length = end + int.from_bytes(raw[_KEPT:end], "big").bit_count()
    elif raw and raw[0] in _WHOLE:
        length = _WHOLE[raw[0]].itemsize
    elif raw and STATE_VERSION < raw[0] <= _NEWEST_PLAUSIBLE:
        raise NewerState(f"a customer's state is in layout {raw[0]}, newer than this worker's {STATE_VERSION}: "
                         "a newer release wrote it; replace this worker with that release")
    else:
        raise _Unreadable(f"layout version {raw[0] if raw else None}; this worker reads "
                          f"{sorted([*_WHOLE, *_PACKED])}")
    if len(raw) < length:
        raise _Unreadable(f"{len(raw)} bytes; its version {raw[0]} record has {length}")
    return length


def record_and_tail(raw: bytes) -> tuple[bytes, bytes]:
    """A stored state's record part, as stored, and its tail's bytes."""
    length = _record_length(raw)
    return raw[:length], raw[length:]


def _upgraded(parts: Sequence[bytes], layout: int) -> np.ndarray:
    """Record parts of an earlier layout, in the current one. Those before layout 5 keep SMS and
    data sessions by day from the day after their newest usage on."""
    if layout in _PACKED:
        packing = _PACKED[layout]
        old = unpack(parts, packing).view(packing.dtype).reshape(len(parts))
    else:
        old = np.frombuffer(b"".join(parts), _WHOLE[layout])
    new = converted(old, STATE)
    if "messages_since" not in (old.dtype.names or ()):
        new["messages_since"] = np.where(new["day0"] > 0, new["day0"] + 1, 0)
    return new


def usage_fingerprint(raw: bytes) -> bytes:
    """The state without its write counter and evaluation bookkeeping (alert cooldown, rule
    streaks, what has been reported), which depend on how often and when it was written and
    evaluated: equal fingerprints mean the same events were counted. The record comes whole (the
    current layout, unpacked), then the tail."""
    w = Windows.load([""], [raw])
    if w.quarantined:
        raise ValueError(f"not a state: {w.quarantined[0][1]}")
    rec = w.rec.copy()
    rec["seq"], rec["alerted_level"], rec["alerted_day"], rec["flags"] = 0, 0, 0, 0
    return rec.tobytes() + _tail_encoder.encode(msgspec.structs.replace(w.text[0] or StateTail(), streaks={}))

