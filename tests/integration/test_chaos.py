"""Chaos, as an adversary and a bad day would bring it: every class of bad record seen so far
mixed into valid traffic, the worker killed with -9 three times, Redis restarted with nothing
kept, a second worker joining and leaving, a customer erased. Afterwards the worker has never
exited on data, every bad record is in dead letter with its reason, every valid event counts
exactly once (against totals computed here from the events themselves), and no alert id was
sent twice."""

from __future__ import annotations

import collections
import itertools
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, NamedTuple

import msgspec
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from stream_app.connect.topics import ensure_topics
from stream_app.contracts.calendar import month_index
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import scrape
from stream_app.tools.embedded.process import ServerProcess, free_port
from stream_app.tools.embedded.servers import redis_server
from stream_app.windows.state import C, Windows
from tests.factories import loosened_pack
from tests.integration.test_crash_safety import Run

# Longer than the suite's 300 s: five worker starts, three kills and a Redis restart, on a busy machine;
# its own deadlines say what timed out before this does.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
SH = Settings().zone
GRACE = Settings().late_grace_days
# 80 customers for 80 days (about 60,000 events), churners from day 20.
TRAFFIC = SimConfig(customers=80, days=80, seed=21, warmup_days=20, monthly_churn=0.1)
# The shipped pack raises a handful of alerts on so few customers, or none: the test runs with
# `loosened_pack`. Offline (`offline/replay.py`) the traffic then raises 30 alerts for 24 customers.


class Sent(NamedTuple):
    topic: str
    key: bytes | None
    value: bytes | None
    reason: str | None = None  # the dead-letter reason a bad record must get; None: valid


def bad_records(customers: list[str], first: dict[str, Any]) -> list[Sent]:
    """One or more of every class of bad record, on real customers."""
    c, d = customers[0], customers[1]
    ids = itertools.count()
    cdr = lambda customer, **over: msgspec.json.encode({**first, "customer_id": customer, "event_id": f"bad-{next(ids)}", **over})  # noqa: E731
    bill = {"event_id": "bad-bill", "customer_id": d, "ts": first["ts"], "kind": "bill", "amount": 120.0,
            "period": "9999-12"}
    return [
        Sent("cdr", c.encode(), None, "tombstone"),
        Sent("billing", d.encode(), None, "tombstone"),
        *(Sent("cdr", c.encode(), cdr(c, ts=ts), "out_of_range")
          for ts in ("9999-12-31T00:00:00+08:00", "2200-01-01T00:00:00+08:00", "2100-01-01T00:00:00+08:00",
                     "0001-01-01T00:00:00+08:00")),
        Sent("billing", d.encode(), msgspec.json.encode(bill), "out_of_range"),
        Sent("cdr", c.encode(), b"x" * 900_000, "too_large"),  # its whole base64 would be over the producer's 1 MB
        Sent("cdr", d.encode(), cdr(d, cell_id="c" * 600_000), "too_large"),
        Sent("cdr", d.encode(), cdr(d, cell_id="c" * 100_000), "invalid_field"),
        Sent("cdr", c.encode(), b'{"oops', "not_json"),
        Sent("cdr", c.encode(), cdr(c, duration_s=-1), "invalid_field"),
        Sent("cdr", None, cdr(c), "missing_key"),
        Sent("cdr", d.encode(), cdr(c), "key_mismatch"),
        Sent("billing", c.encode(), b"\xff\xfe not even text", "not_json"),
    ]


