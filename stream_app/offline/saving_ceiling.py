"""What ranking calls by expected saving could keep on the simulator, with perfect evidence.

The saving ranking (model/saving.py) learns what a call keeps from the closed loop's own labels,
per action, reason code and risk band. Before asking how well it learns, this asks what it could
reach if it knew the truth behind each of those cells: the same alerts (those a closed loop
raised), planned again with the same budget and the same plan (alerts/call_plan.py), each call
worth its expected net revenue kept by the simulator's truth and the call centre's effects
(call_centre.py): reached with the reach rate; a churner still to leave kept with the effect of
their true reason and the call's treatment; a customer who was staying prompted to leave, or
taking an offer, with the stated rates; less the call and the expected offer cost. Expected
values, not draws, so that rankings differ only in whom they call.

The rankings:
- `risk`, `risk_value`: as the call centre ranks (the product's ranking is `risk_value`);
- `cells`: each alert worth the mean of its (reason code, risk band, treatment) cell's calls,
  per alert: a model with its own rate per cell, learned from unlimited evidence. The saving
  model is coarser (a reason's factor times a band's rate, a share kept per action and reason),
  so this is a ceiling for its kind of model, counting churn per alert as it does;
- `cells_by_risk`: the same cell's mean per unit of risk, times the alert's risk: the form the
  saving model had before (churn in proportion to the score), with the same idealisation;
- `oracle`: each alert worth its own customer's truth, for reference: no model sees that.

The cells are averaged over the same alerts they rank (in sample), so the figures lean high, as a
ceiling should. The alerts themselves were raised under one ranking's calls, and the planned churn
of a customer that loop kept is still counted as a churn here; the truth is the simulator's
before any call. A customer called more than once is valued in calling order: a churner an earlier
call may have kept is, to that extent, called as one who stays. The rankings value each alert
on its own, as if it were the customer's first call.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Callable, Hashable

from stream_app.alerts.call_plan import DayPlan, Saving, alert_day, plan_days
from stream_app.contracts.events import Alert
from stream_app.model.control_rates import band
from stream_app.model.saving import alert_risk
from stream_app.offline.call_centre import (
    EFFECTS,
    OFFER_TAKEN_BY_STAYERS,
    OFFERS,
    PROMPTED_AFTER_DAYS,
    PROMPTED_TO_LEAVE,
    CallCentreConfig,
)
from stream_app.offline.simulator import Simulator
from stream_app.settings import Settings

__all__ = ["CallWorth", "call_worth", "saving_ceiling", "saving_ceilings"]


@dataclass(frozen=True)
class CallWorth:
    """A call's expected effect, by the truth: revenue kept per unit of the customer's value, and cost."""

    gain: float  # expected churners kept less stayers prompted to leave
    cost: float  # the call and the expected offer taken
    kept: float = 0.0  # the chance that this call keeps a churner

    def net(self, value: float) -> float:
        return self.gain * value - self.cost


def call_worth(sim: Simulator, i: int, d: int, treatment: str, cfg: CallCentreConfig,
               leaving: float = 1.0) -> CallWorth:
    """What calling customer `i` on day `d` with `treatment` does, in expectation (SimCallCentre._call);
    `leaving`: for a churner, the chance that no earlier call kept them (one kept is called as a stayer)."""
    costs, truth = cfg.costs, sim.truth[i]
    if sim.exit_day[i] <= d < sim.back_day[i]:  # gone: never reached
        return CallWorth(0.0, costs.call)
    if truth.churn_date is None or sim.exit_day[i] <= d:  # staying, or left and came back: stays
        return _stayer(sim, d, treatment, cfg, can_leave=truth.churn_date is None)
    effect = EFFECTS.get((truth.reason_code or 0, treatment), 0.0) if truth.pattern == "decliner" else 0.0
    kept = leaving * cfg.reach_rate * effect
    accepted = kept if treatment in OFFERS else 0.0
    stayer = _stayer(sim, d, treatment, cfg, can_leave=True)  # kept by an earlier call
    return CallWorth(kept + (1 - leaving) * stayer.gain,
                     costs.call + accepted * costs.offer + (1 - leaving) * (stayer.cost - costs.call), kept)


def _stayer(sim: Simulator, d: int, treatment: str, cfg: CallCentreConfig, can_leave: bool) -> CallWorth:
    # A leave after the simulation's end is not seen (Simulator.leave), nor one of a customer who left before.
    first, end = PROMPTED_AFTER_DAYS
    seen = min(max((sim.cfg.days - d - first) / (end - first), 0.0), 1.0) if can_leave else 0.0
    accepted = OFFER_TAKEN_BY_STAYERS.get(treatment, 0.0)
    return CallWorth(-cfg.reach_rate * PROMPTED_TO_LEAVE * seen,
                     cfg.costs.call + cfg.reach_rate * accepted * cfg.costs.offer)


def saving_ceilings(alerts: list[Alert], sim: Simulator, settings: Settings, cfg: CallCentreConfig,
                    last_day: int) -> dict[str, dict]:
    """`saving_ceiling` at the loop's budget and at its halves down to one call a day (the same
    alerts: a budget that binds harder is where a ranking matters most), by budget."""
    regions = settings.region_call_budgets
    return {str(cfg.budget >> k): saving_ceiling(alerts, sim, settings, replace(cfg, budget=cfg.budget >> k), last_day,
                                                 {r: max(1, b >> k) for r, b in regions.items()})
            for k in range(4) if cfg.budget >> k >= 1}


def saving_ceiling(alerts: list[Alert], sim: Simulator, settings: Settings, cfg: CallCentreConfig,
                   last_day: int, region_budgets: dict[str, int] | None = None) -> dict:
    """Per ranking, the calls the plan makes of `alerts` over the loop's days (`cfg.budget` and the
    settings' regional budgets, or `region_budgets`) and their expected net revenue kept by the
    truth; and each ranking's over `risk_value`'s."""
    regions = settings.region_call_budgets if region_budgets is None else region_budgets
    index = {c: i for i, c in enumerate(sim.ids)}
    alerts = [a for a in alerts if a.customer_id in index]
    zone, value = settings.zone, lambda a: a.arpu * cfg.costs.value_months
    start = sim.cfg.start

    at_alert = {a.alert_id: call_worth(sim, index[a.customer_id], (alert_day(a, zone) - start).days + 1, a.treatment,
                                       cfg) for a in alerts if not a.holdout}  # were it called the next morning
    by_id = {a.alert_id: a for a in alerts}
    rankings: dict[str, Saving] = {
        "risk": alert_risk, "risk_value": lambda a: None,
        "cells": _cell_ranking(at_alert, by_id, value, per_risk=False),
        "cells_by_risk": _cell_ranking(at_alert, by_id, value, per_risk=True),
        "oracle": lambda a: at_alert[a.alert_id].net(value(a)) if a.alert_id in at_alert else None}
    plan_last = start + timedelta(days=last_day - 1)  # each day's list is called the next morning
    figures = {name: _valued(plan_days(alerts, start, plan_last, cfg.budget, zone, regions, ranking), sim, index,
                             cfg, value) for name, ranking in rankings.items()}
    base = figures["risk_value"]["net_revenue_kept"]
    for f in figures.values():
        f["vs_risk_value"] = round(f["net_revenue_kept"] / base, 3) if base > 0 else None
    return figures


def _valued(plans: list[DayPlan], sim: Simulator, index: dict[str, int], cfg: CallCentreConfig,
            value: Callable[[Alert], float]) -> dict:
    """The plans' calls, made the morning after, valued in calling order: a churner called again
    may have been kept already."""
    leaving: dict[int, float] = collections.defaultdict(lambda: 1.0)
    calls, net = 0, 0.0
    for plan in plans:
        for a in plan.calls:
            i = index[a.customer_id]
            w = call_worth(sim, i, (plan.day - sim.cfg.start).days + 1, a.treatment, cfg, leaving[i])
            leaving[i] -= w.kept
            calls, net = calls + 1, net + w.net(value(a))
    return {"calls": calls, "customers": len(leaving), "net_revenue_kept": round(net, 2)}


def _cell_ranking(worth: dict[str, CallWorth], alerts: dict[str, Alert], value: Callable[[Alert], float],
                  per_risk: bool) -> Saving:
    """Each alert's saving by its cell's mean gain (per alert, or per unit of risk) and mean cost."""
    sums: dict[Hashable, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for alert_id, w in worth.items():
        a = alerts[alert_id]
        s = sums[_cell(a)]
        s[0], s[1], s[2], s[3] = s[0] + w.gain, s[1] + w.cost, s[2] + _exposure(a, per_risk), s[3] + 1

    def saving(a: Alert) -> float | None:
        gain, cost, exposure, n = sums.get(_cell(a), (0.0, 0.0, 0.0, 0.0))
        if not n:
            return None
        return gain * _exposure(a, per_risk) / exposure * value(a) - cost / n

    return saving


def _exposure(a: Alert, per_risk: bool) -> float:
    return max(alert_risk(a), 1e-9) if per_risk else 1.0


def _cell(a: Alert) -> tuple[int, int, str]:
    return a.reason_code or 0, band(alert_risk(a)), a.treatment
