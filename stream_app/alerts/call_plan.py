"""Which alerts the call centre calls each day: the daily call budget, and the daily and monthly
warning lists (DOMAIN.md: warnings run daily and monthly).

The plan is a pure function of the alerts: each day, the alerts raised up to the end of that
day that are still open (not called, not expired, not in the control group) are ranked by
value at risk, and the top `budget` are that day's calls; the rest wait for a later day or
expire. Once alerts carry an expected saving (model/saving.py), they are ranked by it instead,
and an alert that no call pays for (a saving at or below zero) is not called; alerts raised
before the evidence was in follow, by value at risk, while they are open. A `Saving` given to
the plan replaces the alerts' own (the simulated call centre's rankings).
A customer's newer alert replaces their older one (an escalation), and an alert seen twice (a
replay) counts once. Days follow the events' own time, so a replay of the same alerts
gives the same lists whenever and however often it is run.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Callable, Iterable, Iterator
from zoneinfo import ZoneInfo

from stream_app.contracts.events import Alert
from stream_app.metrics import Metrics

__all__ = ["DayPlan", "Saving", "plan_days", "for_call_centre", "monthly_list", "strongest_per_customer", "alert_day",
           "summary_fields", "observe_call_plan", "observe_lists"]

LEVEL_ORDER = {"high": 2, "medium": 1, "low": 0}
#: An alert's expected saved value, or None while there is no evidence for it (ranked by value at risk).
Saving = Callable[[Alert], "float | None"]


@dataclass
class DayPlan:
    """One day's calls, in priority order, and what was left out and why."""

    day: date
    calls: list[Alert] = field(default_factory=list)
    # Control-group alerts ranked where the budget would have called them: the customers the
    # calls are compared with (a control alert below the line is compared with no one).
    held: list[Alert] = field(default_factory=list)
    waiting: int = 0  # open alerts over the budget, carried to the next day
    expired: int = 0  # alerts whose last day this was, never called
    holdout: int = 0  # alerts raised this day for the control group: never called
    superseded: int = 0  # open alerts replaced by a newer alert of the same customer
    no_call: int = 0  # open alerts that no call pays for (expected saving at or below zero)
    ranked_by: str = "value_at_risk"  # or "expected_saving", once open alerts carry one

    def to_json(self) -> dict:
        return {"day": self.day.isoformat(), "calls": len(self.calls), "waiting": self.waiting,
                "expired": self.expired, "holdout": self.holdout, "superseded": self.superseded,
                "no_call": self.no_call, "ranked_by": self.ranked_by,
                "value_at_risk": round(sum(a.value_at_risk for a in self.calls), 2)}


def alert_day(alert: Alert, zone: ZoneInfo) -> date:
    """The day an alert joins the plan: the day of the newest event behind it, in the operator's zone."""
    return alert.event_time.astimezone(zone).date()


def for_call_centre(alerts: Iterable[Alert], managed_too: bool) -> Iterator[Alert]:
    """The alerts the call centre plans for: without those of customers with an account manager,
    who calls them (docs/managers.md), unless `managed_too` (`CHURNWATCH_MANAGED_BY_CALL_CENTRE`)."""
    return (a for a in alerts if managed_too or not a.account_manager)


def _open_days(alert: Alert) -> int:
    return max(1, (alert.expires_at - alert.created_at).days)


def priority(alert: Alert) -> tuple:
    """Value at risk first; ties go to the higher level, then a fixed order."""
    return (-alert.value_at_risk, -LEVEL_ORDER[alert.level], alert.alert_id)


def plan_days(alerts: Iterable[Alert], first: date, last: date, budget: int, zone: ZoneInfo,
              region_budgets: dict[str, int] | None = None, saving: Saving | None = None) -> list[DayPlan]:
    """The plan of every day from `first` to `last`, given every alert that could still be open on
    `first` (callers read back at least the alerts' open days before it). A region of
    `region_budgets` has its own daily budget and its alerts compete only with each other; the
    other regions share `budget`. Alerts rank by `saving` (by default their own expected saving)
    where it knows them."""
    region_budgets = region_budgets or {}
    by_day: dict[date, list[Alert]] = collections.defaultdict(list)
    seen: set[str] = set()
    for a in alerts:
        if a.alert_id not in seen:
            seen.add(a.alert_id)
            by_day[alert_day(a, zone)].append(a)
    start = min([first, *by_day]) if by_day else first
    open_: dict[str, tuple[Alert, date]] = {}  # customer -> (their open alert, its last day)
    plans = []
    day = start
    while day <= last:
        plan = DayPlan(day)
        for a in sorted(by_day.get(day, []), key=lambda a: (a.event_time, a.alert_id)):
            plan.holdout += a.holdout
            if a.customer_id in open_:
                plan.superseded += not a.holdout
            open_[a.customer_id] = (a, day + timedelta(days=_open_days(a) - 1))
        ranked, unpaid = _ranked([a for a, _ in open_.values()], saving or _carried)
        if unpaid is not None:
            plan.ranked_by = "expected_saving"
        plan.calls, plan.held = _within_budgets(ranked, budget, region_budgets)
        for a in plan.calls + plan.held:
            del open_[a.customer_id]
        for customer, (a, until) in list(open_.items()):
            if until <= day:
                del open_[customer]
                plan.expired += not a.holdout
        plan.no_call = sum(not a.holdout and a.alert_id in (unpaid or ()) for a, _ in open_.values())
        plan.waiting = sum(not a.holdout for a, _ in open_.values()) - plan.no_call
        if day >= first:
            plans.append(plan)
        day += timedelta(days=1)
    return plans


