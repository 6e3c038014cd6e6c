"""What the call plan did with each alert, joined to the labels that learn what calls do.

The labeller reads the alerts and the call outcomes (to their end, before it makes labels, as it
reads churn events) and keeps, per customer, the decisions of recent days: a control-group
alert (never called) or a called alert, with the call's treatment and whether an offer was
taken (an alert's latest outcome counts: a customer not reached on Monday may accept on
Tuesday). An alert the plan never called (over the budget, expired) is no decision, and nor is
one of a customer whose account manager calls them instead of the call centre. The two topics
are read together, so an outcome can come before its alert: it waits for it.

A label of day d carries the decision of an alert raised on day a with a <= d <= a + window
(MATCH_DAYS, plus the snapshot cadence's days less one: a customer snapshotted weekly has a
label a week apart), if no earlier label of that customer came on or after a: each decision
reaches one label, the customer's first from the alert's day on. That depends only on the
customer's previous label day, which a restarted labeller takes from the checkpoint, so a label
made twice across a crash carries the same decision both times (and is learned once, like every
label).
"""

from __future__ import annotations

import collections
from zoneinfo import ZoneInfo

from stream_app.contracts.events import Alert, CallDecision, Outcome
from stream_app.model.saving import alert_risk

__all__ = ["Decisions", "MATCH_DAYS"]

MATCH_DAYS = 3  # a decision reaches the customer's first label this many days after the alert at most
#: An outcome recorded this long after its alert still counts (a call made on the alert's last open day).
_OUTCOME_REACH_DAYS = 30


class Decisions:
    """Per customer, the decisions of alerts raised since the oldest label still to be made."""

    def __init__(self, zone: ZoneInfo, snapshot_every_days: int = 1, managed_too: bool = False) -> None:
        self.zone = zone
        self.window = MATCH_DAYS + snapshot_every_days - 1
        self.managed_too = managed_too  # CHURNWATCH_MANAGED_BY_CALL_CENTRE
        self._alerts: dict[str, tuple[Alert, int]] = {}  # called alerts can still get an outcome: (alert, day)
        self._outcomes: dict[str, Outcome] = {}  # each alert's latest outcome, read before or after it
        self._by_customer: dict[str, dict[str, tuple[int, CallDecision]]] = collections.defaultdict(dict)

    def alert(self, alert: Alert) -> None:
        if alert.account_manager and not self.managed_too:
            return
        day = alert.event_time.astimezone(self.zone).date().toordinal()
        if alert.holdout:
            decision = CallDecision("control", alert.reason_code or 0, alert_risk(alert))
            self._by_customer[alert.customer_id][alert.alert_id] = (day, decision)
        else:
            self._alerts[alert.alert_id] = (alert, day)
            self._called(alert.alert_id)

    def outcome(self, outcome: Outcome) -> None:
        held = self._outcomes.get(outcome.alert_id)
        if held is None or (outcome.ts, outcome.event_id) > (held.ts, held.event_id):  # the latest counts
            self._outcomes[outcome.alert_id] = outcome
            self._called(outcome.alert_id)

    def _called(self, alert_id: str) -> None:
        known, outcome = self._alerts.get(alert_id), self._outcomes.get(alert_id)
        if known is None or outcome is None:  # the other half may still come
            return
        alert, day = known
        accepted = outcome.result == "accepted" and outcome.offer is not None
        decision = CallDecision(alert.treatment, alert.reason_code or 0, alert_risk(alert), accepted)
        self._by_customer[alert.customer_id][alert_id] = (day, decision)

    def for_label(self, customer: str, day: int, previous_day: int) -> CallDecision | None:
        """The decision a label of `customer`'s day `day` carries, given the day of their label before it."""
        found = [(a, alert_id, d) for alert_id, (a, d) in self._by_customer.get(customer, {}).items()
                 if previous_day < a <= day <= a + self.window]
        return min(found)[2] if found else None

    def forget_before(self, day: int) -> None:
        """Drop the decisions no label still to be made can carry, and alerts past any outcome."""
        for customer in list(self._by_customer):
            kept = {k: v for k, v in self._by_customer[customer].items() if v[0] >= day - self.window}
            if kept:
                self._by_customer[customer] = kept
            else:
                del self._by_customer[customer]
        last = day - self.window - _OUTCOME_REACH_DAYS
        self._alerts = {k: v for k, v in self._alerts.items() if v[1] >= last}
        self._outcomes = {k: o for k, o in self._outcomes.items()
                          if o.ts.astimezone(self.zone).date().toordinal() >= last}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_customer.values()) + len(self._alerts) + len(self._outcomes)

