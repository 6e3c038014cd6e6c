"""The labelled snapshots that the boosted trees are refitted on (`model/champion.py`).

Bounded twice: at most `capacity` rows, the oldest overwritten first, and none older than
`max_age_days` before the newest label's day, so that trees refitted after a change of behaviour
do not go on learning the customers of half a year ago. Features are kept as float32 (4 bytes
each): the store travels in the trainer's checkpoint, and so survives a restart.

Once full, the store samples: a label is kept with the chance that makes the ring span
`max_age_days` at the rate labels come in (the most any of the last few label days brought: the
labels of a day come from every partition, each at its own pace). Without it the ring held
the newest `capacity` labels, which on a base of 3,000 customers (a label each a day) is ten days,
on 10,000 three, and on an operator's millions a fraction of one day: trees learned the few
dozen churners of those days, each many times over. On the simulator (3,000 customers, trees
refitted weekly on 30,000 labels, judged on the test weeks' calls), sampling them over 30 to 90
days in place of the newest ten raised the precision at the call budget from 0.66 to 0.68-0.73.
Which labels are kept follows from the customer and the day alone, so a replay keeps the same.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LabelStore"]

_MASK = (1 << 64) - 1


class LabelStore:
    """A ring of (features, label, day, customer), in the order learned."""

    RECENT_DAYS = 3  # label days before the newest whose counts say the rate

    def __init__(self, capacity: int, width: int, max_age_days: int) -> None:
        self.capacity, self.max_age_days = capacity, max_age_days
        self.x = np.zeros((capacity, width), np.float32)
        self.y = np.zeros(capacity, np.int8)
        self.day = np.zeros(capacity, np.int32)
        self.who = np.zeros(capacity, np.int64)  # the customer, hashed
        self.seen = 0  # labels added ever, kept or not
        self.kept = 0  # labels kept ever: where the ring is
        self.day_counts: dict[int, int] = {}  # labels added per label day, of the newest few

    def upgrade(self) -> None:
        """A store pickled before sampling kept every label it was given."""
        self.__dict__.setdefault("kept", self.seen)
        self.__dict__.setdefault("day_counts", {})

    def __len__(self) -> int:
        return min(self.kept, self.capacity)

    def add(self, x: np.ndarray, y: int, day: int, who: int) -> None:
        """Keep the label, or not once the store is full (see the module's docstring)."""
        self._count(day)
        self.seen += 1
        if self.kept < self.capacity or _draw(who, day) < self.keep_share():
            self._put(x, y, day, who)

    def _put(self, x: np.ndarray, y: int, day: int, who: int) -> None:
        at = self.kept % self.capacity
        self.x[at], self.y[at], self.day[at], self.who[at] = x, y, day, who
        self.kept += 1

    def resized(self, capacity: int, max_age_days: int) -> LabelStore:
        """A store of another size holding this one's newest labels, as many as it takes."""
        out = LabelStore(capacity, self.x.shape[1], max_age_days)
        for at in self._order()[-capacity:]:
            out._put(self.x[at], int(self.y[at]), int(self.day[at]), int(self.who[at]))
        out.seen, out.day_counts = self.seen, dict(self.day_counts)
        return out

    def keep_share(self) -> float:
        """The chance a label has of being kept once the store is full: what spreads `capacity` labels
        over `max_age_days` days at the most labels any of the last few days before the newest brought
        (1 while the newest is the only day known)."""
        newest = max(self.day_counts, default=0)
        per_day = max((n for day, n in self.day_counts.items() if day < newest), default=0)
        return min(1.0, self.capacity / (per_day * self.max_age_days)) if per_day else 1.0

    def _count(self, day: int) -> None:
        counts = self.day_counts
        newest = max(counts, default=day)
        if day < newest - self.RECENT_DAYS:
            return  # a label of long ago: the rate is told by the recent days
        counts[day] = counts.get(day, 0) + 1
        if day > newest:
            for old in [d for d in counts if d < day - self.RECENT_DAYS]:
                del counts[old]

    def _order(self) -> np.ndarray:
        """The rows, oldest first."""
        n = len(self)
        return (np.arange(n) + (self.kept - n)) % self.capacity

    def recent(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, customers) of the rows within the age limit, oldest first."""
        order = self._order()
        days = self.day[order]
        keep = order[days >= days.max(initial=0) - self.max_age_days]
        return self.x[keep].astype(np.float64), self.y[keep].astype(np.int64), self.who[keep]


def _draw(who: int, day: int) -> float:
    """A number in [0, 1) that depends only on the customer and the day (splitmix64's finaliser, so
    that neighbouring customers and days draw apart)."""
    z = (int(who) * 0x9E3779B97F4A7C15 + int(day) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return ((z ^ (z >> 31)) >> 11) / float(1 << 53)
