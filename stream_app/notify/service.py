"""`churnwatch notify`: follows the alerts topic in its own consumer group and tells the account
managers (notifier.py), committing a batch's offsets only once it is handled, so that a crash or a
rebalance hands the same alerts on and none is lost. A broker or Redis that fails is waited for and
the batch handled again (nothing in it is sent twice: delivery.py); the digests go out when due.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

import aiohttp
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import CommitFailedError, KafkaError
from redis.exceptions import RedisError

from stream_app.connect.kafka import client_options
from stream_app.connect.redis import connect_redis
from stream_app.contracts.events import DeadLetter
from stream_app.metrics import NotifyMetrics
from stream_app.notify.channels import Email, Webhook
from stream_app.notify.delivery import Delivery
from stream_app.notify.directory import Directory
from stream_app.notify.notifier import Notifier
from stream_app.settings import Settings

__all__ = ["run_notifier", "open_notifier", "BATCH"]

log = logging.getLogger(__name__)
BATCH = 500  # alerts handled, then committed, at a time
_DIGEST_EVERY_S = 30.0


class _Opened:
    """The notifier with the clients it needs, closed together."""

    def __init__(self, settings: Settings, metrics: NotifyMetrics, directory: Directory | None = None) -> None:
        assert settings.redis_url is not None
        self.settings = settings
        self.redis = connect_redis(settings.redis_url.get_secret_value(), settings.redis_cluster)
        self.session = aiohttp.ClientSession()
        self.producer = AIOKafkaProducer(**client_options(settings), acks="all")
        delivery = Delivery(settings.notify, self.redis, metrics, Webhook(self.session, settings.notify),
                            Email(settings.notify))
        self.notifier = Notifier(settings, directory or Directory.of(settings), delivery, self.redis,
                                 self._dead_letters, metrics)

    async def _dead_letters(self, letters: list[DeadLetter]) -> None:
        for letter in letters:
            await self.producer.send_and_wait(self.settings.topics.deadletter, msgspec.json.encode(letter),
                                              key=(letter.key or "").encode() or None)
            log.warning("to dead letter: %s at %s (%s)", letter.reason, letter.field, letter.detail)

    async def __aenter__(self) -> Notifier:
        await self.producer.start()
        return self.notifier

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        await self.session.close()
        await self.redis.aclose()


def open_notifier(settings: Settings, metrics: NotifyMetrics, directory: Directory | None = None) -> _Opened:
    """`async with open_notifier(...) as notifier`: a notifier for commands and tests."""
    return _Opened(settings, metrics, directory)


async def run_notifier(settings: Settings, metrics: NotifyMetrics, stopping: asyncio.Event,
                       directory: Directory | None = None) -> None:
    """Follow the alerts topic until `stopping` is set."""
    # A batch waits for its slowest delivery (at most a give-up per channel and recipient, 240 s at
    # most): the group must not take the partitions away meanwhile.
    consumer = AIOKafkaConsumer(settings.topics.alerts, group_id=f"{settings.app_id}-notify",
                                enable_auto_commit=False, auto_offset_reset="earliest", max_poll_interval_ms=900_000,
                                **client_options(settings))
    await consumer.start()
    try:
        async with open_notifier(settings, metrics, directory) as notifier:
            digest_at = 0.0
            while not stopping.is_set():
                batch = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
                records = [r for rs in batch.values() for r in rs]
                if records and await _until_done(lambda: notifier.take(records), stopping):
                    await _commit(consumer)
                if asyncio.get_running_loop().time() >= digest_at:
                    await _until_done(notifier.digests.if_due, stopping)
                    digest_at = asyncio.get_running_loop().time() + _DIGEST_EVERY_S
    finally:
        await consumer.stop()


async def _until_done(step: Callable[[], Awaitable[Any]], stopping: asyncio.Event) -> bool:
    """Run `step` until it succeeds, waiting for a broker or Redis that fails; False if stopped first."""
    wait = 1.0
    while not stopping.is_set():
        try:
            await step()
            return True
        except (RedisError, KafkaError, OSError) as exc:
            log.warning("the notifier waits for %s: %s (retrying in %.0f s)", type(exc).__name__, exc, wait)
            try:
                await asyncio.wait_for(stopping.wait(), wait)
            except asyncio.TimeoutError:
                pass
            wait = min(wait * 2, 30.0)
    return False


async def _commit(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.commit()
    except CommitFailedError as exc:
        # A rebalance took the partitions: their new owner reads these alerts again, and the
        # marks of what was sent keep it from sending them twice.
        log.warning("offsets not committed (%s); the alerts are handled again by the partitions' new owner", exc)
