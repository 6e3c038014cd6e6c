"""What `windows.apply` keeps while it goes through a batch event by event: Python copies of the
header fields it reads per event (numpy scalars are slow), and each customer's memory of event ids."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import numpy as np

from stream_app.windows import id_memory
from stream_app.windows.state import ID_DIGEST, LAST_SEEN_KINDS, N_TOPICS, StateTail, Windows

__all__ = ["KINDS", "Scratch"]

KINDS = len(LAST_SEEN_KINDS)


@dataclass
class Scratch:
    """Per-batch Python copies of the header fields `apply` reads per event (numpy scalars are
    slow), and the event ids seen, read from the tails group by group as events need them. The
    per-topic and per-kind fields are flat lists, row-major (customer i's topic t at
    i * N_TOPICS + t): one flat `tolist` costs a tenth of a list per customer."""

    part: list[int]
    offset: list[int]
    newest: list[int]
    last_seen: list[int]
    tails: list[StateTail | None]
    back: list[int]  # when each customer last came back (windows/lifecycle.py); 0: never
    seen: dict[int, dict[int, set[bytes]]] = field(default_factory=dict)  # row -> id group -> digests
    added: dict[int, dict[int, list[bytes]]] = field(default_factory=dict)  # row -> id group -> new, in order

    @classmethod
    def of(cls, w: Windows) -> "Scratch":
        """The copies of a batch's states, before its events are applied."""
        rec = w.rec
        return cls(rec["part"].ravel().tolist(), rec["offset"].ravel().tolist(), rec["newest"].ravel().tolist(),
                   rec["last_seen"].ravel().tolist(), w.text, [t.back_ts if t else 0 for t in w.text])

    def remember(self, cust: int, topic: int, day: int, digest: bytes) -> bool:
        """Add an event id to the customer's memory; False if it is there already (a resend)."""
        key = day * N_TOPICS + topic
        groups = self.seen.setdefault(cust, {})
        ids = groups.get(key)
        if ids is None:
            tail = self.tails[cust]
            stored = id_memory.grouped(tail.ids).get(key, b"") if tail is not None else b""
            ids = groups[key] = {stored[k:k + ID_DIGEST] for k in range(0, len(stored), ID_DIGEST)}
        if digest in ids:
            return False
        ids.add(digest)
        self.added.setdefault(cust, {}).setdefault(key, []).append(digest)
        return True

    def forget(self, cust: int) -> None:
        """Drop what the batch remembered of a customer (erased)."""
        self.seen.pop(cust, None)
        self.added.pop(cust, None)

    def store(self, w: Windows, grace_days: int) -> None:
        """Write the copies back into the states, and each customer's new event ids into their tail."""
        rec = w.rec
        n = len(rec)
        for name, values, width in (("part", self.part, N_TOPICS), ("offset", self.offset, N_TOPICS),
                                    ("newest", self.newest, N_TOPICS), ("last_seen", self.last_seen, KINDS)):
            # `fromiter` with the type given: half the time of `reshape`, which infers it.
            rec[name] = np.fromiter(values, np.int64, n * width).reshape(n, width)
        if not self.added:
            return
        rows, keys, digests = [], [], []
        for cust, added in self.added.items():
            for key, new in added.items():
                rows += [cust] * len(new)
                keys += [key] * len(new)
                digests += new
        floors = rec["newest"].astype(np.int64) - grace_days
        memories = w.id_memories()
        for cust, ids in id_memory.remembered(memories, np.array(rows, np.int64), np.array(keys, np.int64), digests,
                                              floors).items():
            w.text[cust] = msgspec.structs.replace(w.text[cust] or StateTail(), ids=ids)
