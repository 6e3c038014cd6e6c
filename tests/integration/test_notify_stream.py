"""`churnwatch notify` on a real broker (Tansu and Apache Kafka) and Redis: it follows the alerts
topic in its own consumer group, tells each manager of their customers' HIGH warnings, sends an
unknown manager's alert to the dead-letter topic, and after a restart reads on from where it
committed: no warning lost, none sent twice."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path

import msgspec
import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from stream_app.connect.topic_reader import read_topic
from stream_app.connect.topics import ensure_topics
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.metrics import NotifyMetrics
from stream_app.notify.service import run_notifier
from stream_app.settings import Notify, Settings, Topics
from tests.integration.receivers import MailReceiver, WebhookReceiver
from tests.integration.test_notify import SECRET, alert, managers_file

pytestmark = pytest.mark.integration


def produce(settings: Settings, *alerts: Alert) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    for a in alerts:
        producer.send(settings.topics.alerts, key=a.customer_id.encode(), value=msgspec.json.encode(a))
    producer.flush()
    producer.close()


async def notify_until(settings: Settings, done, timeout_s: float = 60) -> None:
    """Run the notifier until `done()` holds (then a little longer, for anything extra to show), and stop it."""
    stopping = asyncio.Event()
    task = asyncio.create_task(run_notifier(settings, NotifyMetrics(CollectorRegistry()), stopping))
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.5)
    stopping.set()
    await asyncio.wait_for(task, 30)
    assert done(), "the notifier did not deliver in time"


def test_the_notifier_follows_the_alerts_topic_and_after_a_restart_sends_nothing_twice(
        bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> None:
    hook = WebhookReceiver(SECRET.encode())
    today = datetime.now(timezone.utc).date()  # no digest is due for today's alerts: only the warnings go out
    with MailReceiver() as mail:
        notify = Notify(managers_file=managers_file(tmp_path, hook), webhook_secret=SECRET, smtp_host="127.0.0.1",
                        smtp_port=mail.port, smtp_security="none", backoff_s=0.2)
        settings = Settings(_env_file=None, kafka_bootstrap=bootstrap, redis_url=redis_url, notify=notify,
                            app_id=f"notify-{unique}", timezone="UTC",
                            topics=Topics(alerts=f"alerts-{unique}", deadletter=f"deadletter-{unique}"))
        ensure_topics(settings, bootstrap)
        produce(settings, alert("c-one", day=today), alert("c-two", manager="am-2", day=today),
                alert("c-stranger", manager="am-99", day=today), alert("c-control", holdout=True, day=today))

        async def phase(mails: int, requests: int) -> None:
            await hook.start()
            try:
                await notify_until(settings, lambda: len(mail.mails) == mails and len(hook.requests) == requests)
            finally:
                await hook.stop()

        asyncio.run(phase(mails=2, requests=1))
        produce(settings, alert("c-three", day=today))
        asyncio.run(phase(mails=3, requests=2))  # a restart: on from the committed offsets
        assert sorted(m["Subject"].split(",")[0] for m in mail.mails) == [
            "High churn risk: customer c-one", "High churn risk: customer c-three", "High churn risk: customer c-two"]
        assert sorted(hook.ids("am-1").values()) == [1, 1] and hook.bad_signatures == 0
        letters = list(read_topic(settings, settings.topics.deadletter, msgspec.json.Decoder(DeadLetter).decode))
        assert [(d.reason, d.key) for d in letters] == [("unknown_account_manager", "c-stranger")]
