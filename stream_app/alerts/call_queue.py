"""The call centre's day, as the call-queue page serves it: the day's calls from the daily plan
(call_plan.py), the outcomes recorded so far, and the rules for recording one.

The alerts and outcomes topics are followed (connect/topic_reader.TopicFollower): a refresh
reads only what was written since the one before. Alerts whose day is more than `KEEP_DAYS`
before the page's day are let go: an alert stays open a week (the policy's `expiry_days`), so
they can no longer be on the list, and the page's memory stays bounded however long it runs.

An outcome is recorded as the logged-in agent. The agent who recorded it may change it for
`CHURNWATCH_QUEUE_CORRECT_MINUTES` (a wrong button); a `not reached` call may be tried again
by anyone who sees its queue. The latest outcome is the one that counts, for the workers and
the campaign report alike.
"""

from __future__ import annotations

import csv
import threading
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import msgspec
from kafka import KafkaProducer
from kafka.errors import KafkaError

from stream_app.alerts.agents import Agent
from stream_app.alerts.call_plan import alert_day, for_call_centre, plan_days
from stream_app.alerts.campaign import latest_outcomes
from stream_app.connect.kafka import client_options
from stream_app.connect.topic_reader import TopicFollower, outcome_or_none
from stream_app.contracts.events import Alert, Outcome
from stream_app.errors import ChurnwatchError, ConfigError
from stream_app.settings import Settings

__all__ = ["CallQueue", "QueueCall", "OutcomeRefused", "NotRecorded", "RESULTS", "load_lookup", "KEEP_DAYS"]

RESULTS = (("not_reached", "Not reached"), ("contacted", "Contacted"), ("accepted", "Accepted"),
           ("declined", "Declined"))
KEEP_DAYS = 60


class OutcomeRefused(ConfigError):
    """An outcome the agent may not record: not their call, or no longer theirs to change."""


class NotRecorded(ChurnwatchError):
    """The broker did not confirm an outcome in time: it may or may not land."""


@dataclass(frozen=True)
class QueueCall:
    """One line of the page: the alert, the number to dial if the lookup knows it, its outcome,
    and until when the agent looking at it may still record or change that outcome."""

    alert: Alert
    phone: str | None
    outcome: Outcome | None
    open_until: datetime | None  # the end of the agent's correction window, if one is running
    open: bool  # the agent may record an outcome: none yet, only "not reached" so far, or theirs to correct


