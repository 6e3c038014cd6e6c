"""`churnwatch bench` through a broker: the bare-consumer ceiling and the real worker, one
after the other on the same events, then event-to-alert latency at a share of the worker's rate
(half by default).

1. Simulated traffic goes to fresh topics: days in a fixed stretch of the calendar, the last
   held back for the latency phase (`_traffic`).
2. Ceiling: a bare aiokafka consumer that only decodes and validates each event.
3. Worker: `churnwatch worker` as a child process with everything on. It reads a day of warm-up
   first, so that the measured events are an ordinary day's: each customer's first event of a
   day takes the snapshot of the day before, as in the held-back day. Its sustained rate is read
   from its own events counter, from the end of the warm-up to the last measured event.
4. Latency: the held-back day at a share of that rate (`load`), or at a fixed rate (`fixed_rate`,
   which compares builds at the same rate however fast each is), as simulated, each alert matched
   to the send time of the event that made it (`tools/bench_latency.py`).
5. Redis bytes per customer (`MEMORY USAGE` sampled) and the worker's peak RSS.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence
from urllib.parse import urlsplit

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
from stream_app.tools.bench_latency import add_probe_rule, paced_latencies
from stream_app.tools.demo import consumed, start_command, stop_worker
from stream_app.tools.embedded.process import free_port
from stream_app.tools.embedded.servers import redis_server, tansu
from stream_app.tools.worker_looks import Look

__all__ = ["StreamBench", "bench_stream", "next_look_s"]

# The simulated days end on this day, whenever the bench runs: the simulator's traffic follows the
# weekday, its holidays and the first of the month, so runs on different days read the same traffic
# only if their days are the same. A Thursday in a month without a holiday; the worker admits event
# times of the past (it refuses those ahead of its clock and before the floor).
LAST_DAY = date(2026, 3, 12)
EVENTS_PER_CUSTOMER_DAY = 11  # a weekday of the simulator's in that stretch, after the first: 11.3-11.8


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
    latency_rate: float  # events/s sent in the latency phase ...
    latency_load: float  # ... as a share of the worker's measured rate
    # What the latency phase asked of the worker: its events a batch (fewer than a busy worker's, so
    # each batch's own round trips weigh more an event), snapshots an event (the held day's first
    # events take the day before's) and the cores it kept busy.
    latency_batch_events: float | None
    latency_snapshots_per_event: float | None
    latency_worker_cores: float | None
    redis_bytes_per_customer: float
    id_memory_bytes_per_customer: float  # of the bytes above: the event ids of the grace window
    rss_bytes: int | None
    alerts: int
    offnet_numbers: int  # the off-net book's numbers, per month (windows/book.py)
    offnet_bytes_per_number: float
    offnet_bytes_per_customer: float  # the book's bytes spread over the customers: beside redis_bytes_per_customer
    stages: dict[str, dict[str, float]]  # per stage of the worker's batches: see tools/bench.stage_figures
    # The same over the latency phase, per event it read: where a slow alert's time went. Its
    # share of the wall time counts the worker's waits for traffic sent below its rate.
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
                 latency_s: float = 30.0, load: float = 0.5, seed: int = 3,
                 fixed_rate: float | None = None) -> StreamBench:
    """Run the phases above against the configured broker and Redis, or embedded ones. `load`:
    the latency phase's rate as a share of the worker's measured rate; `fixed_rate` (events/s), if
    given, replaces it."""
    traffic = _traffic(events, customers, seed, settings.event_time_floor)
    warmup, history = traffic.warmup, traffic.measured
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
        show(f"producing {len(warmup):,} events of warm-up, {len(history):,} measured and {len(traffic.rest):,} "
             f"after them for {customers:,} customers to {topics.cdr} ...")
        asyncio.run(_produce(kafka, topics, warmup + history + traffic.rest))
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
        _read_up_to(port, worker, total + len(traffic.rest), workdir / "worker.log")
        add_probe_rule(rules, worker.pid, port)
        sending = fixed_rate or rate * load
        paced = traffic.held[:int(sending * latency_s)]
        before = Look.after_a_fetch(port, worker.pid)
        latencies, alerts_total, sent = asyncio.run(paced_latencies(kafka, topics, paced, sending, port))
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
        latency_rate=round(sending), latency_load=round(sending / rate, 3),
        latency_batch_events=round(phase.events / phase.batches, 1) if phase.batches else None,
        latency_snapshots_per_event=round(phase.snapshots / phase.events, 4) if phase.events else None,
        latency_worker_cores=phase.cores(), redis_bytes_per_customer=per_customer,
        id_memory_bytes_per_customer=id_bytes,
        rss_bytes=rss, alerts=alerts_total, offnet_numbers=numbers,
        offnet_bytes_per_number=round(book_bytes / max(numbers, 1), 1),
        offnet_bytes_per_customer=round(book_bytes / customers, 1),
        stages=stage_figures(sustained.stages, sustained.events, sustained.clock, ceiling),
        latency_stages=stage_figures(phase.stages, phase.events, phase.clock),
        worker_cores=sustained.cores(), redis_cores=sustained.cores("redis"), broker_cores=sustained.cores("broker"),
        events_per_core_s=None if not sustained.cpu_s else round(sustained.events / sustained.cpu_s),
    )


class Traffic(NamedTuple):
    """The simulated days, in the order they are sent: the first day (warm-up); `events` records from
    the start of the next (measured); the rest of the last day they reach, read before the latency
    phase so that the held-back day follows on; the day after (held back for the latency phase)."""
    warmup: list[SimRecord]
    measured: list[SimRecord]
    rest: list[SimRecord]
    held: list[SimRecord]


def _traffic(events: int, customers: int, seed: int, floor: date) -> Traffic:
    """The simulator's days in a fixed stretch of the calendar that ends on `LAST_DAY`, enough of
    them for `events` measured records."""
    days = -(-events // (customers * EVENTS_PER_CUSTOMER_DAY)) + 2
    while True:  # a weekend or a holiday holds fewer: a day more, until the span holds `events`
        start = LAST_DAY - timedelta(days=days - 1)
        if start < floor:
            raise ConfigError(f"the bench simulates {start} to {LAST_DAY}, before the event-time floor {floor} "
                              "(CHURNWATCH_EVENT_TIME_FLOOR): the worker would refuse its events")
        # As a mediation system delivers them: a batch holds one or two events of each of its customers.
        records = in_time_order(Simulator(SimConfig(customers=customers, days=days, seed=seed, start=start)).records())
        # Records come in delivery order: a day's, then the next day's.
        first, held = (next((k for k, r in enumerate(records) if r.day == d), None) for d in (1, days - 1))
        if first is None or held is None:
            raise ConfigError(f"the simulator made a day without traffic for {customers} customers: too few "
                              "to bench (--customers)")
        if held - first >= events:
            end = first + events
            return Traffic(records[:first], records[first:end], records[end:held], records[held:])
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


def _sustained(port: int, worker, warmup: int, expected: int, log: Path, servers: dict[str, int]) -> Look:
    """What the worker did from the first look at its own counter past the warm-up to the last event
    (and what `servers` did meanwhile: `Look.of`)."""
    _read_up_to(port, worker, max(warmup, 1), log)
    first = Look.of(port, worker.pid, servers)
    _read_up_to(port, worker, expected, log)
    last = Look.of(port, worker.pid, servers)
    if last.events == first.events:
        raise ConfigError(f"the worker read all {last.events:,} events between two looks at its counter: too few "
                          "to measure a rate (--events)")
    return last.since(first)


def _read_up_to(port: int, worker, expected: int, log: Path, timeout_s: float = 3600) -> None:
    """Wait until the worker has read `expected` events. Each look renders all the worker's
    metrics on its core: looked at five times a second, that was about 2% of its time, so the
    looks come as seldom as the rate read so far allows (`next_look_s`)."""
    deadline = time.monotonic() + timeout_s
    # (when, events) of the first look that found events read: the rate is read from there, over a
    # span long enough to hold many batches (each adds its events to the counter at once when it lands).
    start: tuple[float, int] | None = None
    while (seen := consumed(port)) < expected:
        if worker.poll() is not None:
            raise NotReady(f"the worker stopped:\n{log.read_text()[-3000:]}")
        now = time.monotonic()
        if now > deadline:
            raise TimeoutError(f"the worker consumed {seen:,} of {expected:,} events in {timeout_s:.0f} s")
        start = start or ((now, seen) if seen else None)
        rate = (seen - start[1]) / (now - start[0]) if start and now > start[0] else 0.0
        time.sleep(next_look_s(expected - seen, rate))


def next_look_s(left: int, rate: float, shortest: float = 0.02, longest: float = 2.0) -> float:
    """How long to wait before the next look at a worker's counter, `left` events before the
    mark at `rate` events/s: half the time the rate says is left, so that even a rate twice as
    fast is seen within `shortest` of the mark (the sustained rate's span ends at that look).
    Without a rate yet (the worker starting, or between phases), a fifth of a second."""
    if rate <= 0:
        return 0.2
    return min(max(left / rate / 2, shortest), longest)


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
