"""The compiled loops of `features/by_age.py` give, to the bit, what the numpy formulation they
replaced gives (`Reference`, below, as it stood): the same aligned months, the same sums of the
days the ring holds, the same period totals with the months' share (floats added in the same
order), on windows of every shape a batch can hold."""

import numpy as np
import pytest

from stream_app.contracts.calendar import first_days, months_of_days
from stream_app.features.by_age import DaysByAge, RingByAge, aligned_months
from stream_app.windows.state import N_DAYS, N_MONTHS, SCALE, C, D, Windows


def shifted(ring: np.ndarray, lag: np.ndarray, width: int) -> np.ndarray:
    """`ring` (rows, counters, buckets) gathered by age with numpy."""
    size = ring.shape[2]
    bucket = np.arange(width)[None, :] - lag[:, None]
    held = (bucket >= 0) & (bucket < size)
    gathered = np.take_along_axis(ring, np.clip(bucket, 0, size - 1)[:, None, :], axis=2)
    return np.where(held[:, None, :], gathered, 0)


def aligned(w: Windows, day: np.ndarray, width: int = N_DAYS) -> np.ndarray:
    """The daily ring as (customers, counters, ages) at each customer's `day`."""
    return shifted(w.daily.transpose(0, 2, 1), np.where(w.day0 > 0, day - w.day0, width), width)


class Reference:
    """`DaysByAge` in numpy, from the ring aligned by age, as it was before the compiled loops."""

    def __init__(self, w: Windows, day: np.ndarray, ring: np.ndarray) -> None:
        self.w, self.day, self.ring = w, np.asarray(day, np.int64), ring
        day0 = w.day0.astype(np.int64)
        self.start = np.maximum(day0, self.day) - (N_DAYS - 1)
        months = w.month0.astype(np.int64)[:, None] - np.arange(N_MONTHS)
        self.first = first_days(months)
        known = (day0 > 0) & (w.month0 > 0)
        newest = np.minimum(self.start - 1, np.minimum(self.day, day0))
        self.lost_last = np.where(known[:, None], np.minimum(first_days(months + 1) - 1, newest[:, None]), 0)
        self.lost_days = np.maximum(self.lost_last - self.first + 1, 0)
        start_month = months_of_days(np.maximum(self.start, 1))
        held_from = day0 - (first_days(start_month + 1) - 1)
        buckets = np.arange(N_DAYS)[None, :]
        held = (buckets >= held_from[:, None]) & (buckets <= (day0 - self.start)[:, None])
        self.in_ring = np.matmul(held[:, None, :].astype(np.int64), w.daily)[:, 0]
        self.partial = np.arange(N_MONTHS)[None, :] == (w.month0 - start_month)[:, None]

    def total(self, counters: tuple[str, ...], a: int, b: int | np.ndarray) -> np.ndarray:
        start, unit = min(a, N_DAYS), SCALE.get(counters[0], 1.0)
        per_day = sum(self.ring[:, D[c], :N_DAYS] for c in counters)
        if isinstance(b, np.ndarray):
            ages = np.arange(N_DAYS)[None, :]
            held = (per_day * ((ages >= start) & (ages < b[:, None]))).sum(axis=1) / unit
        else:
            held = per_day[:, start:min(b, N_DAYS)].sum(axis=1) / unit
        lo, hi = self.day - (b - 1), self.day - a
        overlap = np.maximum(np.minimum(self.lost_last, hi[:, None]) - np.maximum(self.first, lo[:, None]) + 1, 0)
        return held + (overlap * sum(self._rate(c) for c in counters)).sum(axis=1)

    def _rate(self, counter: str) -> np.ndarray:
        months, in_ring = self.w.monthly[:, :, C[counter]], self.in_ring[:, D[counter]]
        left = np.maximum(months - np.where(self.partial, in_ring[:, None], 0), 0) / SCALE.get(counter, 1.0)
        return np.divide(left, self.lost_days, out=np.zeros_like(left), where=self.lost_days > 0)


def batch(seed: int, rows: int = 400) -> tuple[Windows, np.ndarray]:
    """Windows with random counts, newest days and months, and judged days before, on and after
    each customer's newest (by up to twice the ring), some with no usage or no month yet."""
    rng = np.random.default_rng(seed)
    w = Windows.load([f"86138{k:08d}" for k in range(rows)], [None] * rows)
    w.daily[:] = rng.integers(0, 300, w.daily.shape)
    w.monthly[:] = rng.integers(0, 90_000, w.monthly.shape)
    w.daily[rng.random(rows) < 0.2] = 0
    day0 = 740_000 + rng.integers(0, 400, rows)
    w.rec["day0"] = np.where(rng.random(rows) < 0.05, 0, day0)
    w.rec["month0"] = np.where(rng.random(rows) < 0.05, 0, months_of_days(day0 + rng.integers(-40, 3, rows)))
    day = day0 + np.where(rng.random(rows) < 0.7, 1, rng.integers(-2 * N_DAYS, 2 * N_DAYS, rows))
    return w, day.astype(np.int64)


