"""The batch consumer of the input topics, on a real broker."""

from __future__ import annotations

import asyncio

import pytest

from stream_app.ingest import BatchConsumer
from stream_app.pipeline import RawRecord
from stream_app.settings import Settings, Topics
from stream_app.topics import ensure_topics

pytestmark = pytest.mark.integration


def test_workers_in_one_group_each_own_the_same_partitions_of_every_input_topic(tansu_bootstrap: str,
                                                                                unique: str) -> None:
    # A customer's CDRs and bills share a partition number; if two workers held them, both would
    # write the customer's state. Three workers on four partitions: a round robin splits them.
    topics = Topics(**{name: f"{value}-{unique}" for name, value in Topics().model_dump().items()})
    settings = Settings(topics=topics, kafka_bootstrap=tansu_bootstrap, app_id=f"cw-{unique}", partitions=4)
    ensure_topics(settings, tansu_bootstrap)

    async def nothing(records: list[RawRecord]) -> None:
        return None

    async def assignments() -> list[dict[str, set[int]]]:
        consumers = [BatchConsumer(settings, nothing, asyncio.Lock()) for _ in range(3)]
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