def chaos_traffic() -> tuple[list[Sent], str]:
    """Valid simulated traffic with the bad records and two resends mixed in, and a customer to erase."""
    valid = [Sent(rec.topic, rec.key, rec.value) for rec in Simulator(TRAFFIC).records()]
    customers = sorted({r.key.decode() for r in valid if r.key})
    first_cdr = msgspec.json.decode(next(r.value for r in valid if r.topic == "cdr"))
    rng = random.Random(3)
    out = list(valid)
    for bad in bad_records(customers, first_cdr):
        out.insert(rng.randrange(len(out) // 10, len(out)), bad)
    # Mediation resends: a CDR 137 records after itself, a recharge 2 after.
    k = next(i for i, r in enumerate(out) if r.topic == "cdr" and i > len(out) // 2)
    out.insert(k + 138, out[k])
    j = next(i for i, r in enumerate(out) if r.topic == "billing" and r.value and b"recharge" in r.value)
    out.insert(j + 3, out[j])
    return out, customers[5]


def produce(run: Run, records: list[Sent]) -> list[tuple[Sent, str, int, int]]:
    """(record, topic, partition, offset) of each, produced in order."""
    ensure_topics(Settings(topics=Topics(**run.topics)), run.bootstrap)
    producer = KafkaProducer(bootstrap_servers=run.bootstrap, linger_ms=20, batch_size=256 * 1024,
                             max_request_size=4 << 20, max_in_flight_requests_per_connection=1)
    futures = [(r, producer.send(run.topics[r.topic], key=r.key, value=r.value)) for r in records]
    producer.flush()
    out = [(r, run.topics[r.topic], meta.partition, meta.offset) for r, f in futures for meta in [f.get(timeout=30)]]
    producer.close()
    return out


def read_topic(bootstrap: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             max_partition_fetch_bytes=4 << 20)
    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    out = []
    while any(consumer.position(tp) < ends[tp] for tp in parts):
        for messages in consumer.poll(timeout_ms=1000).values():
            out += messages
    consumer.close()
    return out


def expected_months(produced: list[tuple[Sent, str, int, int]]) -> dict[str, collections.Counter]:
    """Per customer, (month, counter) -> amount, from the valid events alone: each event id
    once, and no CDR older than the customer's newest CDR day so far minus the grace."""
    seen: set[tuple[str, str]] = set()
    newest: dict[str, int] = {}
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for rec, _, _, _ in produced:
        if rec.reason is not None or rec.topic not in ("cdr", "billing"):
            continue
        e = msgspec.json.decode(rec.value)
        local = datetime.fromisoformat(e["ts"]).astimezone(SH)
        day, month = local.date().toordinal(), month_index(local.year, local.month)
        customer = e["customer_id"]
        if rec.topic == "cdr":
            if day < newest.get(customer, 0) - GRACE:
                continue  # late: refused
            newest[customer] = max(day, newest.get(customer, 0))
        if (rec.topic, e["event_id"]) in seen:
            continue
        seen.add((rec.topic, e["event_id"]))
        counts = out[customer]
        if rec.topic == "billing":
            if e["kind"] == "bill":
                year, m = e["period"].split("-")
                counts[(month_index(int(year), int(m)), "spend")] += round(e["amount"] * 100)
            elif e["kind"] == "recharge":
                counts[(month, "topup")] += round(e["amount"] * 100)
        elif e["kind"] == "sms":
            counts[(month, "sms_out" if e["direction"] == "MO" else "sms_in")] += 1
        elif e["kind"] == "data":
            counts[(month, "data_mb")] += -(-e.get("data_bytes", 0) // 65536)
        else:
            mo = e["direction"] == "MO"
            counts[(month, "out_calls" if mo else "in_calls")] += 1
            counts[(month, "out_min" if mo else "in_min")] += (e.get("duration_s", 0) + 3) // 6
    return out


def counted_months(state: dict[str, bytes]) -> dict[str, collections.Counter]:
    names = ("out_calls", "in_calls", "sms_out", "sms_in", "data_mb", "spend", "topup", "out_min", "in_min")
    customers = sorted(state)
    w = Windows.load(customers, [state[c] for c in customers])
    out: dict[str, collections.Counter] = {}
    for i, customer in enumerate(customers):
        counts: collections.Counter = collections.Counter()
        for age in range(w.monthly.shape[1]):
            for name in names:
                if w.monthly[i, age, C[name]]:
                    counts[(int(w.month0[i]) - age, name)] = int(w.monthly[i, age, C[name]])
        out[customer] = counts
    return out


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_chaos(tansu_bootstrap: str, tmp_path: Path) -> None:
    records, erased = chaos_traffic()
    port = free_port()
    redis: ServerProcess = redis_server(tmp_path / "redis", port).start()  # nothing kept across a restart
    url = f"redis://127.0.0.1:{port}/0"
    rules = loosened_pack(tmp_path / "alert_rules")
    a = Run(tansu_bootstrap, url, f"chaos-{tmp_path.name[-6:]}", tmp_path, rules_dir=rules)
    b = Run(tansu_bootstrap, url, a.name, tmp_path / "b", rules_dir=rules)
    b.workdir.mkdir()
    # In parts, so that each blow lands mid-stream however fast the machine.
    part = len(records) // 4
    produced = produce(a, records[:part])
    a.start()
    try:
        for at in (2_000, 5_000):
            a.wait_consumed(at)
            a.kill9()
            a.start()
        produced += produce(a, records[part:2 * part])
        a.wait_consumed(4_000)
        redis.stop()
        redis = redis_server(tmp_path / "redis", port).start()
        produced += produce(a, records[2 * part:3 * part])  # the worker notices the loss with its next batch
        wait_for("the worker to notice that Redis lost its state", lambda: any(
            k.startswith("churnwatch_state_rebuilds_total") and v for k, v in scrape(a.port).items()))
        b.start()  # joins: partitions are split between the two
        b.wait_ready()
        produced += produce(a, records[3 * part:])
        b.wait_consumed(1)
        a.kill9()  # the third: its partitions move to the second worker
        a.start()
        a.wait_ready()
        assert b.proc is not None and b.proc.poll() is None, b.log_tail()
        b.stop()  # leaves cleanly
        wait_for("every valid event to be applied", lambda: counted_months(a.state()) == expected_months(produced),
                 timeout_s=300)
        produce(a, [Sent("customers", erased.encode(), None)])
        wait_for("the erasure", lambda: not counted_months(a.state()).get(erased))
        assert a.proc is not None and a.proc.poll() is None, a.log_tail()  # it never exited on data
    finally:
        a.stop()
        b.stop()
        redis.stop()
    dead = [msgspec.json.decode(m.value, type=DeadLetter) for m in read_topic(tansu_bootstrap, a.topics["deadletter"])]
    reasons = {(d.topic, d.partition, d.offset): d.reason for d in dead}
    bad = [(rec.reason, reasons.get((topic, partition, offset))) for rec, topic, partition, offset in produced
           if rec.reason is not None]
    assert len(bad) == 15 and all(want == got for want, got in bad), bad
    assert all(len(msgspec.json.encode(d)) < 16_384 for d in dead)
    alerts = [msgspec.json.decode(m.value, type=Alert).alert_id for m in read_topic(tansu_bootstrap, a.topics["alerts"])]
    assert alerts, "the traffic raised no alert: the test would prove nothing about them"
    repeated = [i for i, n in collections.Counter(alerts).items() if n > 1]
    assert repeated == [], f"{len(repeated)} alert ids sent more than once"
