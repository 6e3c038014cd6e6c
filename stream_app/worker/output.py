"""What a batch is and what it produces: its records, its outputs to send, the state it writes,
which of its customers must be found unmoved before anything of theirs is sent, and its outputs
counted and logged once its state is written."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import msgspec

from stream_app.contracts.events import Alert, ChurnEvent, DeadLetter, Snapshot, WonBack
from stream_app.metrics import Metrics, region_label
from stream_app.windows.book import Book
from stream_app.windows.store import Write

__all__ = ["BatchOutput", "RawRecord", "newest_offsets", "observe", "sending"]

log = logging.getLogger(__name__)


class RawRecord(msgspec.Struct, frozen=True, gc=False):
    """A record as the consumer read it (a struct: one is made per event, cheaply). A null
    value is a tombstone: on the customers topic, a request to erase the customer."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class BatchOutput:
    alerts: list[Alert] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    churn_events: list[ChurnEvent] = field(default_factory=list)
    won_back: list[WonBack] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)  # customers erased in this batch (tombstones on customers)
    partitions: dict[str, int] = field(default_factory=dict)  # customer -> the input partition they came from
    cooled: int = 0  # alerts the cooldown held back
    writes: dict[str, Write] = field(default_factory=dict)
    renew: set[str] = field(default_factory=set)  # customers whose state's expiry starts again (`Windows.renewed`)
    report: dict[str, dict[str, int]] = field(default_factory=dict)  # customer -> report counter increments
    book: Book = field(default_factory=dict)  # customer -> their calls with off-net numbers (windows/book.py)
    applied: int = 0
    replayed: int = 0
    duplicates: int = 0

    def merge(self, other: "BatchOutput") -> None:
        """Add the output of a disjoint set of customers."""
        for name in ("alerts", "deadletters", "snapshots", "churn_events", "won_back", "erased"):
            getattr(self, name).extend(getattr(other, name))
        for name in ("writes", "renew", "report", "book", "partitions"):
            setattr(self, name, getattr(self, name) | getattr(other, name))
        self.cooled += other.cooled
        self.applied += other.applied
        self.replayed += other.replayed
        self.duplicates += other.duplicates


def sending(out: BatchOutput) -> dict[str, Write]:
    """The writes of the customers a batch sends something of (alerts, snapshots, churn events,
    returns, erasures, dead letters): the ones the check before sending must find unmoved. A
    customer with nothing to send that another writer moved on is caught by the write's own
    compare-and-set and prepared again, before anything of theirs is sent."""
    named = {a.customer_id for a in out.alerts} | {s.customer_id for s in out.snapshots}
    named |= {c.customer_id for c in out.churn_events} | {b.customer_id for b in out.won_back}
    named |= {d.key for d in out.deadletters if d.key is not None} | set(out.erased)
    return {c: out.writes[c] for c in named if c in out.writes}


def newest_offsets(records: Sequence[RawRecord]) -> dict[tuple[str, int], int]:
    """The newest offset of each input partition in a batch: what Redis will have applied."""
    out: dict[tuple[str, int], int] = {}
    for r in records:  # a comparison, not max(): this runs once per record
        if r.offset > out.get(key := (r.topic, r.partition), -1):
            out[key] = r.offset
    return out


def observe(out: BatchOutput, metrics: Metrics, log_ids: Callable[[str], str], regions: frozenset[str]) -> None:
    """A batch's outputs counted in the metrics and logged, once its state is written (customers
    logged as `log_ids` names them, regions as the metrics name them)."""
    for d in out.deadletters:
        metrics.deadletters.labels(d.reason).inc()
        log.info("dead letter", extra={"topic": d.topic, "partition": d.partition, "offset": d.offset,
                                       "reason": d.reason, "field": d.field,
                                       "customer": log_ids(d.key) if d.key else None})
    for a in out.alerts:
        metrics.alerts.labels(a.level, region_label(a.region, regions)).inc()
        if a.holdout:
            metrics.suppressed.labels("holdout").inc()
        log.info("alert", extra={"alert_id": a.alert_id, "level": a.level, "customer": log_ids(a.customer_id),
                                 "score": a.score, "reason_code": a.reason_code, "holdout": a.holdout})
        metrics.event_to_alert.observe(max(0.0, (a.created_at - a.event_time).total_seconds()))
    metrics.suppressed.labels("cooldown").inc(out.cooled)
    metrics.snapshots.inc(len(out.snapshots))
    for c in out.churn_events:
        metrics.churned.labels(c.kind, region_label(c.region, regions)).inc()
    for b in out.won_back:
        metrics.won_back.labels(region_label(b.region, regions)).inc()
    metrics.replayed.inc(out.replayed)
    metrics.duplicates.inc(out.duplicates)
    metrics.erased.inc(len(out.erased))
    for customer in out.erased:
        log.info("customer erased", extra={"customer": log_ids(customer)})
