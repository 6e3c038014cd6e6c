"""A batch's state write left under way while the next batch is decoded (`Worker.begin`): the next
batch reads no state before that write has landed, a write that fails is tried again before
anything after it, and the outcome is the outcome of one batch after the other. Around it, the
consumer (`BatchConsumer`) commits a batch once its write has landed, lets it land when it stops
or gives partitions up without ever hanging on it, and reads both batches again if Redis lost
data (its commits on a real broker: tests/integration/test_ingest.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Collection

import msgspec
import pytest
from aiokafka import TopicPartition

from stream_app.contracts.events import Alert
from stream_app.windows.store import MemoryWindowStore, StateLost, Write
from stream_app.worker import consumer
from stream_app.worker.consumer import BatchConsumer
from stream_app.worker.runtime import Worker
from tests.unit.test_worker import ListEmitter, decliners, worker


@dataclass
class HeldStore(MemoryWindowStore):
    """Keeps each write until `open` is set, and logs what it is asked, in order; fails the first
    `failures` writes, after doing nothing, with an error no retry of Redis's covers, or with
    `failure` if one is given."""

    open: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[str] = field(default_factory=list)
    failures: int = 0
    failure: Exception | None = None

    def __post_init__(self) -> None:
        super().__init__()

    async def load(self, customers: list[str]) -> list[bytes | None]:  # type: ignore[override]
        self.calls.append("load")
        return await super().load(customers)

    async def save(self, writes: dict[str, Write], report: dict | None = None, applied: dict | None = None,
                   book: dict | None = None, renew: Collection[str] | None = None,
                   sent: asyncio.Event | None = None) -> list[str]:
        self.calls.append("write")
        if sent is not None:
            sent.set()
        await self.open.wait()
        if self.failures:
            self.failures -= 1
            raise self.failure or RuntimeError("the write's reply was lost")
        conflicts = await super().save(writes, report, applied, book, renew, sent)
        self.calls.append("landed")
        return conflicts


RECORDS = decliners().records  # made once: each call numbers its events afresh


def _batches(n: int) -> list[list]:
    size = -(-len(RECORDS) // n)
    return [RECORDS[k:k + size] for k in range(0, len(RECORDS), size)]


async def _nothing() -> None:
    return None


def _alerts(emitter: ListEmitter) -> list[tuple[str, str]]:
    return [(a.customer_id, a.alert_id) for a in (msgspec.json.decode(v, type=Alert)
                                                  for _, v, _ in emitter.on("churn.alerts"))]


def _one_after_another(n: int) -> tuple[MemoryWindowStore, ListEmitter]:
    emitter, store = ListEmitter(), MemoryWindowStore()
    w = worker(emitter, store)

    async def go() -> None:
        for batch in _batches(n):
            await w.process(batch)

    asyncio.run(go())
    return store, emitter


def _admitted_spy(w: Worker, calls: list[str]) -> None:
    admit = w.processor.admit

    def logged(records: list) -> object:
        calls.append("decode")
        return admit(records)

    w.processor.admit = logged  # type: ignore[method-assign]


def test_the_next_batch_is_decoded_while_the_write_lands_and_reads_its_states_only_after() -> None:
    emitter = ListEmitter()

    async def go() -> HeldStore:
        store = HeldStore()
        w = worker(emitter, store)
        _admitted_spy(w, store.calls)
        first, second = _batches(2)
        landing = await w.begin(first, False, _nothing)
        assert store.calls == ["decode", "load", "write"]  # under way, held
        task = asyncio.create_task(w.begin(second, False, landing))
        await asyncio.sleep(0.05)
        assert store.calls[3:] == ["decode"]  # decoded, no state read while the write is held
        store.open.set()
        await (await task)()
        assert store.calls[3:] == ["decode", "landed", "load", "write", "landed"]
        return store

    store = asyncio.run(go())
    expected, sequential = _one_after_another(2)
    assert store.data == expected.data and store.offsets == expected.offsets and store.report == expected.report
    assert _alerts(emitter) == _alerts(sequential) and _alerts(emitter)


def test_a_write_that_fails_after_the_next_batch_was_decoded_is_tried_again_before_that_batch() -> None:
    emitter = ListEmitter()

    async def go() -> tuple[HeldStore, Worker]:
        store = HeldStore(failures=1)
        store.open.set()
        w = worker(emitter, store)
        landing = _nothing
        for batch in _batches(3):
            landing = await w.begin(batch, False, landing)
        await landing()
        return store, w

    store, w = asyncio.run(go())
    # The first write failed: the first batch was prepared and written again, before the second read a state.
    assert store.calls[:6] == ["load", "write", "load", "write", "landed", "load"]
    assert w.metrics.registry.get_sample_value("churnwatch_batch_retries_total", {"error": "RuntimeError"}) == 1
    expected, sequential = _one_after_another(3)
    assert store.data == expected.data and store.offsets == expected.offsets and store.report == expected.report
    assert _alerts(emitter) == _alerts(sequential)


# The consumer around it: a stand-in for aiokafka's consumer, whose `stop` waits for a rebalance's
# callback under way, as aiokafka's does (its coordinator's close awaits the coordination task).


def _fetches(n: int) -> list[dict[TopicPartition, list]]:
    out = []
    for batch in _batches(n):
        fetched: dict[TopicPartition, list] = {}
        for r in batch:
            fetched.setdefault(TopicPartition(r.topic, r.partition), []).append(
                SimpleNamespace(topic=r.topic, partition=r.partition, offset=r.offset, key=r.key, value=r.value))
        out.append(fetched)
    return out


class Kafka:
    """What `BatchConsumer` asks of aiokafka's consumer: batches to fetch, and commits and seeks kept."""

    def __init__(self, fetches: list[dict]) -> None:
        self.fetches = list(fetches)
        self.owned = {tp for f in fetches for tp in f}
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: list[tuple[TopicPartition, int]] = []
        self.listener: Any = None
        self.rebalance: asyncio.Task | None = None

    async def start(self) -> None:
        return None

    def subscribe(self, topics: Any, listener: Any) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int, max_records: int) -> dict:
        if self.fetches:
            await asyncio.sleep(0)
            return self.fetches.pop(0)
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.owned)

    async def commit(self, offsets: dict) -> None:
        self.commits.append({tp: o.offset for tp, o in offsets.items()})

    async def committed(self, tp: TopicPartition) -> int | None:
        return None

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))

    async def stop(self) -> None:
        if self.rebalance is not None:
            await self.rebalance


