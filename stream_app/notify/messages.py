"""What an account manager is told: a warning at once for a HIGH alert, and a daily digest of
their customers' warnings (a supervisor's adds their team's). Each message has an id that is
the receiver's key for deduplication: the same warning or digest always has the same id, so a
message sent again after a crash is recognised as the one already received.

The reasons are those the call centre's agents read (`Alert.reasons`), in the same words.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import date
from typing import Literal, Mapping, Sequence

import msgspec

from stream_app.alerts.call_plan import strongest_per_customer
from stream_app.contracts.events import Alert

__all__ = ["Message", "warning", "digest"]


@dataclass(frozen=True)
class Message:
    """One message to one recipient, whatever the channel: a subject and text for e-mail, a JSON
    document for a webhook."""

    message_id: str
    kind: Literal["warning", "digest"]
    recipient: str
    subject: str
    text: str
    payload: dict = field(repr=False)


def warning(alert: Alert, manager: str, currency: str) -> Message:
    """The HIGH alert of one of `manager`'s customers, to be acted on today."""
    subject = (f"High churn risk: customer {alert.customer_id}, {alert.value_at_risk:,.0f} {currency} at risk")
    text = "\n".join([f"Customer {alert.customer_id} is at high risk of leaving.", "", *_alert_lines(alert, currency),
                      "", f"Alert {alert.alert_id}, open until {alert.expires_at:%Y-%m-%d %H:%M %Z}."])
    message_id = f"warning:{alert.alert_id}:{manager}"
    return Message(message_id, "warning", manager, subject, text + "\n",
                   {"id": message_id, "kind": "warning", "manager": manager, "alert": msgspec.to_builtins(alert)})


def digest(recipient: str, through: date, own: Sequence[Alert], team: Mapping[str, Sequence[Alert]],
           currency: str) -> Message:
    """The day's digest for `recipient`: their customers' warnings up to the end of `through`
    (each customer once, at their strongest alert), then each of their team's managers'. Its id
    holds the alerts it carries, so that a digest of the same day with a late alert added is a
    new message, and the same digest sent twice is one."""
    own = strongest_per_customer(own)
    team = {m: strongest_per_customer(alerts) for m, alerts in sorted(team.items()) if alerts}
    everyone = [*own, *(a for alerts in team.values() for a in alerts)]
    at_risk = sum(a.value_at_risk for a in everyone)
    subject = f"Churn warnings to {through}: {len(everyone)} customers, {at_risk:,.0f} {currency} at risk"
    lines = [f"Your customers warned up to {through}:", ""] if own else []
    for a in own:
        lines += [f"* {a.customer_id}: {a.level.upper()}", *_alert_lines(a, currency, "  "), ""]
    for m, alerts in team.items():
        lines += [f"Customers of {m}:", ""]
        for a in alerts:
            lines += [f"* {a.customer_id}: {a.level.upper()}", *_alert_lines(a, currency, "  "), ""]
    carried = ",".join(sorted(a.alert_id for a in everyone))
    message_id = f"digest:{recipient}:{through}:{zlib.crc32(carried.encode()):08x}"
    payload = {"id": message_id, "kind": "digest", "manager": recipient, "through": through.isoformat(),
               "alerts": msgspec.to_builtins(own), "team": {m: msgspec.to_builtins(a) for m, a in team.items()}}
    return Message(message_id, "digest", recipient, subject, "\n".join(lines), payload)


def _alert_lines(alert: Alert, currency: str, indent: str = "") -> list[str]:
    lines = [f"{indent}Value at risk: {alert.value_at_risk:,.0f} {currency} (monthly spend {alert.arpu:,.2f})",
             f"{indent}Suggested action: {alert.suggested_action or 'a relationship call'}", f"{indent}Why:"]
    return lines + [f"{indent}- {r.text}" for r in sorted(alert.reasons, key=lambda r: -r.importance)]
