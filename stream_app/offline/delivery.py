"""The order a simulated day's records reach the topics in."""

from __future__ import annotations

from typing import Iterable

import msgspec

from stream_app.offline.simulator import SimRecord

__all__ = ["in_time_order"]


class _Stamp(msgspec.Struct):
    ts: str = ""


def in_time_order(records: Iterable[SimRecord]) -> list[SimRecord]:
    """The records with each delivery day's in the order of their event times, days in order. The
    simulator delivers a day customer by customer; a mediation system delivers it as the calls
    were made, every customer's interleaved, so that a few minutes of traffic hold one or two events
    of each of thousands of customers. Records delivered late come first on their day. (The
    simulator writes every time in one zone, so the ISO strings sort as the times do.)"""
    stamped = [((r.day, msgspec.json.decode(r.value, type=_Stamp).ts if r.value else ""), k, r)
               for k, r in enumerate(records)]
    stamped.sort(key=lambda s: s[:2])
    return [r for _, _, r in stamped]
