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
customers a call keeps. The saving model (model/saving.py) learns from the same labels, every
call reached or not, and its uplift (the control's churn in the customer's reason and risk band
x share kept) is scored the same way.
"""

from __future__ import annotations

import collections
import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Callable, Collection

import numpy as np

from stream_app.alerts.call_plan import alert_day
from stream_app.alerts.campaign import CampaignCosts, campaign_report
from stream_app.contracts.events import Label
from stream_app.model.decisions import MATCH_DAYS
from stream_app.model.qini import qini
from stream_app.model.saving import SavingCosts
from stream_app.model.uplift import CONTROL, UpliftModel
from stream_app.offline.call_centre import RANKINGS, CallCentreConfig, Decision, Ranking, SimCallCentre, closed_loop
from stream_app.offline.replay import ReplayResult, replay
from stream_app.offline.saving_ceiling import saving_ceilings
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings

__all__ = ["ClosedLoopEvaluation", "evaluate_closed_loop", "true_uplift"]



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
    qini_saving: dict | None  # the same for the saving model's uplift (control churn x share kept)
    uplift_evidence: dict = field(default_factory=dict)
    rankings: dict = field(default_factory=dict)  # risk, risk_value, saving: what each one's calls did
    saving_vs_risk_value: float | None = None  # net revenue kept, ranking by expected saving over by value at risk
    saving_ceiling: dict = field(default_factory=dict)  # by budget: the product's alerts planned again on the truth

    def to_json(self) -> dict:
        return asdict(self)


class _Learning:
    """Labels of decisions, learned by the call centre's saving model and by the uplift model, which
    scores each before it learns it."""

    def __init__(self, centre: SimCallCentre) -> None:
        self.centre, self.model = centre, UpliftModel()
        self.used = 0
        self.scored: list[tuple[float, bool, int]] = []
        self.saving_scored: list[tuple[float, bool, int]] = []  # the saving model's uplift, before it learns
        self.ranked: list[tuple[float, bool, int]] = []  # the ranking's own score of each labelled decision
        self._open: dict[str, list[Decision]] = collections.defaultdict(list)

    def __call__(self, label: Label) -> None:
        for d in self.centre.decisions[self.used:]:
            self._open[d.customer].append(d)
        self.used = len(self.centre.decisions)
        waiting = self._open.get(label.customer_id)
        match = next((d for d in waiting or () if d.day <= label.day <= d.day + MATCH_DAYS), None)
        if match is None:
            return
        waiting.remove(match)  # type: ignore[union-attr]
        churned = bool(label.y)
        self.ranked.append((match.rank_score, match.called, label.y))
        if self.centre.saving.ready:  # every call counts, reached or not, as the saving model learns them
            uplift = self.centre.saving.uplift(match.risk, match.treatment, match.reason)
            self.saving_scored.append((uplift, match.called, label.y))
        if match.called:
            self.centre.saving.learn_call(match.treatment, match.reason, match.risk, churned, match.accepted)
        else:
            self.centre.saving.learn_control(match.risk, churned, match.reason)
        if match.called and not match.reached:  # the uplift model learns what a conversation does
            return
        x = np.asarray(label.x)
        score = self.model.uplift(x, match.treatment)
        if score is not None:
            self.scored.append((score, match.called, label.y))
        self.model.learn(x, match.treatment if match.called else CONTROL, churned)


def evaluate_closed_loop(settings: Settings, rules: Ruleset, sim_cfg: SimConfig, budget: int,
                         jobs: int = 1, rankings: Collection[Ranking] = RANKINGS) -> ClosedLoopEvaluation:
    """The rankings (the three by default), one loop each on the same simulated base, `jobs` loops
    at a time (each in a process of its own beyond one); the product's (value at risk), which the
    others are compared with, always runs and is also measured the manager's way."""
    arm = functools.partial(_arm, _ArmInputs(settings, rules, sim_cfg, budget))
    chosen = [r for r in RANKINGS if r in rankings or r == "risk_value"]
    if jobs <= 1:
        arms = {ranking: arm(ranking) for ranking in chosen}
    else:  # spawned, not forked: a fork of a process whose OpenMP pool has run (scikit-learn's trees) hangs
        with ProcessPoolExecutor(min(jobs, len(chosen)), mp_context=multiprocessing.get_context("spawn")) as pool:
            arms = dict(zip(chosen, pool.map(arm, chosen)))
    product = arms["risk_value"]
    figures = {name: a.figures for name, a in arms.items()}
    base = product.figures["net_revenue_kept"]
    saving = figures.get("saving", {}).get("net_revenue_kept")
    ratio = round(saving / base, 3) if saving is not None and base > 0 else None
    return ClosedLoopEvaluation(
        budget, *product.counts, product.true_uplift, product.measured, product.within_interval, product.qini,
        product.figures["qini_saving_uplift"], product.evidence, figures, ratio, product.ceiling)


