"""Usage by the day's age before each customer's judged day: the daily ring where it still holds
the day, and beyond it the months.

The ring keeps the `N_DAYS` days up to the customer's newest. A day older than that is read from
its month: what the month counted beyond the ring's own days of it, spread evenly over the
month's days the ring no longer holds. That is exact in sum, whatever the judged day: a snapshot
taken days after its day (a customer back after some quiet days) reads the same 30 days as one
taken the evening itself, where the ring alone would miss the oldest and read them as a fall.

Sums are taken in stored units (`SCALE`), so that they are exact integers and a counter is put
in its unit once, after summing. They are compiled loops (numba) that read the ring where it
lies, each row at its own lag: in numpy, every batch first copied the whole ring aligned by age,
all nine daily counters of every customer, to sum a few of them (docs/performance.md, "Periods
summed where the ring lies").
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from stream_app.contracts.calendar import first_days, months_of_days
from stream_app.windows.jit import compiled
from stream_app.windows.state import N_DAYS, N_MONTHS, SCALE, C, D, Windows

__all__ = ["DaysByAge", "RingByAge", "aligned_months"]


def aligned_months(w: Windows, month: np.ndarray) -> np.ndarray:
    """(customers, COUNTERS, N_MONTHS): each counter, in stored units, in the month aged k before `month`."""
    return _shifted(w.monthly, _lags(w.month0, month, N_MONTHS), N_MONTHS)


class RingByAge:
    """Sums of daily counters over the days aged [a, b) before each customer's `day` that the ring
    holds (ages below `N_DAYS`). `ages`: those the periods summed most often start or end at. The
    sums up to each are taken for every counter in one pass over the ring, so that a period between
    two of them reads no more of it; any other period is summed in a pass of its own."""

    def __init__(self, w: Windows, day: np.ndarray | int, ages: Iterable[int] = ()) -> None:
        self.w, self.lag = w, _lags(w.day0, _each(w, day), N_DAYS)
        if any(age < 0 for age in ages):
            raise ValueError(f"periods are of ages 0 and more: {sorted(ages)}")
        kept = sorted({min(age, N_DAYS) for age in ages})
        self._at = {age: j for j, age in enumerate(kept)}  # age -> its column of `_upto`
        self._upto = _sums_upto(w.daily, self.lag, np.array(kept, np.int64))  # (customers, ages, DAILY)

    def counted(self, counters: tuple[str, ...], a: int, b: int | np.ndarray) -> np.ndarray:
        """Each customer's sum of `counters` over the days aged [a, b) the ring holds, in stored units."""
        if a < 0:
            raise ValueError(f"periods are of ages 0 and more: [{a}, {b})")
        start, idx = min(a, N_DAYS), np.array([D[c] for c in counters], np.int64)
        if not isinstance(b, np.ndarray) and start in self._at and min(b, N_DAYS) in self._at:
            return _between(self._upto, idx, self._at[start], self._at[min(b, N_DAYS)])
        return _ring_sums(self.w.daily, idx, self.lag, start, _each(self.w, np.minimum(b, N_DAYS)))

    def total(self, counter: str, a: int, b: int) -> np.ndarray:
        """One counter's `counted`, in its unit: the ring's days alone, nothing from the months."""
        return self.counted((counter,), a, b) / SCALE.get(counter, 1.0)


