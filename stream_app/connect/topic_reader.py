"""Reading a whole output topic from the beginning to its current end, for the commands that work
from what the workers wrote: call lists, the campaign report and the call-queue page."""

from __future__ import annotations

import logging
from typing import Callable, Generic, Iterator, TypeVar

import msgspec
from kafka import KafkaConsumer, TopicPartition

from stream_app.connect.kafka import client_options
from stream_app.contracts.events import Alert, ChurnEvent, Outcome, WinbackEntry, WonBack, decode_outcome
from stream_app.errors import ConfigError, InvalidEvent
from stream_app.settings import Settings

__all__ = ["TopicFollower", "read_topic", "read_alerts", "read_outcomes", "outcome_or_none", "read_churn_events",
           "read_won_back", "read_winback_lists"]

T = TypeVar("T")
log = logging.getLogger(__name__)


class TopicFollower(Generic[T]):
    """Follows one topic from its beginning: each `read_new` returns the records written since
    the one before, up to the end the topic had when it was called. A page or report that
    keeps one reads each record once, however often it refreshes; partitions added to the
    topic are followed from their beginning too."""

    def __init__(self, settings: Settings, topic: str, decode: Callable[[bytes], T]) -> None:
        if not settings.kafka_bootstrap:
            raise ConfigError(f"KAFKA_BOOTSTRAP is not set: {topic} cannot be read")
        self.topic, self.decode = topic, decode
        self.records_read = self.undecodable = 0
        # `earliest`: a position the broker no longer has (retention) resumes at the oldest record, not the newest.
        self._consumer = KafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                       auto_offset_reset="earliest")
        self._partitions: list[TopicPartition] = []

    def _follow_new_partitions(self) -> None:
        known = self._consumer.partitions_for_topic(self.topic) or set()
        new = [TopicPartition(self.topic, p) for p in sorted(known) if TopicPartition(self.topic, p)
               not in self._partitions]
        if new:
            self._partitions += new
            self._consumer.assign(self._partitions)
            self._consumer.seek_to_beginning(*new)

    def read_new(self) -> Iterator[T]:
        """The records written since the last call, decoded."""
        self._follow_new_partitions()
        if not self._partitions:
            return
        ends = self._consumer.end_offsets(self._partitions)
        while any(self._consumer.position(tp) < ends[tp] for tp in self._partitions):
            for records in self._consumer.poll(timeout_ms=1000).values():
                for msg in records:
                    self.records_read += 1
                    if msg.value is None:  # a tombstone: nothing to read
                        continue
                    try:
                        value = self.decode(msg.value)
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        # A record the service did not write as it reads it: skipped, said, and the rest read.
                        self.undecodable += 1
                        log.warning("skipped %s-%d@%d: %s", msg.topic, msg.partition, msg.offset, exc)
                        continue
                    yield value

    def close(self) -> None:
        self._consumer.close()


def read_topic(settings: Settings, topic: str, decode: Callable[[bytes], T]) -> Iterator[T]:
    """Every record still on `topic`, decoded, up to the end it had when reading began."""
    follower = TopicFollower(settings, topic, decode)
    try:
        yield from follower.read_new()
    finally:
        follower.close()


def read_alerts(settings: Settings) -> Iterator[Alert]:
    """Every alert still on the alerts topic."""
    return read_topic(settings, settings.topics.alerts, msgspec.json.Decoder(Alert).decode)


def outcome_or_none(raw: bytes) -> Outcome | None:
    """An outcome record, or None for one that is not: it is the worker's to dead-letter."""
    try:
        return decode_outcome(raw)
    except InvalidEvent:
        return None


def read_outcomes(settings: Settings) -> Iterator[Outcome]:
    """Every call outcome still on the outcomes topic, without the records that are not outcomes."""
    return (o for o in read_topic(settings, settings.topics.outcomes, outcome_or_none) if o is not None)


def read_churn_events(settings: Settings) -> Iterator[ChurnEvent]:
    """Every exit and revenue churn still on the churn events topic."""
    return read_topic(settings, settings.topics.churn_events, msgspec.json.Decoder(ChurnEvent).decode)


def read_won_back(settings: Settings) -> Iterator[WonBack]:
    """Every customer the workers saw come back, still on its topic."""
    return read_topic(settings, settings.topics.won_back, msgspec.json.Decoder(WonBack).decode)


def read_winback_lists(settings: Settings) -> Iterator[WinbackEntry]:
    """Every line of the win-back lists produced (`calls winback --produce`), still on their topic."""
    return read_topic(settings, settings.topics.calls_winback, msgspec.json.Decoder(WinbackEntry).decode)
