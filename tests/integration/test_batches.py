"""Records sent as record batches land where aiokafka's own `send` puts them, once each, in order."""

from __future__ import annotations

import asyncio
import os
import random

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from stream_app.connect.batches import OutputTooLarge, partition_of, send_batches

pytestmark = pytest.mark.integration


def test_a_key_hashes_to_the_partition_of_kafkas_default_partitioner() -> None:
    rng = random.Random(7)
    keys = [rng.randbytes(rng.randint(0, 40)) for _ in range(3000)] + [f"86138{i:08d}".encode() for i in range(3000)]
    for count in (1, 3, 4, 12, 256):
        partitions = list(range(count))
        assert [partition_of(k, count) for k in keys] == [DefaultPartitioner()(k, partitions, []) for k in keys]


async def _read(bootstrap: str, topic: str, count: int) -> list[tuple[int, bytes, bytes | None]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    got: list[tuple[int, bytes, bytes | None]] = []
    try:
        async with asyncio.timeout(60):
            while len(got) < count:
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    got += [(tp.partition, r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return got


async def _both_ways(bootstrap: str, unique: str) -> tuple[list, list, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    names = (f"one-by-one-{unique}", f"batched-{unique}")
    await admin.create_topics([NewTopic(name, 4, 1) for name in names])
    await admin.close()
    # Each key three times, numbered, its last a tombstone: more than one of the worker's 256 KiB
    # batches a partition.
    keys = [f"86138{i:08d}".encode() for i in range(1500)]
    records = [(k, bytes([turn]) + os.urandom(300) if turn < 2 else None) for turn in range(3) for k in keys]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=256 * 1024)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(names[0], v, key=k) for k, v in records])
        sent = await send_batches(producer, names[1], records)
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return await _read(bootstrap, names[0], len(records)), await _read(bootstrap, names[1], len(records)), len(sent)


def test_batched_records_land_where_send_puts_them_once_each_in_order(bootstrap: str, unique: str) -> None:
    one_by_one, batched, batches = asyncio.run(_both_ways(bootstrap, unique))
    assert batches > 4  # more than one record batch a partition
    assert sorted(batched, key=repr) == sorted(one_by_one, key=repr)  # the same records, once each
    by_key: dict[bytes, list[tuple[int, bytes | None]]] = {}
    for partition, key, value in batched:
        by_key.setdefault(key, []).append((partition, value))
    for key, seen in by_key.items():
        assert len({p for p, _ in seen}) == 1
        assert [v[0] if v is not None else None for _, v in seen] == [0, 1, None]  # in the order sent


async def _to_a_small_topic(bootstrap: str, topic: str, batch_bytes: int) -> int | str:
    """How many records of a batch sent in batches of `batch_bytes` land on a topic that takes
    32 KiB a batch, or what the refusal said."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1, topic_configs={"max.message.bytes": str(32 * 1024)})])
    await admin.close()
    records = [(f"86138{i:08d}".encode(), os.urandom(300)) for i in range(600)]  # 190 KB that do not compress
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=batch_bytes)
    await producer.start()
    try:
        await asyncio.gather(*await send_batches(producer, topic, records))
    except OutputTooLarge as exc:
        return str(exc)
    finally:
        await producer.stop()
    return len(await _read(bootstrap, topic, len(records)))


# Apache Kafka only: Tansu takes a batch over a topic's max.message.bytes.
@pytest.mark.apache_kafka
def test_a_topic_that_refuses_the_batches_as_too_large_names_the_setting_that_fits_them(kafka_bootstrap: str,
                                                                                       unique: str) -> None:
    refusal = asyncio.run(_to_a_small_topic(kafka_bootstrap, f"small-{unique}", 256 * 1024))
    assert isinstance(refusal, str) and refusal.startswith(f"small-{unique} refused a record batch of ")
    assert "CHURNWATCH_OUTPUT_BATCH_BYTES" in refusal
    assert asyncio.run(_to_a_small_topic(kafka_bootstrap, f"fitted-{unique}", 16 * 1024)) == 600
