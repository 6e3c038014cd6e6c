"""A batch's state write left under way while the next batch is decoded (`Worker.begin`): the next
batch reads no state before that write has landed, a write that fails is tried again before
anything after it, and the outcome is the outcome of one batch after the other."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Collection

import msgspec

from stream_app.contracts.events import Alert
from stream_app.windows.store import MemoryWindowStore, Write
from stream_app.worker.runtime import Worker
from tests.unit.test_worker import ListEmitter, decliners, worker


@dataclass
class HeldStore(MemoryWindowStore):
    """Keeps each write until `open` is set, and logs what it is asked, in order; fails the first
    `failures` writes, after doing nothing, with an error no retry of Redis's covers."""

    open: asyncio.Event = field(default_factory=asyncio.Event)
    calls: list[str] = field(default_factory=list)
    failures: int = 0

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
            raise RuntimeError("the write's reply was lost")
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
