"""A batch's CDRs applied column-wise.

Most events of a batch are CDRs of customers with nothing else in it. Their checks (replayed,
late, dated before a return, a resend) and what they add are computed over arrays for the whole
batch, instead of event by event in Python; `apply` takes the rest one by one: bills, profiles,
outcomes, tombstones, and every event of a customer who has one of those in the batch or whose
topic was read from two partitions in it. Both ways give the same state
(`tests/unit/test_apply_columns.py` compares them on random batches).

The checks against the stored offset and the newest day are made against the state as loaded:
within a customer's topic the batch holds one partition with rising offsets (else the customer
goes one by one), so an event an earlier one of the batch would have made a replay is one
already. An event's late check compares it with the newest day of the events of its topic
before it in the batch, refused ones included: those refused as late or resent never move the
newest day (a resend repeats a day already counted), so the result is the one-by-one result.

`plan` only reads the states; `Planned.commit` writes what it found. A plan that raises leaves
the states untouched, and its events go one by one, where whatever one of them raises is refused
alone.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Sequence
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from stream_app.contracts.calendar import local_days, months_of_days
from stream_app.contracts.events import Cdr
from stream_app.contracts.inputs import Input
from stream_app.errors import InvalidEvent
from stream_app.ingest.admission import Envelope
from stream_app.windows import id_memory
from stream_app.windows.lifecycle import before_return
from stream_app.windows.scratch import KINDS
from stream_app.windows.state import LAST_SEEN_KINDS, N_TOPICS, StateTail, Windows

__all__ = ["Planned", "plan"]

_DATA = LAST_SEEN_KINDS.index("data")


@dataclass
class Planned:
    """What a batch's column-wise events do, found without changing the states."""

    positions: list[int]  # in the batch, of the events it applies
    rest: list[int] = field(default_factory=list)  # in the batch, of the events `apply` takes one by one
    replayed: int = 0
    duplicates: int = 0
    applied: int = 0
    changed: list[int] = field(default_factory=list)  # rows
    refused: list[tuple[int, InvalidEvent]] = field(default_factory=list)  # (position, why)
    cdrs: np.ndarray = field(default_factory=lambda: np.empty((0, 6), np.int64))  # as `apply._Rows.cdrs`
    contacts: np.ndarray = field(default_factory=lambda: np.empty((0, 3), np.int64))  # row, month, crc32
    offnet: list[tuple[int, int, str, str, int]] = field(default_factory=list)
    # Header fields that change: (flat index, value) per field, row-major as `Scratch` keeps them.
    header: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    tails: dict[int, StateTail] = field(default_factory=dict)

    def commit(self, w: Windows) -> None:
        """Write the plan's header fields and tails into the states."""
        for name, (flat, value) in self.header.items():
            view = w.rec[name]
            view[np.divmod(flat, view.shape[1])] = value
        for row, tail in self.tails.items():
            w.text[row] = tail


