"""What the notifier does with the alerts it reads.

An alert is for a manager when its customer has an account manager (their profile's), it is not
in the control group (a manager acting on it would spoil the measure of what calls do), and it is
still open (read late, after it expired, it is old news). A HIGH one is delivered at once; every
one waits in Redis for the next digest. An account manager the managers file does not list goes
to dead letter, as does a message no channel took (delivery.py), so that nothing is dropped
without a word. Both steps can be run again on the same alerts without a message sent twice.
The daily digests are digests.py's.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Sequence

import msgspec

from stream_app.contracts import keys
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.errors import InvalidEvent
from stream_app.ingest.deadletters import Located, dead_letter
from stream_app.metrics import NotifyMetrics
from stream_app.notify.delivery import Delivery, failed_delivery
from stream_app.notify.digests import Digests
from stream_app.notify.directory import Directory, Manager
from stream_app.notify.messages import Message, warning
from stream_app.settings import Settings

__all__ = ["Notifier"]

log = logging.getLogger(__name__)
_decode = msgspec.json.Decoder(Alert).decode


class Notifier:
    def __init__(self, settings: Settings, directory: Directory, delivery: Delivery, redis: Any,
                 dead_letters: Callable[[list[DeadLetter]], Awaitable[None]], metrics: NotifyMetrics,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        self.settings, self.directory, self.delivery, self.redis = settings, directory, delivery, redis
        self.dead_letters, self.metrics, self.clock = dead_letters, metrics, clock
        self.digests = Digests(settings, directory, delivery, redis, dead_letters, metrics, clock)

    async def take(self, records: Sequence[Located]) -> None:
        """One batch of alert records: HIGH warnings delivered, every warning kept for the digest."""
        now, managers = self.clock(), self.directory.managers
        dead: list[DeadLetter] = []
        waiting: dict[str, bytes] = {}
        warnings: list[tuple[Message, Located]] = []
        for rec in records:
            try:
                alert = _decode(rec.value or b"")
                outcome = self._outcome(alert, managers, now)
                message = warning(alert, alert.account_manager, self.settings.currency) \
                    if outcome == "for_manager" and alert.level == "high" else None
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                dead.append(dead_letter(rec, InvalidEvent("not_an_alert", None, str(exc)), now))
                continue
            except Exception as exc:  # noqa: BLE001 - one record must not stop the notifier
                log.warning("an alert raised %s", type(exc).__name__, exc_info=True)
                dead.append(dead_letter(rec, InvalidEvent("unreadable", None, f"{type(exc).__name__}: {exc}"), now))
                continue
            self.metrics.alerts.labels(outcome).inc()
            if outcome == "unknown_manager":
                dead.append(dead_letter(rec, InvalidEvent(
                    "unknown_account_manager", "account_manager",
                    f"{alert.account_manager!r} is not in the managers file"), now))
            elif outcome == "for_manager":
                waiting[alert.alert_id] = rec.value or b""
                if message is not None:
                    warnings.append((message, rec))
        await self._keep_for_digest(waiting)
        failures = await self.delivery.deliver([m for m, _ in warnings], managers)
        source = {m.message_id: rec for m, rec in warnings}
        dead += [failed_delivery(f, source[f.message.message_id], now) for f in failures]
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
