"""The daily digests: each manager's warnings waiting in Redis (notifier.py keeps them), and each
supervisor's with their team's, sent once a day (`CHURNWATCH_NOTIFY_DIGEST_HOUR`) with the
warnings of the days up to the day before, by the alerts' own day (their events' time, like the
call lists): a late alert of a day already digested goes in the next one.

One notifier sends them at a time (a Redis lock). The alerts a digest run carries are written
down before it sends anything: a run cut short (a crash) is run again with the same alerts, so
each digest has the same id as before and a receiver drops the one it already has. The warnings
of a manager taken off the managers file since go to dead letter, not into the void.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, Awaitable, Callable

import msgspec
from redis.exceptions import LockError

from stream_app.alerts.call_plan import alert_day
from stream_app.contracts import keys
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.errors import InvalidEvent
from stream_app.ingest.deadletters import dead_letter
from stream_app.metrics import NotifyMetrics
from stream_app.notify.delivery import Delivery, failed_delivery
from stream_app.notify.directory import Directory
from stream_app.notify.messages import Message, digest
from stream_app.settings import Settings

__all__ = ["Digests", "DigestRun", "digest_due", "KEEP_S", "LOCK_S"]

log = logging.getLogger(__name__)
# A digest run holds its lock this long at most: a run cut short by a crash delays the next by as much.
LOCK_S = 600
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
class _Source:
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


class Digests:
    def __init__(self, settings: Settings, directory: Directory, delivery: Delivery, redis: Any,
                 dead_letters: Callable[[list[DeadLetter]], Awaitable[None]], metrics: NotifyMetrics,
                 clock: Callable[[], datetime]) -> None:
        self.settings, self.directory, self.delivery, self.redis = settings, directory, delivery, redis
        self.dead_letters, self.metrics, self.clock = dead_letters, metrics, clock

    async def if_due(self) -> DigestRun | None:
        """The digests, if the day's are due and not yet sent (by this notifier or another)."""
        through = digest_due(self.clock().astimezone(self.settings.zone), self.settings.notify.digest_hour)
        if await self._sent_through(through):
            return None
        run = await self.send(through, wait_s=0, unless_sent=True)
        if run is not None:
            log.info("digests sent", extra=run.to_json())
        return run

    async def send(self, through: date, wait_s: float = 60.0, unless_sent: bool = False) -> DigestRun | None:
        """Every manager's digest of the warnings waiting up to the end of `through`, and each
        supervisor's with their team's; then those warnings stop waiting. None if another notifier
        holds the digests past `wait_s`, or (`unless_sent`) once they have gone out through that day."""
        lock = self.redis.lock(keys.NOTIFY_DIGEST_LOCK, timeout=LOCK_S, blocking_timeout=wait_s)
        if not await lock.acquire(blocking=wait_s > 0):
            return None
        try:
            if unless_sent and await self._sent_through(through):
                return None
            return await self._send(through)
        finally:
            try:
                await lock.release()
            except LockError as exc:  # it expired during a long run, or Redis is gone: the run is done
                log.warning("the digests' lock was not released: %s", exc)

    async def _sent_through(self, through: date) -> bool:
        last = await self.redis.get(keys.NOTIFY_DIGEST_DAY)
        return last is not None and date.fromisoformat(last.decode()) >= through

    async def _send(self, through: date) -> DigestRun:
        due, unreadable = await self._due(through)
        managers = self.directory.managers
        by_manager: dict[str, list[Alert]] = collections.defaultdict(list)
        orphans: list[tuple[Alert, bytes]] = []
        for a, raw in due.values():
            if a.account_manager in managers:
                by_manager[a.account_manager].append(a)
            else:
                orphans.append((a, raw))
        recipients = set(by_manager) | {s for m in by_manager if (s := managers[m].supervisor)}
        teams: dict[str, list[str]] = collections.defaultdict(list)  # from the one reading of the file this run uses
        for m, spec in sorted(managers.items()):
            if spec.supervisor:
                teams[spec.supervisor].append(m)
        messages = [digest(r, through, by_manager.get(r, []), {m: by_manager.get(m, []) for m in teams[r]},
                           self.settings.currency) for r in sorted(recipients)]
        messages = [m for m in messages if m.payload["alerts"] or m.payload["team"]]
        failures = await self.delivery.deliver(messages, managers)
        now = self.clock()
        dead = [failed_delivery(f, self._source(f.message), now) for f in failures]
        dead += [dead_letter(_Source(self.settings.topics.alerts, a.customer_id.encode(), raw), InvalidEvent(
            "unknown_account_manager", "account_manager",
            f"{a.account_manager!r} left the managers file before the digest of {through}"), now) for a, raw in orphans]
        dead += [dead_letter(_Source(self.settings.topics.alerts, None, raw), InvalidEvent(
            "not_an_alert", None, "a waiting warning no longer reads as an alert"), now) for raw in unreadable.values()]
        if dead:
            await self.dead_letters(dead)
        await self._done(through, [*due, *unreadable])
        return DigestRun(through.isoformat(), len(due), len(messages), len(failures))

    async def _due(self, through: date) -> tuple[dict[str, tuple[Alert, bytes]], dict[str, bytes]]:
        """The waiting alerts of days up to `through` (those of a run cut short if it was for the same
        day), and those that no longer read as alerts (written by another version): they cannot stop
        the digests, so they go to dead letter."""
        pending, unreadable = {}, {}
        for key, raw in (await self.redis.hgetall(keys.NOTIFY_PENDING)).items():
            try:
                pending[key.decode()] = (_decode(raw), raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                unreadable[key.decode()] = raw
        held = await self.redis.get(keys.NOTIFY_DIGEST_INFLIGHT)
        started = msgspec.json.decode(held) if held else {}
        if started.get("through") == through.isoformat():
            return {i: pending[i] for i in started["ids"] if i in pending}, unreadable
        zone = self.settings.zone
        due = {i: entry for i, entry in pending.items() if alert_day(entry[0], zone) <= through}
        await self.redis.set(keys.NOTIFY_DIGEST_INFLIGHT,
                             msgspec.json.encode({"through": through.isoformat(), "ids": sorted(due)}))
        return due, unreadable

    async def _done(self, through: date, ids: list[str]) -> None:
        now = time.time()
        last = await self.redis.get(keys.NOTIFY_DIGEST_DAY)
        newest = max(through, date.fromisoformat(last.decode())) if last else through
        async with self.redis.pipeline(transaction=True) as pipe:
            if ids:
                pipe.hdel(keys.NOTIFY_PENDING, *ids)
                pipe.zadd(keys.NOTIFY_DIGESTED, {i: now for i in ids})
            pipe.zremrangebyscore(keys.NOTIFY_DIGESTED, "-inf", now - KEEP_S)
            pipe.zremrangebyscore(keys.NOTIFY_SENT, "-inf", now - KEEP_S)
            pipe.set(keys.NOTIFY_DIGEST_DAY, newest.isoformat())
            pipe.delete(keys.NOTIFY_DIGEST_INFLIGHT)
            pipe.hlen(keys.NOTIFY_PENDING)
            *_, pending = await pipe.execute()
        self.metrics.pending.set(pending)

    def _source(self, message: Message) -> _Source:
        return _Source(self.settings.topics.alerts, message.recipient.encode(), msgspec.json.encode(message.payload))
