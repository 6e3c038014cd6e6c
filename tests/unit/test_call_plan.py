"""The daily call budget and the warning lists: who is called, in what order, and who waits."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec

from stream_app.alerts.call_plan import for_call_centre, monthly_list, plan_days
from stream_app.contracts.events import Alert

ZONE = ZoneInfo("Asia/Shanghai")


def alert(customer: str, day: int, value: float, level: str = "medium", holdout: bool = False,
          open_days: int = 3) -> Alert:
    event = datetime(2026, 3, day, 15, tzinfo=ZONE)
    created = datetime(2026, 11, 1, tzinfo=timezone.utc)  # wall clock of a replay: the plan must not use it
    return Alert(f"{customer}-{level}-{day}", customer, level, "2026-03", created, created + timedelta(days=open_days),
                 event, [], None, "mass", "none", 50.0, value, "call", holdout=holdout)


def test_each_day_calls_the_most_value_at_risk_within_the_budget_and_the_rest_wait_or_expire() -> None:
    alerts = [alert("a1234", 1, 100), alert("b1234", 1, 300), alert("c1234", 1, 200), alert("d1234", 1, 50),
              alert("e1234", 2, 250), alert("f1234", 1, 999, holdout=True)]
    plans = plan_days(alerts, date(2026, 3, 1), date(2026, 3, 4), budget=2, zone=ZONE)
    called = [[a.customer_id for a in p.calls] for p in plans]
    assert called == [["b1234", "c1234"], ["e1234", "a1234"], ["d1234"], []]
    assert [(p.waiting, p.expired, p.holdout) for p in plans] == [(2, 0, 1), (1, 0, 0), (0, 0, 0), (0, 0, 0)]


def test_control_alerts_ranked_within_the_budget_are_held_and_take_no_call() -> None:
    alerts = [alert("a1234", 1, 900, holdout=True), alert("b1234", 1, 800), alert("c1234", 1, 700),
              alert("d1234", 1, 600, holdout=True), alert("e1234", 1, 500)]
    [plan] = plan_days(alerts, date(2026, 3, 1), date(2026, 3, 1), budget=2, zone=ZONE)
    assert [a.customer_id for a in plan.calls] == ["b1234", "c1234"]  # the budget goes to calls only
    assert [a.customer_id for a in plan.held] == ["a1234"]  # d1234 ranked below the line: compared with no one
    assert (plan.waiting, plan.holdout) == (1, 2)


def test_a_region_with_a_budget_of_its_own_competes_only_with_itself() -> None:
    north = [msgspec.structs.replace(alert(f"n{k}234", 1, v), region="north") for k, v in enumerate((900, 800, 700))]
    south = [msgspec.structs.replace(alert(f"s{k}234", 1, v), region="south") for k, v in enumerate((600, 500, 400))]
    [plan] = plan_days([*north, *south], date(2026, 3, 1), date(2026, 3, 1), budget=2, zone=ZONE,
                       region_budgets={"north": 1})
    # North's one call goes to its best; south shares the budget of 2 with every other region.
    assert [a.customer_id for a in plan.calls] == ["n0234", "s0234", "s1234"] and plan.waiting == 3


def test_an_alert_not_called_within_its_open_days_expires_and_is_counted() -> None:
    alerts = [alert(f"c{i:04d}", 1, 100 + i, open_days=2) for i in range(5)]
    plans = plan_days(alerts, date(2026, 3, 1), date(2026, 3, 3), budget=2, zone=ZONE)
    assert [len(p.calls) for p in plans] == [2, 2, 0]
    assert [p.expired for p in plans] == [0, 1, 0] and plans[-1].waiting == 0


def test_an_escalation_replaces_the_open_alert_and_a_replayed_alert_counts_once() -> None:
    low = alert("a1234", 1, 10)
    high = alert("a1234", 2, 500, level="high")
    others = [alert(f"c{i:04d}", 1, 100) for i in range(3)]
    plans = plan_days([low, *others, high, high, low], date(2026, 3, 1), date(2026, 3, 2), budget=3, zone=ZONE)
    assert [a.customer_id for a in plans[0].calls] == ["c0000", "c0001", "c0002"]
    assert [(a.customer_id, a.level) for a in plans[1].calls] == [("a1234", "high")]
    assert plans[1].superseded == 1


def test_a_later_start_gives_the_same_days_as_planning_from_the_first_alert() -> None:
    alerts = [alert(f"c{i:04d}", 1 + i % 5, 10 * i) for i in range(40)]
    whole = plan_days(alerts, date(2026, 3, 1), date(2026, 3, 8), budget=4, zone=ZONE)
    late = plan_days(alerts, date(2026, 3, 5), date(2026, 3, 8), budget=4, zone=ZONE)
    assert [[a.alert_id for a in p.calls] for p in whole[4:]] == [[a.alert_id for a in p.calls] for p in late]


def test_the_monthly_list_has_each_customer_once_at_their_highest_level() -> None:
    alerts = [alert("a1234", 3, 100), alert("a1234", 9, 400, level="high"), alert("a1234", 20, 50),
              alert("b1234", 4, 200, holdout=True)]
    listed = monthly_list(alerts, "2026-03", ZONE)
    assert [(a.customer_id, a.level) for a in listed] == [("a1234", "high"), ("b1234", "medium")]
    assert monthly_list(alerts, "2026-04", ZONE) == []


def test_value_at_risk_weighs_a_segment_by_how_long_its_customers_stay(monkeypatch) -> None:
    from stream_app.alerts.build import AlertPolicy
    from stream_app.settings import Settings

    monkeypatch.setenv("CHURNWATCH_SEGMENT_MONTHLY_CHURN", '{"mid_high_end": 0.01, "mass": 0.05}')
    monkeypatch.setenv("CHURNWATCH_MARGIN_SHARE", "0.5")
    settings = Settings(_env_file=None)
    policy = AlertPolicy.of(settings)
    # 1 / 1% is 100 months, capped at 60; 1 / 5% is 20 months.
    assert policy.value_at_risk(0.5, 200.0, "mid_high_end") == 0.5 * 200 * 0.5 * 60
    assert policy.value_at_risk(0.5, 200.0, "mass") == 0.5 * 200 * 0.5 * 20


def test_customers_with_an_account_manager_are_theirs_to_call_unless_the_settings_say_otherwise() -> None:
    managed = msgspec.structs.replace(alert("m1234", 1, 900), account_manager="am-17")
    alerts = [managed, *(alert(f"c123{i}", 1, 100 + i) for i in range(3))]
    day = date(2026, 3, 1)
    [plan] = plan_days(for_call_centre(alerts, managed_too=False), day, day, budget=2, zone=ZONE)
    assert [a.customer_id for a in plan.calls] == ["c1232", "c1231"]
    [plan] = plan_days(for_call_centre(alerts, managed_too=True), day, day, budget=2, zone=ZONE)
    assert [a.customer_id for a in plan.calls] == ["m1234", "c1232"]


def test_ranked_by_expected_saving_the_calls_go_to_what_pays_and_none_to_what_does_not() -> None:
    alerts = [alert("a1234", 1, 900), alert("b1234", 1, 100), alert("c1234", 1, 500), alert("d1234", 1, 300),
              alert("e1234", 1, 800, holdout=True)]
    saving = {"a1234": -5.0, "b1234": 40.0, "c1234": 10.0, "d1234": 0.0, "e1234": 60.0}
    [plan] = plan_days(alerts, date(2026, 3, 1), date(2026, 3, 1), budget=3, zone=ZONE,
                       saving=lambda a: saving[a.customer_id])
    assert [a.customer_id for a in plan.calls] == ["b1234", "c1234"]  # a and d: no call pays, the budget left unused
    assert [a.customer_id for a in plan.held] == ["e1234"] and (plan.no_call, plan.waiting) == (2, 0)
    assert plan.ranked_by == "expected_saving"
    [before] = plan_days(alerts, date(2026, 3, 1), date(2026, 3, 1), budget=3, zone=ZONE, saving=lambda a: None)
    # Before any saving is known, the value at risk ranks them all.
    assert [a.customer_id for a in before.calls] == ["a1234", "c1234", "d1234"] and before.no_call == 0
    assert before.ranked_by == "value_at_risk"


def test_the_alerts_own_expected_saving_ranks_the_plan_once_they_all_carry_one() -> None:
    saved = {"a1234": (900, 5.0), "b1234": (100, 80.0), "c1234": (500, -1.0)}
    alerts = [msgspec.structs.replace(alert(c, 1, v), expected_saving=s) for c, (v, s) in saved.items()]
    [plan] = plan_days(alerts, date(2026, 3, 1), date(2026, 3, 1), budget=3, zone=ZONE)
    assert [a.customer_id for a in plan.calls] == ["b1234", "a1234"] and plan.no_call == 1
    older = [alert("d1234", 1, 50), alert("e1234", 1, 700)]  # raised before the evidence: after those that pay
    [mixed] = plan_days([*alerts, *older], date(2026, 3, 1), date(2026, 3, 1), budget=3, zone=ZONE)
    assert [a.customer_id for a in mixed.calls] == ["b1234", "a1234", "e1234"] and mixed.no_call == 1
    assert mixed.ranked_by == "expected_saving" and mixed.waiting == 1
