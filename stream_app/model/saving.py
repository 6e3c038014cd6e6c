"""Expected saved value: what a call with a given action is worth, learned from the closed loop.

For an alert with churn risk p, monthly value v and action a,

    saving = c * p * kept(a) * v * months - (call + accepted(a) * offer)

- `kept(a)`, the share of would-be churners a call with action a keeps, is learned as a ratio of
  observed to expected churners: among the customers called with a whose label is known, the
  churners seen (O) against the sum of their risks at the call (E, what they would have had
  uncalled). kept(a) = 1 - O / (c E). It uses every call, not only a model per arm, so it is
  usable after hundreds of calls where a per-customer uplift model (model/uplift.py) needs
  thousands; what it cannot see is who within an action a call keeps, beyond their risk and value.
- `c` calibrates the risks on the control group (alerts never called): their churners over the
  sum of their risks. A model that over- or under-states the risk of alerted customers would
  otherwise read as a call effect. It takes every control alert, not only those the plan ranked
  within the budget: five to ten times the evidence, at the price of assuming the risks are as
  well calibrated at the top of the list as across it.
- `c` is kept per reason code too, shrunk towards the whole control's, and each call's expected
  churners are counted at its own reason's: customers leaving over the network churn more for the
  same risk than those leaving over price, and the actions go to different reasons (a technical fix
  to network churners), so one calibration for all would read that mix as an effect of the action.
  The calls of an action are compared with control alerts of the same reasons, weighted as the
  calls are (indirect standardisation: observed over expected at the control's rates per reason).
- The ratio is kept per action and per action and reason code (the alert's top reason: a plan
  offer keeps those leaving over price, not those who move away), each shrunk towards the one
  above it (a reason's towards its action's, an action's towards all calls', all calls' towards
  no effect, the control's towards calibrated) by `PRIOR_CHURNERS` pseudo-churners, so a few
  calls move it little and a new pair starts at what its action does on average.
- `accepted(a)` is the share of calls with a that took the offer (its cost is paid whoever takes
  it: kept churners and customers who were staying anyway), shrunk towards all calls' share for
  the actions that make an offer (`OFFER_TREATMENTS`) and towards none for the others.

Until the control and the calls each have `MIN_EXPECTED` expected churners, `ready` is False and
callers keep ranking by value at risk, and say so. A saving at or below zero means no call pays.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

import msgspec

from stream_app.contracts.events import LEVELS, Alert
from stream_app.settings import Settings

__all__ = ["Evidence", "SavingModel", "SavingCosts", "alert_risk", "LEVEL_RISK", "PRIOR_CHURNERS", "MIN_EXPECTED",
           "OFFER_TREATMENTS"]

PRIOR_CHURNERS = 10.0
MIN_EXPECTED = 20.0
OFFER_TREATMENTS = frozenset({"plan_offer", "promotion_match", "reactivation"})
#: Churn probability assumed per level (none, low, medium, high) where the model gives no score.
LEVEL_RISK = (0.0, 0.15, 0.35, 0.6)


def alert_risk(alert: Alert) -> float:
    """The churn probability an alert was raised with: the model's score, or its level's."""
    return alert.score if alert.score is not None else LEVEL_RISK[LEVELS.index(alert.level)]


class Evidence(msgspec.Struct):
    """Labelled decisions of one arm: how many, how many churned, the sum of their risks, offers taken."""

    decisions: int = 0
    churned: int = 0
    expected: float = 0.0
    accepted: int = 0

    def add(self, risk: float, churned: bool, accepted: bool = False) -> None:
        self.decisions += 1
        self.churned += churned
        self.expected += risk
        self.accepted += accepted


@dataclass(frozen=True)
class SavingCosts:
    """What a call and an accepted offer cost, and how long a kept customer is valued."""

    call: float = 2.0
    offer: float = 30.0
    value_months: float = 12.0  # how long a kept customer is valued (the campaign report's figure)

    @classmethod
    def of(cls, settings: Settings) -> "SavingCosts":
        return cls(settings.call_cost, settings.offer_cost, settings.kept_value_months)


class SavingModel(msgspec.Struct, dict=True):
    """The evidence: published with the churn model (plain counts, no pickle). Its instances also
    hold, unpublished, the calls' reason-calibrated expected churners per action (`_by_action`),
    which every learned decision clears."""

    control: Evidence = msgspec.field(default_factory=Evidence)
    actions: dict[str, Evidence] = msgspec.field(default_factory=dict)
    reasons: dict[str, Evidence] = msgspec.field(default_factory=dict)  # "action|reason code" (0 for none)
    control_reasons: dict[int, Evidence] = msgspec.field(default_factory=dict)  # reason code (0 for none)

    def learn_control(self, risk: float, churned: bool, reason: int | None = None) -> None:
        """A control-group alert for `reason`, and whether its customer churned."""
        self.control.add(risk, churned)
        self.control_reasons.setdefault(reason or 0, Evidence()).add(risk, churned)
        self.__dict__.pop("_by_action", None)

    def learn_call(self, action: str, reason: int | None, risk: float, churned: bool, accepted: bool) -> None:
        """A call made with `action` for `reason` (reached or not), whether the offer was taken, and
        whether they churned."""
        self.actions.setdefault(action, Evidence()).add(risk, churned, accepted)
        self.reasons.setdefault(_pair(action, reason), Evidence()).add(risk, churned, accepted)
        self.__dict__.pop("_by_action", None)

    @property
    def calls(self) -> Evidence:
        total = Evidence()
        for e in self.actions.values():
            total.decisions += e.decisions
            total.churned += e.churned
            total.expected += e.expected
            total.accepted += e.accepted
        return total

    @property
    def ready(self) -> bool:
        return self.control.expected >= MIN_EXPECTED and self.calls.expected >= MIN_EXPECTED

    def calibration(self) -> float:
        """The control's churners per unit of risk, shrunk towards 1 (risks as calibrated)."""
        return _ratio(self.control.churned, self.control.expected, 1.0)

    def reason_calibration(self, reason: int | None) -> float:
        """The same for the control alerts of `reason` (None: no reason), shrunk towards the whole control's."""
        e = self.control_reasons.get(reason or 0) or Evidence()
        return _ratio(e.churned, e.expected, self.calibration())

    def kept(self, action: str, reason: int | None = None) -> float:
        """The share of would-be churners a call with `action` for `reason` keeps (negative: calls
        that lose them)."""
        return 1.0 - self._ratios(action, reason)[1]

    def kept_by_action(self, action: str) -> float:
        """The same for `action` whatever the reason."""
        return 1.0 - self._ratios(action, None)[0]

    def _ratios(self, action: str, reason: int | None) -> tuple[float, float]:
        """Observed over expected churners of the action's calls, and of the action and reason's,
        each call's risk calibrated by its reason's control alerts."""
        pooled, by_action = self._action_ratios()
        action_ratio = by_action.get(action, pooled)
        e = self.reasons.get(_pair(action, reason)) or Evidence()
        return action_ratio, _ratio(e.churned, self.reason_calibration(reason) * e.expected, action_ratio)

    def _action_ratios(self) -> tuple[float, dict[str, float]]:
        """All calls' ratio, and each action's shrunk towards it; kept until the next decision is
        learned (an alert asks for them once per action it could take)."""
        if (cached := self.__dict__.get("_by_action")) is not None:
            return cached
        expected: dict[str, float] = collections.defaultdict(float)
        observed: dict[str, int] = collections.defaultdict(int)
        for pair, e in self.reasons.items():
            name, code = pair.split("|")
            expected[name] += self.reason_calibration(int(code)) * e.expected
            observed[name] += e.churned
        pooled = _ratio(sum(observed.values()), sum(expected.values()), 1.0)
        cached = self._by_action = pooled, {a: _ratio(observed[a], expected[a], pooled) for a in expected}
        return cached

    def accepted(self, action: str) -> float:
        """The share of calls with `action` whose customer took the offer."""
        e, pooled = self.actions.get(action, Evidence()), self.calls
        prior = (pooled.accepted + 1) / (pooled.decisions + 2) if action in OFFER_TREATMENTS else 0.0
        return (e.accepted + PRIOR_CHURNERS * prior) / (e.decisions + PRIOR_CHURNERS)

    def saving(self, alert: Alert, costs: SavingCosts) -> float | None:
        """The alert's expected saved value for its action, net of what the call costs; None before `ready`."""
        return self.expected(alert, alert.treatment, costs) if self.ready else None

    def expected(self, alert: Alert, treatment: str, costs: SavingCosts) -> float:
        """What a call with `treatment` is expected to save for `alert`'s customer, net of its cost."""
        return (self.uplift(alert_risk(alert), treatment, alert.reason_code) * alert.arpu * costs.value_months
                - costs.call - self.accepted(treatment) * costs.offer)

    def uplift(self, risk: float, treatment: str, reason: int | None) -> float:
        """How much a call with `treatment` lowers the churn probability of a customer alerted with
        `risk` for `reason`: their calibrated risk times the share a call keeps."""
        return self.reason_calibration(reason) * risk * self.kept(treatment, reason)

    def to_json(self) -> dict:
        return {"ready": self.ready, "calibration": round(self.calibration(), 4),
                "calibration_by_reason": {str(r): round(self.reason_calibration(r), 4)
                                          for r in sorted(self.control_reasons)},
                "control": msgspec.structs.asdict(self.control) | {"expected": round(self.control.expected, 2)},
                "actions": {a: {"calls": e.decisions, "churned": e.churned, "expected": round(e.expected, 2),
                                "kept": round(self.kept_by_action(a), 4), "accepted": round(self.accepted(a), 4)}
                            for a, e in sorted(self.actions.items())}}


def _pair(action: str, reason: int | None) -> str:
    return f"{action}|{reason or 0}"


def _ratio(observed: float, expected: float, prior: float) -> float:
    """observed / expected, shrunk towards `prior` by PRIOR_CHURNERS pseudo-churners."""
    return (observed + PRIOR_CHURNERS * prior) / (expected + PRIOR_CHURNERS)
