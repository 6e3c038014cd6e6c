"""The operator's calendar: every day and month churnwatch counts is cut in the operator's zone
(`CHURNWATCH_TIMEZONE`), from unix seconds, in one place. A day counted in UTC would put the
events between 00:00 and 08:00 in Shanghai on the day before.
"""

from __future__ import annotations

from datetime import date, datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

__all__ = ["EPOCH_ORDINAL", "LocalClock", "local_clock", "local_days", "month_index", "month_label", "month_of_day",
           "first_day", "first_days", "month_of_label", "months_of_days"]

EPOCH_ORDINAL = 719163  # date(1970, 1, 1).toordinal(): unix days to day ordinals


def month_index(year: int, month: int) -> int:
    """Months since year 0, so that consecutive months differ by one.

    >>> month_index(2026, 1) - month_index(2025, 12)
    1
    """
    return year * 12 + month - 1


@lru_cache(maxsize=4096)  # a few months in use at once; formatting one costs 0.5 us, and a batch asks per event
def month_label(index: int) -> str:
    """'YYYY-MM' of a `month_index`.

    >>> month_label(month_index(2026, 12))
    '2026-12'
    """
    year, month = divmod(index, 12)
    return f"{year:04d}-{month + 1:02d}"


def month_of_label(label: str) -> int:
    """The `month_index` of 'YYYY-MM' (a bill's period, a report's month).

    >>> month_of_label("2026-03") == month_index(2026, 3)
    True
    """
    year, month = label.split("-")
    return month_index(int(year), int(month))


def month_of_day(ordinal: int) -> int:
    """The `month_index` of one day ordinal.

    >>> month_of_day(date(2026, 2, 28).toordinal()) == month_index(2026, 2)
    True
    """
    day = date.fromordinal(ordinal)
    return month_index(day.year, day.month)


def first_day(index: int) -> int:
    """The day ordinal of a `month_index`'s first day.

    >>> date.fromordinal(first_day(month_index(2026, 2)))
    datetime.date(2026, 2, 1)
    """
    year, month = divmod(index, 12)
    return date(year, month + 1, 1).toordinal()


def first_days(indices: np.ndarray) -> np.ndarray:
    """`first_day` of each `month_index` (at least 1).

    >>> first_days(np.array([month_index(2026, 2), month_index(2026, 3)])).tolist() == [
    ...     date(2026, 2, 1).toordinal(), date(2026, 3, 1).toordinal()]
    True
    """
    months = (np.maximum(np.asarray(indices, np.int64), 12) - month_index(1970, 1)).astype("datetime64[M]")
    return months.astype("datetime64[D]").astype(np.int64) + EPOCH_ORDINAL


def months_of_days(ordinals: np.ndarray) -> np.ndarray:
    """`month_index` of each day ordinal; ordinal 0 (no day yet) counts as 0001-01-01.

    >>> months_of_days(np.array([date(2026, 2, 28).toordinal()])).tolist() == [month_index(2026, 2)]
    True
    """
    ordinals = np.asarray(ordinals, np.int64)
    days = np.datetime64("0001-01-01", "D") + (np.maximum(ordinals, 1) - 1).astype("timedelta64[D]")
    return days.astype("datetime64[M]").astype(np.int64) + month_index(1970, 1)


class LocalClock:
    """Unix seconds to (local day ordinal, month index) in a zone, cached by the hour.

    `astimezone` per event was a tenth of the cost of a batch. A zone's offset changes at
    most once in an hour, so an hour whose two ends share an offset is cached, and the rare
    hour with a change is converted event by event.
    """

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone
        self._offsets: dict[int, int | None] = {}
        self._months: dict[int, int] = {}

    def _offset(self, ts: int) -> int:
        return int(datetime.fromtimestamp(ts, self.zone).utcoffset().total_seconds())  # type: ignore[union-attr]

    def hour_offset(self, hour: int) -> int | None:
        """The zone's UTC offset, in seconds, through the hour `hour` (unix s // 3600); None
        for an hour in which it changes."""
        offset = self._offsets.get(hour, -1)
        if offset == -1:
            if len(self._offsets) > 100_000:  # a century of hours: only a replay of years gets here
                self._offsets.clear(), self._months.clear()
            first, last = self._offset(hour * 3600), self._offset(hour * 3600 + 3599)
            offset = self._offsets[hour] = first if first == last else None
        return offset

    def __call__(self, ts: int) -> tuple[int, int]:
        offset = self.hour_offset(ts // 3600)
        if offset is None:
            offset = self._offset(ts)
        day = (ts + offset) // 86400 + EPOCH_ORDINAL
        month = self._months.get(day)
        if month is None:
            d = date.fromordinal(day)
            month = self._months[day] = month_index(d.year, d.month)
        return day, month



@lru_cache(maxsize=8)
def local_clock(zone: ZoneInfo) -> LocalClock:
    """The zone's clock, shared: its caches fill once per process."""
    return LocalClock(zone)


def local_days(ts: np.ndarray, zone: ZoneInfo) -> np.ndarray:
    """Day ordinals in `zone` of unix seconds, 0 where `ts` is 0 (never).

    >>> never, early_morning = 0, 1_779_993_000  # 2026-05-28 18:30 UTC, 02:30 on the 29th in Shanghai
    >>> local_days(np.array([never, early_morning]), ZoneInfo("Asia/Shanghai")).tolist() == [0, date(2026, 5, 29).toordinal()]
    True
    """
    ts = np.asarray(ts, np.int64)
    clock = local_clock(zone)
    hours, inverse = np.unique(ts // 3600, return_inverse=True)  # few distinct hours in a batch
    offsets = np.array([clock.hour_offset(int(h)) for h in hours], dtype=object)[inverse.reshape(ts.shape)]
    shifting = offsets == None  # noqa: E711 - the rare hour in which the offset changes
    if shifting.any():
        offsets[shifting] = [clock._offset(int(t)) for t in ts[shifting]]
    days = (ts + offsets.astype(np.int64)) // 86400 + EPOCH_ORDINAL
    return np.where(ts > 0, days, 0)
