"""The memory of event ids a state keeps over the late grace, as bytes, and a batch's lookups in it
and additions to it.

A resend is never counted twice however much lies between, so each customer keeps the digests
(`ID_DIGEST` bytes) of the event ids applied on the days the late grace still holds open on their
topics. An id sits in a group, its event's day and topic (`day * N_TOPICS + topic`): a resend
carries its event's time, so it is looked for in its own group only.

Stored (layout 6, `StateTail.ids`), the groups follow one another by key: the key (4 bytes), the
count of its digests (2 bytes, both little-endian), then the digests in the order they were
applied. A group of more than 65,535 ids goes on in a second one with the same key. Layouts up to
5 kept the groups as a msgpack map (`StateTail.seen`); `grouped` and `as_bytes` convert.

A batch looks its events' ids up, and adds those it kept, with two compiled loops (numba) over
one buffer of the batch's memories. In Python each customer's memory was a dictionary to copy,
extend, filter and sort (docs/performance.md, "The memory of event ids in compiled loops"). Bytes
cut short are read as far as they hold whole groups.
"""

from __future__ import annotations

import struct
from hashlib import blake2b
from typing import Iterable, Sequence

import numpy as np

from stream_app.windows.jit import compiled

__all__ = ["ID_DIGEST", "as_bytes", "digest_of", "digests", "grouped", "resent", "remembered"]

#: Bytes of an event id's digest: two ids of one customer within the grace window collide with
#: odds of about 2^-48 per pair.
ID_DIGEST = 6
_HEAD = struct.Struct("<IH")  # a group's key and count
_MOST = 0xFFFF  # ids a group's count can say
#: Copied for each id: the same digest as `blake2b(id, digest_size=ID_DIGEST)` in less than half
#: the time, the constructor's keywords read once.
_FRESH = blake2b(digest_size=ID_DIGEST)


def digest_of(event_id: str) -> bytes:
    """An event id as the memory keeps it: the BLAKE2b digest of its UTF-8 bytes, `ID_DIGEST` long.
    Stored states hold these: a new way to make them must give the same bytes."""
    h = _FRESH.copy()
    h.update(event_id.encode())
    return h.digest()


def digests(event_ids: Iterable[str]) -> list[bytes]:
    """`digest_of` each id, in a loop of its own: a batch's CDRs go through it."""
    out, fresh = [], _FRESH.copy
    for event_id in event_ids:
        h = fresh()
        h.update(event_id.encode())
        out.append(h.digest())
    return out


def as_bytes(groups: dict[int, bytes]) -> bytes:
    """A memory kept as a map (group key -> digests one after another, layouts up to 5) as
    layout 6 stores it. A digest cut short at a group's end is dropped, and so is a key no event's
    day and topic can have (stored bytes gone wrong): neither ever matched."""
    out = bytearray()
    for key in sorted(k for k in groups if 0 <= k <= 0xFFFFFFFF):
        digests = groups[key]
        count = len(digests) // ID_DIGEST
        for start in range(0, count, _MOST):
            n = min(_MOST, count - start)
            out += _HEAD.pack(key, n) + digests[start * ID_DIGEST:(start + n) * ID_DIGEST]
    return bytes(out)


def grouped(ids: bytes) -> dict[int, bytes]:
    """A stored memory as a map of group key -> digests one after another (as layouts up to 5 keep it)."""
    out: dict[int, bytes] = {}
    at = 0
    while at + _HEAD.size <= len(ids):
        key, n = _HEAD.unpack_from(ids, at)
        end = at + _HEAD.size + n * ID_DIGEST
        if end > len(ids):
            break
        out[key] = out.get(key, b"") + ids[at + _HEAD.size:end]
        at = end
    return out


