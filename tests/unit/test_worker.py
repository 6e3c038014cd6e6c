"""The worker without Kafka: batches run through `Worker` with an emitter that keeps what it is
given and an in-memory store, so what a batch sends, where, and what it records can be checked
record by record."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import msgspec
import pytest
from prometheus_client import CollectorRegistry

from stream_app.alerts.ledger import ALERTS, AlertLedger
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.features.baseline_counts import BaselineSource
from stream_app.features.baselines import BaselineRule
from stream_app.metrics import Metrics
from stream_app.model.registry import ScorerSource
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings
from stream_app.windows.store import MemoryWindowStore
from stream_app.worker.app import create_app
from stream_app.worker.endpoints import Health
from stream_app.worker.runtime import Worker
from tests.factories import Log, decliner

RULES = load_rules([Path(__file__).resolve().parents[2] / "alert_rules"])


@dataclass
class Placed:
    partition: int
    offset: int


@dataclass
class ListEmitter:
    """Keeps every record it is given, with the offset a partition would give it; fails the
    first `failures` sends, as a broker that does not answer does."""

    sent: list[tuple[str, bytes, bytes | None, int]] = field(default_factory=list)
    failures: int = 0

    async def send(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> Any:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("the broker did not answer")
        p = 0 if partition is None else partition
        offset = sum(1 for t, _, _, q in self.sent if (t, q) == (topic, p))
        self.sent.append((topic, key, value, p))
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        done.set_result(Placed(p, offset))
        return done

    async def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes | None]]) -> list[Any]:
        return [await self.send(topic, key, value) for key, value in records]

    def on(self, topic: str) -> list[tuple[bytes, bytes | None, int]]:
        return [(k, v, p) for t, k, v, p in self.sent if t == topic]


def worker(emitter: ListEmitter, store: MemoryWindowStore, ledger: AlertLedger | None = None) -> Worker:
    settings, metrics = Settings(_env_file=None, redis_retry_max_s=0.05), Metrics(CollectorRegistry())
    return Worker(settings, metrics, emitter, lambda: RULES, ScorerSource(metrics), BaselineSource(
        BaselineRule.of(settings), metrics), ledger or AlertLedger(settings), lambda: (None, store), Health())


def decliners(partition: int = 2) -> Log:
    log = Log()
    decliner(log, "8613800000001")
    decliner(log, "8613800000002", minutes=(300, 300, 300))
    log.add("cdr", "8613800000003", b"{not json")
    return _on_partition(log, partition)


def _on_partition(log: Log, partition: int) -> Log:
    log.records = [msgspec.structs.replace(r, partition=partition) for r in log.records]
    return log


def test_a_batch_sends_its_alert_to_the_customers_partition_and_records_where_it_went() -> None:
    emitter, store = ListEmitter(), MemoryWindowStore()
    w = worker(emitter, store)
    asyncio.run(w.process(decliners().records))
    alerts = [(msgspec.json.decode(v, type=Alert), p) for _, v, p in emitter.on("churn.alerts")]
    assert [(a.customer_id, p) for a, p in alerts] == [("8613800000001", 2)]
    [(_, dead, _)] = emitter.on("deadletter")
    assert msgspec.json.decode(dead, type=DeadLetter).reason == "not_json"
    assert {"8613800000001", "8613800000002"} <= set(store.data)
    assert store.offsets[(ALERTS, 2)] == 0  # the ledger's mark, written with the state


def test_an_alert_a_crashed_batch_sent_already_is_not_sent_again() -> None:
    first = ListEmitter()
    asyncio.run(worker(first, MemoryWindowStore()).process(decliners().records))
    [(_, value, _)] = first.on("churn.alerts")
    sent_before = msgspec.json.decode(value, type=Alert).alert_id
    ledger = AlertLedger(Settings(_env_file=None))
    ledger.sent = {2: {sent_before}}  # what `recover` reads from the alerts topic after a crash
    again = ListEmitter()
    asyncio.run(worker(again, MemoryWindowStore(), ledger).process(decliners().records))
    assert again.on("churn.alerts") == [] and again.on("deadletter")  # the rest is sent as before


def test_a_broker_that_does_not_answer_holds_the_batch_until_it_does() -> None:
    emitter, store = ListEmitter(failures=2), MemoryWindowStore()
    w = worker(emitter, store)
    asyncio.run(w.process(decliners().records))
    assert len(emitter.on("churn.alerts")) == 1 and w.health.blocked is None
    assert w.metrics.registry.get_sample_value("churnwatch_batch_retries_total", {"error": "ConnectionError"}) == 2


def test_the_worker_sends_its_outputs_in_record_batches_of_the_size_set() -> None:
    # For a topic whose max.message.bytes is below the default (tests/integration/test_batches.py).
    settings = Settings(_env_file=None, kafka_bootstrap="127.0.0.1:1", redis_url="redis://127.0.0.1:1/0",
                        output_batch_bytes=32 * 1024)
    assert create_app(settings, Metrics(CollectorRegistry())).conf.producer_max_batch_size == 32 * 1024


@dataclass
class RefusesTopicsOnce(ListEmitter):
    """Takes the alerts, then refuses some topics once each, as a broker that loses a partition's
    leader between two sends does: "now", or "later", when what the send returned resolves."""

    refusals: dict[str, str] = field(default_factory=dict)
    refused: list[asyncio.Future] = field(default_factory=list)  # what it returned that failed

    async def send_many(self, topic: str, records: Sequence[tuple[bytes, bytes | None]]) -> list[Any]:
        when = self.refusals.pop(topic, None)
        if when is None:
            return await super().send_many(topic, records)
        if when == "now":
            raise ConnectionError("no leader for the partition")
        self.refused.append(asyncio.get_running_loop().create_future())
        self.refused[-1].set_exception(ConnectionError("no leader for the partition"))
        return self.refused[-1:]


@pytest.mark.parametrize("refusals", [{"deadletter": "now"}, {"deadletter": "later"},
                                      {"deadletter": "later", "churn.snapshots": "now"}], ids=str)
def test_alerts_that_landed_before_a_send_failed_are_not_sent_again_when_the_batch_is(refusals: dict) -> None:
    emitter = RefusesTopicsOnce(refusals=dict(refusals))
    w = worker(emitter, MemoryWindowStore())
    asyncio.run(w.process(decliners().records))
    assert emitter.refusals == {}  # each refused once, and the batch tried again
    assert len(emitter.on("churn.alerts")) == 1 and len(emitter.on("deadletter")) == 1
    assert w.metrics.registry.get_sample_value("churnwatch_batch_retries_total", {"error": "ConnectionError"}) == 1
    # Each failed send was waited for: asyncio would log its exception as never retrieved otherwise.
    assert not any(f._log_traceback for f in emitter.refused)