def load_lookup(path: Path) -> dict[str, str]:
    """The operator's `customer_id,phone` CSV (pseudonym -> number)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"customer_id", "phone"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: expected the columns customer_id,phone; got {reader.fieldnames!r}")
        return {row["customer_id"]: row["phone"] for row in reader}


def _now() -> datetime:
    return datetime.now(timezone.utc)


class CallQueue:
    """The day's plan and the outcomes recorded so far, following the topics."""

    def __init__(self, settings: Settings, day: date | None = None, budget: int | None = None,
                 lookup: dict[str, str] | None = None, clock: Callable[[], datetime] = _now) -> None:
        self.settings, self.fixed_day, self.clock = settings, day, clock
        self.budget = budget or settings.daily_call_budget
        self.lookup = lookup or {}
        self.correct_for = timedelta(minutes=settings.queue_correct_minutes)
        self.day: date | None = day
        self.alerts: list[Alert] = []  # the day's calls, every queue's, in priority order
        self.waiting = 0
        self.outcomes: dict[str, Outcome] = {}
        self._known: dict[str, Alert] = {}
        # When each call got its first outcome other than "not reached": corrections are timed from it.
        self._settled: dict[str, datetime] = {}
        self._lock = threading.Lock()  # a refresh and the agents' clicks come on different threads
        self._followers: tuple[TopicFollower[Alert], TopicFollower[Outcome | None]] | None = None
        self._producer: KafkaProducer | None = None

    def refresh(self) -> None:
        """Read what the topics gained since the last refresh and plan the day again; the day is
        the newest alert's unless one was given, and never after today (an alert from a wrong
        clock must not move the page past every real call)."""
        if self._followers is None:
            self._followers = (TopicFollower(self.settings, self.settings.topics.alerts,
                                             msgspec.json.Decoder(Alert).decode),
                               TopicFollower(self.settings, self.settings.topics.outcomes, outcome_or_none))
        alerts, outcomes = self._followers
        new_alerts, new_outcomes = list(alerts.read_new()), [o for o in outcomes.read_new() if o]
        with self._lock:
            self._known.update((a.alert_id, a) for a in new_alerts)
            self._take(new_outcomes)
            self._plan()

    def take(self, outcomes: list[Outcome]) -> None:
        """Outcomes read elsewhere (the topic, or a test): the latest of each call counts."""
        with self._lock:
            self._take(outcomes)

    def _take(self, outcomes: list[Outcome]) -> None:
        self._settle(outcomes)
        self.outcomes = latest_outcomes([*self.outcomes.values(), *outcomes])

    def _plan(self) -> None:
        zone = self.settings.zone
        today = self.clock().astimezone(zone).date()
        days = [d for a in self._known.values() if (d := alert_day(a, zone)) <= today]
        day = self.fixed_day or max(days, default=None)
        if day is not None:
            oldest = day - timedelta(days=KEEP_DAYS)
            self._known = {k: a for k, a in self._known.items() if alert_day(a, zone) >= oldest}
            self.outcomes = {k: o for k, o in self.outcomes.items() if k in self._known}
            self._settled = {k: t for k, t in self._settled.items() if k in self._known}
        alerts = for_call_centre(self._known.values(), self.settings.managed_by_call_centre)
        plan = plan_days(alerts, day, day, self.budget, zone, self.settings.region_call_budgets)[0] \
            if day else None
        self.day, self.alerts = day, plan.calls if plan else []
        self.waiting = plan.waiting if plan else 0

    def _settle(self, outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if o.result != "not_reached" and (o.alert_id not in self._settled or o.ts < self._settled[o.alert_id]):
                self._settled[o.alert_id] = o.ts

    @property
    def records_read(self) -> int:
        """Records read from the two topics since the page started."""
        return sum(f.records_read for f in self._followers) if self._followers else 0

    def _open_until(self, outcome: Outcome | None, agent: Agent) -> datetime | None:
        """Until when `agent` may change `outcome`: their own, within the window from the call's first
        outcome (a correction does not restart it); None if not, or if it needs no correction."""
        if outcome is None or outcome.agent_id != agent.agent_id:
            return None
        settled = self._settled.get(outcome.alert_id)
        if settled is None:
            return None  # only "not reached" so far: open to anyone all day
        until = settled + self.correct_for
        return until if until > self.clock() else None

    def _is_open(self, outcome: Outcome | None, agent: Agent) -> bool:
        if outcome is None:
            return True
        if outcome.alert_id not in self._settled:
            return True  # not reached, never anything else: try again
        return self._open_until(outcome, agent) is not None

    def calls(self, agent: Agent) -> list[QueueCall]:
        """The day's calls in the agent's queues and regions, in priority order."""
        with self._lock:
            return [QueueCall(a, self.lookup.get(a.customer_id), o := self.outcomes.get(a.alert_id),
                              self._open_until(o, agent), self._is_open(o, agent))
                    for a in self.alerts if agent.sees(a.queue, a.region)]

    def record(self, alert_id: str, result: str, offer: str | None, agent: Agent) -> Outcome:
        """Send one outcome to the outcomes topic, as `agent`: only for a call of the day in
        their queues that has no outcome yet, was not reached, or is theirs to correct."""
        with self._lock:  # one agent's click at a time: two on the same call cannot both pass the check
            alert = next((a for a in self.alerts if a.alert_id == alert_id and agent.sees(a.queue, a.region)), None)
            if alert is None:
                raise OutcomeRefused(f"alert {alert_id!r} is not on {agent.agent_id}'s call list for {self.day}")
            if result not in dict(RESULTS):
                raise OutcomeRefused(f"unknown result {result!r}; expected one of {', '.join(dict(RESULTS))}")
            seen = self.outcomes.get(alert_id)
            if seen is not None and not self._is_open(seen, agent):
                raise OutcomeRefused(f"alert {alert_id!r} already has an outcome ({seen.result} by {seen.agent_id}) "
                                     f"that {agent.agent_id} can no longer change")
            # A correction is newer than what it corrects, even on a clock that has not moved.
            ts = max(self.clock(), seen.ts + timedelta(microseconds=1)) if seen else self.clock()
            outcome = Outcome(uuid.uuid4().hex, alert.customer_id, ts, alert_id, result,  # type: ignore[arg-type]
                              offer or None, agent.agent_id)
            if self._producer is None:
                self._producer = KafkaProducer(**client_options(self.settings), acks="all")
            try:
                self._producer.send(self.settings.topics.outcomes, key=alert.customer_id.encode(),
                                    value=msgspec.json.encode(outcome)).get(timeout=30)
            except KafkaError as exc:
                raise NotRecorded(f"the outcome could not be confirmed by the broker ({exc.__class__.__name__}); "
                                  "reload the page in a minute and check it before recording it again") from None
            self.outcomes[alert_id] = outcome
            self._settle([outcome])
            return outcome

    def close(self) -> None:
        for follower in self._followers or ():
            follower.close()
        if self._producer is not None:
            self._producer.close()
