"""`churnwatch queue`: the call centre's page. Agents see the day's calls in priority order, the
reasons in plain words, the suggested action, and record each call's outcome. The outcome goes
to the outcomes topic, and from there to the workers and the campaign report.

The day's calls are the daily plan (call_plan.py): the open alerts with the most value at risk
within the budget. Control-group alerts are never in it, so they never reach an agent. The page
rereads the alerts and outcomes topics every `refresh_s`. An outcome recorded here shows at
once. Customer ids stay pseudonyms inside the service. Only this page turns them into phone
numbers, from a lookup file that the operator controls (`--lookup`).
"""

from __future__ import annotations

import asyncio
import csv
import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import jinja2
import msgspec
from aiohttp import web
from kafka import KafkaProducer
from yarl import URL

from stream_app.alerts.call_plan import alert_day, plan_days
from stream_app.alerts.campaign import latest_outcomes
from stream_app.connect.kafka import client_options
from stream_app.connect.topic_reader import read_alerts, read_outcomes
from stream_app.contracts import segments
from stream_app.contracts.events import Alert, Outcome
from stream_app.errors import ConfigError
from stream_app.settings import Settings

__all__ = ["CallQueue", "QueueCall", "load_lookup", "make_app"]

log = logging.getLogger(__name__)
RESULTS = (("not_reached", "Not reached"), ("contacted", "Contacted"), ("accepted", "Accepted"),
           ("declined", "Declined"))
_templates = jinja2.Environment(loader=jinja2.PackageLoader("stream_app.alerts", "templates"), autoescape=True)


@dataclass(frozen=True)
class QueueCall:
    """One line of the page: the alert, the number to dial if the lookup knows it, its outcome."""

    alert: Alert
    phone: str | None
    outcome: Outcome | None


def load_lookup(path: Path) -> dict[str, str]:
    """The operator's `customer_id,phone` CSV (pseudonym -> number)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"customer_id", "phone"} <= set(reader.fieldnames):
            raise ConfigError(f"{path}: expected the columns customer_id,phone; got {reader.fieldnames!r}")
        return {row["customer_id"]: row["phone"] for row in reader}


class CallQueue:
    """The day's plan and the outcomes recorded so far, refreshed from the topics."""

    def __init__(self, settings: Settings, day: date | None = None, budget: int | None = None,
                 lookup: dict[str, str] | None = None) -> None:
        self.settings, self.fixed_day = settings, day
        self.budget = budget or settings.daily_call_budget
        self.lookup = lookup or {}
        self.day: date | None = day
        self.alerts: list[Alert] = []
        self.waiting = 0
        self.outcomes: dict[str, Outcome] = {}
        self._producer: KafkaProducer | None = None

    def refresh(self) -> None:
        """Reread alerts and outcomes; the day is the newest alert's unless one was given."""
        alerts = list(read_alerts(self.settings))
        outcomes = latest_outcomes(read_outcomes(self.settings))
        day = self.fixed_day or max((alert_day(a, self.settings.zone) for a in alerts), default=None)
        plan = plan_days(alerts, day, day, self.budget, self.settings.zone)[0] if day else None
        self.day, self.alerts = day, plan.calls if plan else []
        self.waiting = plan.waiting if plan else 0
        self.outcomes = latest_outcomes([*outcomes.values(), *self.outcomes.values()])

    def calls(self) -> list[QueueCall]:
        return [QueueCall(a, self.lookup.get(a.customer_id), self.outcomes.get(a.alert_id)) for a in self.alerts]

    def record(self, alert_id: str, result: str, offer: str | None, agent: str | None) -> Outcome:
        """Send one outcome to the outcomes topic; only for a call on today's list."""
        alert = next((a for a in self.alerts if a.alert_id == alert_id), None)
        if alert is None:
            raise LookupError(f"alert {alert_id!r} is not on the call list for {self.day}")
        if result not in dict(RESULTS):
            raise ConfigError(f"unknown result {result!r}; expected one of {', '.join(dict(RESULTS))}")
        outcome = Outcome(uuid.uuid4().hex, alert.customer_id, datetime.now(timezone.utc), alert_id, result,  # type: ignore[arg-type]
                          offer or None, agent or None)
        if self._producer is None:
            self._producer = KafkaProducer(**client_options(self.settings), acks="all")
        self._producer.send(self.settings.topics.outcomes, key=alert.customer_id.encode(),
                            value=msgspec.json.encode(outcome)).get(timeout=30)
        self.outcomes[alert_id] = outcome
        return outcome

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()


def make_app(queue: CallQueue, refresh_s: float = 60.0) -> web.Application:
    """The page (GET /), the outcome form (POST /outcome) and a refresh loop."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        html = _templates.get_template("queue.html").render(
            day=queue.day, budget=queue.budget, calls=queue.calls(), waiting=queue.waiting, results=RESULTS,
            segments=segments.NAMES, agent=request.query.get("agent", ""), message=request.query.get("message", ""))
        return web.Response(text=html, content_type="text/html")

    async def record(request: web.Request) -> web.Response:
        form = await request.post()
        agent = str(form.get("agent", ""))
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, queue.record, str(form.get("alert_id", "")), str(form.get("result", "")),
                str(form.get("offer", "")).strip(), agent)
        except (LookupError, ValueError) as exc:
            raise web.HTTPBadRequest(text=str(exc))
        raise web.HTTPSeeOther(str(URL("/").with_query(agent=agent, message="saved")))

    async def refresher(app: web.Application):
        async def loop() -> None:
            while True:
                await asyncio.sleep(refresh_s)
                try:
                    await asyncio.get_running_loop().run_in_executor(None, queue.refresh)
                except Exception:  # a broker hiccup must not take the page down; the next refresh retries
                    log.exception("refreshing the call list failed")

        task = asyncio.create_task(loop())
        yield
        task.cancel()

    app.router.add_get("/", page)
    app.router.add_post("/outcome", record)
    app.cleanup_ctx.append(refresher)
    return app
