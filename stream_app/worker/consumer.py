"""The input topics, read in batches by a Kafka consumer that the faust app owns.

faust's stream machinery costs about 140 us per event whatever the agent does (ARCHITECTURE.md,
"Known pitfalls"), which caps a worker near 7k events/s; `getmany` on a plain aiokafka
consumer hands over thousands of records in one call. The consumer runs as a task of the faust
app, which still supervises it, sends the outputs and runs the timers.

All input topics share one consumer and one range assignment: partition p of every topic goes
to the same worker, so a customer keeps one owner. Offsets are committed only after a batch's
state is written; the state carries its own offsets, so a batch read again after a crash or a
rebalance is skipped, not counted twice. A batch's write is left under way while the next batch
is fetched and decoded; that batch waits for it to land, and commits it, before it reads a state.

Redis is rebuildable from Kafka, not the record. With every state write, Redis also raises the
newest offset it has applied per input partition (`keys.applied`). A worker given a partition
compares that with the group's committed offset: if Redis is behind (it restarted without
persistence, or lost its last writes), the worker says so (metric, log at error, `/readyz`)
and rewinds the partition to just after what Redis holds, or to the earliest offset Kafka
still has if Redis holds nothing of it, and rebuilds. Records below the committed offset had
their outputs sent already: they are applied silently, and their offsets are not committed
again, so a crash in the middle of a rebuild resumes it.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Awaitable, Callable, Iterable, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from stream_app.connect.kafka import client_options
from stream_app.connect.retries import first_of, retry_forever
from stream_app.settings import Settings
from stream_app.windows.store import StateLost
from stream_app.worker.pipeline import RawRecord

__all__ = ["BatchConsumer", "Handler", "Landing", "Rebuild", "rebuilds"]

log = logging.getLogger(__name__)
R = TypeVar("R")

# How long a stopping worker waits for its last write to land. Past it the batch is left
# uncommitted: read again by the next owner, its state's offsets skip what landed.
_LAND_ON_STOP_S = 10.0

#: Waits for a batch's state write to land, trying the batch again until it does; raises
#: `StateLost` if Redis lost data.
Landing = Callable[[], Awaitable[None]]
#: Processes a batch up to its state write, which it leaves under way, and returns what waits
#: for it. It awaits `previous`, the batch before's landing, before it reads a state. `silent`:
#: its outputs were sent before Redis lost its state (a rebuild).
Handler = Callable[[list[RawRecord], bool, Landing], Awaitable[Landing]]
#: What Redis has applied: (topic, partition) -> newest offset (`store.WindowStore.applied`).
AppliedReader = Callable[[], Awaitable[dict[tuple[str, int], int]]]


class _WaitForBatch(ConsumerRebalanceListener):
    """Partitions are given up only between batches, once the write under way has landed, so
    that a batch's state is written by the worker that read it before another worker reads the
    same customers; partitions given are checked against what Redis holds between batches too,
    before their first one."""

    def __init__(self, lock: asyncio.Lock, on_revoked: Callable[[], Awaitable[None]],
                 on_assigned: Callable[[set[TopicPartition]], Awaitable[None]]) -> None:
        self.lock = lock
        self.on_revoked = on_revoked
        self.on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        async with self.lock:
            await self.on_revoked()
            log.info("giving up %d partitions", len(list(revoked)))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        given = set(assigned)
        log.info("assigned %d partitions", len(given))
        async with self.lock:
            await self.on_assigned(given)


@dataclass
class _UnderWay:
    """A batch whose state write is under way: what waits for it, the offsets to commit once it
    has landed, and the first offsets read, to read again from if Redis lost data."""

    landing: Landing
    done: dict[TopicPartition, int]
    first: dict[TopicPartition, int]


@dataclass
class Rebuild:
    """A partition whose state Redis lost: read again from `start` (None: the earliest offset
    Kafka holds), silently up to `until`, the offset the group had committed."""

    start: int | None
    until: int

    def resume_at(self, earliest: int) -> int | None:
        """The offset to read from, given the earliest Kafka holds; None: the earliest."""
        return self.start if self.start is not None and self.start >= earliest else None

    def complete(self, earliest: int) -> bool:
        """Whether Kafka still holds every offset the rebuild needs."""
        return (self.start or 0) >= earliest


def rebuilds(assigned: Iterable[TopicPartition], committed: dict[TopicPartition, int | None],
             applied: dict[tuple[str, int], int]) -> dict[TopicPartition, Rebuild]:
    """The partitions whose committed offset is ahead of what Redis has applied."""
    out = {}
    for tp in assigned:
        done, until = applied.get((tp.topic, tp.partition)), committed.get(tp)
        if until is None or until <= 0 or (done is not None and done >= until - 1):
            continue
        out[tp] = Rebuild(None if done is None else done + 1, until)
    return out


class BatchConsumer:
    """Reads batches from the input topics and hands each to `handle`, then commits it."""

    def __init__(self, settings: Settings, handle: Handler, lock: asyncio.Lock, applied: AppliedReader,
                 on_lag: Callable[[dict[tuple[str, int], int]], None] = lambda lags: None,
                 on_rebuild: Callable[[TopicPartition, Rebuild, int], None] = lambda tp, rebuild, first: None,
                 on_state: Callable[[set[int], dict[tuple[str, int], int]], Awaitable[None]] | None = None,
                 stage: Callable[[str], AbstractContextManager] = lambda name: nullcontext()) -> None:
        self.settings = settings
        self.handle = handle
        self.lock = lock
        self.applied = applied
        self.on_lag = on_lag  # after each batch: messages behind, per partition it read
        self.on_rebuild = on_rebuild  # a partition found behind in Redis, and the first offset Kafka holds
        self.on_state = on_state  # given the partitions owned now and what Redis has applied (alerts/ledger.py)
        self.stage = stage  # times the fetch and the commit (metrics.StageClock)
        self.consumer: AIOKafkaConsumer | None = None  # made in `run`, inside the worker's event loop
        self.silent_until: dict[TopicPartition, int] = {}  # partitions being rebuilt
        self._rewound: set[TopicPartition] = set()  # since the last fetch began: its batch is read again
        self._under_way: _UnderWay | None = None  # the batch whose write is under way, not yet committed
        self._stopped = asyncio.Event()  # set once a stop has waited what it waits for the last write

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
        listener = _WaitForBatch(self.lock, self._give_up, self._check_state)
        consumer.subscribe(self.settings.topics.inputs(), listener=listener)
        try:
            while True:
                await self._one_batch(consumer)
        finally:
            try:  # the last write lands and its batch is committed, unless Redis is away
                await asyncio.wait_for(self._stop_cleanly(), _LAND_ON_STOP_S)
            except asyncio.TimeoutError:
                log.warning("the last batch's write did not land in %.0f s: left uncommitted", _LAND_ON_STOP_S)
            finally:
                self._stopped.set()  # a rebalance waiting for that write stops waiting too
                await consumer.stop()

    async def _stop_cleanly(self) -> None:
        async with self.lock:
            await self._give_up()

    async def _give_up(self) -> None:
        """Let the write under way land and commit its batch, before partitions go (under the batch
        lock). If Redis lost data meanwhile, nothing is committed: whoever owns the partitions next
        finds Redis behind the group's offsets and rebuilds. A worker that stops waits for it only
        so long (`_LAND_ON_STOP_S`); its batch is then left uncommitted, and read again."""
        settle = await self._unless_stopped(self._settle())
        if settle.cancelled():
            self._under_way = None
            log.warning("stopped before the last batch was committed: it is read again, its offsets skip what landed")
        elif isinstance(settle.exception(), StateLost):
            self._under_way = None
            log.error("Redis lost data under this worker (%s): its last batch is left uncommitted", settle.exception())
        elif settle.exception() is not None:
            raise settle.exception()  # type: ignore[misc]

    async def _unless_stopped(self, step: Awaitable[R]) -> asyncio.Future[R]:
        """`step` run until it ends, or until a stop has waited what it waits (then cancelled: the
        write under way goes on, shielded); done either way. Rebalance callbacks run in aiokafka's
        coordination task, which the consumer's stop waits for: they must not outlast it."""
        task = asyncio.ensure_future(step)
        try:
            await first_of(task, self._stopped)
        finally:
            if not task.done():  # stopping, or this wait was cancelled
                task.cancel()
                await asyncio.wait((task,))
        return task

    async def _settle(self) -> None:
        """Wait for the batch whose write is under way to land, then commit it."""
        under_way = self._under_way
        if under_way is None:
            return
        await under_way.landing()
        self._under_way = None
        consumer = self.consumer
        assert consumer is not None
        # A rebuild does not commit below what was committed before: a crash resumes it.
        with self.stage("commit"):
            await self._commit(consumer, {tp: o for tp, o in under_way.done.items()
                                          if o > self.silent_until.get(tp, -1)})
        for tp in [tp for tp, until in self.silent_until.items() if under_way.done.get(tp, -1) >= until]:
            del self.silent_until[tp]
            log.warning("partition %s-%d rebuilt from Kafka", tp.topic, tp.partition)

    async def _check_state(self, assigned: set[TopicPartition]) -> None:
        """Rewind the partitions whose state Redis lost (see the module's docstring). Called
        between batches (under the batch lock)."""
        consumer = self.consumer
        assert consumer is not None
        await self._give_up()  # none is under way after a revocation; this keeps it so
        self.silent_until = {tp: until for tp, until in self.silent_until.items() if tp in assigned}
        if not assigned:
            return
        committed = {tp: await consumer.committed(tp) for tp in assigned}
        read = await self._unless_stopped(retry_forever("redis applied offsets", self.applied,
                                                        self.settings.redis_retry_max_s))
        if read.cancelled():  # stopping while Redis is away: the next owner checks them
            return
        applied = read.result()
        if self.on_state is not None:
            await self.on_state({tp.partition for tp in assigned}, applied)
        found = rebuilds(assigned, committed, applied)
        if not found:
            return
        self._rewound |= set(found)
        earliest = await consumer.beginning_offsets(list(found))
        for tp, rebuild in found.items():
            start = rebuild.resume_at(earliest[tp])
            if start is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, start)
            self.silent_until[tp] = rebuild.until
            self.on_rebuild(tp, rebuild, earliest[tp])

    async def _one_batch(self, consumer: AIOKafkaConsumer) -> None:
        self._rewound = set()
        with self.stage("fetch"):
            fetched = await consumer.getmany(timeout_ms=int(self.settings.batch_within_s * 1000),
                                             max_records=self.settings.batch_size)
        async with self.lock:
            if not fetched:  # a quiet spell: the batch under way lands and is committed now
                await self._guarded(consumer, {}, self._settle())
                return
            if self._rewound:
                # Partitions were rewound while this batch was fetched: applied now, it would put
                # newer records before the older ones the rebuild reads. Read it again in order.
                self._read_again(consumer, fetched)
                return
            first = {tp: messages[0].offset for tp, messages in fetched.items()}
            if not await self._guarded(consumer, first, self._handle(fetched)):
                return
        # A backlog shows at once, not at the next health check, which a fast catch-up can miss.
        done = {tp: messages[-1].offset + 1 for tp, messages in fetched.items()}
        highs = {tp: consumer.highwater(tp) for tp in done}
        self.on_lag({(tp.topic, tp.partition): max(0, high - done[tp])
                     for tp, high in highs.items() if high is not None})

    def _read_again(self, consumer: AIOKafkaConsumer, fetched: dict[TopicPartition, list]) -> None:
        """Put back the fetched records of the partitions that were not rewound."""
        owned = consumer.assignment()
        for tp, messages in fetched.items():
            if tp in owned and tp not in self._rewound:
                consumer.seek(tp, messages[0].offset)

    async def _guarded(self, consumer: AIOKafkaConsumer, first: dict[TopicPartition, int],
                       step: Awaitable[None]) -> bool:
        """`step`, and True; but if Redis restarted empty under this worker, the batch under way and
        the one fetched (starting at `first`) are read again, and every partition it owns is
        checked: those whose committed offset Redis no longer covers are rebuilt (False)."""
        try:
            await step
            return True
        except StateLost as exc:
            log.error("Redis lost data under this worker (%s): checking every partition it owns", exc)
            rewind = dict(self._under_way.first) if self._under_way else {}
            self._under_way = None
            for tp, offset in first.items():
                rewind[tp] = min(offset, rewind.get(tp, offset))
            for tp, offset in rewind.items():
                consumer.seek(tp, offset)
            await self._check_state(consumer.assignment())
            return False

    async def _handle(self, fetched: dict[TopicPartition, list]) -> None:
        """Process a fetched batch (its records below a rebuild's end silently) up to its write,
        which is left under way; the batch before is committed once its write has landed."""
        silent, live = [], []
        with self.stage("fetch"):
            for tp, messages in fetched.items():
                until = self.silent_until.get(tp, -1)
                for m in messages:
                    record = RawRecord(m.topic, m.partition, m.offset, m.key, m.value)
                    (silent if m.offset < until else live).append(record)
        landing: Landing = self._settle
        for records, quiet in ((silent, True), (live, False)):
            if records:
                landing = await self.handle(records, quiet, landing)
        self._under_way = _UnderWay(landing, {tp: messages[-1].offset + 1 for tp, messages in fetched.items()},
                                    {tp: messages[0].offset for tp, messages in fetched.items()})

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
