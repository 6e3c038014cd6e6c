"""The recent labelled snapshots that the boosted trees are refitted on (`model/champion.py`).

Bounded twice: at most `capacity` rows, the oldest overwritten first, and none older than
`max_age_days` before the newest label's day, so that trees refitted after a change of behaviour
do not go on learning the customers of half a year ago. Features are kept as float32 (4 bytes
each): the store travels in the trainer's checkpoint, and so survives a restart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LabelStore"]


class LabelStore:
    """A ring of (features, label, day, customer), in the order learned."""

    def __init__(self, capacity: int, width: int, max_age_days: int) -> None:
        self.capacity, self.max_age_days = capacity, max_age_days
        self.x = np.zeros((capacity, width), np.float32)
        self.y = np.zeros(capacity, np.int8)
        self.day = np.zeros(capacity, np.int32)
        self.who = np.zeros(capacity, np.int64)  # the customer, hashed
        self.seen = 0  # labels ever added

    def __len__(self) -> int:
        return min(self.seen, self.capacity)

    def add(self, x: np.ndarray, y: int, day: int, who: int) -> None:
        at = self.seen % self.capacity
        self.x[at], self.y[at], self.day[at], self.who[at] = x, y, day, who
        self.seen += 1

    def recent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, customers) of the rows within the age limit, oldest first."""
        n = len(self)
        order = (np.arange(n) + (self.seen - n)) % self.capacity
        days = self.day[order]
        keep = order[days >= days.max(initial=0) - self.max_age_days]
        return self.x[keep].astype(np.float64), self.y[keep].astype(np.int64), self.who[keep]