def _consumer(store: MemoryWindowStore, kafka: Kafka, applied: Any = None) -> BatchConsumer:
    w = worker(ListEmitter(), store)
    c = BatchConsumer(w.settings, w.begin, asyncio.Lock(), applied or store.applied)
    c._consumer = lambda: kafka  # type: ignore[method-assign,assignment,return-value]
    return c


def test_a_worker_stopped_while_a_write_is_under_way_lets_it_land_and_commits_its_batch() -> None:
    async def go() -> tuple[HeldStore, Kafka]:
        store, kafka = HeldStore(), Kafka(_fetches(2))
        c = _consumer(store, kafka)
        run = asyncio.create_task(c.run())
        while kafka.fetches or c._under_way is None:  # the first write held, the second batch waiting for it
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        run.cancel()
        await asyncio.sleep(0.05)
        store.open.set()  # Redis answers after the stop began
        await asyncio.gather(run, return_exceptions=True)
        return store, kafka

    store, kafka = asyncio.run(go())
    assert store.calls == ["load", "write", "landed"]
    assert kafka.commits == [{tp: ms[-1].offset + 1 for tp, ms in _fetches(2)[0].items()}]


def test_a_worker_stopped_in_a_rebalance_while_redis_refuses_its_write_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    # Out of memory: an infrastructure failure, tried again and again. The rebalance waits for the
    # write, the stop waits for it only so long, and the batch is left uncommitted.
    monkeypatch.setattr(consumer, "_LAND_ON_STOP_S", 1.0)

    async def go() -> tuple[bool, Kafka]:
        store, kafka = HeldStore(failures=10**6), Kafka(_fetches(1))
        store.open.set()
        c = _consumer(store, kafka)
        run = asyncio.create_task(c.run())
        while "write" not in store.calls:
            await asyncio.sleep(0.01)
        kafka.rebalance = asyncio.create_task(kafka.listener.on_partitions_revoked(set(kafka.owned)))
        await asyncio.sleep(0.1)
        run.cancel()
        done, _ = await asyncio.wait({run}, timeout=10)
        store.failures = 0
        await asyncio.gather(run, kafka.rebalance, return_exceptions=True)
        return bool(done), kafka

    stopped, kafka = asyncio.run(go())
    assert stopped and kafka.commits == []


def test_a_worker_stopped_in_a_rebalance_that_gives_its_partitions_back_while_redis_is_away_stops(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # aiokafka's stop waits for its coordination task, which revokes, rejoins and assigns: the
    # assignment's check of what Redis applied must not wait for Redis past the stop either.
    monkeypatch.setattr(consumer, "_LAND_ON_STOP_S", 1.0)

    async def away() -> dict:
        raise ConnectionError("Redis is away")

    async def go() -> tuple[bool, Kafka]:
        store, kafka = HeldStore(), Kafka(_fetches(1))  # the write never lands
        c = _consumer(store, kafka, away)
        run = asyncio.create_task(c.run())
        while kafka.fetches or c._under_way is None:
            await asyncio.sleep(0.01)

        async def rebalance() -> None:
            await kafka.listener.on_partitions_revoked(set(kafka.owned))
            await kafka.listener.on_partitions_assigned(set(kafka.owned))

        kafka.rebalance = asyncio.create_task(rebalance())
        await asyncio.sleep(0.1)
        run.cancel()
        done, _ = await asyncio.wait({run}, timeout=10)
        store.open.set()
        for task in (run, kafka.rebalance):
            task.cancel()
        await asyncio.gather(run, kafka.rebalance, return_exceptions=True)
        return bool(done), kafka

    stopped, kafka = asyncio.run(go())
    assert stopped and kafka.commits == []


def test_redis_lost_while_the_next_batch_waits_for_the_write_reads_both_batches_again() -> None:
    async def go() -> tuple[HeldStore, Kafka]:
        lost = StateLost("an applied offset recorded before is gone")
        store, kafka = HeldStore(failures=1, failure=lost), Kafka(_fetches(2))
        c = _consumer(store, kafka)
        run = asyncio.create_task(c.run())
        while kafka.fetches or c._under_way is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        store.open.set()
        while not kafka.seeks:
            await asyncio.sleep(0.01)
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        return store, kafka

    store, kafka = asyncio.run(go())
    first: dict[TopicPartition, int] = {}
    for fetched in _fetches(2):
        for tp, messages in fetched.items():
            first.setdefault(tp, messages[0].offset)
    assert kafka.commits == [] and store.calls == ["load", "write"]
    assert dict(kafka.seeks[:len(first)]) == first  # each partition from the first batch's first offset