class DaysByAge:
    """Sums of daily counters over days aged [a, b) before each customer's `day`, for any b: from
    the ring where it holds their days (`ring`), and from the months' per-day rates times the days
    of each month the period spans beyond it. `ages` as `RingByAge` takes them."""

    def __init__(self, w: Windows, day: np.ndarray | int, ages: Iterable[int] = ()) -> None:
        self.w, self.day = w, _each(w, day)
        self.ring = RingByAge(w, self.day, ages)
        day0 = w.day0.astype(np.int64)
        # The oldest day in reach of the ring: its own oldest, or the oldest aged below N_DAYS
        # (judged days after the customer's newest, the ring holds older days than those).
        self.start = np.maximum(day0, self.day) - (N_DAYS - 1)
        months = w.month0.astype(np.int64)[:, None] - np.arange(N_MONTHS)  # month index of each monthly bucket
        self.first = first_days(months)
        # Each month ends the day before the next begins: the next of all but the newest is in `first`.
        last = np.concatenate([first_days(months[:, :1] + 1), self.first[:, :-1]], axis=1) - 1
        known = (day0 > 0) & (w.month0 > 0)
        # The days the ring does not give, in each month: from its first to the day before the
        # ring's, none after the judged day (snapshots are of days the ring holds: observations.py)
        # nor after the newest with usage (judged long after it, the days between had none).
        newest = np.minimum(self.start - 1, np.minimum(self.day, day0))
        self.lost_last = np.where(known[:, None], np.minimum(last, newest[:, None]), 0)
        self.lost_days = np.maximum(self.lost_last - self.first + 1, 0)
        # The month the ring's reach starts in has days of both kinds: its held days are the daily
        # buckets from the newest of that month to the oldest in reach. Their sums, every counter at once.
        start_month = months_of_days(np.maximum(self.start, 1))
        held_from = day0 - (first_days(start_month + 1) - 1)
        self.in_ring = _bucket_sums(w.daily, held_from, day0 - self.start)  # (customers, DAILY)
        self.partial = np.arange(N_MONTHS)[None, :] == (w.month0 - start_month)[:, None]
        self._rates: dict[tuple[str, ...], np.ndarray] = {}  # per group of counters

    def total(self, counters: tuple[str, ...], a: int, b: int | np.ndarray) -> np.ndarray:
        """Each customer's sum of `counters` (of one unit) over the days aged [a, b) before their
        day, in their units; `b` may differ by customer."""
        units = {SCALE.get(c, 1.0) for c in counters}
        if len(units) > 1:
            raise ValueError(f"counters of different units are not summed: {counters}")
        held = self.ring.counted(counters, a, b) / units.pop()
        return held + _spread(self._rate(counters), self.first, self.lost_last, self.day, a, _each(self.w, b))

    def _rate(self, counters: tuple[str, ...]) -> np.ndarray:
        """(customers, N_MONTHS): the counters a day over each month's days beyond the ring."""
        if counters not in self._rates:
            self._rates[counters] = _rates(self.w.monthly, np.array([C[c] for c in counters], np.int64), self.in_ring,
                                           np.array([D[c] for c in counters], np.int64),
                                           SCALE.get(counters[0], 1.0), self.partial, self.lost_days)
        return self._rates[counters]


def _each(w: Windows, value: np.ndarray | int) -> np.ndarray:
    """`value` for each of `w`'s rows, as int64: the compiled loops read one a row, unchecked."""
    return np.broadcast_to(np.asarray(value, np.int64), w.day0.shape).astype(np.int64)


def _lags(newest: np.ndarray, judged: np.ndarray, width: int) -> np.ndarray:
    """How many buckets older each row's buckets are at its judged day: `width` (none is in reach)
    for a row without any."""
    return np.where(newest > 0, np.asarray(judged, np.int64) - newest, width).astype(np.int64)


@compiled
def _shifted(ring: np.ndarray, lag: np.ndarray, width: int) -> np.ndarray:
    """`ring`'s buckets (rows, buckets newest first, counters) moved `lag` buckets older, per row,
    in `width` columns: (rows, counters, width), so that a period of one counter is one run of memory."""
    rows, size, counters = ring.shape
    out = np.zeros((rows, counters, width), np.int64)
    for i in range(rows):
        k = lag[i]
        for age in range(max(k, 0), min(k + size, width)):
            for c in range(counters):
                out[i, c, age] = ring[i, age - k, c]
    return out


