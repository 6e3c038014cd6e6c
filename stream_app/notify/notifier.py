"""What the notifier does with the alerts it reads, and the daily digests.

An alert is for a manager when its customer has an account manager (their profile's), it is not
in the control group (a manager acting on it would spoil the measure of what calls do), and it is
still open (read late, after it expired, it is old news). A HIGH one is delivered at once; every
one waits in Redis for the next digest. An account manager the managers file does not list goes
to dead letter, as does a message no channel took (delivery.py), so that nothing is dropped
without a word. Both steps can be run again on the same alerts without a message sent twice.

A digest goes out once a day (`CHURNWATCH_NOTIFY_DIGEST_HOUR`) with the warnings of the days up to
the day before, by the alerts' own day (their events' time, like the call lists): a late alert of
a day already digested goes in the next one.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Sequence

import msgspec

from stream_app.alerts.call_plan import alert_day
from stream_app.contracts import keys
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.errors import InvalidEvent
from stream_app.ingest.deadletters import Located, dead_letter
from stream_app.metrics import NotifyMetrics
from stream_app.notify.delivery import Delivery, Failure
from stream_app.notify.directory import Directory, Manager
from stream_app.notify.messages import Message, digest, warning
from stream_app.settings import Settings

__all__ = ["Notifier", "DigestRun", "digest_due", "KEEP_S"]

log = logging.getLogger(__name__)
KEEP_S = 14 * 86400  # marks of messages sent and alerts digested are kept this long: an alert expires in a week
_decode = msgspec.json.Decoder(Alert).decode


@dataclass(frozen=True)
class DigestRun:
    through: str
    alerts: int
    recipients: int
    failed: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Digest:
    """Where a digest's dead letter says it came from: it has no record of its own."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int = -1
    offset: int = -1


def digest_due(now: datetime, hour: int) -> date:
    """The last day whose digest is due at `now` (in the operator's zone): the day before once
    the digest hour has come, else the day before that."""
    return now.date() - timedelta(days=1 if now.hour >= hour else 2)


