"""Test your own rule packs and mappings against the real pipeline, without Kafka or Redis.

Build input records with `Log` and the event builders, run them through the worker's batch
pipeline with `run_batches` (an in-memory store and a fixed clock), and look at what came out:

>>> import stream_app
>>> shipped = Path(stream_app.__file__).parents[1] / "alert_rules"  # the default pack, in a source tree
>>> log = Log()
>>> decliner(log, "8613800000001")
>>> decliner(log, "8613800000002", minutes=(300, 300, 300))
>>> out = run_batches(log.records, [shipped])
>>> [a.customer_id for a in out.alerts]
['8613800000001']

`fingerprint` tells whether two runs counted the same events into a customer's state (the
write counter and evaluation bookkeeping left out): a replay must not change it.
"""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

import msgspec
from prometheus_client import CollectorRegistry

from stream_app.errors import ConfigError
from stream_app.metrics import Metrics
from stream_app.rules.pack import Ruleset, load_rules
from stream_app.settings import Settings
from stream_app.windows.state import usage_fingerprint
from stream_app.windows.store import MemoryWindowStore
from stream_app.worker.pipeline import BatchOutput, BatchProcessor, RawRecord

__all__ = ["Log", "billing", "cdr", "decliner", "fingerprint", "fixed_clock", "profile", "run_batches", "run_through"]

_ids = itertools.count()
#: After every event the builders' examples make: events ahead of the clock are refused.
DEFAULT_NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def cdr(customer: str, ts: str, **extra: object) -> bytes:
    """A voice call record (10 minutes, outgoing) at `ts`; `extra` sets or adds fields."""
    body = {"event_id": f"t-{next(_ids)}", "customer_id": customer, "ts": ts, "kind": "voice",
            "direction": "MO", "duration_s": 600, **extra}
    return msgspec.json.encode(body)


def billing(customer: str, ts: str, kind: str = "bill", **extra: object) -> bytes:
    """A billing event of `kind` at `ts`."""
    body = {"event_id": f"t-{next(_ids)}", "customer_id": customer, "ts": ts, "kind": kind, **extra}
    return msgspec.json.encode(body)


def profile(customer: str, ts: str = "2026-01-01T00:00:00+08:00", **extra: object) -> bytes:
    """A CRM profile: a gold-tier postpaid customer since 2020 unless `extra` says otherwise."""
    body = {"event_id": f"t-{next(_ids)}", "customer_id": customer, "ts": ts, "activation_date": "2020-05-01",
            "plan": "postpaid-150", "region": "north", "vip_tier": "gold", **extra}
    return msgspec.json.encode(body)


class Log:
    """An append-only log per topic that hands out offsets like a partition does."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.records: list[RawRecord] = []

    def add(self, topic: str, customer: str, value: bytes | None, partition: int = 0) -> RawRecord:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        rec = RawRecord(topic, partition, offset, customer.encode(), value)
        self.records.append(rec)
        return rec


def decliner(log: Log, customer: str, months: tuple[int, ...] = (3, 4, 5),
             minutes: tuple[int, ...] = (300, 300, 60), **profile_fields: object) -> None:
    """A mid/high-end customer whose outgoing minutes fall in the last month; bills of 150 yuan.
    `profile_fields` go on their profile (`attributes`, for instance)."""
    log.add("customers", customer, profile(customer, **profile_fields))
    for month, total in zip(months, minutes):
        for day in range(1, 29, 3):
            ts = datetime(2026, month, day, 10).isoformat() + "+08:00"
            log.add("cdr", customer, cdr(customer, ts, duration_s=int(total * 60 / 10)))
        log.add("billing", customer, billing(customer, f"2026-{month + 1:02d}-01T02:00:00+08:00", amount=150.0,
                                             period=f"2026-{month:02d}"))
    for day in range(1, 21, 3):  # the current month goes on at the last month's pace
        ts = datetime(2026, months[-1] + 1, day, 10).isoformat() + "+08:00"
        log.add("cdr", customer, cdr(customer, ts, duration_s=int(minutes[-1] * 60 / 10)))


def fixed_clock(now: datetime = DEFAULT_NOW) -> Callable[[], datetime]:
    """A wall clock that always says `now` (timezone-aware)."""
    if now.tzinfo is None:
        raise ConfigError(f"a fixed clock needs a timezone-aware time, got {now!r}")
    return lambda: now


def run_batches(records: Sequence[RawRecord], rules: Ruleset | Sequence[str | Path],
                settings: Settings | None = None, store: MemoryWindowStore | None = None,
                clock: Callable[[], datetime] | None = None, batch_size: int = 500) -> BatchOutput:
    """Run `records` through the worker's pipeline in batches, as a worker would, and return
    everything the batches sent (alerts, dead letters, snapshots, churn events, erasures).
    `rules`: a loaded rule set, or rule files and folders. Pass a `store` to look at the
    customers' states afterwards, or to run more records on top of them."""
    ruleset = rules if isinstance(rules, Ruleset) else load_rules([Path(p) for p in rules])
    processor = BatchProcessor(settings or Settings(_env_file=None), store or MemoryWindowStore(), lambda: ruleset,
                               Metrics(CollectorRegistry()), clock=clock or fixed_clock())
    return run_through(processor, records, batch_size)


def run_through(processor: BatchProcessor, records: Sequence[RawRecord], batch_size: int = 500) -> BatchOutput:
    """Run `records` through a batch processor of your own making, in batches, and return
    everything the batches sent, with the counts of records applied and replayed."""
    total = BatchOutput()

    async def keep(out: BatchOutput) -> None:
        total.alerts += out.alerts
        total.deadletters += out.deadletters
        total.snapshots += out.snapshots
        total.churn_events += out.churn_events
        total.won_back += out.won_back
        total.erased += out.erased

    async def go() -> None:
        for k in range(0, len(records), batch_size):
            out = await processor.run(records[k:k + batch_size], keep)
            total.applied += out.applied
            total.replayed += out.replayed

    asyncio.run(go())
    return total


def fingerprint(store: MemoryWindowStore, customer: str) -> bytes:
    """What the customer's state counted, without its write counter and evaluation bookkeeping."""
    return usage_fingerprint(store.data[customer])
