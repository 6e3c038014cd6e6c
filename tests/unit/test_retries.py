"""Only infrastructure blocks a batch, and it is waited out: a batch whose outputs the broker
refuses is tried again until it goes through, and `/readyz` says why meanwhile."""

import asyncio

import pytest
from aiokafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from stream_app.metrics import Metrics
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings
from stream_app.testing import fixed_clock
from stream_app.windows.store import MemoryWindowStore, StateLost
from stream_app.worker.endpoints import Health
from stream_app.worker.pipeline import BatchOutput, BatchProcessor
from stream_app.worker.runtime import until_done
from tests.factories import Log, billing, cdr


def test_a_batch_the_broker_refuses_is_tried_again_until_it_goes_through() -> None:
    health, metrics = Health(partitions=4, redis_answered_at=float("inf")), Metrics(CollectorRegistry())
    seen: list[tuple[bool, str]] = []

    async def send() -> None:
        seen.append(health())
        if len(seen) < 3:
            raise KafkaTimeoutError("the broker did not answer the produce request")

    asyncio.run(until_done(send, health, metrics, max_backoff_s=0.02, first_backoff_s=0.01))
    assert len(seen) == 3 and seen[0][0] and not seen[1][0] and "KafkaTimeoutError" in seen[1][1]
    assert health()[0] and health.blocked is None
    assert metrics.registry.get_sample_value("churnwatch_batch_retries_total", {"error": "KafkaTimeoutError"}) == 2


def test_redis_having_lost_its_state_is_not_retried_but_handed_to_the_consumer() -> None:
    async def lost() -> None:
        raise StateLost("gone")

    with pytest.raises(StateLost):
        asyncio.run(until_done(lost, Health(), Metrics(CollectorRegistry()), max_backoff_s=0.01))


def test_a_batch_tried_again_counts_its_events_once() -> None:
    """The events counter is what `bench` and the dashboards read a worker's rate from: a batch
    the broker refused twice is still one batch of its events."""
    log, metrics = Log(), Metrics(CollectorRegistry())
    for k in range(6):
        log.add("cdr", f"c{k % 3}", cdr(f"c{k % 3}", f"2026-05-0{1 + k}T10:00:00+08:00"))
    log.add("billing", "c0", billing("c0", "2026-05-07T10:00:00+08:00", kind="topup", amount=10.0))
    processor = BatchProcessor(Settings(_env_file=None), MemoryWindowStore(), lambda: load_rules([]), metrics,
                               clock=fixed_clock())
    refused = 0

    async def send(out: BatchOutput) -> dict:
        nonlocal refused
        if refused < 2:
            refused += 1
            raise KafkaTimeoutError("the broker did not answer the produce request")
        return {}

    asyncio.run(until_done(lambda: processor.run(log.records, send), Health(), metrics, max_backoff_s=0.02,
                           first_backoff_s=0.01))
    assert refused == 2
    counted = {t: metrics.registry.get_sample_value("churnwatch_events_consumed_total", {"topic": t})
               for t in ("cdr", "billing")}
    assert counted == {"cdr": 6, "billing": 1}
