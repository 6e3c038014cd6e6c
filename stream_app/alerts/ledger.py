"""Each alert reaches the call queue once, across crashes.

A batch sends its alerts, then writes the state that records them (the cooldown). A worker
killed between the two leaves alerts on the topic that its successor computes again from
the same records, under the same ids. So alerts go to the partition of the input partition
their customer came from (topics are co-partitioned), and the state write also records the
newest alert offset per partition (`keys.applied`, field `@alerts|<partition>`). A worker
given a partition reads the alerts after that offset: those were sent by a batch whose state
was never written, and the alerts it computes again with those ids are not sent twice.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream_app.connect.kafka import client_options
from stream_app.settings import Settings

__all__ = ["ALERTS", "AlertLedger"]

log = logging.getLogger(__name__)

#: How the alerts' newest offset is named among the applied input offsets: no topic is called this.
ALERTS = "@alerts"


class _AlertId(msgspec.Struct):
    alert_id: str


_decode = msgspec.json.Decoder(_AlertId).decode


class AlertLedger:
    """The alerts sent by a batch whose state was not written, per alerts partition."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sent: dict[int, set[str]] = {}
        self.newest: dict[int, int] = {}  # alerts partition -> the newest offset known on it (-1: empty)

    def already_sent(self, partition: int, alert_id: str) -> bool:
        """Whether this alert is on the topic already; each is found once."""
        ids = self.sent.get(partition)
        if ids is None or alert_id not in ids:
            return False
        ids.discard(alert_id)
        return True

    def record(self, partition: int, offset: int) -> None:
        """An alert this worker sent."""
        self.newest[partition] = max(offset, self.newest.get(partition, -1))

    def landed(self, partition: int, offset: int, alert_id: str) -> None:
        """An alert this worker sent in a batch that failed after it: found, and not sent again,
        when the batch is tried again."""
        self.record(partition, offset)
        self.sent.setdefault(partition, set()).add(alert_id)

    def marks(self, partitions: set[int]) -> dict[tuple[str, int], int]:
        """The newest alert offsets to record with a batch's state, as applied offsets."""
        return {(ALERTS, p): self.newest[p] for p in partitions if p in self.newest}

    async def recover(self, partitions: set[int], applied: dict[tuple[str, int], int]) -> None:
        """Read what the alerts topic holds after the newest alert each partition's state records."""
        self.sent = {p: ids for p, ids in self.sent.items() if p in partitions}
        self.newest = {p: o for p, o in self.newest.items() if p in partitions}
        if not partitions:
            return
        topic = self.settings.topics.alerts
        reader = AIOKafkaConsumer(**client_options(self.settings), enable_auto_commit=False, group_id=None,
                                  client_id=f"{self.settings.app_id}-alert-ledger")
        await reader.start()
        try:
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            reader.assign(tps)
            for tp in tps:
                start = applied.get((ALERTS, tp.partition), -1) + 1
                self.sent[tp.partition] = await _ids(reader, tp, start)
                # Not past what was found: until the records behind those alerts are applied again,
                # a second crash must find them again.
                if start > 0:
                    self.newest[tp.partition] = max(start - 1, self.newest.get(tp.partition, -1))
        finally:
            await reader.stop()
        found = sum(len(ids) for ids in self.sent.values())
        if found:
            log.warning("%d alerts were sent by a batch whose state was not written: they are not sent again", found)


async def _ids(reader: Any, tp: TopicPartition, start: int) -> set[str]:
    """The alert ids from `start` to the end: until a fetch comes back empty or reaches the high
    watermark its response carried. Not list-offsets: Tansu answers it with something else
    than the end (ARCHITECTURE.md; measured: 1 for a partition of 250 records)."""
    reader.seek(tp, start)
    ids: set[str] = set()
    while True:
        fetched = await reader.getmany(tp, timeout_ms=500)
        for messages in fetched.values():
            ids.update(_decode(m.value).alert_id for m in messages if m.value is not None)
        high = reader.highwater(tp)
        if not fetched or (high is not None and await reader.position(tp) >= high):
            return ids