@dataclass(frozen=True)
class _ArmInputs:
    settings: Settings
    rules: Ruleset
    sim_cfg: SimConfig
    budget: int


@dataclass(frozen=True)
class _ArmResult:
    """What one ranking's loop did (`_figures`) and, for the product's, the manager's measures."""

    figures: dict
    counts: tuple[int, int, int, int, int]  # calls, reached, kept, prompted, offers taken by stayers
    true_uplift: float
    measured: dict
    within_interval: bool
    qini: dict | None
    evidence: dict
    ceiling: dict  # the product's: saving_ceiling.py


def _arm(inputs: _ArmInputs, ranking: Ranking) -> _ArmResult:
    """One ranking's loop, and what it did, measured the manager's way beside the simulator's truth."""
    settings, sim_cfg, budget = inputs.settings, inputs.sim_cfg, inputs.budget
    sim, centre, result, learning = _run(settings, lambda: inputs.rules, sim_cfg, budget, ranking)
    end = sim_cfg.start + timedelta(days=sim_cfg.days - 1)
    costs = CampaignCosts.of(settings)
    rows = campaign_report(result.alerts, centre.outcomes, result.churn, settings.zone, end, costs, budget,
                           settings.region_call_budgets)
    total = next(r for r in rows if (r.week, r.action, r.segment, r.region) == ("all",) * 4).to_json(costs)
    true = true_uplift(sim, centre, settings, end, costs.window_days)
    low, high = total["uplift_low"], total["uplift_high"]
    ceiling = saving_ceilings(centre.observed, Simulator(sim_cfg), settings, centre.cfg, sim_cfg.days - 1) \
        if ranking == "risk_value" else {}
    return _ArmResult(_figures(centre, learning),
                      (centre.calls, centre.reached, centre.kept, centre.prompted, centre.offers_taken),
                      round(true, 4), total, low is not None and low <= true <= high, _qini(learning.scored),
                      learning.model.evidence(), ceiling)


def _run(settings: Settings, rules: Callable[[], Ruleset], sim_cfg: SimConfig, budget: int,
         ranking: Ranking) -> tuple[Simulator, SimCallCentre, ReplayResult, _Learning]:
    sim = Simulator(sim_cfg)
    cfg = CallCentreConfig(budget=budget, seed=sim_cfg.seed + 1, ranking=ranking, costs=SavingCosts.of(settings))
    centre = SimCallCentre(sim, settings, cfg)
    learning = _Learning(centre)
    result = replay(closed_loop(sim, centre, settings), settings, rules, keep_snapshots=False,
                    on_alerts=centre.observe, on_label=learning)
    return sim, centre, result, learning


def _figures(centre: SimCallCentre, learning: _Learning) -> dict:
    """What one ranking's calls did, by the truth, the Qini of the order it called in, and that of
    the saving model's uplift given to each label before it was learned."""
    return {"calls": centre.calls, "reached": centre.reached, "kept": centre.kept, "prompted": centre.prompted,
            "offers_accepted": centre.accepted, "revenue_kept": round(centre.revenue_kept, 2),
            "net_revenue_kept": round(centre.net_revenue_kept(), 2), "qini": _qini(learning.ranked),
            "qini_saving_uplift": _qini(learning.saving_scored), "saving_model": centre.saving.to_json()}


def _qini(scored: list[tuple[float, bool, int]]) -> dict | None:
    """The Qini coefficient of (score, called, churned) triples, with its interval; None under 100."""
    a = np.array(scored, dtype=float).reshape(-1, 3)
    return qini(a[:, 0], a[:, 1].astype(bool), a[:, 2].astype(bool)).to_json() if len(a) >= 100 else None


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
