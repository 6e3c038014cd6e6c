"""The faust app: it supervises the batch consumer of the input topics (`worker/consumer.py`), sends
what the pipeline produces, and runs the timers (rule reloads, health, model refresh).

The input topics are read by a consumer the app owns rather than by faust agents: faust's
per-event machinery capped a worker at about 4,500 events/s in `churnwatch bench`, the batch
consumer reached about 22,000 on the same run (docs/performance.md). Batches and model
refreshes take one lock, so a batch never sees two model versions; across workers,
co-partitioned topics give each customer one owner, and the state's compare-and-set catches
a stale owner.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import faust
import msgspec
from aiokafka import TopicPartition
from redis.exceptions import RedisError

from stream_app.alerts.call_plan import observe_call_plan
from stream_app.alerts.ledger import AlertLedger
from stream_app.connect.kafka import faust_credentials
from stream_app.connect.redis import connect_redis
from stream_app.contracts import keys
from stream_app.features.baseline_counts import BaselineSource
from stream_app.features.baselines import BaselineRule
from stream_app.metrics import Metrics
from stream_app.model.registry import ScorerSource
from stream_app.model.signing import Signer
from stream_app.rules.watch import RulesWatch
from stream_app.settings import Settings
from stream_app.windows.store import RedisWindowStore, StateLost
from stream_app.worker.consumer import BatchConsumer, Rebuild
from stream_app.worker.endpoints import Health
from stream_app.worker.pipeline import BatchOutput, BatchProcessor, RawRecord

__all__ = ["create_app", "quieten_gc", "until_done"]

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()


def create_app(settings: Settings, metrics: Metrics, health: Health | None = None) -> faust.App:
    """A faust app wired to Kafka, Redis and the rules in `settings.rules_dir`."""
    if not settings.kafka_bootstrap or settings.redis_url is None:
        raise ValueError("KAFKA_BOOTSTRAP and REDIS_URL must be set for the worker")
    # Tables live in memory and state in Redis: nothing worth keeping goes in faust's data dir.
    datadir = Path(tempfile.gettempdir()) / "churnwatch-faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=str(datadir),
        web_enabled=False,
        topic_partitions=settings.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_session_timeout_s / 3,
    )
    t = settings.topics
    alerts = app.topic(t.alerts, key_serializer="raw", value_serializer="raw")
    deadletter = app.topic(t.deadletter, key_serializer="raw", value_serializer="raw")
    snapshots = app.topic(t.snapshots, key_serializer="raw", value_serializer="raw")
    churn_events = app.topic(t.churn_events, key_serializer="raw", value_serializer="raw")
    model = ScorerSource(metrics, Signer.of(settings))
    ledger = AlertLedger(settings)
    baselines = BaselineSource(BaselineRule.of(settings), metrics)
    rules = RulesWatch([Path(settings.rules_dir)], metrics)
    rules.reload()
    lock = asyncio.Lock()
    processor: BatchProcessor | None = None
    client = None

    def get_processor() -> BatchProcessor:
        # Made on first use, inside the worker's event loop, which the Redis client binds to.
        nonlocal processor, client
        if processor is None:
            client = connect_redis(settings.redis_url.get_secret_value(), settings.redis_cluster)  # type: ignore[union-attr]
            store = RedisWindowStore(client, settings.idle_expiry_days * 86400)
            processor = BatchProcessor(settings, store, rules.current, metrics, model=model, baselines=baselines)
        return processor

    async def send(out: BatchOutput) -> dict[tuple[str, int], int]:
        # An alert goes to its customer's input partition (the topics are co-partitioned), where
        # the ledger looks for alerts a crashed batch sent (alerts/ledger.py).
        fresh = [(a, out.partitions[a.customer_id]) for a in out.alerts]
        fresh = [(a, p) for a, p in fresh if not ledger.already_sent(p, a.alert_id)]
        sent = [await alerts.send(key=a.customer_id.encode(), value=_json.encode(a), partition=p) for a, p in fresh]
        futures = [await deadletter.send(key=(d.key or "").encode(), value=_json.encode(d)) for d in out.deadletters]
        futures += [await snapshots.send(key=s.customer_id.encode(), value=_msgpack.encode(s)) for s in out.snapshots]
        # An erased customer's snapshots still waiting for their label go too: the trainer drops them.
        futures += [await snapshots.send(key=c.encode(), value=None) for c in out.erased]
        futures += [await churn_events.send(key=c.customer_id.encode(), value=_json.encode(c)) for c in out.churn_events]
        # Wait for the broker to have them before the state (and so the offsets) moves on.
        for meta in await asyncio.gather(*sent):
            ledger.record(meta.partition, meta.offset)
        await asyncio.gather(*futures)
        return ledger.marks(set(out.partitions.values()))

    health = health or Health()

    async def process(records: list[RawRecord], silent: bool) -> None:
        await until_done(lambda: get_processor().run(records, send, silent), health, metrics,
                         settings.redis_retry_max_s)

    def show_lag(lags: dict[tuple[str, int], int]) -> None:
        for (topic, partition), lag in lags.items():
            metrics.consumer_lag.labels(topic, str(partition)).set(lag)

    def rebuilding(tp: TopicPartition, rebuild: Rebuild, earliest: int) -> None:
        """Redis is behind what Kafka says was processed: it lost data. Say so, loudly."""
        start, complete = rebuild.resume_at(earliest), rebuild.complete(earliest)
        metrics.rebuilds.labels(tp.topic, "complete" if complete else "partial").inc()
        lost = "" if complete else (f"; offsets before {earliest} are gone from Kafka (retention): "
                                    "what they counted is lost")
        log.error("Redis lost the state of %s-%d (it holds %s, the group committed %d): rebuilding from offset %d%s",
                  tp.topic, tp.partition, "nothing" if rebuild.start is None else f"up to {rebuild.start - 1}",
                  rebuild.until, earliest if start is None else start, lost)

    ingest = BatchConsumer(settings, process, lock, lambda: get_processor().store.applied(), show_lag, rebuilding,
                           ledger.recover)

    @app.task
    async def consume_inputs() -> None:
        await ingest.run()

    @app.timer(interval=2.0)
    async def watch_rules() -> None:
        rules.reload_if_changed()

    @app.timer(interval=5.0)
    async def observe() -> None:
        """Consumer lag, customers tracked, and what `/readyz` reports."""
        lags = await ingest.lags()
        # Cleared first: partitions this worker lost in a rebalance must not report a stale lag.
        metrics.consumer_lag.clear()
        for (topic, partition), lag in lags.items():
            metrics.consumer_lag.labels(topic, str(partition)).set(lag)
        health.partitions = ingest.partitions
        health.rebuilding = len(ingest.silent_until)
        get_processor()
        try:
            metrics.customers.set(await client.dbsize())  # type: ignore[union-attr]
            health.redis_answered_at = time.monotonic()
            observe_call_plan(metrics, await client.hgetall(keys.CALL_PLAN))  # type: ignore[union-attr]
        except RedisError as exc:
            log.warning("Redis did not answer the health check: %s", exc)

    @app.timer(interval=settings.model_refresh_s)
    async def refresh_model() -> None:
        # Between batches: the lock keeps a batch from seeing two model versions.
        get_processor()
        async with lock:
            try:
                await model.refresh(client)
            except RedisError as exc:  # the batches wait out the outage; this tries again later
                log.warning("could not look for a new model: %s", exc)

    @app.timer(interval=settings.baseline_refresh_s)
    async def refresh_baselines() -> None:
        # Not under the batch lock: the reread scans every report hash, and batches need not wait
        # for it. The new set replaces the old in one assignment, and a batch derives its features
        # without awaiting, so it is judged against one set of baselines all the same.
        get_processor()
        try:
            await baselines.refresh(client)
        except RedisError as exc:
            log.warning("could not reread the segment baselines: %s", exc)

    @app.task
    async def reload_on_sighup() -> None:
        # SREs' habit from Prometheus: `kill -HUP` makes the worker read its rule files now.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, rules.reload)

    return app


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


def quieten_gc() -> None:
    """Keep Python's cycle collector off the hot path: a batch allocates tens of thousands of
    short-lived objects, and every few hundred started a collection that also walked
    faust's and the libraries' long-lived objects. In `churnwatch bench` (300,000 events,
    30,000 customers) collections took 1.9 s of the worker's run; with what is loaded at start
    frozen out of them and rarer collections, 0.14 s, and the worker went from about 24,000 to
    38,000 events/s. Cycles are still collected, less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 1_000)
