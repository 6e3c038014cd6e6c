"""Alerts for the call centre: who to call, why, at which level, and what to offer."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Mapping
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from stream_app.alerts.wording import model_reason
from stream_app.contracts.attributes import describe, is_attribute
from stream_app.contracts.events import Alert, AlertReason
from stream_app.model.observations import value_segment
from stream_app.model.saving import LEVEL_RISK, SavingCosts, SavingModel
from stream_app.model.scoring import Scorer
from stream_app.rules.pack import LEVELS, LIFECYCLE, Action, Evaluation, Ruleset
from stream_app.rules.summary import like_them, render
from stream_app.settings import Attribute, Settings
from stream_app.windows.state import LAST_SEEN_KINDS, VIP_TIERS, StateTail, Windows

__all__ = ["LEVEL_RISK", "QUEUED_LEVELS", "FALLBACK_ACTION", "AlertPolicy", "ModelView", "alert_id", "build_alerts",
           "in_holdout", "monthly_value", "alert_risks", "levels_with_score", "queue_order"]

_BILLED = LAST_SEEN_KINDS.index("billing")  # the last-seen kinds before it are usage

#: When no entry of the rule files' `actions` matches.
FALLBACK_ACTION = Action(action="retention call: ask about their experience")

#: The churn reason (DOMAIN.md) a model driver points to, where one does.
_DRIVER_REASONS = {
    "dropped_rate_30d": 205, "cs_calls_30d": 103, "offnet_share_30d": 102, "arpu_mom": 101, "arpu_cv_6m": 101,
    "days_since_active": 380,
}

#: A model term must add this much to the log-odds to be read out as a reason: less moves a score
#: of 30% by under 4 points, which is no reason an agent should give a customer.
MIN_DRIVER = 0.2


@dataclass(frozen=True)
class ModelView:
    """The batch as the model saw it: the scorer, its inputs and its scores (NaN: not scored)."""

    scorer: Scorer
    x: np.ndarray
    score: np.ndarray
    attributes: Mapping[str, Attribute] = field(default_factory=dict)  # declared: how their columns read


@dataclass(frozen=True)
class AlertPolicy:
    min_level: int = 2  # index into LEVELS: medium and high go to the call queue
    cooldown_days: int = 14
    expiry_days: int = 7
    holdout_share: float = 0.10  # control group: flagged, never called, to measure what calls keep
    margin_share: float = 1.0  # monthly margin as a share of ARPU (1: value at risk is revenue)
    # Monthly churn rate per value segment: a customer's expected remaining lifetime is its inverse.
    segment_churn: tuple[tuple[str, float], ...] = field(default_factory=lambda: tuple(
        Settings.model_fields["segment_monthly_churn"].default_factory().items()))  # type: ignore[misc]
    max_lifetime_months: float = 60.0
    costs: SavingCosts = field(default_factory=SavingCosts)  # what a call and an offer cost (expected saving)

    @classmethod
    def of(cls, settings: Settings) -> "AlertPolicy":
        """The policy the settings describe (control group, margin, churn per segment, costs)."""
        return cls(holdout_share=settings.holdout_share, margin_share=settings.margin_share,
                   segment_churn=tuple(settings.segment_monthly_churn.items()),
                   costs=SavingCosts.of(settings))

    def value_at_risk(self, probability: float, arpu: float, segment: str) -> float:
        """Churn probability x monthly margin x expected remaining lifetime (DOMAIN.md)."""
        rate = dict(self.segment_churn).get(segment, 0.02)
        lifetime = min(self.max_lifetime_months, 1.0 / rate) if rate > 0 else self.max_lifetime_months
        return round(probability * arpu * self.margin_share * lifetime, 2)


#: The levels that reach the call queue under the default policy.
QUEUED_LEVELS: tuple[str, ...] = tuple(LEVELS[AlertPolicy.min_level:])


def levels_with_score(rules_level: np.ndarray, score: np.ndarray, medium: float, high: float) -> np.ndarray:
    """The level the service gives: the rules' or the one the model's score reaches alone (from
    `medium`, from `high`), whichever is higher; a NaN score (no model) reaches none.

    >>> levels_with_score(np.array([3, 0, 1, 0]), np.array([0.1, 0.7, 0.4, np.nan]), 0.35, 0.6).tolist()
    [3, 3, 2, 0]
    """
    score = np.nan_to_num(score, nan=0.0)
    return np.maximum(rules_level, np.where(score >= high, 3, np.where(score >= medium, 2, 0)))


def queue_order(level: np.ndarray, priority: np.ndarray, min_level: int = AlertPolicy.min_level) -> np.ndarray:
    """A key that ranks customers as the call queue does: those with an alert that reaches it (`level`
    from `levels_with_score`) before all others, each group by `priority` (the alert's risk, or its
    value at risk). The others are never called; they rank after, as a budget larger than the
    alerts would find them.

    >>> np.argsort(-queue_order(np.array([3, 0, 2]), np.array([0.1, 0.9, 0.5]))).tolist()
    [2, 0, 1]
    >>> np.argsort(-queue_order(np.array([2, 0]), np.array([-5.0, 5.0]))).tolist()  # a credit: still an alert
    [0, 1]
    """
    priority = np.asarray(priority, np.float64)
    known = priority[np.isfinite(priority)]
    low, high = (known.min(), known.max()) if known.size else (0.0, 0.0)
    # The lowest alert (a NaN counts as the lowest) lands above the highest of the rest.
    return np.where(level >= min_level, np.where(np.isnan(priority), low, priority) + (high - low + 1.0), priority)


def alert_risks(level: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The churn probability an alert is raised with (`saving.alert_risk`), for arrays: the model's
    score, or where there is none its level's."""
    return np.where(np.isfinite(score), score, np.asarray(LEVEL_RISK)[np.clip(level, 0, len(LEVEL_RISK) - 1)])


