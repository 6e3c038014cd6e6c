"""What a worker does around the pipeline: sends a batch's outputs through an emitter, tries a
batch until it goes through, reports lag, health and rebuilds, and refreshes the model and the
baselines. The faust app (`worker/app.py`) only wires it to Kafka, Redis and its timers; a test
gives it an emitter of its own and an in-memory store, and runs batches without a broker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any, Awaitable, Callable, Protocol, Sequence

import msgspec
from aiokafka import TopicPartition
from redis.exceptions import RedisError

from stream_app.alerts.call_plan import observe_call_plan, observe_lists
from stream_app.alerts.ledger import AlertLedger
from stream_app.contracts import keys
from stream_app.features.baseline_counts import BaselineSource
from stream_app.metrics import Metrics
from stream_app.model.registry import ScorerSource
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings, Topics
from stream_app.windows.store import StateLost, WindowStore
from stream_app.worker.consumer import Landing, Rebuild
from stream_app.worker.endpoints import Health
from stream_app.worker.pipeline import Admitted, BatchOutput, BatchProcessor, RawRecord, Writing

__all__ = ["Emitter", "Worker", "until_done"]

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


class Sent(Protocol):
    partition: int
    offset: int


class Emitter(Protocol):
    """Where outputs go. `send` queues one record and returns what resolves to where the broker
    put it, once the broker has it (faust's `Topic.send` does exactly this)."""

    async def send(self, topic: str, key: bytes, value: bytes | None,
                   partition: int | None = None) -> Awaitable[Sent]: ...

    async def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes | None]]) -> list[Awaitable[object]]:
        """Queue (key, value) records, each to its key's partition, in order; all the broker has
        once everything returned resolves."""


