"""What an input record must be before it may touch a customer's state: the edge's bounds.

Decoding checks each field's type and range (`events.py`); this module checks what one
field cannot tell alone, and refuses it with `InvalidEvent` so the record goes to dead letter:
- a record over `max_record_bytes` is refused before it is decoded;
- an event time before the floor, or ahead of the wall clock by more than the allowed skew,
  is refused: one record stamped 2100 would otherwise move its customer's newest day (and
  so the partition's clock) decades ahead and roll every real bucket away;
- a bill for a period more than a month from its own event time is refused for the same
  reason on the monthly buckets.
The state's time fields are unsigned 32-bit seconds (to 2106), so the hard ceiling below
keeps them representable even where the wall-clock check is off (replays of recordings).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable
from zoneinfo import ZoneInfo

from .errors import InvalidEvent
from .events import Billing
from .state import month_index

__all__ = ["Bounds", "CEILING", "floor_of"]

#: Latest event time any record may carry, wall clock or not: the state's u32 seconds end in 2106.
CEILING = datetime(2100, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Bounds:
    """The admission rules of one worker. `now` is the wall clock; None in a replay of recorded
    traffic, whose own time is not today's (only the floor and the hard ceiling apply then)."""

    floor: datetime
    skew: timedelta
    zone: ZoneInfo
    now: Callable[[], datetime] | None

    def latest(self) -> datetime:
        """The newest event time admitted at this moment."""
        if self.now is None:
            return CEILING
        return min(CEILING, self.now() + self.skew)

    def check(self, event: object, latest: datetime) -> None:
        """Raise `InvalidEvent` if the event's time, or a bill's period, is out of bounds."""
        ts: datetime = event.ts  # type: ignore[attr-defined]
        if ts < self.floor:
            raise InvalidEvent("out_of_range", "ts", f"got {ts.isoformat()}; event times start at "
                                                     f"{self.floor.date().isoformat()} (CHURNWATCH_EVENT_TIME_FLOOR)")
        if ts > latest:
            raise InvalidEvent("out_of_range", "ts", f"got {ts.isoformat()}, ahead of the clock ({latest.isoformat()}, "
                                                     "CHURNWATCH_MAX_CLOCK_SKEW_S)")
        if isinstance(event, Billing) and event.period is not None:
            local = ts.astimezone(self.zone)
            year, month = event.period.split("-")
            gap = month_index(int(year), int(month)) - month_index(local.year, local.month)
            if abs(gap) > 1:
                raise InvalidEvent("out_of_range", "period", f"got {event.period!r} on a bill of "
                                                             f"{local.date().isoformat()}; expected the month of the "
                                                             "event or one either side")


def floor_of(day: date) -> datetime:
    """The first instant of `day`, UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
