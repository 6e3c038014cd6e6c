"""Event time per partition: the day a batch judges its customers as of, and how far exits are known."""

from datetime import date
from zoneinfo import ZoneInfo

from stream_app.contracts.inputs import Input
from stream_app.ingest.admission import Envelope, Erasure
from stream_app.windows.state import Windows
from stream_app.worker.event_clock import EventClock

SH = ZoneInfo("Asia/Shanghai")
DAY = 86_400


def _at(topic: Input, partition: int, ts: int) -> Envelope:
    return Envelope(topic, partition, 0, Erasure("x"), ts)


def test_each_customer_is_judged_as_of_their_partitions_newest_day_or_their_own() -> None:
    w = Windows.load(["a", "b", "c"], [None] * 3)
    w.rec["day0"] = [date(2026, 3, 10).toordinal(), date(2026, 3, 4).toordinal(), date(2026, 3, 12).toordinal()]
    t0 = 1_772_323_200  # 2026-03-01 00:00 UTC
    batch = [(0, _at(Input.CDR, 0, t0)), (1, _at(Input.CDR, 0, t0 + 3 * DAY)),
             (2, _at(Input.BILLING, 1, t0 + 5 * DAY)), (1, _at(Input.CUSTOMERS, 0, t0 + 9 * DAY))]
    clock = EventClock(SH)
    days = clock.advance(w, batch)
    # a and b share partition 0, whose newest day is a's 10th; c is alone on partition 1
    assert days.tolist() == [date(2026, 3, 10).toordinal()] * 2 + [date(2026, 3, 12).toordinal()]
    assert clock.watermarks == {0: date(2026, 3, 10).toordinal(), 1: date(2026, 3, 12).toordinal()}
    # usage and bills only move the exits' clock, each (topic, partition) to its newest event
    assert clock.topic_seen == {(Input.CDR, 0): t0 + 3 * DAY, (Input.BILLING, 1): t0 + 5 * DAY}
    w.rec["day0"] = 0  # a later batch of older events moves no clock back
    again = clock.advance(w, [(0, _at(Input.CDR, 0, t0))])
    assert again[0] == date(2026, 3, 10).toordinal() and clock.topic_seen[(Input.CDR, 0)] == t0 + 3 * DAY
    assert clock.exits_known([0, 1]) == [0, 0]  # each partition has read only one of the two topics
    clock.advance(w, [(2, _at(Input.CDR, 1, t0 + 6 * DAY))])
    assert clock.exits_known([1]) == [date(2026, 3, 5).toordinal()]  # bills to the 6th, usage to the 7th
