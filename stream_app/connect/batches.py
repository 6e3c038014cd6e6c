"""Many records to one topic as record batches, on the partitions Kafka's clients choose for their keys.

A morning's batch of traffic sends a snapshot per customer. aiokafka's `send` does, per record,
what a batch needs once (the topic's metadata, the size check, two lists of partitions) and hashes
the key in pure Python: in a run of 20,000 snapshots of 200 bytes to the embedded broker, a record
cost 12 us of the worker's CPU that way, 1.5 us as 256 KiB batches (docs/performance.md); the
pure-Python hash alone is 3.3 us. `send_batches` hashes each key with murmur2 in compiled code
(`murmurhash2`) and fills aiokafka's own record batches partition by partition, each in the order
given: a key's records keep their order, and each lands on the partition aiokafka's and the Java
client's default partitioner give it. The batches go round by round across the partitions, so
that one request carries a batch of each.

A topic whose `max.message.bytes` is below a batch refuses it on every try. What it raises then
names the topic and the setting that fits the batches to it (`OutputTooLarge`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from murmurhash2 import murmurhash2

from stream_app.errors import NotReady

__all__ = ["OutputTooLarge", "partition_of", "send_batches"]

_SEED = 0x9747B28C  # the seed of Kafka's murmur2 (the Java client's `Utils.murmur2`)


class OutputTooLarge(NotReady):
    """A topic refused a record batch as larger than its `max.message.bytes`: the batch is tried
    again until the topic takes it, and readiness says what to change."""


def partition_of(key: bytes, partitions: int) -> int:
    """The partition, of `partitions`, that Kafka's default partitioner gives a record with this key."""
    return (murmurhash2(key, _SEED) & 0x7FFFFFFF) % partitions


async def send_batches(producer: AIOKafkaProducer, topic: str,
                       records: Sequence[tuple[bytes, bytes | None]]) -> list[Awaitable[object]]:
    """Queue (key, value) records to `topic`; each of what it returns resolves once the broker has
    one batch of them (a value None is a tombstone)."""
    if not records:
        return []
    partitions = sorted(await producer.partitions_for(topic))
    by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
    for key, value in records:
        by_partition.setdefault(partitions[partition_of(key, len(partitions))], []).append((key, value))
    batches = {partition: _filled(producer, group) for partition, group in by_partition.items()}
    # Round by round across the partitions: a partition's next batch waits until its last one is
    # on its way, and one request carries a batch of each partition.
    sent = []
    for turn in range(max(len(queued) for queued in batches.values())):
        for partition, queued in batches.items():
            if turn < len(queued):
                batch, size = queued[turn], queued[turn].size()
                landed = await producer.send_batch(batch, topic, partition=partition)
                sent.append(asyncio.ensure_future(_named(landed, topic, size)))
    return sent


async def _named(landed: Awaitable[object], topic: str, size: int) -> object:
    """What a batch's send resolves to; a refusal as too large names the topic and the fix."""
    try:
        return await landed
    except MessageSizeTooLargeError as exc:
        raise OutputTooLarge(f"{topic} refused a record batch of {size:,} bytes as too large: set CHURNWATCH_"
                             "OUTPUT_BATCH_BYTES below the topic's max.message.bytes, or raise that") from exc


def _filled(producer: AIOKafkaProducer, records: list[tuple[bytes, bytes | None]]) -> list[Any]:
    """The records in record batches of the producer's size, in order."""
    batches = [producer.create_batch()]
    for key, value in records:
        # A full batch refuses a record (None); an empty one takes any.
        if batches[-1].append(key=key, value=value, timestamp=None) is None:
            batches.append(producer.create_batch())
            batches[-1].append(key=key, value=value, timestamp=None)
    return batches
