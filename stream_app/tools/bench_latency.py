"""The latency phase of `churnwatch bench` (`tools/bench_stream.py`): traffic sent at a fixed rate,
and each alert it brings matched to the send time of the event that made it.

The default rules need months of history that a bench's few days do not hold, so a probe rule is
added for this phase (hot-reloaded, as managers' edits are) that alerts about one customer in a
hundred: the alerts go through the whole alert path.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream_app.offline.simulator import SimRecord
from stream_app.settings import Topics
from stream_app.tools.demo import scrape

__all__ = ["add_probe_rule", "paced_latencies"]

PROBE_RULE = """\
groups:
  - name: bench_latency_probe
    cadence: daily
    rules:
      - id: bench_latency_probe
        expr: tenure_days % 100 == 0
        importance: 5
        labels: {reason_code: 380}
        annotations:
          summary: "latency probe of churnwatch bench: about one customer in a hundred"
"""


async def paced_latencies(kafka: dict[str, Any], topics: Topics, live: Sequence[SimRecord], rate: float,
                          port: int) -> tuple[list[float], int, int]:
    """Send `live` at `rate` events/s; (latency of each alert, alerts counted by the worker, events sent)."""
    alerts = AIOKafkaConsumer(topics.alerts, **kafka, group_id=None, auto_offset_reset="latest",
                              fetch_max_wait_ms=50)
    await alerts.start()
    await alerts.getmany(timeout_ms=500)  # joined, positioned at the end
    # The event time's second of each record, read before the clock starts: (customer, second) -> time sent.
    stamps = [_stamp(r) for r in live]
    sent: dict[tuple[str, int], float] = {}
    producer = AIOKafkaProducer(**kafka, linger_ms=2, acks="all")
    await producer.start()
    started = time.time()
    try:
        for k, (r, stamp) in enumerate(zip(live, stamps)):
            due = started + k / rate
            if due > time.time() + 0.005:
                await asyncio.sleep(due - time.time())
            if stamp is not None:
                sent.setdefault(stamp, time.time())
            await producer.send(getattr(topics, r.topic), r.value, key=r.key)
        await producer.flush()
        latencies = await _alert_latencies(alerts, sent, quiet_s=5.0)
    finally:
        await producer.stop()
        await alerts.stop()
    alerts_total = int(sum(v for k, v in scrape(port).items() if k.startswith("churnwatch_alerts_total")))
    return latencies, alerts_total, len(live)


class _Stamped(msgspec.Struct):
    ts: datetime | None = None


def _stamp(r: SimRecord) -> tuple[str, int] | None:
    """(customer, event time's second) of a record; None for one without an event time."""
    ts = msgspec.json.decode(r.value, type=_Stamped).ts if r.value else None
    return None if ts is None else (r.key.decode(), int(ts.timestamp()))


async def _alert_latencies(alerts: AIOKafkaConsumer, sent: dict[tuple[str, int], float],
                           quiet_s: float) -> list[float]:
    """Alert time minus the send time of the event its event time names, per alert. A customer may
    have more than one event in that second; the first sent is taken, so a latency is never
    understated (and one sent after the alert, which it cannot have seen, never makes it negative)."""
    out = []
    quiet_until = time.monotonic() + quiet_s
    while time.monotonic() < quiet_until:
        batch = await alerts.getmany(timeout_ms=200)
        for messages in batch.values():
            quiet_until = time.monotonic() + quiet_s
            for m in messages:
                alert = msgspec.json.decode(m.value)
                second = int(datetime.fromisoformat(alert["event_time"]).timestamp())
                created, at = m.timestamp / 1000, sent.get((alert["customer_id"], second))
                if at is not None and at <= created:
                    out.append(created - at)
    return out


def add_probe_rule(rules: Path, pid: int, port: int, timeout_s: float = 30) -> None:
    """Add the probe rule and wait until the worker has it in force."""
    loaded = scrape(port).get("churnwatch_rules_loaded", 0)
    (rules / "bench_probe.yaml").write_text(PROBE_RULE)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while scrape(port).get("churnwatch_rules_loaded", 0) <= loaded:
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not load the probe rule")
        time.sleep(0.2)
