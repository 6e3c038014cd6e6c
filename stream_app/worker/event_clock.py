"""How far event time has gone, per input partition: what a batch judges its customers as of,
and up to which day a partition's exits are known."""

from __future__ import annotations

from typing import Sequence
from zoneinfo import ZoneInfo

import numpy as np

from stream_app.contracts.calendar import local_days
from stream_app.contracts.inputs import CLOCKED
from stream_app.ingest.admission import Envelope
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

    def advance(self, w: Windows, batch: Sequence[tuple[int, Envelope]]) -> np.ndarray:
        """Move the clocks on with a batch's events, (row of `w`, envelope) as applied to it; the
        day each of its customers is judged as of: their partition's newest day, or their own if
        it is newer."""
        rows, envs = zip(*batch) if batch else ((), ())
        parts = np.array([env.partition for env in envs], np.int64)
        partition = np.zeros(len(w.customers), np.int64)
        partition[np.array(rows, np.int64)] = parts  # the last one wins
        topic = np.array([env.topic for env in envs], np.int64)
        ts = np.array([env.ts for env in envs], np.int64)
        clocked = np.isin(topic, list(CLOCKED))
        # One integer per (topic, partition): a 1-d unique is many times cheaper than one by rows.
        keys, first = np.unique(topic[clocked] << 32 | parts[clocked], return_inverse=True)
        newest = np.zeros(len(keys), np.int64)
        np.maximum.at(newest, first.ravel(), ts[clocked])
        seen = self.topic_seen
        for key, latest in zip(keys.tolist(), newest.tolist()):
            t, p = key >> 32, key & 0xFFFFFFFF
            seen[(t, p)] = max(seen.get((t, p), 0), latest)
        parts_of, which = np.unique(partition, return_inverse=True)
        reached = np.zeros(len(parts_of), np.int64)
        np.maximum.at(reached, which.ravel(), w.day0)
        for p, day in zip(parts_of.tolist(), reached.tolist()):
            self.watermarks[p] = max(self.watermarks.get(p, 0), day)
        clock = np.array([self.watermarks[p] for p in parts_of.tolist()], np.int64)[which.ravel()]
        return np.maximum(clock, w.day0)

    def exits_known(self, partitions: list[int]) -> list[int]:
        """Per snapshot: the day up to which its partition's exits have been read (usage and billing
        both past it; in a catch-up one topic can run days ahead of the other)."""
        both = np.array([min(self.topic_seen.get((topic, p), 0) for topic in CLOCKED) for p in partitions])
        return np.where(both > 0, local_days(both, self.zone) - 1, 0).tolist()