class Notifier:
    def __init__(self, settings: Settings, directory: Directory, delivery: Delivery, redis: Any,
                 dead_letters: Callable[[list[DeadLetter]], Awaitable[None]], metrics: NotifyMetrics,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.settings, self.directory, self.delivery, self.redis = settings, directory, delivery, redis
        self.dead_letters, self.metrics, self.clock = dead_letters, metrics, clock

    async def take(self, records: Sequence[Located]) -> None:
        """One batch of alert records: HIGH warnings delivered, every warning kept for the digest."""
        now, managers = self.clock(), self.directory.managers
        dead: list[DeadLetter] = []
        waiting: dict[str, bytes] = {}
        warnings: list[tuple[Message, Located]] = []
        for rec in records:
            try:
                alert = _decode(rec.value or b"")
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                dead.append(dead_letter(rec, InvalidEvent("not_an_alert", None, str(exc)), now))
                continue
            outcome = self._outcome(alert, managers, now)
            self.metrics.alerts.labels(outcome).inc()
            if outcome == "unknown_manager":
                dead.append(dead_letter(rec, InvalidEvent(
                    "unknown_account_manager", "account_manager",
                    f"{alert.account_manager!r} is not in the managers file"), now))
            elif outcome == "for_manager":
                waiting[alert.alert_id] = rec.value or b""
                if alert.level == "high":
                    warnings.append((warning(alert, alert.account_manager, self.settings.currency), rec))
        await self._keep_for_digest(waiting)
        failures = await self.delivery.deliver([m for m, _ in warnings], managers)
        source = {m.message_id: rec for m, rec in warnings}
        dead += [_failed(f, source[f.message.message_id], now) for f in failures]
        if dead:
            await self.dead_letters(dead)

    def _outcome(self, alert: Alert, managers: dict[str, Manager], now: datetime) -> str:
        if not alert.account_manager:
            return "no_manager"
        if alert.holdout:
            return "control_group"
        if alert.expires_at <= now:
            return "expired"
        return "for_manager" if alert.account_manager in managers else "unknown_manager"

    async def _keep_for_digest(self, waiting: dict[str, bytes]) -> None:
        if not waiting:
            return
        ids = list(waiting)
        async with self.redis.pipeline(transaction=False) as pipe:
            for alert_id in ids:
                pipe.zscore(keys.NOTIFY_DIGESTED, alert_id)
            digested = await pipe.execute()
        new = {i: waiting[i] for i, d in zip(ids, digested) if d is None}
        if new:
            await self.redis.hset(keys.NOTIFY_PENDING, mapping=new)
        self.metrics.pending.set(await self.redis.hlen(keys.NOTIFY_PENDING))

    async def send_digests(self, through: date) -> DigestRun:
        """Every manager's digest of the warnings waiting up to the end of `through`, and each
        supervisor's with their team's; then those warnings stop waiting."""
        zone, managers = self.settings.zone, self.directory.managers
        due: dict[str, Alert] = {}
        for alert_id, raw in (await self.redis.hgetall(keys.NOTIFY_PENDING)).items():
            alert = _decode(raw)
            if alert_day(alert, zone) <= through:
                due[alert_id.decode()] = alert
        by_manager: dict[str, list[Alert]] = collections.defaultdict(list)
        for a in due.values():
            if a.account_manager in managers:  # one taken off the file since: their warnings go with them
                by_manager[a.account_manager].append(a)
        recipients = set(by_manager) | {s for m in by_manager if (s := managers[m].supervisor)}
        messages = [digest(r, through, by_manager.get(r, []),
                           {m: by_manager.get(m, []) for m in self.directory.team(r)}, self.settings.currency)
                    for r in sorted(recipients)]
        messages = [m for m in messages if m.payload["alerts"] or m.payload["team"]]
        failures = await self.delivery.deliver(messages, managers)
        if failures:
            await self.dead_letters([_failed(f, self._digest_source(f.message), self.clock()) for f in failures])
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            if due:
                pipe.hdel(keys.NOTIFY_PENDING, *due)
                pipe.zadd(keys.NOTIFY_DIGESTED, {i: now for i in due})
            pipe.zremrangebyscore(keys.NOTIFY_DIGESTED, "-inf", now - KEEP_S)
            pipe.zremrangebyscore(keys.NOTIFY_SENT, "-inf", now - KEEP_S)
            pipe.set(keys.NOTIFY_DIGEST_DAY, through.isoformat())
            pipe.hlen(keys.NOTIFY_PENDING)
            *_, pending = await pipe.execute()
        self.metrics.pending.set(pending)
        return DigestRun(through.isoformat(), len(due), len(messages), len(failures))

    async def digest_if_due(self) -> DigestRun | None:
        """The digests, if the day's are due and not yet sent (by this notifier or another)."""
        through = digest_due(self.clock().astimezone(self.settings.zone), self.settings.notify.digest_hour)
        last = await self.redis.get(keys.NOTIFY_DIGEST_DAY)
        if last is not None and date.fromisoformat(last.decode()) >= through:
            return None
        lock = self.redis.lock(keys.NOTIFY_DIGEST_LOCK, timeout=3600, blocking=False)
        if not await lock.acquire():
            return None  # another notifier is sending them
        try:
            run = await self.send_digests(through)
        finally:
            await lock.release()
        log.info("digests sent", extra={"through": run.through, "alerts": run.alerts, "recipients": run.recipients,
                                        "failed": run.failed})
        return run

    def _digest_source(self, message: Message) -> _Digest:
        body = msgspec.json.encode(message.payload)
        return _Digest(self.settings.topics.alerts, message.recipient.encode(), body)


def _failed(failure: Failure, rec: Located, now: datetime) -> DeadLetter:
    err = InvalidEvent("delivery_failed", f"{failure.channel}:{failure.message.recipient}",
                       f"{failure.message.message_id}: {failure.reason}")
    return dead_letter(rec, err, now)

