"""A customer who left and came back: on the same number (a port-in on the billing topic) or as
the same person on a new line (their first profile names the old one). Recorded once, in the
base again, whichever topic is read first; the months they were away are not theirs."""

from __future__ import annotations

import collections
import itertools
from datetime import date, datetime, timedelta

import msgspec

from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.reports.monthly import churn_report
from stream_app.settings import Settings
from stream_app.windows.store import MemoryWindowStore
from tests.factories import Log, billing, cdr, profile
from tests.unit.test_pipeline import processor, run
from tests.unit.test_reports import RULES, months_of_bills

BACK, LEFT, NEW, STAYS = "8613800000001", "8613800000002", "8613800000009", "8613800000003"


def story(late_call: bool = False) -> Log:
    """BACK ports out in July and ports back in on 10 September; LEFT ports out in July and
    the same person comes back on a new line, NEW, on 20 September; STAYS stays throughout.
    Within the seven months a state keeps, whichever topic is read first."""
    log = Log()
    for c in (BACK, LEFT, STAYS):
        log.add("customers", c, profile(c, activation_date="2025-11-20"))
    for c in (BACK, LEFT):
        months_of_bills(log, c, {5: 150, 6: 150})
        log.add("billing", c, billing(c, "2026-07-15T12:00:00+08:00", kind="port_out", reason_code=101,
                                      voluntary=True))
    log.add("billing", BACK, billing(BACK, "2026-07-16T12:00:00+08:00", kind="disconnect", reason_code=101,
                                     voluntary=True))  # the same exit again
    log.add("billing", BACK, billing(BACK, "2026-09-10T09:00:00+08:00", kind="port_in"))
    if late_call:  # a call of the evening before the port-in, read after it
        log.add("cdr", BACK, cdr(BACK, "2026-09-09T20:00:00+08:00"))
    log.add("customers", BACK, profile(BACK, "2026-09-10T09:30:00+08:00", activation_date="2026-09-10"))
    months_of_bills(log, BACK, {9: 90, 10: 90})
    log.add("customers", NEW, profile(NEW, "2026-09-20T09:00:00+08:00", activation_date="2026-09-20",
                                      previous_customer_id=LEFT))
    months_of_bills(log, NEW, {9: 60, 10: 60})
    months_of_bills(log, STAYS, {m: 100 for m in range(5, 11)})
    return log


def ahead(records: list, topic: str, days: int = 10) -> list:
    """The records as a worker reads them with `topic` read `days` ahead of the others (a catch-up)."""
    lead = timedelta(days=days)
    return sorted(records, key=lambda r: datetime.fromisoformat(msgspec.json.decode(r.value)["ts"])
                  - (lead if r.topic == topic else timedelta()))


def read(records: list, size: int) -> tuple[MemoryWindowStore, list]:
    store = MemoryWindowStore()
    out = run(processor(store), records, size=size)
    assert not out.deadletters, out.deadletters
    return store, out.won_back


def counted(store: MemoryWindowStore) -> dict[str, int]:
    """The report counters; one counted and corrected back to 0 (a region read late) is none.
    Revenue churn is left out: it is judged on the day the worker sees it, so with one topic read
    months ahead of another it can be seen on other days (tests/unit/test_reports.py)."""
    return {k: v for k, v in store.report.items() if v and not k.endswith("|revenue_churn")}


def test_a_customer_back_is_recorded_once_and_counted_in_the_base_again_whichever_topic_comes_first() -> None:
    log = story()
    store, back = read(log.records, 6)
    assert sorted((b.customer_id, b.previous_customer_id, b.left_on) for b in back) == [
        (BACK, BACK, date(2026, 7, 15).toordinal()), (NEW, LEFT, None)]
    assert {b.customer_id: date.fromordinal(b.day) for b in back} == {BACK: date(2026, 9, 10), NEW: date(2026, 9, 20)}
    counts = counted(store)
    assert counts["2026-09|won_back"] == 2 and counts["2026-09|adds"] == 2
    assert counts["2026-07|exits|voluntary"] == 2  # the second record of BACK's exit counts nothing
    # Away from their exit in July: only STAYS is billed; BACK again from September, with NEW.
    assert [counts.get(f"2026-{m:02d}|billed") for m in (5, 6, 7, 8, 9)] == [3, 3, 1, 1, 3]
    september = churn_report(counts, "2026-09", 1).months[0]
    assert (september.customers_start, september.gross_adds, september.won_back,
            september.customers_end) == (1, 2, 2, 3)

    orders = {"profiles first": sorted(log.records, key=lambda r: r.topic != "customers"),
              "billing ahead": ahead(log.records, "billing"), "usage ahead": ahead(log.records, "cdr")}
    for (name, records), size in itertools.product(orders.items(), (1, 6, 500)):
        other, again = read(records, size)
        assert counted(other) == counts, (name, size)
        assert sorted((b.customer_id, b.day) for b in again) == sorted((b.customer_id, b.day) for b in back), name
    run(processor(store), log.records, size=4)  # the same records again, batched differently
    assert counted(store) == counts


def test_usage_dated_before_the_return_read_after_it_goes_to_dead_letter_and_counts_nothing() -> None:
    store = MemoryWindowStore()
    out = run(processor(store), story(late_call=True).records, size=6)
    assert [(d.reason, d.field, d.key) for d in out.deadletters] == [("before_return", "ts", BACK)]
    assert counted(store) == counted(read(story().records, 6)[0])


def test_a_customer_back_starts_afresh_and_a_second_exit_is_a_new_churn() -> None:
    """Back on their number, a customer is judged on what they do from then on: the months they
    were away are not a fall in spend. Their next exit is a churn of its own, worth what they
    spent the month before it."""
    log = story()
    log.add("billing", BACK, billing(BACK, "2026-11-03T12:00:00+08:00", kind="port_out", reason_code=102,
                                     voluntary=True))
    for size in (1, 6):  # an exit, a return and another exit all in one batch keep the last exit only (docs)
        store = MemoryWindowStore()
        out = run(processor(store), log.records, size=size)
        exits = sorted((c.customer_id, date.fromordinal(c.day).month, c.arpu) for c in out.churn_events
                       if c.kind != "revenue")
        assert exits == [(BACK, 7, 150.0), (BACK, 11, 90.0), (LEFT, 7, 150.0)], size
        assert not [c for c in out.churn_events if c.kind == "revenue" and c.customer_id == BACK], size
        assert counted(store)["2026-11|exits|voluntary"] == 1
        assert date(2026, 9, 10).toordinal() in {s.day for s in out.snapshots if s.customer_id == BACK}, size


def test_on_the_simulator_the_customers_back_are_those_it_brought_back_counted_in_their_month() -> None:
    """Leavers over price who port their number back (`comeback_share`): each is recorded on the
    day it came back and counted in that month's base, and no one else is."""
    sim = Simulator(SimConfig(customers=200, days=150, seed=11, monthly_churn=0.08, warmup_days=30, comeback_share=0.6))
    result = replay(((r.topic, r.key, r.value) for r in sim.records()), Settings(), lambda: RULES, learn=False)
    truth = {t.customer_id: date.fromisoformat(t.back_date) for t in sim.truth if t.back_date}
    assert len(truth) >= 5
    assert {b.customer_id: date.fromordinal(b.day) for b in result.won_back} == truth
    assert all(b.previous_customer_id == b.customer_id and b.left_on for b in result.won_back)
    by_month = collections.Counter(f"{d:%Y-%m}|won_back" for d in truth.values())
    assert {k: v for k, v in result.report.items() if k.endswith("|won_back") and v} == dict(by_month)