@compiled
def _sums_upto(ring: np.ndarray, lag: np.ndarray, ages: np.ndarray) -> np.ndarray:
    """(rows, ages, counters): each row's sum of every counter over the days aged below each of
    `ages` (ascending, at most `N_DAYS`) that `ring` (rows, buckets newest first, counters)
    holds, its newest bucket aged `lag`. One pass over the ring's buckets in reach."""
    rows, size, counters = ring.shape
    out = np.zeros((rows, len(ages), counters), np.int64)
    running = np.zeros(counters, np.int64)
    for i in range(rows):
        running[:] = 0
        since, k = 0, lag[i]
        for j in range(len(ages)):
            for age in range(max(since, k), min(ages[j], k + size)):
                for c in range(counters):
                    running[c] += ring[i, age - k, c]
            for c in range(counters):
                out[i, j, c] = running[c]
            since = ages[j]
    return out


@compiled
def _between(upto: np.ndarray, counters: np.ndarray, since: int, until: int) -> np.ndarray:
    """Each row's sum of `counters` between two of `_sums_upto`'s ages (columns `since` and
    `until` of `upto`); none where `until` is not the later."""
    out = np.zeros(len(upto), np.int64)
    if until > since:
        for i in range(len(upto)):
            for c in counters:
                out[i] += upto[i, until, c] - upto[i, since, c]
    return out


@compiled
def _ring_sums(ring: np.ndarray, counters: np.ndarray, lag: np.ndarray, start: int, stop: np.ndarray) -> np.ndarray:
    """Each row's sum of `counters` over the days aged [start, stop) (at most `N_DAYS`) that
    `ring` holds, its newest bucket aged `lag` (exact: integers in stored units)."""
    rows, size, _ = ring.shape
    out = np.zeros(rows, np.int64)
    for i in range(rows):
        for age in range(max(start, lag[i]), min(stop[i], lag[i] + size)):
            for c in counters:
                out[i] += ring[i, age - lag[i], c]
    return out


@compiled
def _bucket_sums(ring: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """(rows, counters): each row's sum of its buckets `first` to `last`, both included."""
    rows, size, counters = ring.shape
    out = np.zeros((rows, counters), np.int64)
    for i in range(rows):
        for b in range(max(first[i], 0), min(last[i], size - 1) + 1):
            for c in range(counters):
                out[i, c] += ring[i, b, c]
    return out


@compiled
def _rates(monthly: np.ndarray, by_month: np.ndarray, in_ring: np.ndarray, by_day: np.ndarray, unit: float,
           partial: np.ndarray, lost_days: np.ndarray) -> np.ndarray:
    """(rows, months): what each month counted of the counters (`by_month` in `monthly`, `by_day`
    in `in_ring`) beyond the ring's days of it, a day over its days beyond; 0 without any. Added
    counter by counter, as numpy added them."""
    rows, months, _ = monthly.shape
    out = np.zeros((rows, months), np.float64)
    for i in range(rows):
        for m in range(months):
            if lost_days[i, m] > 0:
                rate = 0.0
                for j in range(len(by_month)):
                    held = in_ring[i, by_day[j]] if partial[i, m] else 0
                    rate += max(monthly[i, m, by_month[j]] - held, 0) / unit / lost_days[i, m]
                out[i, m] = rate
    return out


@compiled
def _spread(rate: np.ndarray, first: np.ndarray, lost_last: np.ndarray, day: np.ndarray, a: int,
            b: np.ndarray) -> np.ndarray:
    """Each row's usage on the days beyond the ring aged [a, b) before its `day`: each month's rate
    times its days there, the months added in turn, as numpy's sum along a row of seven adds them
    (the same to the bit)."""
    rows, months = rate.shape
    out = np.empty(rows, np.float64)
    for i in range(rows):
        lo, hi = day[i] - (b[i] - 1), day[i] - a
        spread = 0.0
        for m in range(months):
            spread += max(min(lost_last[i, m], hi) - max(first[i, m], lo) + 1, 0) * rate[i, m]
        out[i] = spread
    return out
