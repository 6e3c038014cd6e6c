"""How far event time has gone, per input partition: what a batch judges its customers as of,
and up to which day a partition's exits are known."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np

from stream_app.contracts.calendar import local_days
from stream_app.contracts.inputs import CLOCKED
from stream_app.windows.apply import Envelope
from stream_app.windows.state import Windows

__all__ = ["EventClock"]


class EventClock:
    """Event time per partition, kept by one worker over its batches."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        # The newest day reached by any customer of a partition. Per partition, because partitions
        # progress at their own pace and a lagging one must not make its customers look inactive.
        self.watermarks: dict[int, int] = {}
        # Newest event-time (unix s) read per (topic, partition) of usage and billing: how far
        # the labeller may trust that every exit of a partition has been reported.
        self.topic_seen: dict[tuple[int, int], int] = {}

    def advance(self, w: Windows, decoded: list[tuple[str, Envelope]], row: dict[str, int]) -> np.ndarray:
        """Move the clocks on with a batch's events (applied to `w`); the day each of its customers
        is judged as of: their partition's newest day, or their own if it is newer."""
        partition = np.zeros(len(w.customers), np.int64)
        partition[[row[c] for c, _ in decoded]] = [env.partition for _, env in decoded]  # the last one wins
        seen = self.topic_seen
        for _, env in decoded:
            if env.topic in CLOCKED:
                key = (env.topic, env.partition)
                if seen.get(key, 0) < env.ts:
                    seen[key] = env.ts
        for p in np.unique(partition):
            self.watermarks[int(p)] = max(self.watermarks.get(int(p), 0), int(w.day0[partition == p].max()))
        clock = np.array([self.watermarks[int(p)] for p in partition], np.int64)
        return np.maximum(clock, w.day0)

    def exits_known(self, partitions: list[int]) -> list[int]:
        """Per snapshot: the day up to which its partition's exits have been read (usage and billing
        both past it; in a catch-up one topic can run days ahead of the other)."""
        both = np.array([min(self.topic_seen.get((topic, p), 0) for topic in CLOCKED) for p in partitions])
        return np.where(both > 0, local_days(both, self.zone) - 1, 0).tolist()
