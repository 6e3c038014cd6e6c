"""What an input record must be before it may touch a customer's state: the edge, in one place.

Decoding checks each field's type and range (`events.py`); `Edge.admit` also checks what one
field cannot tell alone, and refuses a record with `InvalidEvent` so it goes to dead letter:
- a record over `max_record_bytes` is refused before it is decoded;
- a record without a key, or whose key is not its customer, is refused; a null value (a
  tombstone) is an `Erasure` on the customers topic and refused on the others;
- an event time before the floor, or ahead of the wall clock by more than the allowed skew,
  is refused: one record stamped 2100 would otherwise move its customer's newest day (and
  so the partition's clock) decades ahead and roll every real bucket away;
- a bill for a period more than a month from its own event time is refused for the same
  reason on the monthly buckets.
The state's time fields are unsigned 32-bit seconds (to 2106), so the hard ceiling below
keeps them representable even where the wall-clock check is off (replays of recordings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Protocol, Union
from zoneinfo import ZoneInfo

import msgspec

from stream_app.contracts.attributes import AttributeRefused, admit
from stream_app.contracts.calendar import month_index
from stream_app.contracts.events import (
    Billing,
    Cdr,
    Outcome,
    Profile,
    decode_billing,
    decode_cdr,
    decode_outcome,
    decode_profile,
    is_customer_id,
)
from stream_app.contracts.inputs import Input
from stream_app.errors import InvalidEvent
from stream_app.privacy import Pseudonyms
from stream_app.settings import Settings

__all__ = ["Bounds", "CEILING", "Edge", "Envelope", "Erasure", "Event"]


class Erasure(msgspec.Struct, frozen=True, gc=False):
    """A tombstone on the customers topic: erase the customer (right to erasure). What the
    state knows of them goes; the offsets stay, so that a replay of their older records is
    still recognised and skipped (`windows.apply`)."""

    customer_id: str


Event = Union[Cdr, Billing, Profile, Outcome, Erasure]


class Envelope(msgspec.Struct, frozen=True, gc=False):
    """A decoded event and where it came from, as `windows.apply` takes it. A struct, not a
    NamedTuple: one is made per event, and a NamedTuple's constructor is a Python function call."""

    topic: int  # index into Settings.topics.inputs()
    partition: int
    offset: int
    event: Event
    ts: int  # the event's time in unix seconds, as admitted (0: an erasure)

#: Latest event time any record may carry, wall clock or not: the state's u32 seconds end in 2106.
CEILING = datetime(2100, 1, 1, tzinfo=timezone.utc)
#: In a replay of recordings, how far an event may run ahead of the newest admitted in the batches
#: before it. A recording's time moves on day by day; one stray date decades ahead would carry the
#: clock there and make every record after it late.
REPLAY_LEAP = timedelta(days=366)


@dataclass(frozen=True)
class Bounds:
    """The admission rules of one worker. `now` is the wall clock; None in a replay of recorded
    traffic, whose own time is not today's (the floor, the hard ceiling and `REPLAY_LEAP` apply then)."""

    floor: datetime
    skew: timedelta
    zone: ZoneInfo
    now: Callable[[], datetime] | None
    floor_s: float = field(init=False)  # the floor in unix seconds

    def __post_init__(self) -> None:
        object.__setattr__(self, "floor_s", self.floor.timestamp())

    def latest(self, newest: float = 0.0) -> float:
        """The newest event time admitted at this moment, in unix seconds. `newest`: in a replay,
        the newest event time read before (0: none yet)."""
        if self.now is None:
            return min(CEILING.timestamp(), newest + REPLAY_LEAP.total_seconds()) if newest else CEILING.timestamp()
        return min(CEILING, self.now() + self.skew).timestamp()

    def check(self, event: object, latest: float) -> int:
        """The event's time in unix seconds; `InvalidEvent` if it, or a bill's period, is out of
        bounds. Compared as seconds: comparing two aware datetimes of different zones costs more
        than a conversion (each side's UTC offset is looked up), and apply needs the seconds."""
        ts: datetime = event.ts  # type: ignore[attr-defined]
        seconds = unix_seconds(ts)
        if seconds < self.floor_s:
            raise InvalidEvent("out_of_range", "ts", f"got {ts.isoformat()}; event times start at "
                                                     f"{self.floor.date().isoformat()} (CHURNWATCH_EVENT_TIME_FLOOR)")
        if seconds > latest:
            ahead = datetime.fromtimestamp(latest, timezone.utc).isoformat()
            bound = "CHURNWATCH_MAX_CLOCK_SKEW_S" if self.now else "a replay: a year past the newest event time before"
            raise InvalidEvent("out_of_range", "ts", f"got {ts.isoformat()}, ahead of the clock ({ahead}, {bound})")
        if isinstance(event, Billing) and event.period is not None:
            local = ts.astimezone(self.zone)
            year, month = event.period.split("-")
            gap = month_index(int(year), int(month)) - month_index(local.year, local.month)
            if abs(gap) > 1:
                raise InvalidEvent("out_of_range", "period", f"got {event.period!r} on a bill of "
                                                             f"{local.date().isoformat()}; expected the month of the "
                                                             "event or one either side")
        return int(seconds)


#: The Unix epoch in each fixed UTC offset met so far: offsets on the wire are whole minutes within a day,
#: so the map holds at most 2,879.
_EPOCHS: dict[timezone, datetime] = {}
_SECOND = timedelta(seconds=1)


