"""Small builders of wire events for tests."""

from __future__ import annotations

import itertools
from datetime import datetime

import msgspec
import numpy as np

from stream_app.features.baselines import BASELINED as BASELINE_FEATURES
from stream_app.worker.pipeline import RawRecord

_ids = itertools.count()


def cdr(customer: str, ts: str, **extra: object) -> bytes:
    body = {"event_id": f"t-{next(_ids)}", "customer_id": customer, "ts": ts, "kind": "voice",
            "direction": "MO", "duration_s": 600, **extra}
    return msgspec.json.encode(body)


def billing(customer: str, ts: str, kind: str = "bill", **extra: object) -> bytes:
    body = {"event_id": f"t-{next(_ids)}", "customer_id": customer, "ts": ts, "kind": kind, **extra}
    return msgspec.json.encode(body)


def profile(customer: str, ts: str = "2026-01-01T00:00:00+08:00", **extra: object) -> bytes:
    body = {"event_id": f"t-{next(_ids)}", "customer_id": customer, "ts": ts, "activation_date": "2020-05-01",
            "plan": "postpaid-150", "region": "north", "vip_tier": "gold", **extra}
    return msgspec.json.encode(body)


class Log:
    """An append-only log per topic that hands out offsets like a partition does."""

    def __init__(self) -> None:
        self.offsets: dict[str, int] = {}
        self.records: list[RawRecord] = []

    def add(self, topic: str, customer: str, value: bytes, partition: int = 0) -> RawRecord:
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        rec = RawRecord(topic, partition, offset, customer.encode(), value)
        self.records.append(rec)
        return rec


def decliner(log: Log, customer: str, months: tuple[int, ...] = (3, 4, 5), minutes: tuple[int, ...] = (300, 300, 60)) -> None:
    """A mid/high-end customer whose outgoing minutes fall in the last month; bills of 150 yuan."""
    log.add("customers", customer, profile(customer))
    for month, total in zip(months, minutes):
        for day in range(1, 29, 3):
            ts = datetime(2026, month, day, 10).isoformat() + "+08:00"
            log.add("cdr", customer, cdr(customer, ts, duration_s=int(total * 60 / 10)))
        log.add("billing", customer, billing(customer, f"2026-{month + 1:02d}-01T02:00:00+08:00", amount=150.0,
                                             period=f"2026-{month:02d}"))
    for day in range(1, 21, 3):  # the current month goes on at the last month's pace
        ts = datetime(2026, months[-1] + 1, day, 10).isoformat() + "+08:00"
        log.add("cdr", customer, cdr(customer, ts, duration_s=int(minutes[-1] * 60 / 10)))


def snapshot_features(n: int, **given: np.ndarray) -> dict[str, np.ndarray]:
    """Features of `n` snapshots for the segment baselines: mid/high-end customers whose changes
    have nothing before to compare with (so count in no histogram), but those `given`."""
    nothing = ("arpu_m2", "mou_out_m2", "mou_out_prev_30d", "mou_out_prev_14d", "data_mb_m2", "contacts_m2",
               "calls_usual", "potential_mid_high_end", *BASELINE_FEATURES)
    return {**{name: np.zeros(n) for name in nothing}, "prepaid": np.ones(n), "mid_high_end": np.ones(n), **given}