def monthly_value(values: dict[str, float]) -> float:
    """The monthly spend an alert's value at risk rests on: a prepaid line's top-ups averaged over
    three months (a month can hold none, or two); a postpaid line's last bill, or the one before
    while the last has not come (a month's first hours, when a HIGH alert said "ARPU 0, at risk 0"
    and went to the bottom of the call list).

    >>> monthly_value({"prepaid": 1.0, "arpu_m1": 0.0, "arpu_m2": 300.0, "arpu_3m": 100.0})
    100.0
    >>> monthly_value({"prepaid": 0.0, "arpu_m1": 0.0, "arpu_m2": 150.0, "arpu_3m": 100.0})
    150.0
    """
    if values["prepaid"] > 0:
        return values["arpu_3m"]
    return values["arpu_m1"] if values["arpu_m1"] > 0 else values["arpu_m2"]


def alert_id(customer: str, level: str, day: int, cooldown_days: int) -> str:
    """Deterministic, so that re-processing the same events yields the same id: the customer,
    the level and the cooldown window of the alert's day. The cooldown keeps two alerts of one
    level at least `cooldown_days` apart, so each window holds at most one, and a warning
    repeated after the cooldown is a new alert, not a resend of the first.

    >>> alert_id("8613800000001", "high", 740_000, 14) == alert_id("8613800000001", "high", 740_000, 14)
    True
    >>> alert_id("8613800000001", "high", 740_000, 14) == alert_id("8613800000001", "high", 740_014, 14)
    False
    """
    return hashlib.sha256(f"{customer}|{level}|{day // cooldown_days}".encode()).hexdigest()[:24]


def in_holdout(customer: str, share: float) -> bool:
    """Whether the customer is in the control group: a fixed pseudo-random draw from the id,
    so the same customers stay out of the calls whatever the worker or the day.

    >>> in_holdout("8613800000001", 0.0), in_holdout("8613800000001", 1.0)
    (False, True)
    """
    draw = int.from_bytes(hashlib.sha256(f"holdout|{customer}".encode()).digest()[:8], "big") / 2.0 ** 64
    return draw < share


def _act(alert: Alert, ruleset: Ruleset, policy: AlertPolicy, saving: SavingModel | None = None) -> Alert:
    """The alert with its action and its place in or out of the calls. The action is the table's
    first match until the evidence of what calls keep is in; then, among the entries that match in
    the same queue (who calls stays the table's choice), the one expected to save most (next best
    action), with that saving."""
    matching = ruleset.actions_for(alert.reason_code, alert.segment, alert.vip_tier, alert.lifecycle)
    action, expected = (matching or [FALLBACK_ACTION])[0], None
    if saving is not None and saving.ready:
        options = [a for a in matching if a.queue == action.queue] or [action]
        scored = [(saving.expected(alert, a.treatment, policy.costs), a) for a in options]
        expected, action = max(scored, key=lambda s: s[0])  # the first of equals: the table's order
        expected = round(expected, 2)
    return msgspec.structs.replace(alert, suggested_action=action.action, queue=action.queue,
                                   treatment=action.treatment, expected_saving=expected,
                                   holdout=in_holdout(alert.customer_id, policy.holdout_share))


