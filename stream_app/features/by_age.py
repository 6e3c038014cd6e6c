"""Usage by the day's age before each customer's judged day: the daily ring where it still holds
the day, and beyond it the months.

The ring keeps the `N_DAYS` days up to the customer's newest. A day older than that is read from
its month: what the month counted beyond the ring's own days of it, spread evenly over the
month's days the ring no longer holds. That is exact in sum, whatever the judged day: a snapshot
taken days after its day (a customer back after some quiet days) reads the same 30 days as one
taken the evening itself, where the ring alone would miss the oldest and read them as a fall.
"""

from __future__ import annotations

import numpy as np

from stream_app.contracts.calendar import first_days, months_of_days
from stream_app.windows.state import COUNTERS, DAILY, N_DAYS, N_MONTHS, SCALE, C, D, Windows

__all__ = ["DaysByAge", "aligned", "aligned_months"]

_DAILY_SCALE = np.array([SCALE.get(c, 1.0) for c in DAILY])  # stored units per unit
_MONTHLY_SCALE = np.array([SCALE.get(c, 1.0) for c in COUNTERS])
_SHARED_LAG = 64  # rows at one lag copied as a block; fewer are gathered with the rest


def aligned(w: Windows, day: np.ndarray, width: int = N_DAYS) -> np.ndarray:
    """(customers, width, DAILY): each daily counter, in its unit, on the day aged k before `day`
    in column k, 0 where the ring does not hold it. Aligned once for every period summed after it."""
    out = _shifted(w.daily, np.where(w.day0 > 0, day - w.day0, width), width)
    out /= _DAILY_SCALE
    return out


def aligned_months(w: Windows, month: np.ndarray) -> np.ndarray:
    """(customers, N_MONTHS, COUNTERS): each counter, in its unit, in the month aged k before `month`."""
    out = _shifted(w.monthly, np.where(w.month0 > 0, month - w.month0, N_MONTHS), N_MONTHS)
    out /= _MONTHLY_SCALE
    return out


def _shifted(ring: np.ndarray, lag: np.ndarray, width: int) -> np.ndarray:
    """`ring`'s buckets (newest first) moved `lag` columns older, per row, in `width` columns. A
    batch has a few lags that most of its customers share: a shifted copy of the rows at each of
    those, then one gather of the rest."""
    out = np.zeros((len(ring), width, ring.shape[2]))
    lags, counts = np.unique(lag, return_counts=True)
    rest = np.ones(len(lag), bool)
    for k in lags[counts >= _SHARED_LAG]:
        first, last = max(int(k), 0), min(int(k) + ring.shape[1], width)  # the columns the buckets land in
        rows = slice(None) if len(lags) == 1 else np.nonzero(lag == k)[0]
        rest[rows] = False
        if first < last:
            out[rows, first:last] = ring[rows, first - k:last - k]
    others = np.nonzero(rest)[0]
    if len(others):
        bucket = np.arange(width)[None, :] - lag[others][:, None]
        held = (bucket >= 0) & (bucket < ring.shape[1])
        out[others] = np.where(held[:, :, None], ring[others[:, None], np.clip(bucket, 0, ring.shape[1] - 1)], 0)
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
        # the newest of that month to the oldest `ring` holds.
        start_month = months_of_days(np.maximum(self.start, 1))
        held_from = day0 - (first_days(start_month + 1) - 1)
        buckets = np.arange(N_DAYS)[None, :]
        self.held = ((buckets >= held_from[:, None]) & (buckets <= (day0 - self.start)[:, None])).astype(np.float64)
        self.partial = np.arange(N_MONTHS)[None, :] == (w.month0 - start_month)[:, None]
        self._cache: dict[tuple[str, ...], np.ndarray] = {}  # per counter, and per group of counters

    def total(self, counters: tuple[str, ...], a: int, b: int | np.ndarray) -> np.ndarray:
        """Each customer's sum of `counters` over the days aged [a, b) before their day, in their
        units; `b` may differ by customer."""
        if isinstance(b, np.ndarray):
            ages = np.arange(N_DAYS)[None, :]
            held = (self._held(counters) * ((ages >= a) & (ages < b[:, None]))).sum(axis=1)
        else:
            held = self._held(counters)[:, a:min(b, N_DAYS)].sum(axis=1) if a < N_DAYS else 0.0
        lo, hi = self.day - (b - 1), self.day - a
        overlap = np.maximum(np.minimum(self.lost_last, hi[:, None]) - np.maximum(self.first, lo[:, None]) + 1, 0)
        return held + (overlap * self._rates_of(counters)).sum(axis=1)

    def _held(self, counters: tuple[str, ...]) -> np.ndarray:
        key = ("held", *counters)
        if key not in self._cache:
            self._cache[key] = sum(self.ring[:, :, D[c]] for c in counters)
        return self._cache[key]

    def _rates_of(self, counters: tuple[str, ...]) -> np.ndarray:
        key = ("rates", *counters)
        if key not in self._cache:
            self._cache[key] = sum(self._rate(c) for c in counters)
        return self._cache[key]

    def _rate(self, counter: str) -> np.ndarray:
        """(customers, N_MONTHS): a counter a day over each month's days beyond the ring."""
        if (counter,) not in self._cache:
            w = self.w
            months = w.monthly[:, :, C[counter]] / SCALE.get(counter, 1.0)
            in_ring = (w.daily[:, :, D[counter]] * self.held).sum(axis=1) / SCALE.get(counter, 1.0)
            left = np.maximum(months - np.where(self.partial, in_ring[:, None], 0.0), 0.0)
            self._cache[(counter,)] = np.divide(left, self.lost_days, out=np.zeros_like(left), where=self.lost_days > 0)
        return self._cache[(counter,)]