def _carried(alert: Alert) -> float | None:
    return alert.expected_saving


def _ranked(alerts: list[Alert], saving: Saving) -> tuple[list[Alert], set[str] | None]:
    """The alerts in calling order, and the ids of those no call pays for (left out of it); None
    when no saving is known, and the value at risk ranks them all. Alerts whose saving is not
    known (raised before the evidence) follow those that pay, by value at risk."""
    savings = [saving(a) for a in alerts]
    if all(s is None for s in savings):
        return sorted(alerts, key=priority), None
    paying = sorted(((s, a) for s, a in zip(savings, alerts) if s is not None and s > 0),
                    key=lambda p: (-p[0], priority(p[1])))
    unknown = sorted((a for s, a in zip(savings, alerts) if s is None), key=priority)
    return [a for _, a in paying] + unknown, {a.alert_id for s, a in zip(savings, alerts) if s is not None and s <= 0}


def _within_budgets(ranked: list[Alert], budget: int,
                    region_budgets: dict[str, int]) -> tuple[list[Alert], list[Alert]]:
    """The first alerts of `ranked` each budget allows, still in priority order, and the control
    alerts ranked among them (which take no call)."""
    left = collections.Counter(region_budgets) | collections.Counter({_SHARED: budget})
    calls, held = [], []
    for a in ranked:
        pool = a.region if a.region in region_budgets else _SHARED
        if left[pool] > 0:
            if a.holdout:
                held.append(a)
            else:
                left[pool] -= 1
                calls.append(a)
    return calls, held


_SHARED = object()  # the budget of the regions without one of their own


def monthly_list(alerts: Iterable[Alert], month: str, zone: ZoneInfo) -> list[Alert]:
    """The month's warning list: each customer warned that month once, at their highest level
    (then newest), ranked by value at risk; control-group customers included and flagged, since
    the monthly list goes to account managers to read, not to the call queue."""
    return strongest_per_customer(a for a in alerts if alert_day(a, zone).strftime("%Y-%m") == month)


def strongest_per_customer(alerts: Iterable[Alert]) -> list[Alert]:
    """Each customer's alert at their highest level (then newest), ranked by value at risk."""
    best: dict[str, Alert] = {}
    for a in alerts:
        held = best.get(a.customer_id)
        if held is None or (LEVEL_ORDER[a.level], a.event_time) > (LEVEL_ORDER[held.level], held.event_time):
            best[a.customer_id] = a
    return sorted(best.values(), key=priority)


def summary_fields(plan: DayPlan, zone: ZoneInfo) -> dict[str, str]:
    """What the workers export about the latest plan (kept in Redis at `keys.CALL_PLAN`)."""
    start = datetime.combine(plan.day, time.min, zone).timestamp()
    return {"day_ts": str(int(start)), "called": str(len(plan.calls)), "waiting": str(plan.waiting),
            "expired": str(plan.expired), "holdout": str(plan.holdout)}


def observe_lists(metrics: Metrics, fields: dict[bytes, bytes], zone: ZoneInfo) -> None:
    """Set the lifecycle lists' gauges from `cli.lifecycle.list_fields` as read back from Redis."""
    for key, value in fields.items():
        try:
            name, _, figure = key.decode().partition("|")
            if figure == "customers":
                metrics.list_customers.labels(name).set(int(value))
            elif figure == "monthly_value":
                metrics.list_value.labels(name).set(float(value))
            elif figure == "day":
                start = datetime.combine(date.fromisoformat(value.decode()), time.min, zone)
                metrics.list_day.labels(name).set(start.timestamp())
        except (ValueError, OverflowError):  # not what `list_fields` writes: left unset, the health check goes on
            continue


def observe_call_plan(metrics: Metrics, fields: dict[bytes, bytes]) -> None:
    """Set the call-plan gauges from `summary_fields` as read back from Redis."""
    if not fields:
        return
    values = {k.decode(): int(v) for k, v in fields.items()}
    metrics.call_plan_day.set(values.pop("day_ts"))
    for outcome, n in values.items():
        metrics.call_plan.labels(outcome).set(n)
