"""The input topics, read in batches by a Kafka consumer that the faust app owns.

faust's stream machinery costs about 140 us per event whatever the agent does (ARCHITECTURE.md,
"Known pitfalls"), which caps a worker near 7k events/s; `getmany` on a plain aiokafka
consumer hands over thousands of records in one call. The consumer runs as a task of the faust
app, which still supervises it, sends the outputs and runs the timers.

All input topics share one consumer and one range assignment: partition p of every topic goes
to the same worker, so a customer keeps one owner. Offsets are committed only after a batch's
state is written; the state carries its own offsets, so a batch read again after a crash or a
rebalance is skipped, not counted twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Iterable

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from .kafka_clients import client_options
from .pipeline import RawRecord
from .settings import Settings

__all__ = ["BatchConsumer"]

log = logging.getLogger(__name__)

Handler = Callable[[list[RawRecord]], Awaitable[None]]


class _WaitForBatch(ConsumerRebalanceListener):
    """Partitions are given up only between batches, so that a batch's state is written by
    the worker that read it before another worker reads the same customers."""

    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.lock:
            log.info("giving up %d partitions", len(list(revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        log.info("assigned %d partitions", len(list(assigned)))


class BatchConsumer:
    """Reads batches from the input topics and hands each to `handle`, then commits it."""

    def __init__(self, settings: Settings, handle: Handler, lock: asyncio.Lock,
                 on_lag: Callable[[dict[tuple[str, int], int]], None] = lambda lags: None) -> None:
        self.settings = settings
        self.handle = handle
        self.lock = lock
        self.on_lag = on_lag  # after each batch: messages behind, per partition it read
        self.consumer: AIOKafkaConsumer | None = None  # made in `run`, inside the worker's event loop

    def _consumer(self) -> AIOKafkaConsumer:
        s = self.settings
        return AIOKafkaConsumer(
            **client_options(s),
            group_id=f"{s.app_id}-ingest",
            client_id=f"{s.app_id}-ingest",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Range, not aiokafka's default round robin: partition p of every input topic goes
            # to the same worker, so a customer's CDRs and bills have one owner.
            partition_assignment_strategy=(RangePartitionAssignor,),
            max_poll_records=s.batch_size,
            # Short fetch waits: a quiet topic must not hold a batch back for long (latency).
            fetch_max_wait_ms=min(100, int(s.batch_within_s * 1000)),
            max_partition_fetch_bytes=4 << 20,
            session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
            heartbeat_interval_ms=int(s.kafka_session_timeout_s * 1000 / 3),
        )

    async def run(self) -> None:
        """Consume until cancelled; the group is left cleanly on the way out."""
        self.consumer = consumer = self._consumer()
        await consumer.start()
        consumer.subscribe(self.settings.topics.inputs(), listener=_WaitForBatch(self.lock))
        try:
            while True:
                await self._one_batch(consumer)
        finally:
            await consumer.stop()

    async def _one_batch(self, consumer: AIOKafkaConsumer) -> None:
        fetched = await consumer.getmany(timeout_ms=int(self.settings.batch_within_s * 1000),
                                         max_records=self.settings.batch_size)
        if not fetched:
            return
        records = [RawRecord(m.topic, m.partition, m.offset, m.key, m.value)
                   for messages in fetched.values() for m in messages]
        done = {tp: messages[-1].offset + 1 for tp, messages in fetched.items()}
        async with self.lock:
            await self.handle(records)
            await self._commit(consumer, done)
        # A backlog shows at once, not at the next health check, which a fast catch-up can miss.
        highs = {tp: consumer.highwater(tp) for tp in done}
        self.on_lag({(tp.topic, tp.partition): max(0, high - done[tp])
                     for tp, high in highs.items() if high is not None})

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        owned = consumer.assignment()
        mine = {tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items() if tp in owned}
        if not mine:
            return
        try:
            await consumer.commit(mine)
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance under way: the new owner reads the batch again and the offsets in the
            # state skip it, so nothing is lost or counted twice by a failed commit.
            log.warning("could not commit offsets (%s); the state's offsets cover them", exc)

    @property
    def partitions(self) -> int:
        """Input partitions this worker owns now."""
        return len(self.consumer.assignment()) if self.consumer else 0

    async def lags(self) -> dict[tuple[str, int], int]:
        """Messages behind the newest, per owned partition."""
        lags: dict[tuple[str, int], int] = {}
        consumer = self.consumer
        for tp in consumer.assignment() if consumer else ():
            high = consumer.highwater(tp)  # type: ignore[union-attr]
            if high is not None:
                lags[(tp.topic, tp.partition)] = max(0, high - await consumer.position(tp))  # type: ignore[union-attr]
        return lags