class Worker:
    """One worker's batches and housekeeping. `connect` makes the Redis client and the store on
    first use, inside the event loop the client binds to."""

    def __init__(self, settings: Settings, metrics: Metrics, emitter: Emitter, rules: Callable[[], Ruleset],
                 model: ScorerSource, baselines: BaselineSource, ledger: AlertLedger,
                 connect: Callable[[], tuple[Any, WindowStore]], health: Health | None = None) -> None:
        self.settings, self.metrics, self.emitter = settings, metrics, emitter
        self.rules, self.model, self.baselines, self.ledger = rules, model, baselines, ledger
        self.health = health or Health()
        self._connect = connect
        self._processor: BatchProcessor | None = None
        self.client: Any = None

    @property
    def processor(self) -> BatchProcessor:
        return self._connected()

    def _connected(self) -> BatchProcessor:
        """The batch processor, with its store and the Redis client made on first use."""
        if self._processor is None:
            self.client, store = self._connect()
            self._processor = BatchProcessor(self.settings, store, self.rules, self.metrics, model=self.model,
                                             baselines=self.baselines)
        return self._processor

    async def process(self, records: list[RawRecord], silent: bool = False) -> None:
        """One batch, tried until it goes through (`until_done`)."""
        await until_done(lambda: self.processor.run(records, self.send, silent), self.health, self.metrics,
                         self.settings.redis_retry_max_s)

    async def begin(self, records: list[RawRecord], silent: bool, previous: Landing) -> Landing:
        """One batch, tried until its outputs are sent and its state's write is under way; what
        waits for that write is returned. The records are decoded while the batch before's write
        lands (Redis runs it meanwhile, on a core of its own); `previous` waits for that, before
        this batch reads a state the write may change."""
        admitted: Admitted | None = self.processor.admit(records)
        await previous()
        writing: list[Writing] = []

        async def attempt() -> None:
            nonlocal admitted
            first, admitted = admitted, None  # the first attempt only: a failed one may have changed its output
            writing.append(await self.processor.start(records, self.send, silent, first))

        await until_done(attempt, self.health, self.metrics, self.settings.redis_retry_max_s)
        return partial(self._land, writing[-1], records, silent)

    async def _land(self, writing: Writing, records: list[RawRecord], silent: bool) -> None:
        """Wait for a batch's write; if it fails, the batch is tried again until it goes through,
        as one that failed before its write is."""
        under_way = [writing]

        async def attempt() -> None:
            if under_way:
                await under_way.pop().landed()
            else:
                await self.processor.run(records, self.send, silent)

        await until_done(attempt, self.health, self.metrics, self.settings.redis_retry_max_s)

    async def send(self, out: BatchOutput) -> dict[tuple[str, int], int]:
        """Send a batch's outputs and wait for the broker to have them, before the state (and so the
        offsets) moves on; the newest alert offsets to record with the state."""
        t, emit, many = self.settings.topics, self.emitter.send, self.emitter.send_many
        # An alert goes to its customer's input partition (the topics are co-partitioned), where
        # the ledger looks for alerts a crashed batch sent (alerts/ledger.py).
        fresh = [(a, out.partitions[a.customer_id]) for a in out.alerts]
        fresh = [(a, p) for a, p in fresh if not self.ledger.already_sent(p, a.alert_id)]
        sent: list[asyncio.Future[Sent]] = []
        futures: list[asyncio.Future[object]] = []
        try:
            for a, p in fresh:
                sent.append(asyncio.ensure_future(await emit(t.alerts, a.customer_id.encode(), _json.encode(a), p)))
            for topic, records in _batched(t, out):
                futures += map(asyncio.ensure_future, await many(topic, records))
            landed = await asyncio.gather(*sent)
            await asyncio.gather(*futures)
        except Exception:
            # What was queued before the failure lands or fails on its own: waited for, so that no
            # failure goes unread and the batch, tried again, does not send the alerts that landed.
            for (a, _), meta in zip(fresh, await asyncio.gather(*sent, return_exceptions=True)):
                if not isinstance(meta, BaseException):
                    self.ledger.landed(meta.partition, meta.offset, a.alert_id)
            await asyncio.gather(*futures, return_exceptions=True)
            raise
        for meta in landed:
            self.ledger.record(meta.partition, meta.offset)
        return self.ledger.marks(set(out.partitions.values()))

    def show_lag(self, lags: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in lags.items():
            self.metrics.consumer_lag.labels(topic, str(partition)).set(lag)

    def rebuilding(self, tp: TopicPartition, rebuild: Rebuild, earliest: int) -> None:
        """Redis is behind what Kafka says was processed: it lost data. Say so, loudly."""
        start, complete = rebuild.resume_at(earliest), rebuild.complete(earliest)
        self.metrics.rebuilds.labels(tp.topic, "complete" if complete else "partial").inc()
        lost = "" if complete else (f"; offsets before {earliest} are gone from Kafka (retention): "
                                    "what they counted is lost")
        log.error("Redis lost the state of %s-%d (it holds %s, the group committed %d): rebuilding from offset %d%s",
                  tp.topic, tp.partition, "nothing" if rebuild.start is None else f"up to {rebuild.start - 1}",
                  rebuild.until, earliest if start is None else start, lost)

    async def observe(self, lags: dict[tuple[str, int], int], partitions: int, rebuilding: int) -> None:
        """Consumer lag, customers tracked, and what `/readyz` reports."""
        # Cleared first: partitions this worker lost in a rebalance must not report a stale lag.
        self.metrics.consumer_lag.clear()
        self.show_lag(lags)
        self.health.partitions, self.health.rebuilding = partitions, rebuilding
        self._connected()
        try:
            self.metrics.customers.set(await self.processor.store.customers())
            self.health.redis_answered_at = time.monotonic()
            observe_call_plan(self.metrics, await self.client.hgetall(keys.CALL_PLAN))
            observe_lists(self.metrics, await self.client.hgetall(keys.LISTS), self.settings.zone)
        except RedisError as exc:
            log.warning("Redis did not answer the health check: %s", exc)
        self.metrics.ready.set(int(self.health()[0]))  # for dashboards, which cannot probe /readyz

    async def refresh_model(self, lock: asyncio.Lock) -> None:
        # Between batches: the lock keeps a batch from seeing two model versions. (A batch whose write
        # is still under way may be prepared again after this, on a conflict or a failed write: that
        # attempt sees the new model throughout.)
        self._connected()
        async with lock:
            try:
                await self.model.refresh(self.client)
            except RedisError as exc:  # the batches wait out the outage; this tries again later
                log.warning("could not look for a new model: %s", exc)

    async def refresh_baselines(self) -> None:
        # Not under the batch lock: the reread scans every report hash, and batches need not wait
        # for it. The new set replaces the old in one assignment, and a batch derives its features
        # without awaiting, so it is judged against one set of baselines all the same.
        self._connected()
        try:
            await self.baselines.refresh(self.client)
        except RedisError as exc:
            log.warning("could not reread the segment baselines: %s", exc)


def _batched(t: Topics, out: BatchOutput) -> list[tuple[str, list[tuple[bytes, bytes | None]]]]:
    """The outputs but alerts, per topic, as (key, value) records: they go as record batches, since a
    morning's batch holds a snapshot of nearly every customer."""
    return [(t.deadletter, [((d.key or "").encode(), _json.encode(d)) for d in out.deadletters]),
            # An erased customer's snapshots still waiting for their label go too, after them: the trainer drops them.
            (t.snapshots, [(s.customer_id.encode(), _msgpack.encode(s)) for s in out.snapshots]
             + [(c.encode(), None) for c in out.erased]),
            (t.churn_events, [(c.customer_id.encode(), _json.encode(c)) for c in out.churn_events]),
            (t.won_back, [(b.customer_id.encode(), _json.encode(b)) for b in out.won_back])]


async def until_done(attempt: Callable[[], Awaitable[object]], health: Health, metrics: Metrics,
                     max_backoff_s: float, first_backoff_s: float = 0.5) -> None:
    """One batch, tried until it goes through. A record that raises goes to dead letter
    (`BatchProcessor.isolated`); what is left to fail is the infrastructure (Redis, the broker
    refusing the outputs), and that is waited out with back-off, the batch uncommitted meanwhile
    and `/readyz` saying why. A batch tried again sends what it sent before, under the same ids.
    `StateLost` is not retried: the consumer rewinds and rebuilds (`worker/consumer.py`)."""
    backoff = first_backoff_s
    while True:
        try:
            await attempt()
        except StateLost:
            raise
        except Exception as exc:  # noqa: BLE001 - nothing in the data path ends the process
            health.blocked = f"a batch failed and is being retried: {type(exc).__name__}: {exc}"[:300]
            metrics.batch_retries.labels(type(exc).__name__).inc()
            log.error("batch failed (%s: %s); trying it again in %.1f s", type(exc).__name__, exc, backoff,
                      exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)
            continue
        health.blocked = None
        return
