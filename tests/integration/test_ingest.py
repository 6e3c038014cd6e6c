"""The batch consumer of the input topics, on a real broker."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from kafka import KafkaProducer

from stream_app.connect.topics import ensure_topics
from stream_app.settings import Settings, Topics
from stream_app.worker.consumer import BatchConsumer, Landing
from stream_app.worker.pipeline import RawRecord

pytestmark = pytest.mark.integration


async def landed() -> None:
    """A batch that writes nothing: nothing to wait for."""


async def nothing_applied() -> dict[tuple[str, int], int]:
    """What Redis has applied, for a consumer without a pipeline: nothing (and nothing is committed)."""
    return {}


def test_workers_in_one_group_each_own_the_same_partitions_of_every_input_topic(tansu_bootstrap: str,
                                                                                unique: str) -> None:
    # A customer's CDRs and bills share a partition number; if two workers held them, both would
    # write the customer's state. Three workers on four partitions: a round robin splits them.
    topics = Topics(**{name: f"{value}-{unique}" for name, value in Topics().model_dump().items()})
    settings = Settings(topics=topics, kafka_bootstrap=tansu_bootstrap, app_id=f"cw-{unique}", partitions=4)
    ensure_topics(settings, tansu_bootstrap)

    async def nothing(records: list[RawRecord], silent: bool, previous: Landing) -> Landing:
        await previous()
        return landed

    async def assignments() -> list[dict[str, set[int]]]:
        consumers = [BatchConsumer(settings, nothing, asyncio.Lock(), nothing_applied) for _ in range(3)]
        tasks = [asyncio.create_task(c.run()) for c in consumers]
        try:
            for _ in range(120):
                await asyncio.sleep(0.5)
                if all(c.consumer for c in consumers) and sum(c.partitions for c in consumers) == 16:
                    break
            owned = []
            for c in consumers:
                by_topic: dict[str, set[int]] = {t: set() for t in topics.inputs()}
                for tp in c.consumer.assignment():  # type: ignore[union-attr]
                    by_topic[tp.topic].add(tp.partition)
                owned.append(by_topic)
            return owned
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    owned = asyncio.run(assignments())
    assert sum(len(p) for worker in owned for p in worker.values()) == 16, owned
    for worker in owned:
        assert len({frozenset(p) for p in worker.values()}) == 1, worker  # the same numbers on every topic


def test_lag_is_reported_after_every_batch_and_falls_to_zero(tansu_bootstrap: str, unique: str) -> None:
    topics = Topics(**{name: f"{value}-{unique}" for name, value in Topics().model_dump().items()})
    settings = Settings(topics=topics, kafka_bootstrap=tansu_bootstrap, app_id=f"cw-{unique}", partitions=1,
                        batch_size=100)
    ensure_topics(settings, tansu_bootstrap)
    producer = KafkaProducer(bootstrap_servers=tansu_bootstrap, linger_ms=20)
    for _ in range(1000):
        producer.send(topics.cdr, key=b"8613800000001", value=b"{}")
    producer.flush()
    producer.close()
    handled: list[int] = []
    reported: list[int] = []

    async def count(records: list[RawRecord], silent: bool, previous: Landing) -> Landing:
        await previous()
        handled.append(len(records))
        return landed

    async def consume() -> None:
        consumer = BatchConsumer(settings, count, asyncio.Lock(), nothing_applied,
                                 lambda lags: reported.append(sum(lags.values())))
        task = asyncio.create_task(consumer.run())
        for _ in range(120):
            await asyncio.sleep(0.5)
            if sum(handled) == 1000:
                break
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(consume())
    assert sum(handled) == 1000 and max(handled) <= 100
    assert reported[0] > 0 and reported[-1] == 0  # the backlog shows from the first batch, and is worked off
    assert reported == sorted(reported, reverse=True)


def test_a_batch_is_committed_only_once_its_write_has_landed(tansu_bootstrap: str, unique: str) -> None:
    # The write is left under way while the next batch is read: a crash before it lands must find
    # the batch uncommitted, so that it is read again.
    topics = Topics(**{name: f"{value}-{unique}" for name, value in Topics().model_dump().items()})
    settings = Settings(topics=topics, kafka_bootstrap=tansu_bootstrap, app_id=f"cw-{unique}", partitions=1,
                        batch_size=100)
    ensure_topics(settings, tansu_bootstrap)
    producer = KafkaProducer(bootstrap_servers=tansu_bootstrap)
    for _ in range(100):
        producer.send(topics.cdr, key=b"8613800000001", value=b"{}")
    producer.flush()
    producer.close()
    handled: list[int] = []

    async def consume() -> tuple[int | None, int | None]:
        lands = asyncio.Event()

        async def held(records: list[RawRecord], silent: bool, previous: Landing) -> Landing:
            await previous()
            handled.append(len(records))
            return lands.wait  # type: ignore[return-value]

        consumer = BatchConsumer(settings, held, asyncio.Lock(), nothing_applied)
        task = asyncio.create_task(consumer.run())
        tp = TopicPartition(topics.cdr, 0)
        try:
            for _ in range(120):
                await asyncio.sleep(0.25)
                if handled:
                    break
            # Quiet since, or a second batch waiting for the first's write: either way nothing landed.
            await asyncio.sleep(1.0)
            held_back = await consumer.consumer.committed(tp)  # type: ignore[union-attr]
            lands.set()
            for _ in range(120):
                await asyncio.sleep(0.25)
                if (landed := await consumer.consumer.committed(tp)) == 100:  # type: ignore[union-attr]
                    break
            return held_back, landed
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    held_back, landed = asyncio.run(consume())
    assert sum(handled) == 100 and held_back is None and landed == 100
