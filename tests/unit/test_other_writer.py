"""Another writer moves customers on while a batch is under way (a worker that lost its partitions
in a rebalance and does not know it yet): nothing is sent on a moved state, nothing counted twice."""

import asyncio
from typing import Collection, Sequence

from prometheus_client import CollectorRegistry

from stream_app.metrics import Metrics
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings
from stream_app.testing import fingerprint, run_through
from stream_app.windows.book import Book
from stream_app.windows.store import Applied, Increments, MemoryWindowStore, Write
from stream_app.worker.pipeline import BatchOutput, BatchProcessor, RawRecord, Sender
from tests.factories import Log, cdr, decliner
from tests.unit.test_pipeline import CLOCK, RULES


class Contested(MemoryWindowStore):
    """A store where another worker runs its batch just before this one's check (`at="check"`) or
    its write (`at="write"`), once; it records whom each check asked about."""

    def __init__(self, at: str) -> None:
        super().__init__()
        self.at = at
        self.other: list[RawRecord] = []
        self.checked: list[set[str]] = []

    async def _other_writer(self, now: str) -> None:
        if self.at == now and self.other:
            records, self.other = self.other, []
            await worker(self).run(records, _keep([]))

    async def stale(self, writes: dict[str, Write]) -> list[str]:
        self.checked.append(set(writes))
        await self._other_writer("check")
        return await super().stale(writes)

    async def save(self, writes: dict[str, Write], report: Increments | None = None,
                   applied: Applied | None = None, book: Book | None = None,
                   renew: Collection[str] | None = None, sent: asyncio.Event | None = None) -> list[str]:
        await self._other_writer("write")
        return await super().save(writes, report, applied, book, renew, sent)


def worker(store: MemoryWindowStore, rules: Ruleset = RULES) -> BatchProcessor:
    return BatchProcessor(Settings(), store, lambda: rules, Metrics(CollectorRegistry()), clock=lambda: CLOCK)


def _keep(sent: list[BatchOutput]) -> Sender:
    """A sender that keeps what it is given."""

    async def keep(out: BatchOutput) -> None:
        sent.append(out)
    return keep


def test_a_customer_with_nothing_to_send_moved_on_before_the_write_is_prepared_again_and_counted_once() -> None:
    log = Log()
    quiet, other = "8613800000031", "8613800000032"
    for hour in range(10, 14):  # within a day: no snapshot, nothing to send
        log.add("cdr", quiet, cdr(quiet, f"2026-03-02T{hour}:00:00+08:00"))
        log.add("cdr", other, cdr(other, f"2026-03-02T{hour}:30:00+08:00"))
    first, contested = log.records[:2], log.records[2:]
    store = Contested(at="write")
    run_through(worker(store), first)
    # The new owner of the partition reads on from the same committed offset and writes first.
    store.other, store.checked = contested, []
    sent: list[BatchOutput] = []
    asyncio.run(worker(store).run(contested, _keep(sent)))
    assert not any(out.snapshots or out.alerts for out in sent)
    # This worker's first try, the other's batch, this worker's second try (its write was refused):
    # nothing to send, so no customer was checked before sending.
    assert store.checked == [set(), set(), set()]
    clean = MemoryWindowStore()
    run_through(worker(clean), log.records)
    assert fingerprint(store, quiet) == fingerprint(clean, quiet)
    assert fingerprint(store, other) == fingerprint(clean, other)


def test_an_alerted_customer_moved_on_before_the_check_is_prepared_again_before_anything_is_sent() -> None:
    log = Log()
    customer = "8613800000033"
    decliner(log, customer)
    before, contested = log.records[:-20], log.records[-20:]
    alone: list[BatchOutput] = []
    clean = MemoryWindowStore()
    run_through(worker(clean), before)
    asyncio.run(worker(clean).run(contested, _keep(alone)))
    assert [a.customer_id for out in alone for a in out.alerts] == [customer]  # the contested batch alerts

    store = Contested(at="check")
    run_through(worker(store), before)
    store.other, store.checked = contested, []
    sent: list[BatchOutput] = []
    asyncio.run(worker(store).run(contested, _keep(sent)))
    assert customer in store.checked[0]
    # The other writer applied the records and sent the alert; this one, prepared again on the state
    # the other wrote, finds them applied and sends nothing.
    assert [a for out in sent for a in out.alerts] == []
    assert fingerprint(store, customer) == fingerprint(clean, customer)


def test_only_customers_with_something_to_send_are_checked() -> None:
    log = Log()
    alerted, quiet = "8613800000034", "8613800000035"
    decliner(log, alerted)
    for hour in range(10, 14):
        log.add("cdr", quiet, cdr(quiet, f"2026-03-02T{hour}:00:00+08:00"))
    store = Contested(at="never")
    sent: list[BatchOutput] = []

    async def go(batches: Sequence[list[RawRecord]]) -> None:
        proc = worker(store)
        for batch in batches:
            await proc.run(batch, _keep(sent))

    asyncio.run(go([log.records[k:k + 50] for k in range(0, len(log.records), 50)]))
    assert alerted in {a.customer_id for out in sent for a in out.alerts}
    assert any(alerted in asked for asked in store.checked)
    assert all(quiet not in asked for asked in store.checked)