def plan(w: Windows, batch: Sequence[tuple[int, Envelope]], zone: ZoneInfo, grace_days: int) -> Planned:
    """What the batch's CDRs that can go column-wise do (see the module's docstring)."""
    envs = [env for _, env in batch]
    rows = np.array([row for row, _ in batch], np.int64)
    topic = np.array([env.topic for env in envs], np.int64)
    part = np.array([env.partition for env in envs], np.int64)
    offset = np.array([env.offset for env in envs], np.int64)
    ts = np.array([env.ts for env in envs], np.int64)
    events = [env.event for env in envs]
    # (A time before 1970-01-02 never passes admission; `local_days` would read it as no day at all.)
    plain = np.array([type(e) is Cdr for e in events], bool) & (ts >= 86_400)
    pick = _column_wise(rows, rows * N_TOPICS + topic, part, offset, plain)
    out = Planned(pick.tolist(), np.nonzero(~np.isin(np.arange(len(batch)), pick))[0].tolist())
    if not len(pick):
        return out
    rows, topic, part, offset, ts = rows[pick], topic[pick], part[pick], offset[pick], ts[pick]
    events = [events[k] for k in out.positions]
    at = rows * N_TOPICS + topic
    replayed = ((w.rec["part"].ravel()[at] == part) & (offset <= w.rec["offset"].ravel()[at])
                & (w.rec["newest"].ravel()[at] != 0))
    fresh = ~replayed
    day = local_days(ts, zone)
    back = np.array([t.back_ts if t is not None else 0 for t in w.text], np.int64)[rows]
    early = (ts < back) & (topic <= Input.BILLING)  # usage of the life before the customer came back
    newest = np.maximum(w.rec["newest"].ravel()[at], _newest_before(at, np.where(fresh & ~early, day, 0)))
    late = fresh & (newest != 0) & (day < newest - grace_days)
    for k in np.nonzero(late | (fresh & early))[0].tolist():
        why = (InvalidEvent("late", "ts", f"event day is {newest[k] - day[k]} days before the newest seen, "
                                          f"grace is {grace_days}") if late[k] else before_return(int(back[k])))
        out.refused.append((out.positions[k], why))
    checked = np.nonzero(fresh & ~late & ~early)[0]
    digests = id_memory.digests([events[k].event_id for k in checked.tolist()])
    group = day[checked] * N_TOPICS + topic[checked]
    memories = w.id_memories()
    resent = id_memory.resent(memories, rows[checked], group, digests)
    kept = checked[~resent]
    out.replayed, out.duplicates, out.applied = int(replayed.sum()), int(resent.sum()), len(kept)
    out.changed = np.unique(rows[fresh]).tolist()
    f = _fields([events[k] for k in kept.tolist()])
    kind = (f["kind"] == "sms").astype(np.int64) + 2 * (f["kind"] == "data")  # as LAST_SEEN_KINDS numbers them
    _headers(w, out, at, part, offset, fresh, kept, day, ts, kind)
    _adds(out, rows[kept], day[kept], kind, f)
    _remember(w, out, memories, rows[kept], group[~resent],
              [d for d, r in zip(digests, resent.tolist()) if not r], grace_days)
    return out


def _column_wise(rows: np.ndarray, at: np.ndarray, part: np.ndarray, offset: np.ndarray,
                 plain: np.ndarray) -> np.ndarray:
    """Positions of the plain CDRs of customers with nothing else in the batch, each topic of them
    read from one partition with rising offsets."""
    n = len(rows)
    order = np.lexsort((np.arange(n), at))
    same = at[order][1:] == at[order][:-1]
    odd = same & ((part[order][1:] != part[order][:-1]) | (offset[order][1:] <= offset[order][:-1]))
    return np.nonzero(plain & ~np.isin(rows, rows[~plain]) & ~np.isin(rows, rows[order][1:][odd]))[0]


def _fields(events: list[Cdr]) -> dict[str, np.ndarray]:
    """The fields of CDRs that their counters, contacts and off-net calls read, as object columns.
    (A comprehension per field names it: `getattr` or `astuple` cost twice as much.)"""
    return {name: np.array(values, dtype=object) for name, values in (
        ("kind", [e.kind for e in events]), ("direction", [e.direction for e in events]),
        ("duration_s", [e.duration_s for e in events]), ("data_bytes", [e.data_bytes for e in events]),
        ("peer_id", [e.peer_id for e in events]), ("peer_network", [e.peer_network for e in events]),
        ("competitor", [e.competitor for e in events]), ("roaming", [e.roaming for e in events]),
        ("long_distance", [e.long_distance for e in events]), ("forwarded", [e.forwarded for e in events]),
        ("termination", [e.termination for e in events]), ("customer_service", [e.customer_service for e in events]))}


