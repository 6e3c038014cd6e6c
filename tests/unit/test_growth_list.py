"""The growth list: potential mid/high-end customers whose spend is rising, from the state the live
pipeline keeps, nearest the line first, with the growth table's upsell; and the base report's count
of customers who crossed the line."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream_app.alerts.call_plan import observe_lists
from stream_app.alerts.growth import growth_candidates, ranked, rising
from stream_app.contracts.lists import GrowthEntry
from stream_app.features.derive import derive
from stream_app.metrics import Metrics
from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.reports.list_charts import growth_chart, growth_figure
from stream_app.reports.monthly import churn_report
from stream_app.rules.growth_table import DEFAULT_UPSELL, GrowthTable, Upsell
from stream_app.rules.pack import RuleFileError, check_files, load_rules
from stream_app.settings import Settings
from stream_app.testing import Log, billing, cdr, profile, run_batches
from stream_app.windows.state import Windows
from stream_app.windows.store import MemoryWindowStore

ZONE = ZoneInfo("Asia/Shanghai")
RULES_DIR = Path(__file__).resolve().parents[2] / "alert_rules"
RULES = load_rules([RULES_DIR])
DAY = date(2026, 7, 1)  # the list's day: April, May and June are its three complete months


def customer(log: Log, who: str, bills: tuple[float, float, float], minutes: tuple[int, int, int] = (150, 150, 150),
             data_mb: tuple[int, int, int] = (0, 0, 0), exit_in_june: bool = False, prepaid: bool = False,
             activated: str = "2025-01-01") -> None:
    """Three months (April to June) of bills (top-ups if `prepaid`), outgoing minutes and data."""
    log.add("customers", who, profile(who, activation_date=activated, prepaid=prepaid))
    for month, amount, total, mb in zip((4, 5, 6), bills, minutes, data_mb):
        for day in range(2, 30, 3):  # ten calls a month, the last 30 days before DAY holding June's
            ts = datetime(2026, month, day, 10).isoformat() + "+08:00"
            log.add("cdr", who, cdr(who, ts, duration_s=int(total * 60 / 10)))
            if mb:
                log.add("cdr", who, cdr(who, ts, kind="data", data_bytes=int(mb / 10 * 1e6)))
        if prepaid:
            log.add("billing", who, billing(who, f"2026-{month:02d}-15T09:00:00+08:00", kind="recharge",
                                            amount=amount))
        else:
            log.add("billing", who, billing(who, f"2026-{month + 1:02d}-01T02:00:00+08:00", amount=amount,
                                            period=f"2026-{month:02d}"))
    if exit_in_june:
        log.add("billing", who, billing(who, "2026-06-30T10:00:00+08:00", kind="port_out", reason_code=101,
                                        voluntary=True))


@pytest.fixture(scope="module")
def store() -> MemoryWindowStore:
    log, kept = Log(), MemoryWindowStore()
    customer(log, "c-near", (100.0, 108.0, 118.0), minutes=(140, 150, 165))  # 0.2 months away at 9 yuan a month
    customer(log, "c-few-minutes", (102.0, 108.0, 116.0), minutes=(20, 30, 40))  # minutes are 6 months away
    customer(log, "c-data", (100.0, 106.0, 114.0), data_mb=(500, 800, 1500))  # data grows most
    customer(log, "c-wobbles", (110.0, 104.0, 112.0), minutes=(140, 150, 165))  # 1 yuan a month over three
    customer(log, "c-slow", (108.0, 109.0, 110.0), minutes=(140, 150, 165))  # 1 yuan a month: under 3%
    customer(log, "c-top-up-timing", (100.0, 108.0, 116.0), minutes=(150, 150, 120))  # spend up, usage not
    customer(log, "c-crossed", (110.0, 118.0, 125.0))  # mid/high-end in June already
    customer(log, "c-far", (80.0, 85.0, 95.0))  # 3-month average under 100
    customer(log, "c-gone", (100.0, 108.0, 118.0), minutes=(140, 150, 165), exit_in_june=True)
    customer(log, "c-prepaid", (100.0, 108.0, 118.0), minutes=(140, 150, 165), prepaid=True)  # top-ups: no trend
    # Joined in March: their first months ramp up from nothing (as do those of a customer back on their number).
    customer(log, "c-newcomer", (100.0, 108.0, 118.0), minutes=(140, 150, 165), activated="2026-03-25")
    run_batches(log.records, RULES, store=kept, batch_size=50)
    return kept


def listed(store: MemoryWindowStore, table: GrowthTable = RULES.growth) -> list[GrowthEntry]:
    names = sorted(store.data)
    entries, unreadable, _ = growth_candidates(names, [store.data[n] for n in names], DAY, ZONE, table)
    assert unreadable == 0
    return ranked(entries)


def test_rising_potential_customers_are_listed_nearest_the_line_first(store: MemoryWindowStore) -> None:
    entries = listed(store)
    assert [(e.rank, e.customer_id) for e in entries] == [(1, "c-near"), (2, "c-data"), (3, "c-few-minutes")]
    near, data, few = entries
    assert (near.month, near.arpu_m1, near.growth) == ("2026-06", 118.0, 9.0)
    assert near.arpu_3m == pytest.approx(108.67, abs=0.01) and near.months_to_line == pytest.approx(2 / 9, abs=0.01)
    assert few.months_to_line == pytest.approx(60 / 10, abs=0.2)  # 40 minutes, 10 more a month, to 100
    assert (near.driver, data.driver, few.driver) == ("voice", "data", "voice")
    assert (near.vip_tier, near.region, near.tenure_days) == ("gold", "north", (DAY - date(2025, 1, 1)).days)


def test_the_growth_table_chooses_the_upsell_and_how_much_growth_counts(store: MemoryWindowStore) -> None:
    entries = {e.customer_id: e for e in listed(store)}
    shipped = {u.offer for u in RULES.growth.upsells}
    assert entries["c-data"].upsell == next(u.offer for u in RULES.growth.upsells if u.drivers == ["data"])
    assert entries["c-near"].upsell in shipped
    table = GrowthTable(min_monthly_growth=0.0, upsells=[Upsell(offer="minutes first", drivers=["voice"])])
    loose = {e.customer_id: e for e in listed(store, table)}
    assert {"c-slow", "c-wobbles"} <= set(loose)  # without a floor, any rise over the three months counts
    assert not {"c-top-up-timing", "c-prepaid", "c-gone"} & set(loose)  # never spend whose usage fell, top-ups, leavers
    assert loose["c-few-minutes"].upsell == "minutes first" and loose["c-data"].upsell == DEFAULT_UPSELL


def test_a_second_growth_table_or_an_unknown_field_is_refused(tmp_path: Path) -> None:
    for name in ("churn.yaml", "growth.yaml"):
        (tmp_path / name).write_text((RULES_DIR / name).read_text())
    (tmp_path / "more.yaml").write_text("growth:\n  min_monthly_growth: 0.05\n")
    assert [p.field for p in check_files([tmp_path])] == ["growth"]
    (tmp_path / "more.yaml").write_text("growth:\n  upsells:\n    - offer: x\n      driver: [data]\n")
    with pytest.raises(RuleFileError, match="driver"):
        load_rules([tmp_path])


def test_the_chart_adds_up_to_the_list(store: MemoryWindowStore, tmp_path: Path) -> None:
    entries = listed(store)
    fig = growth_figure(entries, "growth")
    count, value = ([sum(p.get_height() for p in ax.patches) for ax in fig.axes])
    assert count == len(entries) and value == pytest.approx(sum(e.arpu_3m for e in entries))
    growth_chart([], "nobody", tmp_path / "empty.png")  # an empty list still draws, without a legend
    assert (tmp_path / "empty.png").stat().st_size > 5_000


def test_on_the_simulator_rising_customers_are_those_it_made_grow_and_the_list_holds_only_them() -> None:
    """A base where half the staying customers grow (`evaluate --lists` makes 5% grow: a test base of
    1,200 would hold a handful on the line's doorstep). Measured against the simulator's truth: who the
    pipeline's state shows rising, and who is on the list."""
    sim = Simulator(SimConfig(customers=1200, days=100, seed=5, grow_share=0.5))
    result = replay(((r.topic, r.key, r.value) for r in sim.records()), Settings(_env_file=None), lambda: RULES,
                    learn=False, keep_snapshots=False)
    names = sorted(result.states)
    day = sim.cfg.start + timedelta(days=sim.cfg.days - 1)
    raws = [result.states[n] for n in names]
    truth = [next(t for t in sim.truth if t.customer_id == n) for n in names]
    up = rising(derive(Windows.load(names, raws), np.full(len(names), day.toordinal()), ZONE),
                RULES.growth.min_monthly_growth)
    grower = np.array([t.pattern == "grower" for t in truth])
    # Grown through the three months judged, on a bill that follows usage (a prepaid line's top-ups come in lumps).
    early = str(sim.cfg.start + timedelta(days=31))
    through = grower & np.array([bool(t.grows) and t.grows[0] <= early for t in truth]) \
        & ~sim.prepaid[[sim.ids.index(n) for n in names]]
    assert up.sum() >= 150 and grower[up].mean() >= 0.85  # precision (210 rising, 0.94 measured)
    assert up[through].mean() >= 0.7  # recall of those whose growth the months can show (0.86)
    entries, _, _ = growth_candidates(names, raws, day, ZONE, RULES.growth)
    patterns = {t.customer_id: t.pattern for t in truth}
    # About ten on the list; a dipper whose months climb back from the dip can look the same.
    first = ranked(entries)[:50]
    assert len(first) >= 5 and sum(patterns[e.customer_id] == "grower" for e in first) >= 0.8 * len(first)
    # Customers cross the line month by month; the stream's first month has no month before it to cross from.
    rows = {m.month: m for m in churn_report(result.report, "2026-10", 3).months}
    assert rows["2026-08"].mid_high_end_new == 0
    assert rows["2026-09"].mid_high_end_new > 0 and rows["2026-10"].mid_high_end_new > 0
    assert all(m.mid_high_end_new <= m.mid_high_end for m in rows.values())


def test_the_workers_metrics_skip_what_they_cannot_read() -> None:
    metrics = Metrics(CollectorRegistry())
    fields = {b"\xffgrowth|customers": b"1", b"growth|customers": b"9" * 400, b"growth|monthly_value": b"lots",
              b"winback|customers": b"7", b"winback|day": b"2026-07-01"}
    observe_lists(metrics, fields, ZONE)
    assert metrics.list_customers.labels("winback")._value.get() == 7
    assert metrics.list_day.labels("winback")._value.get() == datetime(2026, 7, 1, tzinfo=ZONE).timestamp()


def test_a_newcomer_on_a_big_plan_has_not_crossed_the_line_in_their_second_month() -> None:
    log, kept = Log(), MemoryWindowStore()
    for who, joined in (("c-new", "2026-04-28"), ("c-grown", "2025-01-01")):
        log.add("customers", who, profile(who, activation_date=joined))
        for month, amount in ((4, 15.0 if who == "c-new" else 100.0), (5, 150.0), (6, 150.0)):
            for day in range(28 if who == "c-new" and month == 4 else 2, 30, 3):
                log.add("cdr", who, cdr(who, datetime(2026, month, day, 10).isoformat() + "+08:00", duration_s=1800))
            log.add("billing", who, billing(who, f"2026-{month + 1:02d}-01T02:00:00+08:00", amount=amount,
                                            period=f"2026-{month:02d}"))
        log.add("cdr", who, cdr(who, "2026-07-06T10:00:00+08:00", duration_s=60))
    run_batches(log.records, RULES, store=kept, batch_size=50)
    rows = {m.month: m for m in churn_report(dict(kept.report), "2026-06", 3).months}
    assert (rows["2026-05"].mid_high_end, rows["2026-05"].mid_high_end_new) == (2, 1)  # c-grown only
    assert rows["2026-06"].mid_high_end_new == 0
