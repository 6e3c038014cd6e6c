import random
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import numpy as np

from stream_app.events import decode_billing, decode_cdr
from stream_app.windows import C, CustomerState, Envelope, Windows, apply, decode_state, encode_state, month_index
from tests.factories import billing, cdr

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
CUST = "8613800000001"


def env(raw: bytes, offset: int, topic: int = 0, partition: int = 0) -> Envelope:
    event = decode_cdr(raw) if topic == 0 else decode_billing(raw)
    return Envelope(topic, partition, offset, event)


def fresh() -> Windows:
    return Windows.load([CUST], [None])


def test_month_boundary_follows_the_operator_zone() -> None:
    w = fresh()
    # 16:30 UTC on 31 March is 00:30 on 1 April in Shanghai.
    apply(w, [(0, env(cdr(CUST, "2026-03-31T16:30:00+00:00", duration_s=120), 0))], SH, 3)
    assert w.month0[0] == month_index(2026, 4)
    assert w.monthly[0, 0, C["out_min"]] == 2.0
    assert w.day0[0] == datetime(2026, 4, 1).toordinal()


def test_dst_change_lands_in_the_right_local_day() -> None:
    w = Windows.load([CUST], [None])
    # New York springs forward on 8 March 2026: 06:30 UTC is 01:30 EST on the 8th, 07:30 UTC is 03:30 EDT.
    batch = [(0, env(cdr(CUST, "2026-03-08T06:30:00+00:00"), 0)), (0, env(cdr(CUST, "2026-03-09T03:59:00+00:00"), 1))]
    apply(w, batch, NY, 3)
    assert w.day0[0] == datetime(2026, 3, 8).toordinal()  # 23:59 EDT on the 8th
    assert w.daily[0, 0, C["out_calls"]] == 2


def test_replayed_offsets_are_skipped() -> None:
    w = fresh()
    batch = [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00"), i)) for i in range(3)]
    first = apply(w, batch, SH, 3)
    again = apply(w, batch, SH, 3)
    assert (first.applied, again.applied, again.replayed) == (3, 0, 3)
    assert w.monthly[0, 0, C["out_calls"]] == 3


def test_late_events_within_grace_land_and_later_ones_are_refused() -> None:
    w = fresh()
    batch = [
        (0, env(cdr(CUST, "2026-03-10T10:00:00+08:00"), 0)),
        (0, env(cdr(CUST, "2026-03-08T10:00:00+08:00"), 1)),  # 2 days late: within grace
        (0, env(cdr(CUST, "2026-03-01T10:00:00+08:00"), 2)),  # 9 days late: refused
    ]
    result = apply(w, batch, SH, 3)
    assert result.applied == 2 and len(result.late) == 1 and result.late[0][0].offset == 2
    assert w.daily[0, 2, C["out_calls"]] == 1  # day0 is the 10th, the 8th is two buckets back


def test_buckets_roll_off() -> None:
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-01-05T10:00:00+08:00"), 0))], SH, 3)
    apply(w, [(0, env(cdr(CUST, "2026-03-20T10:00:00+08:00"), 1))], SH, 3)
    assert w.daily[0, :, C["out_calls"]].sum() == 1  # January's day fell off the daily window
    assert w.monthly[0, 2, C["out_calls"]] == 1 and w.monthly[0, 0, C["out_calls"]] == 1


def test_bills_count_in_the_month_they_charge_for() -> None:
    w = fresh()
    raw = billing(CUST, "2026-04-01T02:00:00+08:00", amount=150.0, period="2026-03")
    apply(w, [(0, env(raw, 0, topic=1))], SH, 3)
    march = w.month0[0] - month_index(2026, 3)
    assert w.monthly[0, march, C["spend"]] == 150.0
    assert w.daily[0, :, C["spend"]].sum() == 0 and w.day0[0] == 0  # bills do not move the usage days


def test_state_does_not_depend_on_how_topics_interleave() -> None:
    rng = random.Random(3)
    cdrs = [env(cdr(CUST, f"2026-03-{d:02d}T10:00:00+08:00", duration_s=d * 10), i) for i, d in enumerate(range(1, 29))]
    bills = [env(billing(CUST, f"2026-{m + 1:02d}-01T02:00:00+08:00", amount=99.0, period=f"2026-{m:02d}"), i, 1)
             for i, m in enumerate((2, 3))]
    results = []
    for _ in range(5):
        merged, a, b = [], list(cdrs), list(bills)
        while a or b:  # a random interleaving that keeps each topic's own order
            src = a if (a and (not b or rng.random() < 0.9)) else b
            merged.append((0, src.pop(0)))
        w = fresh()
        for k in range(0, len(merged), rng.randint(1, 7)):
            apply(w, merged[k:k + 7], SH, 3)
        results.append((w.daily.copy(), w.monthly.copy()))
    for daily, monthly in results[1:]:
        np.testing.assert_array_equal(daily, results[0][0])
        np.testing.assert_array_equal(monthly, results[0][1])


def test_state_round_trips_through_its_encoding() -> None:
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00"), 0))], SH, 3)
    state = w.dump()[0]
    back = decode_state(encode_state(state))
    assert back == state and back.seq == 1
    again = Windows.load([CUST], [back])
    np.testing.assert_array_equal(again.monthly, w.monthly)
    assert isinstance(back, CustomerState) and datetime.now(timezone.utc)


def test_billing_running_ahead_does_not_push_usage_out_of_the_days() -> None:
    w = fresh()
    bill = billing(CUST, "2026-06-01T02:00:00+08:00", amount=150.0, period="2026-05")
    apply(w, [(0, env(bill, 0, topic=1))], SH, 3)  # a catch-up: billing read first
    apply(w, [(0, env(cdr(CUST, "2026-03-10T10:00:00+08:00"), 0))], SH, 3)
    assert w.daily[0, 0, C["out_calls"]] == 1 and w.day0[0] == datetime(2026, 3, 10).toordinal()
