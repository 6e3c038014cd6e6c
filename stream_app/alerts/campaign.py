"""The campaign report: what the calls did, per week and per suggested action, measured against
the control group (DOMAIN.md: the retention effect is only honest against a holdout).

A pure function of three logs: the alerts, the call outcomes and the churn events. An alert
counts once however often it was replayed; an alert's outcome is its latest one (a customer not
reached on Monday may accept on Tuesday). A week's churn figures are final once its alerts are
`window_days` old (`matured`); before that they are what is known so far.

Revenue kept is the incremental saving, not the accepted offers: the share of called customers
who would have churned but did not (holdout churn rate minus called churn rate, the uplift),
times the called customers' monthly ARPU, times the months a kept customer is valued at. It can
be negative, and that is reported as it is.

The uplift comes with its 95% interval (Newcombe's hybrid score interval for a difference of two
proportions, which stays inside [-1, 1] and holds up for small groups and rates near 0), and a
verdict a manager can read: calls kept customers, lost some, showed no difference, or the control
group is too small (under `MIN_CONTROL` customers) to say anything.
"""

from __future__ import annotations

import collections
import math
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from statistics import NormalDist
from typing import Iterable
from zoneinfo import ZoneInfo

import numpy as np

from stream_app.alerts.call_plan import alert_day, plan_days
from stream_app.contracts.events import Alert, ChurnEvent, Outcome
from stream_app.model.saving import SavingCosts
from stream_app.settings import Settings

__all__ = ["CampaignCosts", "CampaignRow", "campaign_customers", "campaign_report", "latest_outcomes",
           "difference_interval", "MIN_CONTROL"]

REACHED = frozenset({"contacted", "accepted", "declined"})
MIN_CONTROL = 30  # control-group alerts below which a row's uplift is not judged
_Z = NormalDist().inv_cdf(0.975)


def _wilson(x: int, n: int) -> tuple[float, float]:
    centre, spread = (x + _Z**2 / 2) / (n + _Z**2), _Z * math.sqrt(x * (n - x) / n + _Z**2 / 4) / (n + _Z**2)
    return centre - spread, centre + spread


