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
from typing import Any, Awaitable, Callable, Sequence

from stream_app.contracts import keys
from stream_app.metrics import NotifyMetrics
from stream_app.notify.channels import Email, Refused, Retry, Webhook
from stream_app.notify.directory import Manager
from stream_app.notify.messages import Message
from stream_app.settings.notify import Notify

__all__ = ["Delivery", "Failure", "channels"]


@dataclass(frozen=True)
class Failure:
    """A message a channel never took: refused, or still failing after every try."""

    message: Message
    channel: str
    reason: str


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
        done = await asyncio.gather(*(self._in_order(ms, managers[r]) for r, ms in by_recipient.items()))
        return [f for failures in done for f in failures]

    async def _in_order(self, messages: list[Message], manager: Manager) -> list[Failure]:
        failures = []
        for message in messages:
            for channel, address in channels(manager):
                if (failure := await self._once(message, channel, address)) is not None:
                    failures.append(failure)
        return failures

    async def _once(self, message: Message, channel: str, address: str) -> Failure | None:
        mark = f"{message.message_id}|{channel}"
        if await self.redis.zscore(keys.NOTIFY_SENT, mark) is not None:
            self.metrics.messages.labels(message.kind, channel, "already_sent").inc()
            return None
        wait, reason = self.settings.backoff_s, ""
        for attempt in range(1, self.settings.attempts + 1):
            try:
                await self._send[channel](address, message)
            except Refused as exc:
                reason = str(exc)
                break
            except Retry as exc:
                reason = str(exc)
                if attempt < self.settings.attempts:
                    self.metrics.retries.labels(channel).inc()
                    await self.sleep(min(wait, self.settings.backoff_max_s))
                    wait *= 2
                continue
            await self.redis.zadd(keys.NOTIFY_SENT, {mark: time.time()})
            self.metrics.messages.labels(message.kind, channel, "sent").inc()
            return None
        self.metrics.messages.labels(message.kind, channel, "failed").inc()
        return Failure(message, channel, reason)