def build_alerts(
    w: Windows, features: dict[str, np.ndarray], ev: Evaluation, ruleset: Ruleset,
    rows: list[int], now_day: np.ndarray, zone: ZoneInfo, policy: AlertPolicy, created_at: datetime,
    model: ModelView | None = None,
) -> tuple[list[Alert], int, dict[int, tuple[int, int]]]:
    """Alerts for the given rows whose level reaches the policy, how many the cooldown held back,
    and the (level, day) of each row alerted (for `Windows.mark_alerted`)."""
    alerts = []
    cooled = 0
    alerted: dict[int, tuple[int, int]] = {}
    rec = w.rec
    for i in rows:
        level, day = int(ev.level[i]), int(now_day[i])
        # `exited` counts an exit from its own day on: one read ahead of the usage (a billing
        # topic that runs ahead in a catch-up) must not silence warnings about the months before.
        if level < policy.min_level or features["exited"][i]:
            continue
        if rec["alerted_level"][i] >= level and day - int(rec["alerted_day"][i]) < policy.cooldown_days:
            cooled += 1
            continue
        alerted[i] = (level, day)
        # The newest usage behind the alert: the start of event-to-alert latency. Billing
        # is left out because in a catch-up it can be read months ahead of the usage.
        seen = rec["last_seen"][i]
        event_time = datetime.fromtimestamp(int(seen[:_BILLED].max()) or int(seen.max()), zone)
        values = {name: float(col[i]) for name, col in features.items()}
        alert = _alert(w, values, value_segment(features, i), ev, ruleset, i, level, day, event_time, policy,
                       created_at)
        if model is not None:
            alert = _with_model(alert, model, values, i, policy)
        alerts.append(_act(alert, ruleset, policy, model.scorer.snapshot.saving if model is not None else None))
    return alerts, cooled, alerted


def _alert(w: Windows, values: dict[str, float], segment: str, ev: Evaluation, ruleset: Ruleset, i: int, level: int,
           day: int, event_time: datetime, policy: AlertPolicy, created_at: datetime) -> Alert:
    reasons = [
        AlertReason(c.rule.id, c.rule.labels.reason_code, c.rule.importance,
                    {n: values[n] for n in c.names}, c.thresholds,
                    render(c.rule.annotations.summary, values) + like_them(values, c.names))
        for j, c in enumerate(ruleset.rules) if ev.fired[i, j]
    ]
    top = max(reasons, key=lambda r: r.importance).reason_code if reasons else None
    arpu = monthly_value(values)
    return Alert(
        alert_id=alert_id(w.customers[i], LEVELS[level], day, policy.cooldown_days),
        customer_id=w.customers[i], level=LEVELS[level], period=date.fromordinal(day).strftime("%Y-%m"),  # type: ignore[arg-type]
        created_at=created_at, expires_at=created_at + timedelta(days=policy.expiry_days),
        event_time=event_time, reasons=reasons, reason_code=top,
        segment=segment,
        vip_tier=VIP_TIERS[int(w.rec["vip"][i])], arpu=round(arpu, 2),
        value_at_risk=policy.value_at_risk(LEVEL_RISK[level], arpu, segment),
        suggested_action="", lifecycle=LIFECYCLE[int(values["lifecycle"]) - 1],
        region=(tail := w.text[i] or StateTail()).region, account_manager=tail.manager,
    )


def _with_model(alert: Alert, model: ModelView, values: dict[str, float], i: int, policy: AlertPolicy) -> Alert:
    """The alert with the model's score, version and the drivers of the score among its reasons."""
    score = float(model.score[i])
    reasons = list(alert.reasons)
    said = {r.text for r in reasons}
    for d in model.scorer.drivers(model.x[i]):
        text = (describe(d.feature, values[d.feature], model.attributes) if is_attribute(d.feature)
                else model_reason(d.feature, values))
        if d.contribution < MIN_DRIVER or text in said:  # a rule has said it already, in the same words
            continue
        said.add(text)
        reasons.append(AlertReason("model", _DRIVER_REASONS.get(d.feature), round(d.contribution, 4),
                                   {d.feature: values[d.feature]}, {}, text))
    top = alert.reason_code if alert.reason_code is not None else next(
        (r.reason_code for r in reasons if r.reason_code is not None), None)
    return msgspec.structs.replace(
        alert, reasons=reasons, reason_code=top, score=round(score, 4), model_version=model.scorer.version,
        model_labels=model.scorer.labels, value_at_risk=policy.value_at_risk(score, alert.arpu, alert.segment),
    )
