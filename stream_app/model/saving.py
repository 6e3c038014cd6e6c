"""Expected saved value: what a call with a given action is worth, learned from the closed loop.

For an alert with churn risk p, monthly value v and action a,

    saving = r(reason, band(p)) * kept(a) * v * months - (call + accepted(a) * offer)

- `kept(a)`, the share of would-be churners a call with action a keeps, is learned as a ratio of
  observed to expected churners: among the customers called with a whose label is known, the
  churners seen (O) against what they would have had uncalled (E: for each call, the control's
  churn per alert `r` of its reason and risk band). kept(a) = 1 - O / E. It uses every call, not
  only a model per arm, so it is usable after hundreds of calls where a per-customer uplift model
  (model/uplift.py) needs thousands; what it cannot see is who within an action a call keeps,
  beyond their reason, risk band and value.
- `r` is how often the control group's alerts (never called) churned, per reason code and risk
  band (model/control_rates.py). A model that over- or under-states the risk of alerted
  customers would otherwise read as a call effect, and so would the difference between the
  calls' mix and the control's: a technical fix goes to network churners, who churn more for the
  same risk, and a ranking by saving calls other risks than the control's. Each action's calls
  are so compared with control alerts of their own reasons and risk bands (indirect
  standardisation). It takes every control alert, not only those the plan ranked within the
  budget: five to ten times the evidence.
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
from stream_app.model.control_rates import ControlRates, band
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
    hold, unpublished, what is fitted from it (`_fit`), which every learned decision clears."""

    control: Evidence = msgspec.field(default_factory=Evidence)
    actions: dict[str, Evidence] = msgspec.field(default_factory=dict)
    reasons: dict[str, Evidence] = msgspec.field(default_factory=dict)  # "action|reason code" (0 for none)
    control_cells: dict[str, Evidence] = msgspec.field(default_factory=dict)  # "reason|risk band"
    cells: dict[str, Evidence] = msgspec.field(default_factory=dict)  # calls: "action|reason|risk band"

    def learn_control(self, risk: float, churned: bool, reason: int | None = None) -> None:
        """A control-group alert for `reason`, and whether its customer churned."""
        self.control.add(risk, churned)
        self.control_cells.setdefault(f"{reason or 0}|{band(risk)}", Evidence()).add(risk, churned)
        self.__dict__.pop("_fit", None)

    def learn_call(self, action: str, reason: int | None, risk: float, churned: bool, accepted: bool) -> None:
        """A call made with `action` for `reason` (reached or not), whether the offer was taken, and
        whether they churned."""
        self.actions.setdefault(action, Evidence()).add(risk, churned, accepted)
        self.reasons.setdefault(_pair(action, reason), Evidence()).add(risk, churned, accepted)
        self.cells.setdefault(f"{_pair(action, reason)}|{band(risk)}", Evidence()).add(risk, churned, accepted)
        self.__dict__.pop("_fit", None)

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

    def control_churn(self) -> float:
        """The control's churn per alert: its mean risk, calibrated; with no control alerts yet, the
        calls' mean risk as the scores give it (neutral, as `calibration` is)."""
        arm = self.control if self.control.decisions else self.calls
        return max(self.calibration() * arm.expected / max(arm.decisions, 1), 1e-3)

    def rates(self) -> ControlRates:
        """The control's churn per alert by reason and risk band (model/control_rates.py)."""
        return self._fitted().rates

    def kept(self, action: str, reason: int | None = None) -> float:
        """The share of would-be churners a call with `action` for `reason` keeps (negative: calls
        that lose them)."""
        fit = self._fitted()
        e, pair = self.reasons.get(_pair(action, reason)) or Evidence(), _pair(action, reason)
        by_action = fit.by_action.get(action, fit.pooled)
        return 1.0 - _ratio(e.churned, fit.expected.get(pair, 0.0), by_action)

    def kept_by_action(self, action: str) -> float:
        """The same for `action` whatever the reason."""
        fit = self._fitted()
        return 1.0 - fit.by_action.get(action, fit.pooled)

    def _fitted(self) -> _Fit:
        """The control's rates and, at them, the churners each action's and pair's calls would have
        had uncalled (each call at its reason's and risk band's rate); kept until the next decision
        is learned (an alert asks for them once per action it could take). Calls learned before
        the bands were kept count at the whole control's rate."""
        if (fit := self.__dict__.get("_fit")) is not None:
            return fit
        whole = self.control_churn()
        rates = ControlRates.fit({_cell(key): (e.churned, e.decisions) for key, e in self.control_cells.items()}, whole)
        expected = {pair: whole * e.decisions for pair, e in self.reasons.items()}
        for key, e in self.cells.items():
            action, reason, risk_band = key.split("|")
            pair = f"{action}|{reason}"
            expected[pair] = expected.get(pair, 0.0) + (rates.rate(int(reason), int(risk_band)) - whole) * e.decisions
        by_action: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0])
        for pair, e in self.reasons.items():
            observed_expected = by_action[pair.split("|")[0]]
            observed_expected[0] += e.churned
            observed_expected[1] += expected[pair]
        pooled = _ratio(sum(o for o, _ in by_action.values()), sum(x for _, x in by_action.values()), 1.0)
        fit = self._fit = _Fit(rates, expected, pooled, {a: _ratio(o, x, pooled) for a, (o, x) in by_action.items()})
        return fit

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
        `risk` for `reason`: how often the control's alerts of their reason and risk band churn,
        times the share a call keeps."""
        return self.rates().rate(reason, band(risk)) * self.kept(treatment, reason)

    def to_json(self) -> dict:
        """The evidence as `model report` shows it: an action's `expected` is the churners its calls
        would have had uncalled (at the control's rates), which `kept` sets its churners against."""
        fit = self._fitted()
        uncalled: dict[str, float] = collections.defaultdict(float)
        for pair, expected in fit.expected.items():
            uncalled[pair.split("|")[0]] += expected
        return {"ready": self.ready, "calibration": round(self.calibration(), 4),
                "churn_by_band": [round(f, 4) for f in fit.rates.bands.tolist()],
                "reason_factors": {str(r): round(f, 4) for r, f in fit.rates.reasons.items()},
                "control": msgspec.structs.asdict(self.control) | {"expected": round(self.control.expected, 2)},
                "actions": {a: {"calls": e.decisions, "churned": e.churned, "expected": round(uncalled[a], 2),
                                "kept": round(self.kept_by_action(a), 4), "accepted": round(self.accepted(a), 4)}
                            for a, e in sorted(self.actions.items())}}


@dataclass(frozen=True)
class _Fit:
    rates: ControlRates
    expected: dict[str, float]  # per "action|reason": the churners its calls would have had uncalled
    pooled: float  # all calls' observed over expected churners
    by_action: dict[str, float]  # each action's, shrunk towards all calls'


def _pair(action: str, reason: int | None) -> str:
    return f"{action}|{reason or 0}"


def _cell(key: str) -> tuple[int, int]:
    reason, risk_band = key.split("|")
    return int(reason), int(risk_band)


def _ratio(observed: float, expected: float, prior: float) -> float:
    """observed / expected, shrunk towards `prior` by PRIOR_CHURNERS pseudo-churners."""
    return (observed + PRIOR_CHURNERS * prior) / (expected + PRIOR_CHURNERS)
