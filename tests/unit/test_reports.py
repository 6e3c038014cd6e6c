"""The report counters: what a batch adds, counted once, and the reports read back from them."""

from __future__ import annotations

import collections
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from stream_app.cli.report import _churn_csv, _cohort_csv
from stream_app.metrics import Metrics
from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.reports.facts import REGION
from stream_app.reports.monthly import NoData, churn_report, cohort_report, counted_regions, latest_month, region_counts
from stream_app.rules.pack import load_rules
from stream_app.settings import CohortRule, Settings
from stream_app.windows.store import MemoryWindowStore
from stream_app.worker.pipeline import BatchProcessor
from tests.factories import Log, billing, cdr, profile
from tests.unit.test_pipeline import CLOCK, processor, run

RULES = load_rules([Path(__file__).resolve().parents[2] / "alert_rules"])


def months_of_bills(log: Log, customer: str, amounts: dict[int, float], year: int = 2026) -> None:
    """A call and a bill in each month (bills for month m arrive on the 1st of m + 1)."""
    for month, amount in sorted(amounts.items()):
        log.add("cdr", customer, cdr(customer, datetime(year, month, 10, 10).isoformat() + "+08:00"))
        nxt = (year + month // 12, month % 12 + 1)
        log.add("billing", customer, billing(customer, f"{nxt[0]}-{nxt[1]:02d}-01T02:00:00+08:00", amount=amount,
                                             period=f"{year}-{month:02d}"))


def test_a_cohort_member_is_lost_once_whether_by_revenue_churn_or_exit_and_replays_count_nothing() -> None:
    log = Log()
    for c in ("8613800000001", "8613800000002", "8613800000003"):
        log.add("customers", c, profile(c, activation_date="2025-11-20"))
    # 1: photographed in May (150 x 3 >= 360), then three months under 50: lost in August.
    months_of_bills(log, "8613800000001", {3: 150, 4: 150, 5: 150, 6: 40, 7: 30, 8: 20, 9: 20})
    # 2: photographed in May, leaves in July, voluntarily, over the price.
    months_of_bills(log, "8613800000002", {3: 150, 4: 150, 5: 150, 6: 150})
    log.add("billing", "8613800000002", billing("8613800000002", "2026-07-15T12:00:00+08:00", kind="port_out",
                                                  reason_code=101, voluntary=True))
    # 3: spends too little to be photographed.
    months_of_bills(log, "8613800000003", {3: 100, 4: 100, 5: 100, 6: 100, 7: 100, 8: 100, 9: 100})
    log.add("cdr", "8613800000003", cdr("8613800000003", "2026-10-02T10:00:00+08:00"))
    store = MemoryWindowStore()
    run(processor(store), log.records, size=7)
    once = dict(store.report)
    run(processor(store), log.records, size=5)  # the same events again, batched differently
    assert store.report == once

    may = cohort_report(once, "2026-05", CohortRule(), through="2026-09")
    assert may.members == 2
    assert dict(zip(may.months, may.lost)) == {"2026-06": 0, "2026-07": 1, "2026-08": 1, "2026-09": 0}
    assert may.retention_rate == [1.0, 0.5, 0.0, 0.0]
    report = churn_report(once, "2026-07", 3)
    july = report.months[-1]
    assert (july.customers_start, july.voluntary_churn, july.churn, july.customers_end) == (3, 1, 1, 2)
    assert july.revenue_lost == 150.0 and report.by_reason["2026-07"] == {"101": 1}
    assert report.by_region["2026-07"] == {"north": 1}
    # Activations count in their own month: the base at the start of the report already holds them.
    assert once["2025-11|adds"] == 3 and report.months[0].gross_adds == 0


def test_a_simulated_period_reports_what_the_simulator_knows_happened() -> None:
    sim = Simulator(SimConfig(customers=250, days=110, seed=5, monthly_churn=0.03))
    result = replay(((r.topic, r.key, r.value) for r in sim.records()), Settings(_env_file=None), lambda: RULES,
                    learn=False)
    last = latest_month(result.report)
    report = churn_report(result.report, last, 4)
    churned = [t for t in sim.truth if t.churn_date]
    assert churned, "the simulation should have churners"
    truth_reasons: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for t in churned:
        truth_reasons[t.churn_date[:7]][str(t.reason_code)] += 1
    base = len(sim.ids)
    for m in report.months:
        lost = sum(truth_reasons[m.month].values())
        voluntary = sum(v for code, v in truth_reasons[m.month].items() if int(code) not in (335, 345, 380))
        assert (m.customers_start, m.churn, m.voluntary_churn, m.customers_end) == (base, lost, voluntary, base - lost)
        assert report.by_reason[m.month] == dict(truth_reasons[m.month])
        base -= lost
    # A table, a CSV and a JSON document of the same figures.
    assert _churn_csv(report).count("\n") == len(report.months) + 1
    assert report.to_json()["months"][0]["month"] == report.months[0].month


def reports_by_topic_order(sim: Simulator) -> dict[str, dict[str, int]]:
    """The report counters after reading the simulated log as produced, with all billing
    read first, and with all usage read first."""
    log = Log()
    for r in sim.records():
        log.add(r.topic, r.key.decode(), r.value)
    orders = {
        "as produced": log.records,
        "billing first": sorted(log.records, key=lambda r: r.topic != "billing"),
        "usage first": sorted(log.records, key=lambda r: r.topic != "cdr"),
    }
    reports = {}
    for name, records in orders.items():
        store = MemoryWindowStore()
        run(processor(store), records, size=500)
        reports[name] = dict(store.report)
    return reports


def differences(reports: dict[str, dict[str, int]]) -> dict[str, list[str]]:
    base = reports["as produced"]
    return {name: sorted(k for k in report.keys() | base.keys() if report.get(k, 0) != base.get(k, 0))
            for name, report in reports.items() if name != "as produced"}


def test_the_report_does_not_depend_on_which_topic_is_read_ahead() -> None:
    """Usage and billing are read by separate agents, so after a restart either may run days
    ahead of the other; a month counts only once both have moved past it."""
    reports = reports_by_topic_order(Simulator(SimConfig(customers=120, days=110, seed=11, monthly_churn=0.0)))
    assert any(k.startswith("cohort|") for k in reports["as produced"])
    assert differences(reports) == {"billing first": [], "usage first": []}


def test_exits_count_the_same_whichever_topic_is_read_ahead() -> None:
    """An exit closes the leaver's open months when it is read, and their usage of those months
    may still be on its way: what that usage decides (mid/high-end months, the exit's segment
    and region) is corrected as it arrives, so the counters end the same."""
    reports = reports_by_topic_order(Simulator(SimConfig(customers=120, days=110, seed=11, monthly_churn=0.04)))
    assert any("|exits|" in k for k in reports["as produced"])
    assert differences(reports) == {"billing first": [], "usage first": []}


def test_the_cohort_csv_has_one_row_per_month_followed() -> None:
    counts = {"cohort|2026-01|members": 10, "cohort|2026-01|lost|2026-02": 1, "cohort|2026-01|lost|2026-04": 2,
              "2026-04|billed": 7}
    r = cohort_report(counts, "2026-01", CohortRule())
    assert r.months == ["2026-02", "2026-03", "2026-04"] and r.retained == [9, 9, 7]
    assert _cohort_csv(r).splitlines()[-1] == "2026-01,10,2026-04,2,7,0.7"


def test_report_without_redis_says_what_is_missing(monkeypatch) -> None:
    from stream_app.cli.main import main

    monkeypatch.delenv("REDIS_URL", raising=False)
    result = CliRunner().invoke(main, ["report", "churn"])
    assert result.exit_code != 0 and "REDIS_URL" in result.output
    result = CliRunner().invoke(main, ["report", "cohort", "--snapshot", "2026-13"])
    assert result.exit_code != 0 and "expected YYYY-MM" in result.output


def test_a_period_or_a_cohort_without_counters_is_said_so_not_shown_as_nobody_leaving() -> None:
    counts = {"2026-01|adds": 3, "2026-02|exits|voluntary": 1, "2026-03|revenue": 500, "cohort|2026-02|members": 2}
    assert [m.month for m in churn_report(counts, "2026-03", 2).months] == ["2026-02", "2026-03"]
    for month in ("2030-01", "2025-12"):
        said = f"no report counters for {month}: the workers have counted 2026-02 to 2026-03"
        with pytest.raises(NoData, match=said):
            churn_report(counts, month, 3)
    with pytest.raises(NoData, match="have counted nothing yet"):
        churn_report({}, "2026-03", 3)
    assert cohort_report(counts, "2026-02", CohortRule()).members == 2
    with pytest.raises(NoData, match="the 2026-03 cohort has no members"):
        cohort_report(counts, "2026-03", CohortRule())


def test_each_regions_report_counts_its_own_customers_and_the_regions_add_up_to_the_totals() -> None:
    sim = Simulator(SimConfig(customers=150, days=110, seed=5, monthly_churn=0.03, regions=3))
    settings = Settings(_env_file=None, regions=["region-0", "region-1"])  # region-2 counts as `other`
    counts = replay(((r.topic, r.key, r.value) for r in sim.records()), settings, lambda: RULES, learn=False).report
    assert counted_regions(counts) == ["other", "region-0", "region-1"]
    last = latest_month(counts)
    total = churn_report(counts, last, 4)
    # The latest month is the base's: a region with no exit in it has it counted all the same.
    parts = [churn_report(region_counts(counts, r), last, 4, counts) for r in counted_regions(counts)]
    summed = ("customers_start", "gross_adds", "churn", "voluntary_churn", "customers_end", "revenue_lost",
              "customers_billed", "revenue", "mid_high_end")
    for k, month in enumerate(total.months):
        for name in summed:
            assert sum(getattr(p.months[k], name) or 0 for p in parts) == pytest.approx(getattr(month, name) or 0), \
                (month.month, name)
        reasons = collections.Counter()
        for p in parts:
            reasons.update(p.by_reason.get(month.month, {}))
        assert reasons == collections.Counter(total.by_reason.get(month.month, {}))
    cohort = next(k.split("|")[1] for k in counts if k.startswith("cohort|"))
    members = [cohort_report(region_counts(counts, r), cohort, settings.cohort).members
               for r in counted_regions(counts)]
    assert sum(members) == cohort_report(counts, cohort, settings.cohort).members and min(members) > 0
    # A region's exits are its own customers': region-0's are customers 0, 3, 6 ...
    leavers = {t.customer_id for t in sim.truth if t.churn_date and t.churn_date[:7] in {m.month for m in total.months}}
    in_zero = sum(1 for c in leavers if int(c[-8:]) % 3 == 0)
    assert sum(m.churn for m in parts[1].months) == in_zero


@pytest.mark.integration
def test_report_churn_of_a_region_reads_its_counters_from_redis_and_names_the_regions_counted(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import redis

    from stream_app.cli.main import main
    from stream_app.contracts import keys

    counts = {"2026-01|adds": 5, "2026-02|exits|voluntary": 2, "region|north|2026-01|adds": 3,
              "region|north|2026-02|exits|voluntary": 1, "region|other|2026-01|adds": 2,
              "region|other|2026-02|exits|voluntary": 1, "2026-03|exits|voluntary": 1,
              "region|other|2026-03|exits|voluntary": 1}
    client = redis.Redis.from_url(redis_url)
    client.hset(keys.report(0), mapping=counts)
    client.close()
    monkeypatch.setenv("REDIS_URL", redis_url)
    result = CliRunner().invoke(main, ["report", "churn", "--region", "north", "--month", "2026-02", "--months", "1",
                                       "--json"])
    assert result.exit_code == 0, result.output
    [february] = json.loads(result.output.strip().splitlines()[-1])["months"]
    assert (february["customers_start"], february["churn"], february["customers_end"]) == (3, 1, 2)
    # March was counted for the whole base; north had no exit in it, and its report reaches it all the same.
    result = CliRunner().invoke(main, ["report", "churn", "--region", "north", "--months", "1", "--json"])
    [march] = json.loads(result.output.strip().splitlines()[-1])["months"]
    assert (march["month"], march["customers_start"], march["churn"], march["customers_end"]) == ("2026-03", 2, 0, 2)
    result = CliRunner().invoke(main, ["report", "base", "--region", "south"])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: no report counters for region 'south'; regions counted: north, other"]


def test_region_counters_add_up_in_any_order_and_with_profiles_first_do_not_depend_on_billing_leading() -> None:
    """A customer's facts stay in the region they were first counted in: with the profiles read
    first (as a CRM's come before the traffic) that is their own region, with billing read ahead
    or not; profiles read late put what came before them under `unknown`, and the
    regions still add up to the totals, with nothing negative."""
    sim = Simulator(SimConfig(customers=80, days=100, seed=11, monthly_churn=0.04, regions=3))
    log = Log()
    for r in sim.records():
        log.add(r.topic, r.key.decode(), r.value)
    profiles_first = sorted(log.records, key=lambda r: r.topic != "customers")
    orders = {"as produced": log.records,
              "profiles, then billing": sorted(profiles_first, key=lambda r: (r.topic != "customers", r.topic != "billing")),
              "profiles last": sorted(log.records, key=lambda r: r.topic == "customers")}
    settings = Settings(_env_file=None, regions=["region-0", "region-1", "region-2"])
    reports = {}
    for name, records in orders.items():
        store = MemoryWindowStore()
        run(BatchProcessor(settings, store, lambda: RULES, Metrics(CollectorRegistry()), clock=lambda: CLOCK),
            records, size=500)
        counts = {k: v for k, v in store.report.items() if v}  # as read_counts reads them: a corrected 0 is nothing
        regions = counted_regions(counts)
        for key in (k for k in counts if not k.startswith(REGION)):
            assert sum(region_counts(counts, r).get(key, 0) for r in regions) == counts[key], (name, key)
        assert min(counts.values()) >= 0, name
        reports[name] = counts
    assert "unknown" not in counted_regions(reports["as produced"])
    assert reports["profiles, then billing"] == reports["as produced"]
    assert "unknown" in counted_regions(reports["profiles last"])


@pytest.mark.parametrize("regions", [["a|b"], ["other"], ["unknown"], [""]])
def test_a_region_name_that_would_break_or_shadow_the_counters_is_refused(regions: list[str]) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="region names"):
        Settings(_env_file=None, regions=regions)
    with pytest.raises(ValidationError, match="region names"):
        Settings(_env_file=None, region_call_budgets={regions[0]: 5})
