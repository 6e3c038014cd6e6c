"""What the workers keep, read across every node: each customer's state in chunks (for the lists
built over the whole base, alerts/growth.py, from the state, not from raw events), the report
counters, and the off-net book. A cluster is scanned on every primary, and a state read is one
customer's as the last batch wrote it."""

from __future__ import annotations

import collections
from typing import Any, Iterable, Iterator

from stream_app.contracts import keys
from stream_app.windows.book import Entry, decode, merge

__all__ = ["read_states", "read_some", "read_counts", "book_hashes", "read_book"]


def read_states(client: Any, chunk: int = 2000) -> Iterator[tuple[list[str], list[bytes | None]]]:
    """(customers, their stored states) `chunk` at a time, each customer once; a state gone between
    the scan and the read (it expired) comes as None."""
    names: list[str] = []
    seen: set[str] = set()  # SCAN may return a key twice when the table is resized under it
    for key in client.scan_iter(match=keys.STATE_PATTERN, count=chunk):
        name = key.decode() if isinstance(key, bytes) else key
        if name in seen:
            continue
        seen.add(name)
        names.append(name)
        if len(names) == chunk:
            yield _read(client, names)
            names = []
    if names:
        yield _read(client, names)


def read_some(client: Any, customers: list[str]) -> list[bytes | None]:
    """The stored states of `customers` (None: none)."""
    return _read(client, [keys.customer_state(c) for c in customers])[1] if customers else []


def _read(client: Any, names: list[str]) -> tuple[list[str], list[bytes | None]]:
    # A cluster's MGET must stay within one slot; mget_nonatomic splits it by slot.
    values = client.mget_nonatomic(names) if hasattr(client, "mget_nonatomic") else client.mget(names)
    return [keys.customer_of_state(k) for k in names], list(values)


def read_counts(client: Any, histograms: bool = False) -> dict[str, int]:
    """Every report counter, summed over the hashes of all nodes (see `keys.report`); with
    `histograms`, the segment baselines' histograms instead, which share those hashes."""
    totals: collections.Counter[str] = collections.Counter()
    prefix = keys.BASELINE_FIELD.encode()
    for key in client.scan_iter(match=keys.REPORT_PATTERN, count=1000):
        for name, value in client.hgetall(key).items():
            if name.startswith(prefix) == histograms:
                totals[name.decode()] += int(value)
    # A leaver's corrections can bring a counter back to 0 (`reports.facts`): nothing counted.
    return {name: total for name, total in totals.items() if total}


def book_hashes(client: Any) -> Iterator[tuple[str, str]]:
    """(month, its hash's key) of every hash of the off-net book, on every node (`windows/book.py`)."""
    for index in client.scan_iter(match=keys.OFFNET_MONTHS_PATTERN, count=1000):
        name = index.decode() if isinstance(index, bytes) else index
        shard = name[name.index("{report-") + 8:name.index("}")]
        for month in client.smembers(name):
            month = month.decode() if isinstance(month, bytes) else month
            yield month, keys.offnet_book(shard, month)


def read_book(client: Any, months: Iterable[str]) -> dict[str, Entry]:
    """The off-net book of `months` ("YYYY-MM"), each "competitor|number" merged over the months
    and the nodes (`windows/book.py`)."""
    wanted = set(months)
    found: dict[str, list[Entry]] = collections.defaultdict(list)
    for month, key in book_hashes(client):
        if month in wanted:
            for field, raw in client.hscan_iter(key, count=1000):
                found[field.decode() if isinstance(field, bytes) else field].append(decode(raw))
    return {name: merge(entries) for name, entries in found.items()}
