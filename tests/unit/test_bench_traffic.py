from datetime import date, datetime, timedelta, timezone

import msgspec
import pytest

from stream_app.errors import ConfigError
from stream_app.offline.delivery import in_time_order
from stream_app.offline.simulator import SimConfig, SimRecord, Simulator
from stream_app.tools.bench_latency import _stamp
from stream_app.tools.bench_stream import LAST_DAY, _traffic, next_look_s
from tests.factories import cdr


def _days(records) -> set[date]:
    return {datetime.fromisoformat(msgspec.json.decode(r.value)["ts"]).date() for r in records}


def test_the_bench_reads_the_same_stretch_of_days_whenever_it_runs() -> None:
    traffic = _traffic(events=3000, customers=300, seed=3, floor=date(2000, 1, 1))
    assert len(traffic.measured) == 3000
    # The measured records start a day, after the warm-up's; the rest of their last day is read
    # before the latency phase, so the held-back day follows them on, and it is the stretch's last.
    assert {r.day for r in traffic.warmup} == {0} and traffic.measured[0].day == 1
    last = traffic.measured[-1].day
    assert {r.day for r in traffic.rest} <= {last} and {r.day for r in traffic.held} == {last + 1}
    # Records delivered late carry older days; the held-back day's own are LAST_DAY's.
    assert max(_days(traffic.held)) == LAST_DAY and max(_days(traffic.measured + traffic.rest)) < LAST_DAY
    # Nothing is left out or sent out of the simulator's delivery order, and the days are the same ones
    # on any day the bench runs.
    days = last + 2
    start = LAST_DAY - timedelta(days=days - 1)
    simulated = in_time_order(Simulator(SimConfig(customers=300, days=days, seed=3, start=start)).records())
    assert traffic.warmup + traffic.measured + traffic.rest + traffic.held == simulated


def test_the_bench_refuses_a_floor_after_its_days() -> None:
    with pytest.raises(ConfigError, match="CHURNWATCH_EVENT_TIME_FLOOR"):
        _traffic(events=3000, customers=300, seed=3, floor=LAST_DAY)


def test_the_latency_phase_matches_alerts_by_customer_and_event_second_and_skips_records_without_a_time() -> None:
    call = SimRecord("cdr", b"c1", cdr("c1", "2026-03-12T08:00:01.700+08:00"), 3)
    assert _stamp(call) == ("c1", int(datetime(2026, 3, 12, 0, 0, 1, tzinfo=timezone.utc).timestamp()))
    assert _stamp(SimRecord("customers", b"c1", None, 3)) is None
    assert _stamp(SimRecord("customers", b"c1", b'{"customer_id": "c1"}', 3)) is None


def test_looks_at_the_counter_come_seldom_far_from_the_mark_and_often_near_it() -> None:
    assert next_look_s(10_000, 0.0) == 0.2  # no rate yet
    assert next_look_s(1_000_000, 20_000.0) == 2.0  # 50 s left: the longest wait
    assert next_look_s(20_000, 20_000.0) == 0.5  # half the second left
    assert next_look_s(100, 20_000.0) == 0.02  # the shortest wait near the mark
    # Looks a worker at a steady rate meets on its way to the mark: few, and the last one on time.
    left, rate, looks, late = 600_000, 20_000.0, 0, 0.0
    while left > 0:
        wait = next_look_s(left, rate)
        looks, left = looks + 1, left - wait * rate
        late = -left / rate
    assert looks < 30 and late <= 0.02  # five a second would be 150 looks over the 30 s
