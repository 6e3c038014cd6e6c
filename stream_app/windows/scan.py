"""Every customer's state, read from Redis in chunks: for the lists built over the whole base
(alerts/growth.py) from the state the workers keep, not from raw events. A cluster is scanned
on every primary, and a state read is one customer's as the last batch wrote it."""

from __future__ import annotations

from typing import Any, Iterator

from stream_app.contracts import keys

__all__ = ["read_states"]


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


def _read(client: Any, names: list[str]) -> tuple[list[str], list[bytes | None]]:
    # A cluster's MGET must stay within one slot; mget_nonatomic splits it by slot.
    values = client.mget_nonatomic(names) if hasattr(client, "mget_nonatomic") else client.mget(names)
    return [keys.customer_of_state(k) for k in names], list(values)