def difference_interval(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """The 95% interval of x1/n1 - x2/n2 (Newcombe 1998, method 10: from the two Wilson intervals)."""
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = _wilson(x1, n1), _wilson(x2, n2)
    return p1 - p2 - math.hypot(p1 - l1, u2 - p2), p1 - p2 + math.hypot(u1 - p1, p2 - l2)


@dataclass(frozen=True)
class CampaignCosts(SavingCosts):
    """What a call and an accepted offer cost and how long a kept customer is valued (as the
    saving model counts them), and how long after an alert its customer's churn is counted."""

    window_days: int = 90

    @classmethod
    def of(cls, settings: Settings) -> "CampaignCosts":
        return cls(settings.call_cost, settings.offer_cost, settings.kept_value_months, settings.campaign_churn_days)


@dataclass
class CampaignRow:
    """One week (ISO, `2026-W23`, or `all`), one suggested action (or `all`), one value segment
    (or `all`) and one region (or `all`)."""

    week: str
    action: str
    segment: str = "all"
    region: str = "all"
    alerts: int = 0
    holdout: int = 0
    calls: int = 0  # alerts with an outcome recorded
    reached: int = 0
    accepted: int = 0
    called_churned: int = 0
    holdout_churned: int = 0
    called_arpu: float = 0.0  # summed monthly ARPU of the called customers
    matured: bool = True  # every alert is `window_days` old: the churn figures are final
    # Customer -> churned after any of their alerts in the row: the uplift counts each customer
    # once, since a customer alerted four times is one customer's worth of evidence, not four.
    called_customers: dict[str, bool] = field(default_factory=dict, repr=False)
    control_customers: dict[str, bool] = field(default_factory=dict, repr=False)

    @property
    def reach_rate(self) -> float | None:
        return _share(self.reached, self.calls)

    @property
    def acceptance_rate(self) -> float | None:
        return _share(self.accepted, self.reached)

    @property
    def churn_called(self) -> float | None:
        return _share(self.called_churned, self.calls)

    @property
    def churn_holdout(self) -> float | None:
        return _share(self.holdout_churned, self.holdout)

    @property
    def uplift(self) -> float | None:
        """Control churn minus called churn, per customer: the share of called customers the calls kept."""
        if not self.called_customers or not self.control_customers:
            return None
        control = _share(sum(self.control_customers.values()), len(self.control_customers))
        called = _share(sum(self.called_customers.values()), len(self.called_customers))
        return control - called  # type: ignore[operator]  (both groups are non-empty here)

    @property
    def uplift_interval(self) -> tuple[float, float] | None:
        if not self.called_customers or not self.control_customers:
            return None
        return difference_interval(sum(self.control_customers.values()), len(self.control_customers),
                                   sum(self.called_customers.values()), len(self.called_customers))

    @property
    def verdict(self) -> str:
        if not self.called_customers:
            return "no calls yet"
        if len(self.control_customers) < MIN_CONTROL:
            return f"control group too small to conclude ({len(self.control_customers)} of the {MIN_CONTROL} needed)"
        low, high = self.uplift_interval  # type: ignore[misc]
        said = ("the calls kept customers" if low > 0 else "the called churned more than the control group"
                if high < 0 else "no difference shown: the interval spans zero")
        return said if self.matured else f"{said} so far (not final: some alerts are younger than the window)"

    def revenue_kept(self, costs: CampaignCosts) -> float | None:
        if self.churn_called is None or self.churn_holdout is None:
            return None  # no control to compare with: nothing honest to say
        return (self.churn_holdout - self.churn_called) * self.called_arpu * costs.value_months

    def cost(self, costs: CampaignCosts) -> float:
        return self.calls * costs.call + self.accepted * costs.offer

    def roi(self, costs: CampaignCosts) -> float | None:
        kept, cost = self.revenue_kept(costs), self.cost(costs)
        return None if kept is None or cost == 0 else (kept - cost) / cost

    def to_json(self, costs: CampaignCosts) -> dict:
        out = asdict(self)
        del out["called_customers"], out["control_customers"]
        out.update(called_distinct=len(self.called_customers), control_distinct=len(self.control_customers))
        out["called_arpu"] = round(self.called_arpu, 2)
        for name in ("reach_rate", "acceptance_rate", "churn_called", "churn_holdout"):
            out[name] = _round(getattr(self, name), 4)
        interval = self.uplift_interval
        out.update(uplift=_round(self.uplift, 4), uplift_low=_round(interval and interval[0], 4),
                   uplift_high=_round(interval and interval[1], 4),
                   customers_kept=_round(None if self.uplift is None else self.uplift * len(self.called_customers), 1),
                   verdict=self.verdict, revenue_kept=_round(self.revenue_kept(costs), 2),
                   cost=round(self.cost(costs), 2),
                   roi=_round(self.roi(costs), 3))
        return out


def latest_outcomes(outcomes: Iterable[Outcome]) -> dict[str, Outcome]:
    """Each alert's latest outcome; a replayed outcome (same event id) changes nothing."""
    latest: dict[str, Outcome] = {}
    for o in outcomes:
        seen = latest.get(o.alert_id)
        if seen is None or (o.ts, o.event_id) > (seen.ts, seen.event_id):
            latest[o.alert_id] = o
    return latest


def campaign_report(alerts: Iterable[Alert], outcomes: Iterable[Outcome], churns: Iterable[ChurnEvent],
                    zone: ZoneInfo, as_of: date, costs: CampaignCosts = CampaignCosts(),
                    budget: int | None = None, region_budgets: dict[str, int] | None = None) -> list[CampaignRow]:
    """Rows per (week, action), then per action, per segment and per region over all weeks, then the
    grand total.
    With the call `budget`, the control group is the control alerts the daily plan ranked within
    it (`DayPlan.held`): customers as likely to be called as those called. Without, every control
    alert counts, which flatters the calls when the budget leaves the lower-ranked uncalled."""
    unique = {a.alert_id: a for a in alerts}
    compared = {k for k, a in unique.items() if a.holdout}
    if budget is not None and unique:
        days = [alert_day(a, zone) for a in unique.values()]
        plans = plan_days(unique.values(), min(days), max(days), budget, zone, region_budgets)
        compared &= {a.alert_id for p in plans for a in p.held}
    done = latest_outcomes(outcomes)
    churn_days = collections.defaultdict(list)
    for c in churns:
        churn_days[c.customer_id].append(c.day)
    rows: dict[tuple[str, str, str, str], CampaignRow] = {}
    for alert in sorted(unique.values(), key=lambda a: (a.event_time, a.alert_id)):
        day = alert_day(alert, zone)
        week = "%d-W%02d" % day.isocalendar()[:2]
        end = day + timedelta(days=costs.window_days)
        churned = any(day.toordinal() <= d <= end.toordinal() for d in churn_days.get(alert.customer_id, ()))
        action = alert.suggested_action
        keys = ((week, action, "all", "all"), ("all", action, "all", "all"), ("all", "all", alert.segment, "all"),
                ("all", "all", "all", alert.region or "unknown"), ("all", "all", "all", "all"))
        for key in keys:
            _count(rows.setdefault(key, CampaignRow(*key)), alert, done.get(alert.alert_id), churned, end <= as_of,
                   alert.alert_id in compared)
    return sorted(rows.values(), key=lambda r: (r.week == "all", r.week, r.action == "all", r.action,
                                                r.segment == "all", r.segment, r.region == "all", r.region))


def campaign_customers(row: CampaignRow, alerts: Iterable[Alert]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The row's customers as the Qini curve (model/qini.py) judges the list's order: each one's
    highest value at risk (what the daily list ranks by), whether they were called (else control),
    and whether they churned within the window of one of their alerts."""
    risk: dict[str, float] = {}
    for a in alerts:
        risk[a.customer_id] = max(risk.get(a.customer_id, 0.0), a.value_at_risk)
    people = [(c, True, churned) for c, churned in row.called_customers.items()] + \
             [(c, False, churned) for c, churned in row.control_customers.items()]
    return (np.array([risk.get(c, 0.0) for c, _, _ in people]), np.array([t for _, t, _ in people], bool),
            np.array([y for _, _, y in people], bool))


def _count(row: CampaignRow, alert: Alert, outcome: Outcome | None, churned: bool, matured: bool,
           compared: bool) -> None:
    row.alerts += 1
    row.matured &= matured
    if alert.holdout:
        row.holdout += compared
        row.holdout_churned += churned and compared
        if compared:
            row.control_customers[alert.customer_id] = row.control_customers.get(alert.customer_id, False) or churned
    elif outcome is not None:
        row.calls += 1
        row.reached += outcome.result in REACHED
        row.accepted += outcome.result == "accepted"
        row.called_churned += churned
        row.called_arpu += alert.arpu
        row.called_customers[alert.customer_id] = row.called_customers.get(alert.customer_id, False) or churned


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
