"""Usage by the day's age before each customer's judged day: the daily ring where it still holds
the day, and beyond it the months.

The ring keeps the `N_DAYS` days up to the customer's newest. A day older than that is read from
its month: what the month counted beyond the ring's own days of it, spread evenly over the
month's days the ring no longer holds. That is exact in sum, whatever the judged day: a snapshot
taken days after its day (a customer back after some quiet days) reads the same 30 days as one
taken the evening itself, where the ring alone would miss the oldest and read them as a fall.

Aligned arrays are counter by counter (customers, counters, ages), so that a period's sum of one
counter reads one run of memory, and in stored units (`SCALE`), so that the sums are exact
integers and a counter is put in its unit once, after summing.
"""

from __future__ import annotations

import numpy as np

from stream_app.contracts.calendar import first_days, months_of_days
from stream_app.windows.state import N_DAYS, N_MONTHS, SCALE, C, D, Windows

__all__ = ["DaysByAge", "aligned", "aligned_months"]

_SHARED_LAG = 64  # rows at one lag copied as a block; fewer are gathered with the rest


def aligned(w: Windows, day: np.ndarray, width: int = N_DAYS) -> np.ndarray:
    """(customers, DAILY, width): each daily counter, in stored units, on the day aged k before `day`
    in column k, 0 where the ring does not hold it. Aligned once for every period summed after it."""
    return _shifted(w.daily.transpose(0, 2, 1), np.where(w.day0 > 0, day - w.day0, width), width)


def aligned_months(w: Windows, month: np.ndarray) -> np.ndarray:
    """(customers, COUNTERS, N_MONTHS): each counter, in stored units, in the month aged k before `month`."""
    return _shifted(w.monthly.transpose(0, 2, 1), np.where(w.month0 > 0, month - w.month0, N_MONTHS), N_MONTHS)


def _shifted(ring: np.ndarray, lag: np.ndarray, width: int) -> np.ndarray:
    """`ring`'s buckets (its last axis, newest first) moved `lag` columns older, per row, in `width`
    columns. A batch has a few lags that most of its customers share: a shifted copy of
    the rows at each of those, the commonest first and whole (a copy without an index costs least),
    then one gather of the rest."""
    size = ring.shape[2]
    out = np.zeros((len(ring), ring.shape[1], width), ring.dtype)
    lags, counts = np.unique(lag, return_counts=True)
    rest = np.ones(len(lag), bool)
    shared = counts >= _SHARED_LAG
    for k in lags[shared][np.argsort(-counts[shared], kind="stable")]:
        first, last = max(int(k), 0), min(int(k) + size, width)  # the columns the buckets land in
        at_k = lag == k
        rows = slice(None) if rest.all() else np.nonzero(at_k)[0]
        if not isinstance(rows, slice):
            out[rows] = 0  # the commonest lag's copy was of every row
        rest[at_k] = False
        if first < last:
            out[rows, :, first:last] = ring[rows, :, first - k:last - k]
    others = np.nonzero(rest)[0]
    if len(others):
        bucket = np.arange(width)[None, :] - lag[others][:, None]
        held = (bucket >= 0) & (bucket < size)
        gathered = np.take_along_axis(ring[others], np.clip(bucket, 0, size - 1)[:, None, :], axis=2)
        out[others] = np.where(held[:, None, :], gathered, 0)
    return out


