"""`churnwatch notify` on a real broker (Tansu and Apache Kafka) and Redis: it follows the alerts
topic in its own consumer group, tells each manager of their customers' HIGH warnings, sends an
unknown manager's alert to the dead-letter topic, and after a restart reads on from where it
committed: no warning lost, none sent twice."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import msgspec
import pytest
import yaml
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry

from stream_app.alerts.call_plan import alert_day
from stream_app.connect.topic_reader import read_topic
from stream_app.connect.topics import ensure_topics
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.metrics import NotifyMetrics
from stream_app.notify.service import open_notifier, run_notifier
from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.rules.pack import load_rules
from stream_app.settings import Notify, Settings, Topics
from tests.factories import loosened_pack
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
    # Alerts of tomorrow: no digest is due for them even past midnight, so only the warnings go out.
    today = datetime.now(timezone.utc).date() + timedelta(days=1)
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


def test_on_the_simulator_each_manager_hears_exactly_their_customers_warnings_once_despite_a_replay(
        tansu_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> None:
    """Three regions with two managers each and a supervisor per region: the live pipeline's alerts
    (the worker's code, replayed in-process) reach the topic, the first half twice as a worker
    restarted mid-way sends them, and the notifier is restarted between the halves."""
    sim = Simulator(SimConfig(customers=400, days=105, regions=3, managers_per_region=2, seed=4))
    settings = Settings(_env_file=None)
    rules = load_rules([loosened_pack(tmp_path / "alert_rules")])  # 13 high warnings for all 6 managers
    alerts = replay(((r.topic, r.key, r.value) for r in sim.records()), settings, lambda: rules, learn=False).alerts
    hook = WebhookReceiver(SECRET.encode())
    managers = {f"am-{r}-{k}": {"webhook": hook.url(f"am-{r}-{k}"), "supervisor": f"sup-{r}"}
                for r in range(3) for k in range(2)}
    managers |= {f"sup-{r}": {"webhook": hook.url(f"sup-{r}")} for r in range(3)}
    path = tmp_path / "managers.yaml"
    path.write_text(yaml.safe_dump({"managers": managers}))
    settings = Settings(_env_file=None, kafka_bootstrap=tansu_bootstrap, redis_url=redis_url, app_id=f"sim-{unique}",
                        notify=Notify(managers_file=path, webhook_secret=SECRET, backoff_s=0.2),
                        topics=Topics(alerts=f"alerts-{unique}", deadletter=f"deadletter-{unique}"))
    ensure_topics(settings, tansu_bootstrap)
    warned = {m: {a.alert_id for a in alerts if a.account_manager == m and a.level == "high" and not a.holdout}
              for m in managers}
    assert sum(map(len, warned.values())) >= 5 and len({m for m, ids in warned.items() if ids}) >= 3, warned
    half = len(alerts) // 2
    first = {a.alert_id for a in alerts[:half]} & set().union(*warned.values())

    async def phase(expected: int, *batches: list[Alert]) -> None:
        for batch in batches:
            produce(settings, *batch)
        await hook.start()
        try:
            await notify_until(settings, lambda: sum(i.startswith("warning:") for i in hook.received) >= expected)
        finally:
            await hook.stop()

    asyncio.run(phase(len(first), alerts[:half]))
    # A worker restarted mid-way sends its last alerts again; the notifier goes on from its offsets.
    asyncio.run(phase(sum(map(len, warned.values())), alerts[:half], alerts[half:]))
    for m, ids in warned.items():
        got = {i: n for i, n in hook.ids(m).items() if i.startswith("warning:")}
        assert {i.split(":")[1] for i in got} == ids, m  # each of their customers' HIGH warnings ...
        assert set(got.values()) <= {1}, m  # ... once
    last = max(alert_day(a, settings.zone) for a in alerts)

    async def digests() -> None:
        await hook.start()
        try:
            async with open_notifier(settings, NotifyMetrics(CollectorRegistry())) as notifier:
                await notifier.digests.send(last)
        finally:
            await hook.stop()

    asyncio.run(digests())  # what the notifier's own daily run (the alerts' days are past) left waiting
    for m in managers:
        bodies = [b for i, b in hook.received.items() if i.startswith(f"digest:{m}:")]
        if m.startswith("am-"):
            carried = [a["alert_id"] for b in bodies for a in b["alerts"]]
            theirs = {a.customer_id for a in alerts if a.account_manager == m and not a.holdout}
            assert {a["customer_id"] for b in bodies for a in b["alerts"]} == theirs, m
            assert len(carried) == len(set(carried)), m  # no warning in two digests
        else:
            team = {a.account_manager for a in alerts if a.account_manager.startswith(f"am-{m[4:]}-") and not a.holdout}
            assert {t for b in bodies for t in b["team"]} == team, m


def test_notify_digest_runs_the_days_digests_now_and_says_what_it_sent(
        tansu_bootstrap: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from stream_app.cli import main

    path = tmp_path / "managers.yaml"
    path.write_text(yaml.safe_dump({"managers": {"am-1": {"webhook": "http://127.0.0.1:1/hook"}}}))
    for name, value in (("KAFKA_BOOTSTRAP", tansu_bootstrap), ("REDIS_URL", redis_url),
                        ("CHURNWATCH_NOTIFY_MANAGERS_FILE", str(path)), ("CHURNWATCH_NOTIFY_WEBHOOK_SECRET", SECRET)):
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["notify", "digest", "--through", "2026-11-30", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1]) == {"through": "2026-11-30", "alerts": 0,
                                                                   "recipients": 0, "failed": 0}
