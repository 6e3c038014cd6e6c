from datetime import date, timedelta
from typing import Callable
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from stream_app.contracts.events import decode_cdr
from stream_app.features.by_age import DaysByAge, RingByAge
from stream_app.features.derive import ACTIVITY_PERIODS, derive
from stream_app.model.observations import snapshot_days
from stream_app.windows.apply import apply
from stream_app.windows.state import DAILY, N_DAYS, SCALE, D, Windows
from tests.factories import cdr, envelope

SH = ZoneInfo("Asia/Shanghai")
FIRST, LAST = date(2026, 1, 1), date(2026, 7, 31)  # judged on the last day, 31 July
STEADY, DECLINER, DIPPER = "8613800000001", "8613800000002", "8613800000003"


def calls_a_day(customer: str, day: date) -> int:
    """Six calls a day for months; the decliner falls to one over the last 70 days,
    the dipper makes none in the last 10."""
    left = (LAST - day).days
    if customer == DECLINER and left < 70:
        return 1 + round(5 * left / 70)
    if customer == DIPPER and left < 10:
        return 0
    return 6


#: What measures a fall over recent days against those before.
FALLS = ["mou_out_14d", "mou_out_14d_trend", "mou_out_30d", "calls_out_30d", "mou_out_30d_vs_m2", "mou_out_prev_30d",
         "mou_out_30d_mom", *(f"activity_{k}_d{a}_{b}" for a, b in ACTIVITY_PERIODS for k in ("z", "vs_usual"))]


def windows(calls: Callable[[str, date], int], kind: Callable[[str, date, int], str] = lambda *_: "voice",
            last: date = LAST) -> Windows:
    """The three customers' traffic until `last`: `calls` records a day, the k-th of them of
    `kind(customer, day, k)`."""
    customers = [STEADY, DECLINER, DIPPER]
    w = Windows.load(customers, [None] * len(customers))
    offset = 0
    day = FIRST
    while day <= last:
        batch = []
        for row, c in enumerate(customers):
            for k in range(calls(c, day)):
                what = kind(c, day, k)
                raw = cdr(c, f"{day.isoformat()}T{9 + k:02d}:00:00+08:00", kind=what,
                          duration_s=60 if what == "voice" else 0, **({"data_bytes": 10**6} if what == "data" else {}))
                batch.append((row, envelope(0, 0, offset, decode_cdr(raw))))
                offset += 1
        apply(w, batch, SH, 3)
        day += timedelta(days=1)
    return w


def test_activity_shortfalls_tell_a_months_long_decline_from_a_short_dip() -> None:
    f = derive(windows(calls_a_day), np.full(3, LAST.toordinal()), SH)
    assert np.allclose(f["activity_usual"], 6.0, atol=0.2)
    z = {(a, b): f[f"activity_z_d{a}_{b}"] for a, b in ACTIVITY_PERIODS}
    steady, decliner, dipper = 0, 1, 2
    assert all(abs(v[steady]) < 1.5 for v in z.values())
    # The decline shows in every period that reaches into it, the oldest least.
    assert all(v[decliner] < -3 for (a, _), v in z.items() if a < 63)
    assert z[(0, 7)][decliner] < z[(35, 63)][decliner] < 0
    # The dip only in the days it lasted.
    assert z[(0, 7)][dipper] < -5 and z[(7, 14)][dipper] < -2
    assert all(abs(v[dipper]) < 1.5 for (a, _), v in z.items() if a >= 14)


