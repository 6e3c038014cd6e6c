"""A simulated call centre, for the closed loop of the simulator (DOMAIN.md, "Closing the loop").

Each simulated morning it works the call list the day before made, as the real one would: the
plan of the alerts raised so far (alerts/call_plan.py, the same budget and ranking), never the
control group. A call reaches the customer or not; a reached customer hears the alert's
treatment, and what it does depends only on why they were really leaving (the simulator's
truth), never on what the model can see:

- a churner whose reason the treatment answers is kept with the probability in `EFFECTS`;
  relocation, credit, fraud (and churn with no warning at all) are never kept;
- a customer who was staying anyway may take an offer (a cost with no benefit), and a few are
  reminded to shop around and leave (`PROMPTED_TO_LEAVE`).

The list is ranked as `CallCentreConfig.ranking` says: by churn risk, by value at risk (the
product's default), or by expected saved value (model/saving.py, learned from this loop's own
labels by the caller), an alert's saving fixed when it is first ranked, as a worker fixes it on
the alert. Each call's draws (reached, kept, offer taken) come from a stream of its own, seeded
by the customer and the day, so that two rankings calling the same customer on the same day draw
the same outcome. The traffic does not share its noise that far: the simulator draws everyone's
usage from one stream, so after the first customer a call kept the rest of the traffic differs.

Every call ends in an outcome event on the outcomes topic, as an agent would record it. The
numbers are assumptions, stated here so that every figure built on them can be traced back:
save rates of 10-40% for the churners an offer answers, and offers taken by a quarter of the
customers who were staying anyway, are in the range retention teams describe; the simulator's
truth records, for every customer a call changed, what they would have done without it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Iterator, Literal

import msgspec
import numpy as np

from stream_app.alerts.call_plan import Saving, alert_day, plan_days
from stream_app.contracts.events import Alert, Outcome
from stream_app.model.saving import SavingCosts, SavingModel, alert_risk
from stream_app.offline.simulator import SimRecord, Simulator
from stream_app.settings import Settings

__all__ = ["EFFECTS", "OFFER_TAKEN_BY_STAYERS", "PROMPTED_AFTER_DAYS", "PROMPTED_TO_LEAVE", "RANKINGS", "Ranking",
           "CallCentreConfig", "Decision", "SimCallCentre", "closed_loop", "BARRIER"]

#: P(kept | reached) of a churner, by their true reason code and the call's treatment; a pair not
#: listed keeps nobody. 210 relocation, 335 credit, 345 fraud: no call keeps them.
EFFECTS: dict[tuple[int, str], float] = {
    (101, "plan_offer"): 0.35, (101, "promotion_match"): 0.25, (101, "relationship"): 0.10,
    (102, "promotion_match"): 0.40, (102, "plan_offer"): 0.30, (102, "relationship"): 0.10,
    (103, "service_recovery"): 0.35, (103, "relationship"): 0.15, (103, "plan_offer"): 0.10,
    (205, "technical_fix"): 0.25, (205, "relationship"): 0.05, (205, "plan_offer"): 0.05,
    (207, "billing_review"): 0.40, (207, "service_recovery"): 0.20, (207, "plan_offer"): 0.10,
    (380, "reactivation"): 0.15,
}
#: P(takes the offer | reached) of a customer who was staying anyway: an offer's cost with no benefit.
OFFER_TAKEN_BY_STAYERS = {"plan_offer": 0.25, "promotion_match": 0.25, "reactivation": 0.10}
#: P(leaves within weeks | reached) of a customer who was staying: the call reminded them to shop around.
PROMPTED_TO_LEAVE = 0.004
PROMPTED_AFTER_DAYS = (14, 45)  # they leave this many days after the call (the upper bound excluded)
OFFERS = {"plan_offer": "PLAN", "promotion_match": "MATCH", "reactivation": "REACT"}  # offer codes recorded
BARRIER = (None, b"", b"")  # between two days: the replay processes what it holds before going on


Ranking = Literal["risk", "risk_value", "saving"]
RANKINGS: tuple[Ranking, ...] = ("risk", "risk_value", "saving")


@dataclass(frozen=True)
class CallCentreConfig:
    budget: int  # calls a day
    reach_rate: float = 0.65  # a call that reaches the customer
    seed: int = 11
    ranking: Ranking = "risk_value"
    costs: SavingCosts = field(default_factory=SavingCosts)


@dataclass(frozen=True)
class Decision:
    """A call made, or a control alert (never called), for learning what calls do."""

    customer: str
    day: int  # the ordinal of the alert's day
    called: bool
    treatment: str
    reason: int | None  # the alert's top reason code
    risk: float  # the alert's churn risk
    rank_score: float  # what the ranking ranked it by
    reached: bool = False
    accepted: bool = False  # the customer took the offer


class SimCallCentre:
    """Works each day's call list on the simulator's customers."""

    def __init__(self, sim: Simulator, settings: Settings, cfg: CallCentreConfig) -> None:
        self.sim, self.settings, self.cfg = sim, settings, cfg
        self.index = {c: i for i, c in enumerate(sim.ids)}
        self.alerts: list[Alert] = []  # those that can still be on a list
        self.observed: list[Alert] = []  # every alert
        self.outcomes: list[Outcome] = []
        self.decisions: list[Decision] = []
        self.saving = SavingModel()  # learned by the caller from the decisions' labels
        self.calls = self.reached = self.kept = self.offers_taken = self.prompted = self.accepted = 0
        self.revenue_kept = 0.0  # the truth: value of the churners kept less that of those prompted to leave
        self._called: set[str] = set()
        self._savings: dict[str, float | None] = {}

    def observe(self, alerts: list[Alert]) -> None:
        self.alerts += alerts
        self.observed += alerts
        # Every control alert is a decision not to call: customers alerted like those called.
        self.decisions += [Decision(a.customer_id, alert_day(a, self.settings.zone).toordinal(), False, a.treatment,
                                    a.reason_code, alert_risk(a), self._rank_score(a)) for a in alerts if a.holdout]

    def work(self, d: int) -> list[SimRecord]:
        """Day `d`'s calls: the list the day before made (once all its alerts were in), called the
        next morning; returns their outcome events, delivered that day."""
        day = self.sim.cfg.start + timedelta(days=d)
        zone = self.settings.zone
        recent = [a for a in self.alerts if alert_day(a, zone) >= day - timedelta(days=30)]
        self.alerts = recent  # older alerts cannot be open any more
        yesterday = day - timedelta(days=1)
        [plan] = plan_days(recent, yesterday, yesterday, self.cfg.budget, zone, self.settings.region_call_budgets,
                           self._ranking())
        # A late alert can change the day before's ranking after the fact: an alert is still called once.
        calls = [a for a in plan.calls if a.customer_id in self.index and a.alert_id not in self._called]
        self._called.update(a.alert_id for a in calls)
        return [self._call(a, d, day) for a in calls]

    def _ranking(self) -> Saving:
        if self.cfg.ranking == "risk":
            return alert_risk
        if self.cfg.ranking == "saving":
            return self._frozen_saving
        return lambda a: None  # value at risk, whatever the alerts carry

    def _frozen_saving(self, alert: Alert) -> float | None:
        if alert.alert_id not in self._savings:  # a replanned day keeps what its alerts were ranked by
            self._savings[alert.alert_id] = self.saving.saving(alert, self.cfg.costs)
        return self._savings[alert.alert_id]

    def _rank_score(self, alert: Alert) -> float:
        score = self._ranking()(alert)
        return alert.value_at_risk if score is None else score

    def _call(self, alert: Alert, d: int, day: date) -> SimRecord:
        i = self.index[alert.customer_id]
        rng = np.random.default_rng([self.cfg.seed, i, d])  # this call's own draws, whatever else was called
        self.calls += 1
        gone = self.sim.exit_day[i] <= d < self.sim.back_day[i]  # ported back: reachable again
        reached = not gone and rng.random() < self.cfg.reach_rate
        result = self._effect(alert, i, d, day, rng) if reached else "not_reached"
        accepted = result == "accepted" and alert.treatment in OFFERS
        self.accepted += accepted
        self.decisions.append(Decision(alert.customer_id, alert_day(alert, self.settings.zone).toordinal(), True,
                                       alert.treatment, alert.reason_code, alert_risk(alert), self._rank_score(alert),
                                       reached, accepted))
        return self._outcome(alert, day, result, rng)

    def _effect(self, alert: Alert, i: int, d: int, day: date, rng: np.random.Generator) -> str:
        """What a reached call does to customer `i`, by their truth; the outcome an agent records."""
        self.reached += 1
        truth, value = self.sim.truth[i], alert.arpu * self.cfg.costs.value_months
        truth.called, truth.treatment = str(day), alert.treatment
        if truth.churn_date is not None and self.sim.exit_day[i] > d:  # still to leave (not back after leaving)
            if truth.pattern == "decliner" and rng.random() < EFFECTS.get((truth.reason_code or 0, alert.treatment), 0):
                self.sim.keep(i, d)
                self.kept += 1
                self.revenue_kept += value
                return "accepted" if alert.treatment in OFFERS else "contacted"
            return "declined"
        if rng.random() < PROMPTED_TO_LEAVE and self.sim.leave(i, d + int(rng.integers(*PROMPTED_AFTER_DAYS)), 101):
            self.prompted += 1
            self.revenue_kept -= value
        if rng.random() < OFFER_TAKEN_BY_STAYERS.get(alert.treatment, 0.0):
            self.offers_taken += 1
            return "accepted"
        return "contacted"

    def net_revenue_kept(self) -> float:
        """The truth's revenue kept, less the calls' and the accepted offers' costs."""
        return self.revenue_kept - self.calls * self.cfg.costs.call - self.accepted * self.cfg.costs.offer

    def _outcome(self, alert: Alert, day: date, result: str, rng: np.random.Generator) -> SimRecord:
        hour = int(rng.integers(9, 18))
        ts = datetime.combine(day, time(hour), self.settings.zone)
        offer = f"{OFFERS[alert.treatment]}{day:%m}" if result == "accepted" and alert.treatment in OFFERS else None
        outcome = Outcome(uuid.UUID(int=int(rng.integers(0, 2**62))).hex, alert.customer_id, ts, alert.alert_id,
                          result, offer, f"sim-agent-{int(rng.integers(1, 9))}")  # type: ignore[arg-type]
        self.outcomes.append(outcome)
        return SimRecord("outcomes", alert.customer_id.encode(), msgspec.json.encode(outcome), 0)


def closed_loop(sim: Simulator, centre: SimCallCentre, settings: Settings) -> Iterator[tuple[str | None, bytes, bytes]]:
    """The simulator's records for a replay, with the call centre in the loop: between two days a
    barrier (the replay processes what it holds, so every alert of the day before is in), then the
    day's calls, whose outcomes are delivered with the day's traffic and whose effects start that day."""
    topics = {"cdr": settings.topics.cdr, "billing": settings.topics.billing,
              "customers": settings.topics.customers, "outcomes": settings.topics.outcomes}
    for rec in sim.profile_records():
        yield topics[rec.topic], rec.key, rec.value
    for d in range(sim.cfg.days):
        calls = []
        if d:
            yield BARRIER
            calls = centre.work(d)
        for rec in [*calls, *sim.day_records(d)]:
            yield topics[rec.topic], rec.key, rec.value
