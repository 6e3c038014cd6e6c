"""The campaign report: calls, reach, acceptance and churn per week and action, against the holdout."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec
import pytest

from stream_app.alerts.campaign import (
    MIN_CONTROL,
    CampaignCosts,
    CampaignRow,
    campaign_customers,
    campaign_report,
    difference_interval,
    latest_outcomes,
)
from stream_app.contracts.events import Alert, ChurnEvent, Outcome
from stream_app.model.qini import qini

ZONE = ZoneInfo("Asia/Shanghai")
MONDAY = date(2026, 3, 2)  # ISO week 2026-W10


def alert(customer: str, day: date = MONDAY, action: str = "plan offer", holdout: bool = False,
          arpu: float = 100.0) -> Alert:
    event = datetime(day.year, day.month, day.day, 15, tzinfo=ZONE)
    created = datetime(2026, 11, 1, tzinfo=timezone.utc)
    return Alert(f"{customer}-high-{day}", customer, "high", "2026-03", created, created + timedelta(days=3), event,
                 [], 3, "mid_high_end", "gold", arpu, 500.0, action, holdout=holdout)


def outcome(a: Alert, result: str, hour: int = 10) -> Outcome:
    ts = datetime(2026, 3, 3, hour, tzinfo=ZONE)
    return Outcome(f"o-{a.alert_id}-{hour}", a.customer_id, ts, a.alert_id, result, "OFFER10", "agent-7")


def churn(customer: str, day: date) -> ChurnEvent:
    return ChurnEvent(customer, day.toordinal(), "port_out", 3, True, "north", "mid_high_end", 100.0)


def by_key(rows, week: str, action: str, segment: str = "all", region: str = "all"):
    return next(r for r in rows if (r.week, r.action, r.segment, r.region) == (week, action, segment, region))


def test_calls_reach_acceptance_and_churn_against_the_holdout() -> None:
    called = [alert(f"c{i}") for i in range(10)]
    control = [alert(f"h{i}", holdout=True) for i in range(4)]
    unworked = alert("u0")  # alerted, never called: in alerts only
    outcomes = [outcome(called[0], "accepted"), outcome(called[1], "accepted"), outcome(called[2], "declined"),
                *(outcome(a, "not_reached") for a in called[3:10])]
    churns = [churn("c3", MONDAY + timedelta(days=20)), churn("h0", MONDAY + timedelta(days=30)),
              churn("h1", MONDAY + timedelta(days=40)),
              churn("c4", MONDAY + timedelta(days=91)),  # after the 90-day window: not this alert's churn
              churn("c5", MONDAY - timedelta(days=1))]  # before the alert
    costs = CampaignCosts(call=2.0, offer=30.0, value_months=12)
    rows = campaign_report([*called, *control, unworked], outcomes, churns, ZONE, as_of=date(2026, 12, 1), costs=costs)
    row = by_key(rows, "2026-W10", "plan offer")
    assert (row.alerts, row.holdout, row.calls, row.reached, row.accepted) == (15, 4, 10, 3, 2)
    assert (row.reach_rate, row.acceptance_rate) == (pytest.approx(0.3), pytest.approx(2 / 3))
    assert (row.churn_called, row.churn_holdout) == (pytest.approx(0.1), pytest.approx(0.5))
    # (0.5 - 0.1) x 10 called x 100 ARPU x 12 months, against 10 calls x 2 + 2 offers x 30.
    assert row.revenue_kept(costs) == pytest.approx(4800.0)
    assert row.cost(costs) == 80.0 and row.roi(costs) == pytest.approx((4800 - 80) / 80)
    assert row.matured
    assert by_key(rows, "all", "all").to_json(costs)["calls"] == 10


def test_rows_per_week_and_action_and_young_weeks_are_not_final() -> None:
    early, late = alert("a1"), alert("b1", day=MONDAY + timedelta(days=7), action="technical follow-up")
    rows = campaign_report([early, late], [outcome(early, "contacted")], [], ZONE, as_of=MONDAY + timedelta(days=95))
    assert [(r.week, r.action, r.segment, r.region) for r in rows] == [
        ("2026-W10", "plan offer", "all", "all"), ("2026-W11", "technical follow-up", "all", "all"),
        ("all", "plan offer", "all", "all"), ("all", "technical follow-up", "all", "all"),
        ("all", "all", "mid_high_end", "all"), ("all", "all", "all", "unknown"), ("all", "all", "all", "all")]
    assert by_key(rows, "2026-W10", "plan offer").matured
    assert not by_key(rows, "2026-W11", "technical follow-up").matured
    assert by_key(rows, "2026-W10", "plan offer").revenue_kept(CampaignCosts()) is None  # no control group in the row


def test_a_replayed_alert_counts_once_and_the_latest_outcome_wins() -> None:
    a = alert("a1")
    first, later = outcome(a, "not_reached", hour=9), outcome(a, "accepted", hour=16)
    assert latest_outcomes([later, first, later]) == {a.alert_id: later}
    rows = campaign_report([a, a, a], [later, first], [], ZONE, as_of=MONDAY)
    row = by_key(rows, "all", "all")
    assert (row.alerts, row.calls, row.reached, row.accepted) == (1, 1, 1, 1)


def test_an_outcome_recorded_for_a_holdout_alert_does_not_make_it_a_call() -> None:
    h = alert("h1", holdout=True)
    row = by_key(campaign_report([h], [outcome(h, "accepted")], [], ZONE, as_of=MONDAY), "all", "all")
    assert (row.holdout, row.calls, row.accepted) == (1, 0, 0)


def test_the_uplift_interval_is_newcombes_and_the_verdict_needs_a_control_group_large_enough() -> None:
    # Newcombe (1998), method 10; the reference values are statsmodels' confint_proportions_2indep
    # (method="newcomb"), computed apart from this code.
    assert difference_interval(56, 70, 48, 80) == pytest.approx((0.0524315, 0.3338727), abs=1e-6)
    assert difference_interval(9, 40, 3, 60) == pytest.approx((0.0410556, 0.3285853), abs=1e-6)
    def customers(prefix: str, n: int, churned: int) -> dict[str, bool]:
        return {f"{prefix}{k}": k < churned for k in range(n)}

    row = CampaignRow("all", "all", called_customers=customers("c", 200, 10),
                      control_customers=customers("h", MIN_CONTROL - 1, 8))
    assert row.uplift == pytest.approx(8 / 29 - 0.05) and "too small" in row.verdict
    row.control_customers = customers("h", 120, 24)  # 20% against 5%
    low, high = row.uplift_interval  # type: ignore[misc]
    assert 0 < low < 0.15 < high and row.verdict == "the calls kept customers"
    row.matured = False
    assert row.verdict.startswith("the calls kept customers so far (not final")
    row.control_customers = customers("h", 120, 7)  # 5.8% against 5%
    assert row.verdict.startswith("no difference shown")
    doc = row.to_json(CampaignCosts())
    assert doc["uplift_low"] < 0 < doc["uplift_high"]
    assert doc["customers_kept"] == pytest.approx(row.uplift * 200, abs=0.1)
    assert (doc["called_distinct"], doc["control_distinct"]) == (200, 120) and "called_customers" not in doc


def test_a_customer_alerted_again_and_again_counts_once_in_the_uplift() -> None:
    control = [alert(f"h{k}", day=MONDAY + timedelta(days=7 * w), holdout=True) for k in range(10) for w in range(4)]
    row = by_key(campaign_report(control + [alert("c1")], [outcome(alert("c1"), "contacted")], [], ZONE,
                                 as_of=MONDAY), "all", "all")
    assert (row.holdout, len(row.control_customers)) == (40, 10) and "too small" in row.verdict


def test_segments_and_regions_get_rows_of_their_own_over_all_weeks() -> None:
    mass = msgspec.structs.replace(alert("m1"), segment="mass", region="north")
    rows = campaign_report([alert("a1"), mass], [], [], ZONE, as_of=MONDAY)
    assert by_key(rows, "all", "all", "mass").alerts == 1 and by_key(rows, "all", "all", "mid_high_end").alerts == 1
    assert by_key(rows, "all", "all", region="north").alerts == 1
    assert by_key(rows, "all", "all", region="unknown").alerts == 1
    assert by_key(rows, "all", "all").alerts == 2


def test_with_the_budget_the_control_group_is_the_control_alerts_the_plan_ranked_within_it() -> None:
    called = [msgspec.structs.replace(alert(f"c{i}"), value_at_risk=1000.0 - i) for i in range(3)]
    near = msgspec.structs.replace(alert("h0", holdout=True), value_at_risk=999.5)  # would have been called
    far = msgspec.structs.replace(alert("h1", holdout=True), value_at_risk=1.0)  # below the budget's line
    outcomes = [outcome(a, "contacted") for a in called]
    everyone = by_key(campaign_report([*called, near, far], outcomes, [], ZONE, as_of=MONDAY), "all", "all")
    fair = by_key(campaign_report([*called, near, far], outcomes, [], ZONE, as_of=MONDAY, budget=3), "all", "all")
    assert (everyone.holdout, fair.holdout, fair.calls, fair.alerts) == (2, 1, 3, 5)


def test_the_qini_curve_judges_each_called_and_control_customer_once_by_their_highest_value_at_risk() -> None:
    """Calls that keep the valuable customers and not the others: ranked by value at risk, as the
    call list is, the kept come first and the Qini coefficient is positive."""
    def valued(customer: str, value: float, day: date = MONDAY, holdout: bool = False) -> Alert:
        return msgspec.structs.replace(alert(customer, day, holdout=holdout), value_at_risk=value)

    called = [valued(f"c{i}", 1000.0 - i) for i in range(40)] + [valued("c0", 5.0, MONDAY + timedelta(days=7))]
    control = [valued(f"h{i}", 1000.0 - i, holdout=True) for i in range(40)]
    # Every control customer leaves; of the called, only the less valuable half does.
    churns = [churn(f"h{i}", MONDAY + timedelta(days=10)) for i in range(40)] + \
             [churn(f"c{i}", MONDAY + timedelta(days=10)) for i in range(20, 40)]
    outcomes = [outcome(a, "accepted") for a in called]
    rows = campaign_report([*called, *control], outcomes, churns, ZONE, as_of=date(2026, 12, 1))
    score, was_called, churned = campaign_customers(rows[-1], [*called, *control])
    assert len(score) == 80 and was_called.sum() == 40  # c0, alerted twice, is one customer
    assert score[:1].tolist() == [1000.0]  # at their highest value at risk
    assert churned[was_called].sum() == 20 and churned[~was_called].all()
    q = qini(score, was_called, churned)
    assert q.low > 0 and (q.called, q.control) == (40, 40)
    assert qini(-score, was_called, churned).coefficient < q.coefficient  # the other order keeps them last