def test_messages_and_data_sessions_count_in_the_activity_against_the_usual() -> None:
    """Two calls, two SMS and two data sessions a day; the decliner keeps calling but has sent no SMS
    and opened no data session for the last 21 days."""
    def records(customer: str, day: date) -> int:
        return 2 if customer == DECLINER and (LAST - day).days < 21 else 6

    f = derive(windows(records, lambda _, __, k: ("voice", "sms", "data")[k // 2]), np.full(3, LAST.toordinal()), SH)
    assert np.allclose(f["activity_usual"], 6.0, atol=0.2)
    steady, decliner = 0, 1
    for a, b in ((0, 7), (7, 14), (14, 21)):
        assert abs(f[f"activity_z_d{a}_{b}"][steady]) < 1.5
        # 14 records a week against 42: two thirds less, 4.3 standard deviations.
        assert f[f"activity_vs_usual_d{a}_{b}"][decliner] < -0.6 and f[f"activity_z_d{a}_{b}"][decliner] < -4
    assert f["calls_out_30d"][decliner] == f["calls_out_30d"][steady]  # the calls alone kept their pace


def test_a_state_upgraded_from_a_layout_without_messages_by_day_counts_calls_alone_until_its_usual_kept_them() -> None:
    w = windows(lambda c, d: 6, lambda _, __, k: ("voice", "sms", "data")[k // 2])
    w.daily[:, :, [D["sms_out"], D["data_sessions"]]] = 0  # as converted: kept from the day after
    w.rec["messages_since"] = [LAST.toordinal() + 1, date(2026, 1, 5).toordinal(), date(2025, 12, 31).toordinal()]
    f = derive(w, np.full(3, LAST.toordinal()), SH)
    # Upgraded in August, or in January (month m6 of July): calls alone, as usual as ever.
    assert np.allclose(f["activity_usual"][:2], 2.0, atol=0.1)
    assert (np.abs([f[f"activity_z_d{a}_{b}"][:2] for a, b in ACTIVITY_PERIODS]) < 1.5).all()
    # Upgraded before m6: SMS and sessions are in its usual, and the days without them are a fall.
    assert f["activity_usual"][2] == pytest.approx(6.0, abs=0.2) and f["activity_z_d0_7"][2] < -4


def test_a_day_under_way_is_judged_on_the_whole_days_before_it_but_its_complaints_count() -> None:
    """Each customer keeps a pace of their own each month. The morning after the evening judged,
    each has made one call, and the first has also rung customer service and had a call dropped.
    Live, the day is under way: the features that measure a fall read as the evening before did, a
    part of a day does not read as a fall, and what only rises counts this morning's."""
    evening_day = LAST + timedelta(days=10)  # mid-month: the months of the usual are all kept
    w = windows(pace, last=evening_day)
    evening = w.subset([0, 1, 2])  # as that evening left the states
    morning = evening_day + timedelta(days=1)
    at = f"{morning.isoformat()}T08:00:00+08:00"
    batch = [(row, envelope(0, 0, 10**6 + row, decode_cdr(cdr(c, at, duration_s=60))))
             for row, c in enumerate([STEADY, DECLINER, DIPPER])]
    batch += [(0, envelope(0, 0, 10**6 + 9, decode_cdr(cdr(STEADY, at, customer_service=True)))),
              (0, envelope(0, 0, 10**6 + 10, decode_cdr(cdr(STEADY, at, termination="dropped"))))]
    apply(w, batch, SH, 3)
    today = np.full(3, morning.toordinal())
    live, last_evening = derive(w, today, SH, day_over=False), derive(evening, today - 1, SH)
    # Every period, the one that reaches the oldest daily bucket too: today's took its place, and that
    # day is read from its month, as in a snapshot of yesterday taken now, which the model learns from.
    falls = [*FALLS, "activity_usual"]
    snapshot = derive(w, today - 1, SH)
    for name in falls:
        assert np.allclose(live[name], last_evening[name]), name
        assert np.array_equal(live[name], snapshot[name]), name
    # Read as a whole day, the morning (one to three records against three to six a day) is a fall.
    assert (derive(w, today, SH)["activity_z_d0_7"] < live["activity_z_d0_7"] - 0.15).all()
    assert live["cs_calls_30d"][0] == last_evening["cs_calls_30d"][0] + 1
    assert live["dropped_rate_30d"][0] > last_evening["dropped_rate_30d"][0] == 0
    # Judged days later (their partition's clock ahead of their own last day), into the next month.
    for later in (1, 3, 20):
        day = np.full(3, morning.toordinal() + later)
        ahead, before = derive(w, day, SH, day_over=False), derive(w, day - 1, SH)
        assert all(np.allclose(ahead[name], before[name]) for name in falls), later


def pace(customer: str, day: date) -> int:
    """Calls a day: a pace of each customer's own each month."""
    return 3 + (day.month + int(customer[-1])) % 4


def test_a_snapshot_taken_after_quiet_days_reads_its_own_days_and_none_after() -> None:
    """Customers quiet for a while after an evening: the snapshot of that evening, taken when they
    come back, reads the same days as one taken that evening (the daily buckets have moved on, so
    their oldest days come from the months) and nothing of the return (its calls are in the months)."""
    evening_day = LAST + timedelta(days=10)
    evening = windows(pace, last=evening_day)
    judged = np.full(3, evening_day.toordinal())
    that_evening = derive(evening, judged, SH)
    for quiet in (5, 12, 30):
        back = evening_day + timedelta(days=quiet)
        seen = []
        for calls in (1, 60):
            w = evening.subset([0, 1, 2])
            batch = [(row, envelope(0, 0, 10**6 + 100 * row + k, decode_cdr(
                cdr(c, f"{back.isoformat()}T08:{k:02d}:00+08:00", duration_s=600)))) for row, c in
                enumerate([STEADY, DECLINER, DIPPER]) for k in range(calls)]
            apply(w, batch, SH, 3)
            assert snapshot_days(w, [0, 1, 2], evening.day0, 1)[0] == [0, 1, 2]
            seen.append(derive(w, judged, SH))
        for name, value in seen[0].items():
            assert np.array_equal(value, seen[1][name], equal_nan=True), (quiet, name)  # nothing of the return
        # Back in a later month, the monthly buckets have moved on too: their oldest month has gone
        # from the usual, so only the sums of days compare.
        same = list(that_evening) if back.month == evening_day.month else \
            ["mou_out_14d", "mou_out_prev_14d", "mou_out_30d", "mou_out_prev_30d", "calls_out_30d"]
        for name in same:
            assert np.allclose(that_evening[name], seen[0][name], equal_nan=True), (quiet, name)


def test_no_snapshot_is_taken_of_a_day_the_daily_buckets_no_longer_hold() -> None:
    """Its month's count would hold the days after it: a batch that spans the buckets' length (a
    catch-up), or a return after as long."""
    evening_day = LAST + timedelta(days=10)
    evening = windows(pace, last=evening_day)
    for days in (range(1, 41), [35], [34]):
        w = evening.subset([0, 1, 2])
        batch = [(row, envelope(0, 0, 10**6 + 100 * k + row, decode_cdr(
            cdr(c, f"{(evening_day + timedelta(days=k)).isoformat()}T08:00:00+08:00")))) for k in days
            for row, c in enumerate([STEADY, DECLINER, DIPPER])]
        apply(w, batch, SH, 3)
        rows, when = snapshot_days(w, [0, 1, 2], evening.day0, 1)
        newest = evening_day.toordinal() + max(days)
        held = [d for d in [evening_day.toordinal(), *(evening_day.toordinal() + k for k in days)][:-1]
                if newest - d < N_DAYS]  # every day with usage but the newest, if the buckets hold it
        assert rows == [r for r in (0, 1, 2) for _ in held] and when.tolist() == held * 3, days


def test_the_next_day_snapshots_the_day_before_once_its_period_is_over() -> None:
    """The usual case: customers back the day after. Daily, that day is snapshotted; every seven
    days, only the last day of its seven (day numbers are ordinals, 0001-01-01 day 1, a Monday: the
    sevens run Sunday to Saturday)."""
    for gone in range(1, 8):
        evening_day = LAST + timedelta(days=gone)
        evening = windows(pace, last=evening_day)
        w = evening.subset([0, 1, 2])
        morning = evening_day + timedelta(days=1)
        apply(w, [(row, envelope(0, 0, 10**6 + row, decode_cdr(cdr(c, f"{morning.isoformat()}T08:00:00+08:00"))))
                  for row, c in enumerate([STEADY, DECLINER, DIPPER])], SH, 3)
        assert snapshot_days(w, [0, 1, 2], evening.day0, 1)[0] == [0, 1, 2]
        assert snapshot_days(w, [2, 0], evening.day0, 1)[1].tolist() == [evening_day.toordinal()] * 2
        rows, when = snapshot_days(w, [0, 1, 2], evening.day0, 7)
        saturday = evening_day.weekday() == 5
        assert rows == ([0, 1, 2] if saturday else []) and when.tolist() == [evening_day.toordinal()] * len(rows)


def test_judged_long_after_their_last_day_the_days_before_come_from_the_months() -> None:
    """Weeks after a customer's last call the daily buckets reach none of the days judged; the months
    give the minutes of the days that had any, and none to the quiet days after them."""
    last_day = LAST + timedelta(days=10)
    w = windows(pace, last=last_day)
    for later in (40, 50, 60, 75):
        done = np.full(3, (last_day + timedelta(days=later)).toordinal())
        days = DaysByAge(w, done)
        for a, b in ((0, 30), (30, 60), (35, 63), (63, 91)):
            for row, customer in enumerate([STEADY, DECLINER, DIPPER]):
                # One minute a call, on the days of the period up to the last.
                period = [date.fromordinal(int(done[row]) - age) for age in range(a, b)]
                expected = sum(pace(customer, d) for d in period if d <= last_day)
                assert days.total(("out_min",), a, b)[row] == pytest.approx(expected), (later, a, b)


def test_counters_of_different_units_are_not_summed_as_one() -> None:
    """Minutes are kept in tenths and calls as they are: a period's sum of both would mix them."""
    w = windows(pace)
    done = np.full(3, LAST.toordinal())
    days = DaysByAge(w, done)
    with pytest.raises(ValueError, match="different units"):
        days.total(("out_min", "out_calls"), 0, 7)
    both = days.total(("out_calls", "in_calls"), 0, 7)
    assert np.array_equal(both, days.total(("out_calls",), 0, 7) + days.total(("in_calls",), 0, 7))


def test_each_days_bucket_is_read_at_its_age_whatever_each_customers_lag() -> None:
    """Most customers of a batch share a lag between their newest day and the day judged; the others
    are judged at lags of their own, days before or after it, within the ring's reach or beyond."""
    rng = np.random.default_rng(5)
    customers = [f"86138{k:08d}" for k in range(300)]
    w = Windows.load(customers, [None] * len(customers))
    w.daily[:] = rng.integers(0, 50, w.daily.shape)
    w.day0[:] = 740_000
    w.day0[:5] = 0  # no usage yet
    day = np.full(len(customers), 740_001)
    day[130:200] -= 5  # a second lag many share, judged days before their newest
    day[200:] += rng.integers(-45, 45, 100)
    for ring in (RingByAge(w, day), RingByAge(w, day, range(N_DAYS + 2))):  # summed where it lies, and up to ages
        for age, counter in ((age, counter) for age in range(N_DAYS + 2) for counter in DAILY):
            got = ring.total(counter, age, age + 1)
            for row in range(len(customers)):
                bucket = age - (day[row] - w.day0[row])
                held = w.day0[row] > 0 and 0 <= bucket < N_DAYS and age < N_DAYS
                want = w.daily[row, bucket, D[counter]] / SCALE.get(counter, 1.0) if held else 0
                assert got[row] == want, (row, age, counter)


def test_rolling_30_days_before_reach_into_the_months() -> None:
    f = derive(windows(lambda c, d: 6), np.full(3, LAST.toordinal()), SH)
    # Days aged 30-59: five from the daily buckets, the rest spread from June and July.
    assert np.allclose(f["mou_out_prev_30d"], 6 * 30, rtol=0.02)
    assert np.allclose(f["mou_out_30d_mom"], 0.0, atol=0.02)


def test_activity_and_exits_are_counted_in_the_operators_days() -> None:
    """A call at 02:00 and an exit at 03:00 in Shanghai are on that day, not the UTC day before."""
    from stream_app.contracts.events import decode_billing
    from stream_app.model.observations import churn_events
    from tests.factories import billing

    w = Windows.load([STEADY], [None])
    call = decode_cdr(cdr(STEADY, "2026-07-31T02:00:00+08:00"))
    leave = decode_billing(billing(STEADY, "2026-07-31T03:00:00+08:00", kind="port_out", reason_code=102))
    applied = apply(w, [(0, envelope(0, 0, 0, call)), (0, envelope(1, 0, 0, leave))], SH, 3)
    f = derive(w, np.array([LAST.toordinal()]), SH)
    assert f["days_since_active"][0] == 0 and f["exited"][0] == 1
    [event], _ = churn_events(w, f, [0], applied.moves, np.array([LAST.toordinal()]), SH)
    assert date.fromordinal(event.day) == LAST


def test_a_prepaid_lines_spend_is_read_over_three_months_against_the_three_before() -> None:
    from stream_app.testing import Log, billing, profile, run_batches
    from stream_app.windows.store import MemoryWindowStore
    from tests.unit.test_wording import ROOT

    c = "8613800000004"
    log = Log()
    log.add("customers", c, profile(c, plan="prepaid-50", prepaid=True))
    topups = {1: 300.0, 2: 0.0, 3: 200.0, 4: 100.0, 5: 60.0, 6: 0.0, 7: 30.0}  # lumps, then less
    for month, amount in topups.items():
        log.add("cdr", c, cdr(c, f"2026-{month:02d}-05T10:00:00+08:00"))
        if amount:
            log.add("billing", c, billing(c, f"2026-{month:02d}-10T10:00:00+08:00", kind="recharge", amount=amount))
    log.add("cdr", c, cdr(c, "2026-08-05T10:00:00+08:00"))
    store = MemoryWindowStore()
    run_batches(log.records, [ROOT / "alert_rules"], store=store)
    f = derive(Windows.load([c], [store.data[c]]), np.array([date(2026, 8, 5).toordinal()]), SH)
    assert f["prepaid"][0] == 1 and f["postpaid_arpu_mom"][0] == 0  # a month without a top-up is no fall
    assert f["arpu_3m"][0] == (60 + 0 + 30) / 3 and f["arpu_prev_3m"][0] == (0 + 200 + 100) / 3