PERIODS = ((0, 7), (0, 14), (14, 28), (0, 30), (30, 60), (35, 63), (63, 91), (5, 5), (40, 45))


@pytest.mark.parametrize("seed", range(6))
def test_the_months_are_aligned_as_numpy_aligned_them(seed: int) -> None:
    w, day = batch(seed)
    month = months_of_days(day)
    lag = np.where(w.month0 > 0, month - w.month0, N_MONTHS)
    assert np.array_equal(aligned_months(w, month), shifted(w.monthly.transpose(0, 2, 1), lag, N_MONTHS))


@pytest.mark.parametrize("seed", range(6))
def test_the_days_the_ring_holds_are_summed_as_from_the_aligned_ring(seed: int) -> None:
    w, day = batch(seed)
    by_age = aligned(w, day)
    ages = {age for period in PERIODS for age in period}
    for ring in (RingByAge(w, day), RingByAge(w, day, ages), RingByAge(w, day, (0, 14, 30))):
        for counter in ("out_calls", "out_min", "dropped_calls"):
            for a, b in PERIODS:
                want = by_age[:, D[counter], a:b].sum(axis=1) / SCALE.get(counter, 1.0)
                assert np.array_equal(ring.total(counter, a, b), want), (counter, a, b)


@pytest.mark.parametrize("seed", range(6))
def test_period_totals_are_numpys_to_the_bit(seed: int) -> None:
    w, day = batch(seed)
    # A day over, and one under way: the days before it, from the ring aligned a column wider.
    references = (Reference(w, day, aligned(w, day)), Reference(w, day, aligned(w, day + 1, N_DAYS + 1)[:, :, 1:]))
    for reference, ages in zip(references, ((), {age for period in PERIODS for age in period})):
        days = DaysByAge(w, day, ages)
        assert np.array_equal(days.in_ring, reference.in_ring)
        for counters in (("out_min",), ("out_calls", "in_calls"), ("sms_out", "sms_in", "out_calls")):
            for a, b in PERIODS:
                assert np.array_equal(days.total(counters, a, b), reference.total(counters, a, b)), (counters, a, b)
            own = np.random.default_rng(seed).integers(1, 40, len(day))  # a period of its own for each customer
            assert np.array_equal(days.total(counters, 0, own), reference.total(counters, 0, own)), counters


def test_the_months_share_is_added_in_numpys_order() -> None:
    """A customer judged long after their ring has several months beyond it in a period; their
    shares, added in another order, differ in the last bit for some (this batch has such)."""
    w, day = batch(3)
    later = np.where(w.day0 > 0, w.day0.astype(np.int64), day) + 2 * N_DAYS
    days, reference = DaysByAge(w, later), Reference(w, later, aligned(w, later))
    got, want = days.total(("out_min",), 0, 90), reference.total(("out_min",), 0, 90)
    assert np.array_equal(got, want)
    shares = (days.lost_days > 0).sum(axis=1)
    assert (shares >= 3).sum() > 50  # periods with three months' shares or more, where order tells


def test_a_day_or_period_for_all_is_read_for_each_row_and_others_are_refused() -> None:
    """The compiled loops read a judged day and a period's end for every row, unchecked: one for
    all counts for each, an array of another length is refused, and so is an age below 0."""
    w, _ = batch(9, rows=30)
    day = np.full(30, 740_300, np.int64)
    every, one = DaysByAge(w, day, {0, 30}), DaysByAge(w, 740_300, {0, 30})
    assert np.array_equal(one.total(("out_min",), 0, 30), every.total(("out_min",), 0, 30))
    assert np.array_equal(every.total(("out_min",), 0, np.array([45])), every.total(("out_min",), 0, 45))
    with pytest.raises(ValueError):
        DaysByAge(w, day[:29])
    with pytest.raises(ValueError):
        every.total(("out_min",), 0, np.full(29, 30))
    with pytest.raises(ValueError, match="ages 0 and more"):
        every.total(("out_min",), -2, 5)
    with pytest.raises(ValueError, match="ages 0 and more"):
        RingByAge(w, day, (-1, 30))