def _batch(memories: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The memories one after another in one buffer, and where each starts and ends."""
    sizes = np.fromiter(map(len, memories), np.int64, len(memories))
    ends = np.cumsum(sizes)
    return np.frombuffer(b"".join(memories), np.uint8), ends - sizes, ends


def _digest_rows(digests: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(digests), np.uint8).reshape(len(digests), ID_DIGEST)


def resent(memories: Sequence[bytes], rows: np.ndarray, keys: np.ndarray, digests: Sequence[bytes]) -> np.ndarray:
    """Per event (its row in `memories`, group key and digest), whether the row's memory or an
    event of the same row and group before it holds its digest: a resend."""
    n = len(rows)
    rows, keys = np.asarray(rows, np.int64), np.asarray(keys, np.int64)
    # The event before each of the same row and group, -1 for none: the batch's own resends.
    order = np.lexsort((np.arange(n), keys, rows))
    same = (rows[order][1:] == rows[order][:-1]) & (keys[order][1:] == keys[order][:-1])
    before = np.full(n, -1, np.int64)
    before[order[1:][same]] = order[:-1][same]
    buf, starts, ends = _batch(memories)
    out = np.zeros(n, np.bool_)
    if n:
        _resent(buf, starts, ends, rows, keys, _digest_rows(digests), before, out)
    return out


def remembered(memories: Sequence[bytes], rows: np.ndarray, keys: np.ndarray, digests: Sequence[bytes],
               floors: np.ndarray) -> dict[int, bytes]:
    """The memory of each row given events, with their ids (row, group key, digest, in the order
    applied) added, and without the groups of days the late grace has closed on their topic
    (`floors`: (rows, topics), the first day each topic keeps): those events are refused before
    the memory is asked."""
    rows, keys = np.asarray(rows, np.int64), np.asarray(keys, np.int64)
    if not len(rows):
        return {}
    order = np.lexsort((np.arange(len(rows)), keys, rows))  # by row, then group, then as applied
    rows, keys = rows[order], keys[order]
    picked = _digest_rows(digests)[order]
    changed = np.unique(rows)
    buf, starts, ends = _batch(memories)
    # Room for the rows' groups as they are, and a group head per id added.
    room = int((ends[changed] - starts[changed]).sum()) + len(rows) * (_HEAD.size + ID_DIGEST)
    out = np.empty(room, np.uint8)
    bounds = np.empty(len(changed) + 1, np.int64)
    used = _merged(buf, starts, ends, rows, keys, picked, np.asarray(floors, np.int64), out, bounds)
    blob = out[:used].tobytes()
    cuts = bounds.tolist()
    return {row: blob[a:b] for row, a, b in zip(changed.tolist(), cuts[:-1], cuts[1:])}


@compiled
def _resent(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray, keys: np.ndarray,
            digests: np.ndarray, before: np.ndarray, out: np.ndarray) -> None:
    """`resent`'s loop."""
    for k in range(len(rows)):
        row, key = rows[k], keys[k]
        found = False
        at, end = starts[row], ends[row]
        while not found and at + 6 <= end:
            stop = at + 6 + 6 * (np.int64(buf[at + 4]) | (np.int64(buf[at + 5]) << 8))
            group = (np.int64(buf[at]) | (np.int64(buf[at + 1]) << 8) | (np.int64(buf[at + 2]) << 16)
                     | (np.int64(buf[at + 3]) << 24))
            if stop > end:
                break
            if group == key:  # (every group is read: bytes gone wrong may hold them out of order)
                for d in range(at + 6, stop, 6):
                    same = True
                    for b in range(6):
                        if buf[d + b] != digests[k, b]:
                            same = False
                            break
                    if same:
                        found = True
                        break
            at = stop
        j = before[k]
        while not found and j >= 0:
            same = True
            for b in range(6):
                if digests[j, b] != digests[k, b]:
                    same = False
                    break
            found = same
            j = before[j]
        out[k] = found


@compiled
def _merged(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray, rows: np.ndarray, keys: np.ndarray,
            digests: np.ndarray, floors: np.ndarray, out: np.ndarray, bounds: np.ndarray) -> int:
    """`remembered`'s loop: per row of the (sorted) events, its stored groups and the events' ids
    merged by key into `out`, without the groups of closed days; `bounds`: where each row's memory
    starts (and, last, where the last ends). The bytes used."""
    topics = floors.shape[1]
    at, k, c, n = 0, 0, 0, len(rows)
    while k < n:
        row = rows[k]
        bounds[c] = at
        c += 1
        old, end = starts[row], ends[row]
        while True:
            # The stored group at `old` (key -1: none left whole) and the next event's (-1: none of this row).
            stop, old_key, next_key = old, np.int64(-1), np.int64(-1)
            if old + 6 <= end:
                stop = old + 6 + 6 * (np.int64(buf[old + 4]) | (np.int64(buf[old + 5]) << 8))
                if stop <= end:
                    old_key = (np.int64(buf[old]) | (np.int64(buf[old + 1]) << 8)
                               | (np.int64(buf[old + 2]) << 16) | (np.int64(buf[old + 3]) << 24))
                if stop + 6 <= end:  # a full group goes on in one of the same key: the batch's ids go after that
                    next_key = (np.int64(buf[stop]) | (np.int64(buf[stop + 1]) << 8)
                                | (np.int64(buf[stop + 2]) << 16) | (np.int64(buf[stop + 3]) << 24))
            new_key = keys[k] if k < n and rows[k] == row else np.int64(-1)
            if old_key < 0 and new_key < 0:
                break
            key = old_key if new_key < 0 or (0 <= old_key <= new_key) else new_key
            stored = (stop - old - 6) // 6 if old_key == key else 0
            first = k
            if new_key == key and (old_key != key or next_key != key):  # (each turn takes something)
                while k < n and rows[k] == row and keys[k] == key:
                    k += 1
            if old_key == key:
                old = stop
            if key // topics < floors[row, key % topics]:
                continue  # a day the late grace has closed on its topic
            total = stored + k - first
            for s in range(total):
                if s % 0xFFFF == 0:  # a group's head; one of more than 65,535 ids goes on in another
                    count = min(0xFFFF, total - s)
                    for b in range(4):
                        out[at + b] = (key >> (8 * b)) & 0xFF
                    out[at + 4], out[at + 5] = count & 0xFF, count >> 8
                    at += 6
                if s < stored:
                    for b in range(6):
                        out[at + b] = buf[old - 6 * (stored - s) + b]
                else:
                    for b in range(6):
                        out[at + b] = digests[first + s - stored, b]
                at += 6
    bounds[c] = at
    return at
