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
from pathlib import Path
from typing import Any, Awaitable, Sequence

import faust

from stream_app.alerts.ledger import AlertLedger
from stream_app.connect.batches import send_batches
from stream_app.connect.kafka import faust_credentials
from stream_app.connect.redis import connect_redis
from stream_app.errors import ConfigError
from stream_app.features.baseline_counts import BaselineSource
from stream_app.features.baselines import BaselineRule
from stream_app.metrics import Metrics
from stream_app.model.registry import ScorerSource
from stream_app.model.scoring import model_features
from stream_app.model.signing import Signer
from stream_app.rules.watch import RulesWatch
from stream_app.settings import Settings
from stream_app.windows.store import RedisWindowStore
from stream_app.worker.consumer import BatchConsumer
from stream_app.worker.endpoints import Health
from stream_app.worker.runtime import Worker

__all__ = ["FaustEmitter", "create_app", "quieten_gc"]

log = logging.getLogger(__name__)


class FaustEmitter:
    """The worker's outputs through the app's producer: raw bytes, to the topic and partition given.

    Straight to the transport's producer, not through faust's `Topic.send`: a batch of a morning's
    traffic sends a snapshot per customer, and faust's message, codec and sensor layers made each
    record's send about half as dear again (`docs/performance.md`, "Traffic in time order"). All
    but alerts go as record batches (`connect/batches.py`). The topics are made before the worker
    starts (`ensure_topics`)."""

    def __init__(self, app: faust.App, topics: list[str]) -> None:
        self.app, self.topics = app, frozenset(topics)

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> Awaitable[Any]:
        producer = await self._producer(topic)
        return await producer.send(topic, key, value, partition, None, None)

    async def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes | None]]) -> list[Awaitable[object]]:
        producer = await self._producer(topic)
        # faust's transport producer wraps aiokafka's, whose record batches `send_batches` fills.
        return await send_batches(producer._ensure_producer(), topic, records)

    async def _producer(self, topic: str) -> Any:
        if topic not in self.topics:
            raise KeyError(f"not an output topic: {topic}")
        return await self.app.maybe_start_producer()


def create_app(settings: Settings, metrics: Metrics, health: Health | None = None) -> faust.App:
    """A faust app wired to Kafka, Redis and the rules in `settings.rules_dir`."""
    if not settings.kafka_bootstrap or settings.redis_url is None:
        raise ConfigError("KAFKA_BOOTSTRAP and REDIS_URL must be set for the worker")
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
        # aiokafka sends one batch a partition per request: 20,000 snapshots cost 4.2 us of CPU each
        # in 16 KiB batches (the default), 1.7 in 128 KiB, 1.4 in 512 KiB.
        producer_max_batch_size=settings.output_batch_bytes,
        broker_session_timeout=settings.kafka_session_timeout_s,
        broker_heartbeat_interval=settings.kafka_session_timeout_s / 3,
    )
    model = ScorerSource(metrics, Signer.of(settings), model_features(settings.attributes))
    baselines = BaselineSource(BaselineRule.of(settings), metrics)
    rules = RulesWatch([Path(settings.rules_dir)], metrics)
    rules.reload()
    lock = asyncio.Lock()

    def connect() -> tuple[Any, RedisWindowStore]:
        client = connect_redis(settings.redis_url.get_secret_value(), settings.redis_cluster)  # type: ignore[union-attr]
        return client, RedisWindowStore.of(client, settings)

    t = settings.topics
    emitter = FaustEmitter(app, [t.alerts, t.deadletter, t.snapshots, t.churn_events, t.won_back])
    worker = Worker(settings, metrics, emitter, rules.current, model, baselines, AlertLedger(settings),
                    connect, health)
    ingest = BatchConsumer(settings, worker.begin, lock, lambda: worker.processor.store.applied(),
                           worker.show_lag, worker.rebuilding, worker.ledger.recover, metrics.stage)

    @app.task
    async def consume_inputs() -> None:
        await ingest.run()

    @app.timer(interval=2.0)
    async def watch_rules() -> None:
        rules.reload_if_changed()

    @app.timer(interval=5.0)
    async def observe() -> None:
        await worker.observe(await ingest.lags(), ingest.partitions, len(ingest.silent_until))

    @app.timer(interval=settings.model_refresh_s)
    async def refresh_model() -> None:
        await worker.refresh_model(lock)

    @app.timer(interval=settings.baseline_refresh_s)
    async def refresh_baselines() -> None:
        await worker.refresh_baselines()

    @app.task
    async def reload_on_sighup() -> None:
        # SREs' habit from Prometheus: `kill -HUP` makes the worker read its rule files now.
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, rules.reload)

    return app


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