def _newest_before(at: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Per event, the newest `day` of the events of its customer's topic before it in the batch (0: none)."""
    order = np.lexsort((np.arange(len(at)), at))
    start = np.r_[True, at[order][1:] != at[order][:-1]]
    group = np.cumsum(start) - 1
    lift = int(day.max()) + 1  # each group above the one before, so a running max does not cross groups
    running = np.maximum.accumulate(day[order] + group * lift) - group * lift
    before = np.r_[0, running[:-1]]
    before[start] = 0
    out = np.empty_like(before)
    out[order] = before
    return out


def _last_per(key: np.ndarray, value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The value of the last event of each key, in batch order."""
    last = len(key) - 1 - np.unique(key[::-1], return_index=True)[1]
    return key[last], value[last]


def _max_per(key: np.ndarray, value: np.ndarray, stored: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per key, the larger of its stored value and its events' largest."""
    keys, inverse = np.unique(key, return_inverse=True)
    top = stored[keys].astype(np.int64)
    np.maximum.at(top, inverse.ravel(), value)
    return keys, top


def _headers(w: Windows, out: Planned, at: np.ndarray, part: np.ndarray, offset: np.ndarray, fresh: np.ndarray,
             kept: np.ndarray, day: np.ndarray, ts: np.ndarray, kind: np.ndarray) -> None:
    """Where each topic was read up to (every event not replayed), its newest day and the last time
    each kind was used (the events kept)."""
    out.header["part"] = _last_per(at[fresh], part[fresh])
    out.header["offset"] = _last_per(at[fresh], offset[fresh])
    if len(kept):
        out.header["newest"] = _max_per(at[kept], day[kept], w.rec["newest"].ravel())
        seen_at = (at[kept] // N_TOPICS) * KINDS + kind
        out.header["last_seen"] = _max_per(seen_at, ts[kept], w.rec["last_seen"].ravel())


def _adds(out: Planned, rows: np.ndarray, day: np.ndarray, kind: np.ndarray, f: dict[str, np.ndarray]) -> None:
    """The counter rows, contacts and off-net calls of the events kept (`f`: their fields, by name)."""
    if not len(rows):
        return
    # Numbered as `apply._cdr_kinds` numbers them: the kind, then seven yes-or-no traits.
    traits = (f["direction"] == "MO", f["peer_network"] == "off_net", f["roaming"], f["long_distance"],
              f["forwarded"], f["customer_service"], f["termination"] == "dropped")
    code = kind * (1 << len(traits))
    for bit, trait in enumerate(reversed(traits)):
        code += trait.astype(np.int64) << bit
    month = months_of_days(day)
    tenths = (f["duration_s"].astype(np.int64) + 3) // 6
    blocks = -(-f["data_bytes"].astype(np.int64) // 65536)
    out.cdrs = np.stack([rows, day, month, code, tenths, blocks], axis=1)
    peers = f["peer_id"]
    called = np.nonzero((peers != None) & (peers != "") & (kind != _DATA)  # noqa: E711 - an object column
                        & ~f["customer_service"].astype(bool))[0]
    if len(called):
        crcs = [zlib.crc32(p.encode()) for p in peers[called].tolist()]
        out.contacts = np.stack([rows[called], month[called], np.array(crcs, np.int64)], axis=1)
        off = called[traits[1][called]]
        competitor = f["competitor"]
        out.offnet = [(r, m, c or "", p, t) for r, m, c, p, t in zip(
            rows[off].tolist(), month[off].tolist(), competitor[off].tolist(), peers[off].tolist(),
            tenths[off].tolist())]


def _remember(w: Windows, out: Planned, memories: list[bytes], rows: np.ndarray, group: np.ndarray,
              digests: list[bytes], grace_days: int) -> None:
    """Each customer's tail with the ids of their events kept, as `Scratch.store` writes it."""
    newest = w.rec["newest"].copy()
    if "newest" in out.header:
        flat, value = out.header["newest"]
        newest.ravel()[flat] = value
    text, empty = w.text, StateTail()
    for row, ids in id_memory.remembered(memories, rows, group, digests, newest.astype(np.int64) - grace_days).items():
        out.tails[row] = msgspec.structs.replace(text[row] or empty, ids=ids)
