"""Reading a whole output topic from the beginning to its current end, for the commands that work
from what the workers wrote: call lists, the campaign report and the call-queue page."""

from __future__ import annotations

from typing import Callable, Iterator, TypeVar

import msgspec
from kafka import KafkaConsumer, TopicPartition

from stream_app.connect.kafka import client_options
from stream_app.contracts.events import Alert, ChurnEvent, Outcome, decode_outcome
from stream_app.errors import ConfigError, InvalidEvent
from stream_app.settings import Settings

__all__ = ["read_topic", "read_alerts", "read_outcomes", "read_churn_events"]

T = TypeVar("T")


def read_topic(settings: Settings, topic: str, decode: Callable[[bytes], T]) -> Iterator[T]:
    """Every record still on `topic`, decoded, up to the end it had when reading began."""
    if not settings.kafka_bootstrap:
        raise ConfigError(f"KAFKA_BOOTSTRAP is not set: {topic} cannot be read")
    consumer = KafkaConsumer(**client_options(settings), enable_auto_commit=False, consumer_timeout_ms=2000)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not partitions:
            return
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            for records in consumer.poll(timeout_ms=1000).values():
                for msg in records:
                    yield decode(msg.value)
    finally:
        consumer.close()


def read_alerts(settings: Settings) -> Iterator[Alert]:
    """Every alert still on the alerts topic."""
    return read_topic(settings, settings.topics.alerts, msgspec.json.Decoder(Alert).decode)


def read_outcomes(settings: Settings) -> Iterator[Outcome]:
    """Every call outcome still on the outcomes topic; records that are not outcomes are the
    worker's to dead-letter, and are skipped here."""
    def decode(raw: bytes) -> Outcome | None:
        try:
            return decode_outcome(raw)
        except InvalidEvent:
            return None

    return (o for o in read_topic(settings, settings.topics.outcomes, decode) if o is not None)


def read_churn_events(settings: Settings) -> Iterator[ChurnEvent]:
    """Every exit and revenue churn still on the churn events topic."""
    return read_topic(settings, settings.topics.churn_events, msgspec.json.Decoder(ChurnEvent).decode)