def unix_seconds(ts: datetime) -> float:
    """An aware time in Unix seconds, as `ts.timestamp()`. Decoded times carry a fixed offset, one
    object per offset; the difference from the epoch expressed in that same object skips the two
    UTC offsets `timestamp` looks up, which cost about 0.2 us of its 0.45 for every event."""
    tz = ts.tzinfo
    if type(tz) is not timezone:  # a zone with summer time: its offset moves, ask it
        return ts.timestamp()
    epoch = _EPOCHS.get(tz)
    if epoch is None:
        epoch = _EPOCHS[tz] = datetime(1970, 1, 1, tzinfo=timezone.utc).astimezone(tz)
    return (ts - epoch) / _SECOND


class Record(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Edge:
    """Every check a worker makes of an input record, and the customer it is kept under.
    `now`: the wall clock; None in a replay of recordings (see `Bounds`)."""

    def __init__(self, settings: Settings, now: Callable[[], datetime] | None) -> None:
        self.settings = settings
        floor = settings.event_time_floor
        self.bounds = Bounds(datetime(floor.year, floor.month, floor.day, tzinfo=timezone.utc),
                             timedelta(seconds=settings.max_clock_skew_s), settings.zone, now)
        inputs = settings.topics.inputs()
        self.topic_index = {t: i for i, t in enumerate(inputs)}
        decoders = {Input.CDR: decode_cdr, Input.BILLING: decode_billing, Input.CUSTOMERS: decode_profile,
                    Input.OUTCOMES: decode_outcome}
        self._decoders = {inputs[topic]: decode for topic, decode in decoders.items()}
        self.pseudonyms = Pseudonyms.of(settings)
        # Read once, not per record: `admit` runs for every event.
        self._max_bytes, self._pseudonymous = settings.max_record_bytes, self.pseudonyms.enabled
        self._cdrs, self._floor_s = inputs[Input.CDR], self.bounds.floor_s
        # Outcomes name the customer as their alert did: already a pseudonym.
        self._numbered = {inputs[t] for t in Input if t != Input.OUTCOMES}

    def _attributes(self, profile: Profile) -> dict[str, float | str]:
        try:
            return admit(profile.attributes, self.settings.attributes)
        except AttributeRefused as exc:
            raise InvalidEvent("invalid_field", exc.field, str(exc)) from None

    def customer_of(self, rec: Record) -> str | None:
        """The customer a record's state is kept under (its key, pseudonymised if ids are)."""
        if rec.key is None:
            return None
        customer = rec.key.decode("utf-8", "replace")
        return self.pseudonyms(customer) if rec.topic in self._numbered else customer

    def admit(self, rec: Record, latest: float) -> tuple[Event, int]:
        """The record's event, under the pseudonym if ids are pseudonymous, once it has passed
        every check, and its time in unix seconds (0 for an erasure); `InvalidEvent` otherwise.
        `latest`: `bounds.latest()`, once per batch."""
        key, value = rec.key, rec.value
        # Most records are CDRs that pass: their checks here, without the calls of the general path
        # below (0.4 us an event less). Whatever is not plainly passing takes every check in turn.
        if (rec.topic == self._cdrs and key is not None and value is not None
                and len(key) + len(value) <= self._max_bytes):
            event = decode_cdr(value)
            if key.decode("utf-8", "replace") == event.customer_id:
                seconds = unix_seconds(event.ts)
                if self._floor_s <= seconds <= latest:
                    if self._pseudonymous:
                        event = msgspec.structs.replace(event, customer_id=self.pseudonyms(event.customer_id))
                    return event, int(seconds)
        return self._checked(rec, latest)

    def _checked(self, rec: Record, latest: float) -> tuple[Event, int]:
        """`admit`, every check in turn: the one that fails says why."""
        key, value = rec.key, rec.value
        size = (len(value) if value is not None else 0) + (len(key) if key is not None else 0)
        if size > self._max_bytes:
            raise InvalidEvent("too_large", None, f"{size} bytes; at most {self._max_bytes} "
                                                  "(CHURNWATCH_MAX_RECORD_BYTES)")
        if key is None:
            raise InvalidEvent("missing_key", "key", "topics are keyed by customer id; got no key")
        customer = key.decode("utf-8", "replace")
        if value is None:
            if rec.topic != self.settings.topics.customers:
                raise InvalidEvent("tombstone", None, "a null value; only the customers topic takes one (erasure)")
            if not is_customer_id(customer):
                raise InvalidEvent("invalid_field", "key", f"got {customer[:80]!r}; expected a customer id")
            return Erasure(self.customer_of(rec)), 0  # type: ignore[arg-type]
        event = self._decoders[rec.topic](value)
        if customer != event.customer_id:
            raise InvalidEvent("key_mismatch", "customer_id",
                               f"got {event.customer_id!r} under key {customer[:80]!r}; topics are keyed by customer")
        seconds = self.bounds.check(event, latest)
        if isinstance(event, Profile) and event.attributes:
            event = msgspec.structs.replace(event, attributes=self._attributes(event))
        if self._pseudonymous and rec.topic in self._numbered:
            event = msgspec.structs.replace(event, customer_id=self.pseudonyms(event.customer_id))
            if isinstance(event, Profile) and event.previous_customer_id:
                event = msgspec.structs.replace(event, previous_customer_id=self.pseudonyms(event.previous_customer_id))
        return event, seconds
