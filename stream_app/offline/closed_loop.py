"""What the calls do, on the simulator with its call centre in the loop (call_centre.py).

The same replay as `evaluate`, with each morning's calls made and their effects on the traffic.
It measures the calls two ways and says whether they agree:
- as a manager would: the campaign report's uplift, called against the control alerts the plan
  held within the budget, with its 95% interval (alerts/campaign.py);
- from the simulator's truth: per customer called, whether a call kept them from a churn that
  would have fallen within the campaign window (and the simulation), less those it prompted to leave.
And it learns uplift online from the same loop (model/uplift.py): each held control alert and
each reached call, with the customer's snapshot of that day and whether they churned within the
horizon. Each such label is scored before it is learned, once both arms have the evidence, and the
Qini coefficient of those scores (model/qini.py) says whether the model ranks first the
customers a call keeps.
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Callable

import numpy as np

from stream_app.alerts.call_plan import alert_day
from stream_app.alerts.campaign import CampaignCosts, campaign_report
from stream_app.contracts.events import Label
from stream_app.model.qini import qini
from stream_app.model.uplift import CONTROL, UpliftModel
from stream_app.offline.call_centre import CallCentreConfig, SimCallCentre, closed_loop
from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings

__all__ = ["ClosedLoopEvaluation", "evaluate_closed_loop", "true_uplift"]

MATCH_DAYS = 3  # a decision's label: the customer's first snapshot this many days after it at most


@dataclass
class ClosedLoopEvaluation:
    budget: int
    calls: int
    reached: int
    kept: int  # the simulator's truth: churners a call kept
    prompted: int  # stayers a call prompted to leave
    offers_taken_by_stayers: int
    true_uplift: float  # per customer called, as the campaign report counts them
    measured: dict  # the campaign report's total row
    within_interval: bool  # the true uplift lies in the measured 95% interval
    qini: dict | None  # of the uplift scores given before learning; None until the arms had evidence
    uplift_evidence: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


class _UpliftLearning:
    """Labels of decisions, scored by the uplift model before it learns them."""

    def __init__(self, centre: SimCallCentre) -> None:
        self.centre, self.model = centre, UpliftModel()
        self.used = 0
        self.scored: list[tuple[float, bool, int]] = []
        self._open: dict[str, list[tuple[int, bool, str]]] = collections.defaultdict(list)

    def __call__(self, label: Label) -> None:
        for customer, day, called, treatment in self.centre.decisions[self.used:]:
            self._open[customer].append((day, called, treatment))
        self.used = len(self.centre.decisions)
        waiting = self._open.get(label.customer_id)
        match = next((d for d in waiting or () if d[0] <= label.day <= d[0] + MATCH_DAYS), None)
        if match is None:
            return
        waiting.remove(match)  # type: ignore[union-attr]
        _, called, treatment = match
        x = np.asarray(label.x)
        score = self.model.uplift(x, treatment)
        if score is not None:
            self.scored.append((score, called, label.y))
        self.model.learn(x, treatment if called else CONTROL, bool(label.y))


def evaluate_closed_loop(settings: Settings, rules: Callable[[], Ruleset], sim_cfg: SimConfig,
                         budget: int) -> ClosedLoopEvaluation:
    sim = Simulator(sim_cfg)
    centre = SimCallCentre(sim, settings, CallCentreConfig(budget=budget, seed=sim_cfg.seed + 1))
    learning = _UpliftLearning(centre)
    result = replay(closed_loop(sim, centre, settings), settings, rules, keep_snapshots=False,
                    on_alerts=centre.observe, on_label=learning)
    end = sim_cfg.start + timedelta(days=sim_cfg.days - 1)
    costs = CampaignCosts.of(settings)
    rows = campaign_report(result.alerts, centre.outcomes, result.churn, settings.zone, end, costs, budget,
                           settings.region_call_budgets)
    total = next(r for r in rows if (r.week, r.action, r.segment, r.region) == ("all",) * 4).to_json(costs)
    true = true_uplift(sim, centre, settings, end, costs.window_days)
    low, high = total["uplift_low"], total["uplift_high"]
    scored = np.array(learning.scored, dtype=float).reshape(-1, 3)
    measured_qini = qini(scored[:, 0], scored[:, 1].astype(bool), scored[:, 2].astype(bool)).to_json() \
        if len(scored) >= 100 else None
    return ClosedLoopEvaluation(
        budget, centre.calls, centre.reached, centre.kept, centre.prompted, centre.offers_taken, round(true, 4), total,
        low is not None and low <= true <= high, measured_qini, learning.model.evidence())


def true_uplift(sim: Simulator, centre: SimCallCentre, settings: Settings, end: date, window: int) -> float:
    """Per customer called (as the campaign report counts them: once, however many calls), 1 if
    a call kept them from a churn that would have come within the window of one of their called
    alerts, -1 if a call prompted them to leave within it, else 0; the mean."""
    truth = {t.customer_id: t for t in sim.truth}
    alerts = {a.alert_id: a for a in centre.observed}
    windows: dict[str, list[tuple[date, date]]] = collections.defaultdict(list)
    for alert_id in {o.alert_id for o in centre.outcomes}:
        if (a := alerts.get(alert_id)) is not None and not a.holdout:
            first = alert_day(a, settings.zone)
            windows[a.customer_id].append((first, min(first + timedelta(days=window), end)))

    def within(customer: str, day: str | None) -> bool:
        return day is not None and any(f <= date.fromisoformat(day) <= last for f, last in windows[customer])

    effect = sum(within(c, truth[c].planned_churn) - (truth[c].pattern == "prompted" and within(c, truth[c].churn_date))
                 for c in windows)
    return effect / len(windows) if windows else 0.0
