"""`churnwatch bench` through a broker: the bare-consumer ceiling and the real worker, one
after the other on the same events, then event-to-alert latency at half the worker's rate.

1. Simulated traffic (the last day held back for the latency phase) goes to fresh topics.
2. Ceiling: a bare aiokafka consumer that only decodes and validates each event.
3. Worker: `churnwatch worker` as a child process with everything on. It reads a day of warm-up
   first, so that the measured days are ordinary ones: each customer's first event of a day
   takes the snapshot of the day before, as in the held-back day. Its sustained rate is read
   from its own events counter, from the end of the warm-up to the last event.
4. Latency: the held-back traffic at half that rate, stamped with the time it is sent; each
   alert is matched to the send time of the event that made it (the customer's newest). The
   default rules need months of history that a run of ten events per customer does not hold,
   so a probe rule is added for this phase (hot-reloaded, as managers' edits are) that alerts
   about one customer in a hundred: the alerts go through the whole alert path.
5. Redis bytes per customer (`MEMORY USAGE` sampled) and the worker's peak RSS.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import tempfile
import time
from bisect import bisect_left
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream_app.connect.kafka import client_options, librdkafka_options
from stream_app.connect.redis import connect_redis_sync
from stream_app.connect.topics import ensure_topics
from stream_app.contracts import keys
from stream_app.contracts.events import decode_billing, decode_cdr, decode_profile
from stream_app.errors import ConfigError, NotReady
from stream_app.offline.delivery import in_time_order
from stream_app.offline.simulator import SimConfig, SimRecord, Simulator
from stream_app.settings import Settings, Topics
from stream_app.tools.bench import book_memory, id_memory, memory_per_key, stage_figures
from stream_app.tools.demo import consumed, scrape, start_command, stop_worker
from stream_app.tools.embedded.process import free_port
from stream_app.tools.embedded.servers import redis_server, tansu
from stream_app.tools.worker_looks import Look

__all__ = ["StreamBench", "bench_stream"]

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

EVENTS_PER_CUSTOMER_DAY = 9  # a weekday of the simulator's after the first (9.8); weekends and holidays make fewer


@dataclass
class StreamBench:
    events: int  # measured, after the warm-up
    customers: int
    warmup_events: int  # the day read before the measured span
    snapshots_per_event: float  # in the measured span: how much of an ordinary day's work it had
    ceiling_events_per_s: float  # aiokafka's, which the worker reads with
    ceiling_librdkafka_events_per_s: float  # the same bare consumer on librdkafka, in the same run
    events_per_s: float
    ratio: float
    p50_latency_s: float | None
    p99_latency_s: float | None
    latency_alerts: int  # alerts the latency figures come from
    latency_events: int
    latency_rate: float  # events/s sent in the latency phase
    redis_bytes_per_customer: float
    id_memory_bytes_per_customer: float  # of the bytes above: the event ids of the grace window
    rss_bytes: int | None
    alerts: int
    offnet_numbers: int  # the off-net book's numbers, per month (windows/book.py)
    offnet_bytes_per_number: float
    offnet_bytes_per_customer: float  # the book's bytes spread over the customers: beside redis_bytes_per_customer
    stages: dict[str, dict[str, float]]  # per stage of the worker's batches: see tools/bench.stage_figures
    # The same over the latency phase, per event it read: where a slow alert's time went. Its
    # share of the wall time counts the worker's waits for traffic sent at half its rate.
    latency_stages: dict[str, dict[str, float]]
    # Cores the worker process kept busy while measured, and its events per second of one core: what
    # a worker does per core, whatever else shares the box (the broker and Redis here).
    worker_cores: float | None
    events_per_core_s: float | None
    # Cores Redis and the broker kept busy over the same span, when they run on this machine (None:
    # elsewhere, or a broker not started by the bench): what the worker's figures shared the box with.
    redis_cores: float | None
    broker_cores: float | None


def bench_stream(settings: Settings, events: int, customers: int, show: Callable[[str], None],
                 latency_s: float = 30.0, seed: int = 3) -> StreamBench:
    """Run the phases above against the configured broker and Redis, or embedded ones."""
    warmup, history, live = _traffic(events, customers, seed)
    run = f"bench-{os.getpid()}-{int(time.time())}"
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="churnwatch-bench-")))
        servers: dict[str, int] = {}  # name -> process id, of those on this machine: their CPU time is read
        if settings.kafka_bootstrap:
            bootstrap = settings.kafka_bootstrap
        else:
            broker = stack.enter_context(tansu(workdir))
            bootstrap, servers["broker"] = f"127.0.0.1:{broker.port}", broker.proc.pid
        url = settings.redis_url.get_secret_value() if settings.redis_url else None
        url = url or f"redis://127.0.0.1:{stack.enter_context(redis_server(workdir)).port}/0"
        if (pid := _local_redis_pid(url, settings.redis_cluster)) is not None:
            servers["redis"] = pid
        topics = Topics(**{name: f"{run}.{value}" for name, value in Topics().model_dump().items()})
        run_settings = settings.model_copy(update={"topics": topics, "app_id": run})
        ensure_topics(run_settings, bootstrap)
        kafka = client_options(run_settings, bootstrap)
        show(f"producing {len(warmup):,} events of warm-up and {len(history):,} for {customers:,} customers "
             f"to {topics.cdr} ...")
        asyncio.run(_produce(kafka, topics, warmup + history))
        total = len(warmup) + len(history)
        ceiling = asyncio.run(_ceiling(kafka, topics, total))
        show(f"bare consumer + decode: {ceiling:,.0f} events/s")
        librdkafka = _ceiling_librdkafka(run_settings, bootstrap, topics, total)
        show(f"the same on librdkafka (confluent-kafka): {librdkafka:,.0f} events/s")
        port = free_port()
        rules = workdir / "rules"
        shutil.copytree(settings.rules_dir, rules)
        env = {f"CHURNWATCH_TOPIC_{name.upper()}": value for name, value in topics.model_dump().items()}
        worker = start_command(["worker"], run_settings, bootstrap, url, port, workdir / "worker.log",
                               dict(env, CHURNWATCH_APP_ID=run, CHURNWATCH_RULES_DIR=str(rules)))
        stack.callback(stop_worker, worker)
        sustained = _sustained(port, worker, len(warmup), total, workdir / "worker.log", servers)
        rate = sustained.events / max(sustained.clock, 1e-6)
        show(f"worker, everything on: {rate:,.0f} events/s")
        _add_probe_rule(rules, worker.pid, port)
        paced = live[:int(rate / 2 * latency_s)]
        before = Look.after_a_fetch(port, worker.pid)
        latencies, alerts_total, sent = asyncio.run(_latency(kafka, topics, paced, rate / 2, port))
        phase = Look.of(port, worker.pid).since(before)
        rss = _peak_rss(worker.pid)
        per_customer, id_bytes = _redis_bytes(url, settings.redis_cluster, [r.key.decode() for r in history], seed)
        client = connect_redis_sync(url, settings.redis_cluster)
        numbers, book_bytes = book_memory(client)
        client.close()
    p50, p99 = (float(np.percentile(latencies, q)) for q in (50, 99)) if latencies else (None, None)
    return StreamBench(
        events=len(history), customers=customers, warmup_events=len(warmup),
        snapshots_per_event=round(sustained.snapshots / max(sustained.events, 1), 4),
        ceiling_events_per_s=round(ceiling), ceiling_librdkafka_events_per_s=round(librdkafka),
        events_per_s=round(rate), ratio=round(rate / ceiling, 3), p50_latency_s=None if p50 is None else round(p50, 3),
        p99_latency_s=None if p99 is None else round(p99, 3), latency_alerts=len(latencies), latency_events=sent,
        latency_rate=round(rate / 2), redis_bytes_per_customer=per_customer, id_memory_bytes_per_customer=id_bytes,
        rss_bytes=rss, alerts=alerts_total, offnet_numbers=numbers,
        offnet_bytes_per_number=round(book_bytes / max(numbers, 1), 1),
        offnet_bytes_per_customer=round(book_bytes / customers, 1),
        stages=stage_figures(sustained.stages, sustained.events, sustained.clock, ceiling),
        latency_stages=stage_figures(phase.stages, phase.events, phase.clock),
        worker_cores=sustained.cores(), redis_cores=sustained.cores("redis"), broker_cores=sustained.cores("broker"),
        events_per_core_s=None if not sustained.cpu_s else round(sustained.events / sustained.cpu_s),
    )


def _traffic(events: int, customers: int, seed: int) -> tuple[list[SimRecord], list[SimRecord], list[SimRecord]]:
    """A day of warm-up, `events` records of the days after it, and the day after them held back
    for the latency phase. The simulated days end today, so that the held-back day, stamped now,
    follows on."""
    days = -(-events // (customers * EVENTS_PER_CUSTOMER_DAY)) + 2
    while True:  # a weekend or a holiday holds fewer: a day more, until the span holds `events`
        start = date.today() - timedelta(days=days - 1)
        # As a mediation system delivers them: a batch holds one or two events of each of its customers.
        records = in_time_order(Simulator(SimConfig(customers=customers, days=days, seed=seed, start=start)).records())
        # Records come in delivery order: a day's, then the next day's.
        warm, held = (next((k for k, r in enumerate(records) if r.day == d), None) for d in (1, days - 1))
        if warm is None or held is None:
            raise ConfigError(f"the simulator made a day without traffic for {customers} customers: too few "
                              "to bench (--customers)")
        if held - warm >= events:
            return records[:warm], records[warm:held][:events], records[held:]
        days += 1


async def _produce(kafka: dict[str, Any], topics: Topics, records: Sequence[SimRecord]) -> None:
    producer = AIOKafkaProducer(**kafka, linger_ms=20, max_batch_size=512 * 1024, acks="all")
    await producer.start()
    try:
        for r in records:
            await producer.send(getattr(topics, r.topic), r.value, key=r.key)
        await producer.flush()
    finally:
        await producer.stop()


def _decoders(topics: Topics) -> dict[str, Callable[[bytes], object]]:
    """Each input topic's decoder, as the worker's edge uses them: what a bare consumer does per record."""
    return {topics.cdr: decode_cdr, topics.billing: decode_billing, topics.customers: decode_profile}


def _ceiling_librdkafka(settings: Settings, bootstrap: str, topics: Topics, expected: int) -> float:
    """The same bare consumer on librdkafka (confluent-kafka), the other client a worker could use.
    librdkafka fetches on its own threads; a partition whose local queue is full waits
    `fetch.queue.backoff.ms` (1 s by default) before it is fetched again, which a consumer that
    drains its queue as fast as this one would keep meeting: 10 ms here."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException
    from confluent_kafka import TopicPartition as Partition

    decoders = _decoders(topics)
    consumer = Consumer(librdkafka_options(settings, bootstrap) | {
        "group.id": f"bench-ceiling-{os.getpid()}", "enable.auto.commit": False, "fetch.wait.max.ms": 100,
        "max.partition.fetch.bytes": 4 << 20, "fetch.queue.backoff.ms": 10, "queued.max.messages.kbytes": 65536})
    try:
        metadata = consumer.list_topics(timeout=30)
        consumer.assign([Partition(t, p, OFFSET_BEGINNING) for t in decoders for p in metadata.topics[t].partitions])
        seen, started = 0, None
        while seen < expected:
            messages = consumer.consume(num_messages=5000, timeout=1.0)
            if messages and started is None:
                started = time.perf_counter()
            for m in messages:
                if m.error():
                    raise KafkaException(m.error())
                decoders[m.topic()](m.value())
            seen += len(messages)
        return seen / (time.perf_counter() - started)  # type: ignore[operator]
    finally:
        consumer.close()


