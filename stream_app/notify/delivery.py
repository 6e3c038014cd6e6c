"""Delivering messages through each recipient's channels: at least once, tried again with
back-off, and not sent again once a channel took it.

A mark per message and channel is kept in Redis when the channel takes the message; a message
read again (a restart, a rebalance) finds its mark and is not sent twice. Between the channel
taking it and the mark (a crash in that instant) it can be sent twice: the receiver drops the
second by the message id (channels.py). A recipient's messages go one after another, in order;
different recipients' go side by side, so a receiver that is down delays only its own.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Awaitable, Callable, Sequence

from stream_app.contracts import keys
from stream_app.contracts.events import DeadLetter
from stream_app.errors import InvalidEvent
from stream_app.ingest.deadletters import Located, dead_letter
from stream_app.metrics import NotifyMetrics
from stream_app.notify.channels import Email, Refused, Retry, Webhook
from stream_app.notify.directory import Manager
from stream_app.notify.messages import Message
from stream_app.settings.notify import Notify

__all__ = ["Delivery", "Failure", "channels", "failed_delivery"]


@dataclass(frozen=True)
class Failure:
    """A message a channel never took: refused, or still failing after every try."""

    message: Message
    channel: str
    reason: str
    down: bool = False  # every try failed to reach the receiver (not a refusal)


def failed_delivery(failure: Failure, rec: Located, now: datetime) -> DeadLetter:
    """The dead letter of a message no try delivered: the reason, `<channel>:<recipient>` and `rec`,
    the record it came from."""
    err = InvalidEvent("delivery_failed", f"{failure.channel}:{failure.message.recipient}",
                       f"{failure.message.message_id}: {failure.reason}")
    return dead_letter(rec, err, now)


def channels(manager: Manager) -> list[tuple[str, str]]:
    """(channel, address) for each way `manager` is reached."""
    return [*([("webhook", str(manager.webhook))] if manager.webhook else []),
            *([("email", manager.email)] if manager.email else [])]


class Delivery:
    def __init__(self, settings: Notify, redis: Any, metrics: NotifyMetrics, webhook: Webhook, email: Email,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.settings, self.redis, self.metrics, self.sleep = settings, redis, metrics, sleep
        self._send = {"webhook": webhook.send, "email": email.send}

    async def deliver(self, messages: Sequence[Message], managers: dict[str, Manager]) -> list[Failure]:
        """Send every message to its recipient (who must be in `managers`) by each of their channels."""
        by_recipient: dict[str, list[Message]] = collections.defaultdict(list)
        for m in messages:
            by_recipient[m.recipient].append(m)
        # A TaskGroup: if one recipient's delivery raises (Redis is gone), the others stop too,
        # so that the batch, handled again, does not race copies of itself still retrying.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._in_order(ms, managers[r])) for r, ms in by_recipient.items()]
        except* Exception as failed:  # the first of them, as one call would raise it (the caller retries on it)
            raise failed.exceptions[0] from None
        return [f for t in tasks for f in t.result()]

    async def _in_order(self, messages: list[Message], manager: Manager) -> list[Failure]:
        """One recipient's messages in order. Once a channel has failed every try, the recipient's
        next messages on it fail at once: a receiver that is down costs a batch one give-up, not one
        each. (A refusal is the message's own: the next are still tried.)"""
        failures: list[Failure] = []
        down: dict[str, str] = {}
        for message in messages:
            for channel, address in channels(manager):
                if await self._sent(message, channel):
                    continue
                if channel in down:
                    self.metrics.messages.labels(message.kind, channel, "failed").inc()
                    failures.append(Failure(message, channel, f"not tried: {down[channel]}"))
                elif (failure := await self._try(message, channel, address)) is not None:
                    failures.append(failure)
                    if failure.down:
                        down[channel] = failure.reason
        return failures

    async def _sent(self, message: Message, channel: str) -> bool:
        if await self.redis.zscore(keys.NOTIFY_SENT, f"{message.message_id}|{channel}") is None:
            return False
        self.metrics.messages.labels(message.kind, channel, "already_sent").inc()
        return True

    async def _try(self, message: Message, channel: str, address: str) -> Failure | None:
        wait, reason, down = self.settings.backoff_s, "", False
        give_up = time.monotonic() + self.settings.give_up_s
        for attempt in range(1, self.settings.attempts + 1):
            try:
                await self._send[channel](address, message)
            except Refused as exc:
                reason, down = str(exc), False
                break
            except Retry as exc:
                reason, down = str(exc), True
                pause = min(wait, self.settings.backoff_max_s)
                if attempt == self.settings.attempts or time.monotonic() + pause > give_up:
                    break
                self.metrics.retries.labels(channel).inc()
                await self.sleep(pause)
                wait *= 2
                continue
            await self.redis.zadd(keys.NOTIFY_SENT, {f"{message.message_id}|{channel}": time.time()})
            self.metrics.messages.labels(message.kind, channel, "sent").inc()
            return None
        self.metrics.messages.labels(message.kind, channel, "failed").inc()
        return Failure(message, channel, reason, down)
