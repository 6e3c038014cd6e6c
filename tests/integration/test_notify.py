"""Account managers are told of their customers' warnings through real channels: a signed webhook
to a real HTTP server (one that fails and recovers, one that refuses) and e-mail through a real
SMTP server (aiosmtpd), with what was sent kept in a real Redis. HIGH warnings at once, a daily
digest of the rest, the supervisor's with the team's; the control group, customers without a
manager and expired alerts never; nothing sent twice when the same alerts are read again."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Awaitable, Callable

import msgspec
import pytest
import yaml
from aiohttp import ClientSession
from prometheus_client import CollectorRegistry

from stream_app.connect.redis import connect_redis
from stream_app.contracts import keys
from stream_app.contracts.events import Alert, AlertReason, DeadLetter
from stream_app.metrics import NotifyMetrics
from stream_app.notify.channels import Email, Webhook
from stream_app.notify.delivery import Delivery
from stream_app.notify.directory import Directory
from stream_app.notify.messages import warning
from stream_app.notify.notifier import Notifier
from stream_app.settings import Notify, Settings
from tests.integration.receivers import MailReceiver, WebhookReceiver

pytestmark = pytest.mark.integration
SECRET = "s3cret-webhook-key-0123"
ZONE_DAY = date(2026, 11, 30)


@dataclass(frozen=True)
class Rec:
    """An alert record as the notifier reads one from its topic."""

    value: bytes | None
    offset: int
    topic: str = "churn.alerts"
    partition: int = 0
    key: bytes | None = None


def alert(customer: str, level: str = "high", manager: str = "am-1", holdout: bool = False,
          day: date = ZONE_DAY, open_days: float = 7, value: float = 800.0) -> Alert:
    now = datetime.now(timezone.utc)
    reason = AlertReason("mou_out_drop_mom", 101, 1.0, {}, {}, "Outgoing minutes in the last 30 days: 60, down 80%")
    return Alert(f"{customer}-{level}-{day}", customer, level, day.strftime("%Y-%m"), now,  # type: ignore[arg-type]
                 now + timedelta(days=open_days), datetime(day.year, day.month, day.day, 15, tzinfo=timezone.utc),
                 [reason], 101, "mid_high_end", "gold", 150.0, value, "plan offer", account_manager=manager,
                 holdout=holdout)


def records(*alerts: Alert) -> list[Rec]:
    return [Rec(msgspec.json.encode(a), i, key=a.customer_id.encode()) for i, a in enumerate(alerts)]


def managers_file(tmp_path: Path, hook: WebhookReceiver, **extra: dict) -> Path:
    path = tmp_path / "managers.yaml"
    doc = {"managers": {
        "am-1": {"name": "Zhang Min", "email": "zhang@north.example.com", "webhook": hook.url("am-1"),
                 "supervisor": "sup"},
        "am-2": {"name": "Li Wei", "email": "li@north.example.com", "supervisor": "sup"},
        "sup": {"name": "Wang Fang", "email": "wang@north.example.com"},
        **extra}}
    path.write_text(yaml.safe_dump(doc))
    return path


@dataclass
class World:
    notifier: Notifier
    dead: list[DeadLetter]
    metrics: NotifyMetrics
    waits: list[float]


def run(tmp_path: Path, redis_url: str, hook: WebhookReceiver, mail: MailReceiver,
        scenario: Callable[[World], Awaitable[None]], attempts: int = 4, **extra: dict) -> None:
    """`scenario` against a notifier with real channels and Redis; the webhook server runs in the same loop."""
    notify = Notify(managers_file=managers_file(tmp_path, hook, **extra), webhook_secret=SECRET, smtp_host="127.0.0.1",
                    smtp_port=mail.port, smtp_security="none", attempts=attempts, backoff_s=0.5)
    settings = Settings(_env_file=None, redis_url=redis_url, notify=notify, timezone="UTC")

    async def go() -> None:
        await hook.start()
        redis = connect_redis(redis_url)
        metrics, dead, waits = NotifyMetrics(CollectorRegistry()), [], []

        async def record_wait(seconds: float) -> None:
            waits.append(seconds)

        async def to_dead_letter(letters: list[DeadLetter]) -> None:
            dead.extend(letters)

        try:
            async with ClientSession() as session:
                delivery = Delivery(notify, redis, metrics, Webhook(session, notify), Email(notify), sleep=record_wait)
                notifier = Notifier(settings, Directory.of(settings), delivery, redis, to_dead_letter, metrics)
                await scenario(World(notifier, dead, metrics, waits))
        finally:
            await redis.aclose()
            await hook.stop()

    asyncio.run(go())


def counted(metrics: NotifyMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_a_high_warning_reaches_its_manager_signed_by_webhook_and_by_mail_and_only_theirs(
        tmp_path: Path, redis_url: str) -> None:
    hook = WebhookReceiver(SECRET.encode())
    batch = records(alert("c-high"), alert("c-medium", level="medium"), alert("c-control", holdout=True),
                    alert("c-nobody", manager=""), alert("c-expired", open_days=-1), alert("c-am2", manager="am-2"),
                    alert("c-stranger", manager="am-99"))

    async def scenario(w: World) -> None:
        await w.notifier.take([*batch, Rec(b'{"not": "an alert"}', 7)])
        assert set(hook.received) == {"warning:c-high-high-2026-11-30:am-1"}
        body = hook.received["warning:c-high-high-2026-11-30:am-1"]
        assert body["alert"]["customer_id"] == "c-high" and body["manager"] == "am-1" and hook.bad_signatures == 0
        assert sorted(m["To"] for m in mail.mails) == ["li@north.example.com", "zhang@north.example.com"]
        [mine] = mail.to("zhang@north.example.com")
        assert "c-high" in mine["Subject"] and "800 CNY at risk" in mine["Subject"]
        assert "Outgoing minutes in the last 30 days: 60, down 80%" in mine.get_content()
        assert mine["Message-ID"] == "<warning.c-high-high-2026-11-30.am-1@churnwatch>"
        stranger, garbage = w.dead  # one record that is not an alert does not stop the rest
        assert (stranger.reason, stranger.field, stranger.offset) == ("unknown_account_manager", "account_manager", 6)
        assert (garbage.reason, garbage.offset) == ("not_an_alert", 7)
        outcomes = {o: counted(w.metrics, "churnwatch_notify_alerts_total", outcome=o)
                    for o in ("for_manager", "control_group", "no_manager", "expired", "unknown_manager")}
        assert outcomes == {"for_manager": 3, "control_group": 1, "no_manager": 1, "expired": 1, "unknown_manager": 1}
        # Read again, as after a restart: nothing is sent twice.
        await w.notifier.take(batch)
        assert len(hook.requests) == 1 and len(mail.mails) == 2
        assert counted(w.metrics, "churnwatch_notify_messages_total", kind="warning", channel="email",
                       result="already_sent") == 2

    with MailReceiver() as mail:
        run(tmp_path, redis_url, hook, mail, scenario)


def test_a_receiver_that_fails_and_recovers_gets_the_warning_once_after_waits_that_double(
        tmp_path: Path, redis_url: str) -> None:
    hook = WebhookReceiver(SECRET.encode(), fail_first=3)

    async def scenario(w: World) -> None:
        await w.notifier.take(records(alert("c-high")))
        assert [r["id"] for r in hook.requests] == ["warning:c-high-high-2026-11-30:am-1"] * 4
        assert list(hook.received) == ["warning:c-high-high-2026-11-30:am-1"] and w.dead == []
        assert w.waits == [0.5, 1.0, 2.0]
        assert counted(w.metrics, "churnwatch_notify_retries_total", channel="webhook") == 3
        assert counted(w.metrics, "churnwatch_notify_messages_total", kind="warning", channel="webhook",
                       result="sent") == 1

    with MailReceiver() as mail:
        run(tmp_path, redis_url, hook, mail, scenario, attempts=4)


def test_a_receiver_down_past_every_try_and_one_that_refuses_send_the_warning_to_dead_letter(
        tmp_path: Path, redis_url: str) -> None:
    hook = WebhookReceiver(SECRET.encode(), fail_first=100)

    async def scenario(w: World) -> None:
        await w.notifier.take(records(alert("c-down"), alert("c-refused", manager="am-3"),
                                      alert("c-no-mailbox", manager="am-4"), alert("c-down-too"),
                                      alert("c-refused-too", manager="am-3")))
        letters = {(d.field, d.offset): d for d in w.dead}
        assert set(letters) == {("webhook:am-1", 0), ("webhook:am-3", 1), ("email:am-4", 2), ("webhook:am-1", 3),
                                ("webhook:am-3", 4)}
        assert "not tried" not in letters["webhook:am-3", 4].detail  # a refusal is the message's own
        assert "503" in letters["webhook:am-1", 0].detail and "400" in letters["webhook:am-3", 1].detail
        assert "550" in letters["email:am-4", 2].detail
        assert {d.reason for d in w.dead} == {"delivery_failed"}
        assert not [d for d in w.dead if "token-123" in d.detail]  # a webhook's path can hold its secret
        assert list(hook.ids("refuse/token-123").values()) == [1, 1]  # each tried once: a refusal is not retried
        # Every try for the first, then dead letter; the second is not tried against a receiver that is down.
        assert sum(hook.ids("am-1").values()) == 3 and "not tried" in letters["webhook:am-1", 3].detail
        assert len(mail.to("zhang@north.example.com")) == 2  # the e-mail channel of am-1 still got both

    with MailReceiver(refuse={"nobody@north.example.com"}) as mail:
        run(tmp_path, redis_url, hook, mail, scenario, attempts=3,
            **{"am-3": {"name": "Refused", "webhook": hook.url("refuse/token-123")},
               "am-4": {"name": "Gone", "email": "nobody@north.example.com"}})


def test_digests_carry_each_managers_warnings_once_and_the_supervisor_gets_the_teams(
        tmp_path: Path, redis_url: str) -> None:
    hook = WebhookReceiver(SECRET.encode())
    day, late = ZONE_DAY, ZONE_DAY + timedelta(days=1)
    batch = records(alert("c1", level="low"), alert("c1", level="high"), alert("c2", level="medium"),
                    alert("c3", level="medium", manager="am-2"), alert("c4", level="medium", day=late))

    async def scenario(w: World) -> None:
        await w.notifier.take(batch)
        run_ = await w.notifier.digests.send(day)
        assert (run_.alerts, run_.recipients, run_.failed) == (4, 3, 0)
        digests = {k: v for k, v in hook.received.items() if k.startswith("digest:")}
        [mine] = digests.values()
        assert [a["customer_id"] for a in mine["alerts"]] == ["c1", "c2"] and mine["team"] == {}
        assert [a["level"] for a in mine["alerts"]] == ["high", "medium"]  # c1 once, at their strongest
        [boss] = mail.to("wang@north.example.com")
        text = boss.get_content()
        assert "Customers of am-1:" in text and "Customers of am-2:" in text and "c3" in text
        assert "c4" not in text  # the next day's: it waits for the next digest
        [li] = mail.to("li@north.example.com")
        assert "c3" in li.get_content() and "c1" not in li.get_content()
        sent = len(mail.mails)
        again = await w.notifier.digests.send(day)
        assert (again.alerts, again.recipients) == (0, 0) and len(mail.mails) == sent
        await w.notifier.take(batch)  # read again after the digest: not digested twice
        later = await w.notifier.digests.send(late)
        assert later.alerts == 1 and "c4" in mail.to("zhang@north.example.com")[-1].get_content()

    with MailReceiver() as mail:
        run(tmp_path, redis_url, hook, mail, scenario)


def test_the_digests_go_out_once_a_day_from_the_digest_hour(tmp_path: Path, redis_url: str) -> None:
    hook = WebhookReceiver(SECRET.encode())

    async def scenario(w: World) -> None:
        await w.notifier.take(records(alert("c1", level="medium")))
        w.notifier.digests.clock = lambda: datetime(2026, 12, 1, 7, 30, tzinfo=timezone.utc)
        early = await w.notifier.digests.if_due()  # before 08:00 the digest of 11-29 is the one due
        assert early is not None and (early.through, early.alerts) == ("2026-11-29", 0)
        w.notifier.digests.clock = lambda: datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
        due = await w.notifier.digests.if_due()
        assert due is not None and (due.through, due.alerts, due.recipients) == ("2026-11-30", 1, 2)
        assert await w.notifier.digests.if_due() is None  # sent today already
        assert len(mail.to("zhang@north.example.com")) == 1 and len(mail.to("wang@north.example.com")) == 1

    with MailReceiver() as mail:
        run(tmp_path, redis_url, hook, mail, scenario)


def test_a_digest_cut_short_is_sent_again_with_the_same_alerts_and_a_managers_removal_dead_letters_theirs(
        tmp_path: Path, redis_url: str) -> None:
    hook = WebhookReceiver(SECRET.encode())

    async def scenario(w: World) -> None:
        await w.notifier.take(records(alert("c1", level="medium"), alert("c2", level="medium"),
                                      alert("c3", level="medium", manager="am-2")))
        # What a run that crashed after writing down its alerts leaves: it carried c1 only (c2 came late).
        await w.notifier.redis.set(keys.NOTIFY_DIGEST_INFLIGHT, msgspec.json.encode(
            {"through": ZONE_DAY.isoformat(), "ids": [f"c1-medium-{ZONE_DAY}"]}))
        path = w.notifier.directory._watched.path
        doc = yaml.safe_load(path.read_text())
        del doc["managers"]["am-2"]
        path.write_text(yaml.safe_dump(doc))
        os.utime(path, ns=(1, 4_000_000_000_000_000_000))
        run_ = await w.notifier.digests.send(ZONE_DAY)
        assert run_ is not None and run_.alerts == 1
        [mine] = [v for k, v in hook.received.items() if k.startswith("digest:am-1:")]
        assert [a["customer_id"] for a in mine["alerts"]] == ["c1"]
        later = await w.notifier.digests.send(ZONE_DAY)  # c2, and am-2's c3 whose manager left the file
        assert later is not None and later.alerts == 2
        [orphan] = w.dead
        assert (orphan.reason, orphan.key) == ("unknown_account_manager", "c3")

    with MailReceiver() as mail:
        run(tmp_path, redis_url, hook, mail, scenario)


def test_redis_failing_mid_delivery_raises_its_own_error_for_the_notifier_to_wait_on(tmp_path: Path) -> None:
    """The service waits and retries on a RedisError; one wrapped in an ExceptionGroup would stop it."""
    from redis.exceptions import RedisError

    hook = WebhookReceiver(SECRET.encode())

    async def scenario(w: World) -> None:
        messages = [warning(alert("c1"), "am-1", "CNY"), warning(alert("c2", manager="am-2"), "am-2", "CNY")]
        with pytest.raises(RedisError):  # raised by the two recipients' deliveries, side by side
            await w.notifier.delivery.deliver(messages, w.notifier.directory.managers)

    with MailReceiver() as mail:
        run(tmp_path, "redis://127.0.0.1:1/0", hook, mail, scenario)  # nothing listens on port 1


def test_a_waiting_warning_that_no_longer_reads_as_an_alert_goes_to_dead_letter_and_the_digests_go_out(
        tmp_path: Path, redis_url: str) -> None:
    hook = WebhookReceiver(SECRET.encode())

    async def scenario(w: World) -> None:
        await w.notifier.take(records(alert("c1", level="medium")))
        await w.notifier.redis.hset(keys.NOTIFY_PENDING, "old-alert", b'{"written": "by another version"}')
        run_ = await w.notifier.digests.send(ZONE_DAY)
        assert run_ is not None and (run_.alerts, run_.recipients) == (1, 2)
        [broken] = w.dead
        assert broken.reason == "not_an_alert" and not await w.notifier.redis.hexists(keys.NOTIFY_PENDING, "old-alert")

    with MailReceiver() as mail:
        run(tmp_path, redis_url, hook, mail, scenario)