class DaysByAge:
    """Sums of daily counters over days aged [a, b) before each customer's `day`, for any b.

    `ring`: `aligned(w, day)`. Periods are summed from it where the ring holds their days, and from
    the months' per-day rates (`_rate`) times the days of each month the period spans beyond it."""

    def __init__(self, w: Windows, day: np.ndarray, ring: np.ndarray) -> None:
        self.w, self.day, self.ring = w, np.asarray(day, np.int64), ring
        day0 = w.day0.astype(np.int64)
        # The oldest day `ring` holds: the ring's own oldest, or the oldest it aligned (judged days after
        # the customer's newest, the ring holds older days than the aligned columns).
        self.start = np.maximum(day0, self.day) - (N_DAYS - 1)
        months = w.month0.astype(np.int64)[:, None] - np.arange(N_MONTHS)  # month index of each monthly bucket
        self.first = first_days(months)
        last = first_days(months + 1) - 1
        known = (day0 > 0) & (w.month0 > 0)
        # The days `ring` does not hold, in each month: from its first to the day before the ring, none
        # after the judged day (snapshots are of days the ring holds: observations.py) nor after the
        # newest with usage (judged long after it, the days between had none).
        newest = np.minimum(self.start - 1, np.minimum(self.day, day0))
        self.lost_last = np.where(known[:, None], np.minimum(last, newest[:, None]), 0)
        self.lost_days = np.maximum(self.lost_last - self.first + 1, 0)
        # The month `ring` starts in has days of both kinds: its held days are the daily buckets from
        # the newest of that month to the oldest `ring` holds. Their sums, every counter at once.
        start_month = months_of_days(np.maximum(self.start, 1))
        held_from = day0 - (first_days(start_month + 1) - 1)
        buckets = np.arange(N_DAYS)[None, :]
        held = (buckets >= held_from[:, None]) & (buckets <= (day0 - self.start)[:, None])
        self.in_ring = np.matmul(held[:, None, :].astype(np.int64), w.daily)[:, 0]  # (customers, DAILY)
        self.partial = np.arange(N_MONTHS)[None, :] == (w.month0 - start_month)[:, None]
        self._rates: dict[tuple[str, ...], np.ndarray] = {}  # per counter, and per group of counters
        self._sums: dict[tuple[str, ...], np.ndarray] = {}  # the same, of the days `ring` holds

    def total(self, counters: tuple[str, ...], a: int, b: int | np.ndarray) -> np.ndarray:
        """Each customer's sum of `counters` over the days aged [a, b) before their day, in their
        units; `b` may differ by customer."""
        start, unit = min(a, N_DAYS), SCALE.get(counters[0], 1.0)
        if isinstance(b, np.ndarray):  # a period of its own for each customer
            ages = np.arange(N_DAYS)[None, :]
            held = (self._held(counters) * ((ages >= start) & (ages < b[:, None]))).sum(axis=1) / unit
        else:
            held = self._held(counters)[:, start:min(b, N_DAYS)].sum(axis=1) / unit
        lo, hi = self.day - (b - 1), self.day - a
        overlap = np.maximum(np.minimum(self.lost_last, hi[:, None]) - np.maximum(self.first, lo[:, None]) + 1, 0)
        return held + (overlap * self._rate(counters)).sum(axis=1)

    def _held(self, counters: tuple[str, ...]) -> np.ndarray:
        """(customers, N_DAYS): the sum of counters of one unit on each day, in stored units."""
        if counters not in self._sums:
            if len({SCALE.get(c, 1.0) for c in counters}) > 1:
                raise ValueError(f"counters of different units are not summed: {counters}")
            self._sums[counters] = sum(self.ring[:, D[c], :N_DAYS] for c in counters)
        return self._sums[counters]

    def _rate(self, counters: tuple[str, ...]) -> np.ndarray:
        """(customers, N_MONTHS): counters a day over each month's days beyond the ring."""
        if counters not in self._rates:
            if len(counters) > 1:
                self._rates[counters] = sum(self._rate((c,)) for c in counters)
            else:
                months, in_ring = self.w.monthly[:, :, C[counters[0]]], self.in_ring[:, D[counters[0]]]
                left = np.maximum(months - np.where(self.partial, in_ring[:, None], 0), 0) / SCALE.get(counters[0], 1.0)
                self._rates[counters] = np.divide(left, self.lost_days, out=np.zeros_like(left),
                                                  where=self.lost_days > 0)
        return self._rates[counters]