async def _ceiling(kafka: dict[str, Any], topics: Topics, expected: int) -> float:
    """Events/s of a consumer that does nothing but fetch, decode and validate."""
    decoders = _decoders(topics)
    consumer = AIOKafkaConsumer(**kafka, enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=100, max_partition_fetch_bytes=4 << 20, max_poll_records=5000)
    await consumer.start()
    try:
        await consumer.topics()  # the cluster's metadata, partitions included
        partitions = [TopicPartition(t, p) for t in decoders for p in consumer.partitions_for_topic(t) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen, started = 0, None
        while seen < expected:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            if batch and started is None:
                started = time.perf_counter()
            for tp, messages in batch.items():
                decode = decoders[tp.topic]
                for m in messages:
                    decode(m.value)
                seen += len(messages)
        return seen / (time.perf_counter() - started)  # type: ignore[operator]
    finally:
        await consumer.stop()


def _sustained(port: int, worker, warmup: int, expected: int, log: Path, servers: dict[str, int],
               timeout_s: float = 3600) -> Look:
    """What the worker did from the first look at its own counter past the warm-up to the last event
    (and what `servers` did meanwhile: `Look.of`)."""
    first: Look | None = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise NotReady(f"the worker stopped:\n{log.read_text()[-3000:]}")
        seen = consumed(port)
        if seen >= max(warmup, 1) and first is None:
            first = Look.of(port, worker.pid, servers)
        if seen >= expected and first is not None:
            last = Look.of(port, worker.pid, servers)
            if last.events == first.events:
                raise ConfigError(f"the worker read all {seen:,} events between two looks at its counter: too few "
                                  "to measure a rate (--events)")
            return last.since(first)
        time.sleep(0.2)
    raise TimeoutError(f"the worker consumed {seen:,} of {expected:,} events in {timeout_s:.0f} s")


async def _latency(kafka: dict[str, Any], topics: Topics, live: Sequence[SimRecord], rate: float,
                   port: int) -> tuple[list[float], int, int]:
    """Send `live` at `rate` events/s, stamped as sent; (latency of each alert, alerts counted by
    the worker, events sent)."""
    alerts = AIOKafkaConsumer(topics.alerts, **kafka, group_id=None, auto_offset_reset="latest",
                              fetch_max_wait_ms=50)
    await alerts.start()
    await alerts.getmany(timeout_ms=500)  # joined, positioned at the end
    sent: dict[str, list[tuple[int, float]]] = {}  # customer -> (ts second, time sent), in order
    producer = AIOKafkaProducer(**kafka, linger_ms=2, acks="all")
    await producer.start()
    records = list(live)
    started = time.time()
    try:
        for k, r in enumerate(records):
            due = started + k / rate
            if due > time.time() + 0.005:
                await asyncio.sleep(due - time.time())
            body = msgspec.json.decode(r.value)
            now = time.time()
            body["ts"] = datetime.fromtimestamp(int(now), timezone.utc).isoformat()
            sent.setdefault(r.key.decode(), []).append((int(now), now))
            await producer.send(getattr(topics, r.topic), msgspec.json.encode(body), key=r.key)
        await producer.flush()
        latencies = await _alert_latencies(alerts, sent, quiet_s=5.0)
    finally:
        await producer.stop()
        await alerts.stop()
    alerts_total = int(sum(v for k, v in scrape(port).items() if k.startswith("churnwatch_alerts_total")))
    return latencies, alerts_total, len(records)


async def _alert_latencies(alerts: AIOKafkaConsumer, sent: dict[str, list[tuple[int, float]]],
                           quiet_s: float) -> list[float]:
    """Alert time minus the send time of the event its event time names, per alert. A customer may
    have sent more than one event in that second; the first sent is taken, so a latency is never
    understated (and one sent after the alert, which it cannot have seen, never makes it negative)."""
    out = []
    quiet_until = time.monotonic() + quiet_s
    while time.monotonic() < quiet_until:
        batch = await alerts.getmany(timeout_ms=200)
        for messages in batch.values():
            quiet_until = time.monotonic() + quiet_s
            for m in messages:
                alert = msgspec.json.decode(m.value)
                history = sent.get(alert["customer_id"], [])
                second = int(datetime.fromisoformat(alert["event_time"]).timestamp())
                created = m.timestamp / 1000
                at = bisect_left([s for s, _ in history], second)
                if at < len(history) and history[at][0] == second and history[at][1] <= created:
                    out.append(created - history[at][1])
    return out


def _add_probe_rule(rules: Path, pid: int, port: int, timeout_s: float = 30) -> None:
    """Add the probe rule and wait until the worker has it in force."""
    loaded = scrape(port).get("churnwatch_rules_loaded", 0)
    (rules / "bench_probe.yaml").write_text(PROBE_RULE)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while scrape(port).get("churnwatch_rules_loaded", 0) <= loaded:
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not load the probe rule")
        time.sleep(0.2)


def _peak_rss(pid: int) -> int | None:
    """The process's peak resident set (Linux), before it is stopped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else kib * 1024


def _local_redis_pid(url: str, cluster: bool) -> int | None:
    """The process id of the Redis at `url` if it runs on this machine (a loopback address), else None."""
    if cluster or urlsplit(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    client = connect_redis_sync(url)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def _redis_bytes(url: str, cluster: bool, customers: list[str], seed: int, sample: int = 2000) -> tuple[float, float]:
    """(bytes per customer, of them the memory of event ids), from a sample of customers."""
    client = connect_redis_sync(url, cluster)
    unique = sorted(set(customers))
    picked = [keys.customer_state(c) for c in random.Random(seed).sample(unique, k=min(sample, len(unique)))]
    per_key = memory_per_key(client, picked)
    id_bytes = id_memory(client, picked)[0]
    client.close()
    return per_key, id_bytes
