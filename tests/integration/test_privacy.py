"""With a pseudonym key, no phone number gets past the input topics: a real worker, broker and
Redis, and everything they hold afterwards searched for the numbers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer

from stream_app.connect.topics import ensure_topics
from stream_app.contracts.events import DeadLetter
from stream_app.contracts.keys import customer_state
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.privacy import Pseudonyms
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import consumed, scrape, stop_worker
from stream_app.tools.embedded.process import free_port
from tests.factories import cdr

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
KEY = "a key the operator keeps in its secret store"


def everything_in_topics(bootstrap: str, names: list[str]) -> list[bytes]:
    consumer = KafkaConsumer(*names, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        return [b"%s\t%s" % (m.key or b"", m.value or b"") for m in consumer]
    finally:
        consumer.close()


def everything_in_redis(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    out = []
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            value = client.get(key)
        elif kind == b"set":  # the months of the off-net book
            value = b",".join(client.smembers(key))
        else:
            value = b"".join(b"%s=%s" % kv for kv in client.hgetall(key).items())
        out.append(key + b"\t" + value)
    client.close()
    return out


def batches_written(port: int) -> float:
    """Events of batches sent and written (0 while the worker's metrics are not up)."""
    try:
        return scrape(port).get("churnwatch_batch_size_events_sum", 0.0)
    except OSError:
        return 0.0


def test_no_phone_number_reaches_redis_output_topics_logs_or_metrics(tansu_bootstrap: str, redis_url: str,
                                                                      unique: str, tmp_path: Path) -> None:
    sim = Simulator(SimConfig(customers=40, days=40, seed=4))
    records = [(r.topic, r.key, r.value) for r in sim.records()]
    customer = sim.ids[0]
    # Two refused records that name numbers: an invalid one, and one filed under another customer's key.
    records.append(("cdr", customer.encode(), cdr(customer, "2026-09-09T10:00:00+08:00", duration_s=-5)))
    records.append(("cdr", sim.ids[1].encode(), cdr(customer, "2026-09-09T10:00:00+08:00")))
    numbers = set(sim.ids)
    numbers |= {p for t, _, v in records if t == "cdr" and (p := msgspec.json.decode(v).get("peer_id"))}

    topics = Topics(**{name: f"{value}-{unique}" for name, value in Topics().model_dump().items()})
    ensure_topics(Settings(topics=topics), tansu_bootstrap)
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP=tansu_bootstrap, REDIS_URL=redis_url, CHURNWATCH_APP_ID=f"cw-{unique}",
               CHURNWATCH_METRICS_PORT=str(port), CHURNWATCH_RULES_DIR=str(REPO / "alert_rules"),
               CHURNWATCH_PSEUDONYM_KEY=KEY, CHURNWATCH_LOG_FORMAT="json", CHURNWATCH_BATCH_WITHIN_S="0.2",
               **{f"CHURNWATCH_TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()})
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True)
    try:
        producer = KafkaProducer(bootstrap_servers=tansu_bootstrap, linger_ms=20)
        for topic, key, value in records:
            producer.send(getattr(topics, topic), key=key, value=value)
        producer.flush()
        producer.close()
        # Until every batch has been sent and written (the batch-size histogram is observed after both).
        deadline = time.monotonic() + 120
        while batches_written(port) < len(records):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"consumed {consumed(port)} of {len(records)}"
            time.sleep(0.5)
        metrics = "\n".join(f"{k} {v}" for k, v in scrape(port).items()).encode()
    finally:
        stop_worker(proc)

    outputs = [name for field, name in topics.model_dump().items() if field not in ("cdr", "billing", "customers")]
    written = everything_in_topics(tansu_bootstrap, outputs) + everything_in_redis(redis_url)
    found = {n for n in numbers for blob in [*written, log.read_bytes(), metrics] if n.encode() in blob}
    assert not found, f"{len(found)} numbers written, e.g. {sorted(found)[:3]}"

    # What was written is there, under the pseudonyms.
    pseudonyms = Pseudonyms(KEY.encode())
    client = redis.Redis.from_url(redis_url)
    assert all(client.exists(customer_state(pseudonyms(c))) for c in sim.ids)
    client.close()
    dead = [msgspec.json.decode(blob.split(b"\t", 1)[1], type=DeadLetter)
            for blob in everything_in_topics(tansu_bootstrap, [topics.deadletter])]
    refused = {d.reason for d in dead if d.key in (pseudonyms(customer), pseudonyms(sim.ids[1]))}
    assert {"invalid_field", "key_mismatch"} <= refused
    assert all(d.value_b64 is None for d in dead)
