"""Exactly-once effect on Redis: kill -9 the worker, or restart Redis, mid-stream; the final
state of every customer, and every report counter, equals an uninterrupted run over the same events."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np
import pytest
import redis
from kafka import KafkaProducer
from redis.cluster import RedisCluster as ClusterClient

from stream_app.connect.topics import ensure_topics
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import consumed, scrape, stop_worker
from stream_app.tools.embedded.process import ServerProcess, free_port
from stream_app.tools.embedded.servers import redis_server
from stream_app.windows.scan import read_counts
from stream_app.windows.state import STATE, Windows, usage_fingerprint
from tests.conftest import flush
from tests.probes import get

# Longer than the suite's 300 s: the first case also pays for the module's reference run, on a busy machine;
# its own deadlines say what timed out before this does.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
EVENTS = 80_000  # about 48 simulated days: August closes, so report counters are compared too
TOPICS = ("cdr", "billing", "customers", "outcomes", "alerts", "deadletter")


class Run:
    """One worker's topics, consumer group and Redis database, fed the same simulated events."""

    def __init__(self, bootstrap: str, redis_url: str, name: str, workdir: Path, cluster: bool = False,
                 rules_dir: Path = REPO / "alert_rules") -> None:
        self.bootstrap, self.redis_url, self.name, self.workdir = bootstrap, redis_url, name, workdir
        self.cluster, self.rules_dir = cluster, rules_dir
        self.topics = {t: f"{t}-{name}" for t in TOPICS}
        self.expected: dict[str, tuple[int, ...]] = {}
        self.proc: subprocess.Popen | None = None
        self.port = 0  # the running worker's metrics

    def produce(self, records: list) -> None:
        ensure_topics(Settings(topics=Topics(**self.topics)), self.bootstrap)
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=20, batch_size=256 * 1024)
        futures = [(r.key.decode(), r.topic, producer.send(self.topics[r.topic], key=r.key, value=r.value))
                   for r in records]
        producer.flush()
        index = {"cdr": 0, "billing": 1, "customers": 2}
        last = {c: list(v) for c, v in self.expected.items()}  # produced in parts: the newest offsets
        for customer, topic, future in futures:
            meta = future.get(timeout=30)
            last.setdefault(customer, [-1, -1, -1, -1])[index[topic]] = meta.offset
        producer.close()
        self.expected = {c: tuple(v) for c, v in last.items()}

    def start(self) -> None:
        self.port = free_port()
        env = dict(os.environ, KAFKA_BOOTSTRAP=self.bootstrap, REDIS_URL=self.redis_url,
                   CHURNWATCH_APP_ID=f"cw-{self.name}", CHURNWATCH_METRICS_PORT=str(self.port),
                   CHURNWATCH_RULES_DIR=str(self.rules_dir), CHURNWATCH_KAFKA_SESSION_TIMEOUT_S="6",
                   CHURNWATCH_REDIS_RETRY_MAX_S="1", CHURNWATCH_REDIS_CLUSTER=str(self.cluster).lower(),
                   **{f"CHURNWATCH_TOPIC_{t.upper()}": n for t, n in self.topics.items()})
        with open(self.workdir / f"worker-{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)

    def wait_consumed(self, events: int, timeout_s: float = 120) -> None:
        """Until this worker process has read `events` events: mid-stream by progress, not by a
        clock, since how far a worker gets in a few seconds depends on the machine."""
        deadline = time.monotonic() + timeout_s
        while consumed(self.port) < events:
            assert time.monotonic() < deadline, f"{self.name} read too little:\n{self.log_tail()}"
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            time.sleep(0.02)

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until this worker owns input partitions (its /readyz says so)."""
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            assert time.monotonic() < deadline, f"{self.name} was given no partitions:\n{self.log_tail()}"
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return get(self.port, "/readyz")[0] == 200
        except OSError:  # not listening yet
            return False

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log_tail()
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            stop_worker(self.proc)

    def log_tail(self) -> str:
        return (self.workdir / f"worker-{self.name}.log").read_text(errors="replace")[-3000:]

    def state(self) -> dict[str, bytes]:
        if self.cluster:
            cluster = ClusterClient.from_url(self.redis_url)
            keys = list(cluster.scan_iter("cw:*", count=1000))
            values = cluster.mget_nonatomic(keys) if keys else []
            cluster.close()
        else:
            client = redis.Redis.from_url(self.redis_url)
            keys = list(client.scan_iter("cw:*", count=1000))
            values = client.mget(keys) if keys else []
            client.close()
        return {k.decode().split("{")[1].split("}")[0]: v for k, v in zip(keys, values) if v is not None}

    def final(self) -> "Final":
        client = ClusterClient.from_url(self.redis_url) if self.cluster else redis.Redis.from_url(self.redis_url)
        try:
            report = read_counts(client)
        finally:
            client.close()
        return Final({c: usage_fingerprint(v) for c, v in self.state().items()}, report)

    def done(self) -> bool:
        """Every customer's state holds the offset of its last record on every topic."""
        state = self.state()
        if len(state) < len(self.expected):
            return False
        customers = sorted(self.expected)
        w = Windows.load(customers, [state[c] for c in customers])
        offsets = w.rec["offset"].tolist()
        return all(tuple(max(o, -1) if e >= 0 else -1 for o, e in zip(offsets[i], self.expected[c])) ==
                   self.expected[c] for i, c in enumerate(customers))

    def wait_done(self, timeout_s: float, tick: Callable[[], None] = lambda: None) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.done():
            assert time.monotonic() < deadline, f"{self.name} did not finish:\n{self.log_tail()}"
            assert self.proc is not None and self.proc.poll() is None, self.log_tail()
            tick()
            time.sleep(1)


class Final(NamedTuple):
    """What a run leaves in Redis: each customer's usage fingerprint, and the report counters."""

    state: dict[str, bytes]
    report: dict[str, int]

    def differences(self, reference: "Final") -> list[str]:
        return [c for c in reference.state if self.state.get(c) != reference.state[c]]


def explain(state: dict[str, bytes], reference: dict[str, bytes], customer: str) -> str:
    """Which fields of two usage fingerprints differ, and how."""
    a, b = (np.frombuffer(s[customer][:STATE.itemsize], STATE) for s in (state, reference))
    fields = [f"{f}: {a[f][0].tolist()} vs {b[f][0].tolist()}" for f in STATE.names if not np.array_equal(a[f], b[f])]
    tails = state[customer][STATE.itemsize:] != reference[customer][STATE.itemsize:]
    return "; ".join(fields) + ("; tails differ" if tails else "")


@pytest.fixture(scope="module")
def records() -> list:
    sim = Simulator(SimConfig(customers=150, days=60, seed=11))
    out = []
    for rec in sim.records():
        out.append(rec)
        if len(out) == EVENTS:
            break
    return out


@pytest.fixture(scope="module")
def reference(tansu_bootstrap: str, redis_port: int, records: list, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[Final]:
    """The state after an uninterrupted run."""
    run = Run(tansu_bootstrap, f"redis://127.0.0.1:{redis_port}/1", "reference",
              tmp_path_factory.mktemp("reference"))
    redis.Redis(port=redis_port, db=1).flushdb()
    run.produce(records)
    run.start()
    try:
        run.wait_done(300)
    finally:
        run.stop()
    final = run.final()
    assert final.report["2026-08|billed"] > 0  # the run closed a month: reports are compared below
    yield final


@pytest.mark.parametrize("backend", ["redis", "redis_cluster"])
def test_kill_9_three_times_changes_nothing(backend: str, tansu_bootstrap: str, redis_port: int, records: list,
                                            reference: Final, tmp_path: Path,
                                            request: pytest.FixtureRequest) -> None:
    cluster = backend == "redis_cluster"
    url = request.getfixturevalue("redis_cluster_url") if cluster else f"redis://127.0.0.1:{redis_port}/2"
    flush(url, cluster)
    run = Run(tansu_bootstrap, url, f"crash-{backend}-{tmp_path.name[-6:]}", tmp_path, cluster)
    run.produce(records)
    rng = random.Random(5)
    run.start()
    try:
        for _ in range(3):
            run.wait_consumed(rng.randint(8_000, 20_000))  # of 80,000: the crash is mid-stream
            assert not run.done(), "finished before the crash: the test would prove nothing"
            run.kill9()
            run.start()
        run.wait_done(300)
    finally:
        run.stop()
    final = run.final()
    assert final.state.keys() == reference.state.keys()
    differing = final.differences(reference)
    assert differing == [], (f"{len(differing)} customers differ, e.g. {differing[:3]}: "
                             f"{explain(final.state, reference.state, differing[0])}")
    assert final.report == reference.report


def restart_redis_mid_stream(bootstrap: str, records: list, tmp_path: Path, kept: list[str],
                             pause_s: float = 0.0) -> tuple[Final, float]:
    """Run over `records`, restarting Redis (with `kept`, its persistence options) mid-stream:
    what is left in Redis, and how many partitions the worker rebuilt from Kafka."""
    port = free_port()
    server: ServerProcess = redis_server(tmp_path / "redis", port, kept).start()
    run = Run(bootstrap, f"redis://127.0.0.1:{port}/0", f"redis-{tmp_path.name[-6:]}", tmp_path)
    run.produce(records)
    run.start()
    try:
        run.wait_consumed(20_000)
        assert not run.done()
        server.stop()
        time.sleep(pause_s)  # the worker retries meanwhile; nothing may be acked
        server = redis_server(tmp_path / "redis", port, kept).start()
        run.wait_done(300)
        final = run.final()
        rebuilt = sum(v for k, v in scrape(run.port).items() if k.startswith("churnwatch_state_rebuilds_total"))
    finally:
        run.stop()
        server.stop()
    return final, rebuilt


def test_redis_restart_mid_stream_skips_nothing(tansu_bootstrap: str, records: list, reference: Final,
                                                tmp_path: Path) -> None:
    final, rebuilt = restart_redis_mid_stream(tansu_bootstrap, records, tmp_path,
                                              ["--appendonly", "yes", "--appendfsync", "always"], pause_s=4)
    assert rebuilt == 0  # it kept everything: nothing to rebuild
    differing = final.differences(reference)
    assert differing == [], f"{len(differing)} customers differ, e.g. {differing[:3]}"
    assert final.report == reference.report


def test_redis_restarted_empty_is_noticed_and_rebuilt_from_kafka(bootstrap: str, records: list, reference: Final,
                                                                 tmp_path: Path) -> None:
    """No persistence at all: Redis comes back empty under a running worker, which must say so
    and rebuild every customer from what Kafka holds, whatever the broker."""
    final, rebuilt = restart_redis_mid_stream(bootstrap, records, tmp_path, [])
    assert rebuilt >= 1, "the loss went unnoticed"
    differing = final.differences(reference)
    assert differing == [], f"{len(differing)} customers differ, e.g. {differing[:3]}"
    assert final.report == reference.report


def test_a_worker_joining_and_leaving_mid_stream_changes_nothing(tansu_bootstrap: str, redis_port: int,
                                                                 records: list, reference: Final,
                                                                 tmp_path: Path) -> None:
    """Two workers in one consumer group: rebalances move partitions, never events."""
    url = f"redis://127.0.0.1:{redis_port}/3"
    flush(url, False)
    first = Run(tansu_bootstrap, url, f"scale-{tmp_path.name[-6:]}", tmp_path)
    second = Run(tansu_bootstrap, url, first.name, tmp_path / "second")
    second.workdir.mkdir()
    # In three parts, so that each move of partitions has events left to move with it, however
    # fast the machine: the first alone, both, the second alone.
    part = len(records) // 3
    first.produce(records[:part])
    first.start()
    try:
        first.wait_consumed(part // 2)
        second.start()  # joins the group: partitions are split between the two
        second.wait_ready()
        first.produce(records[part:2 * part])
        second.wait_consumed(1)  # it was given partitions and works on them, the first still there
        assert first.proc is not None and first.proc.poll() is None
        first.stop()  # leaves cleanly: its partitions move to the second worker
        first.produce(records[2 * part:])
        second.topics, second.expected = first.topics, first.expected
        second.wait_done(300)
    finally:
        first.stop()
        second.stop()
    final = second.final()
    differing = final.differences(reference)
    assert differing == [], f"{len(differing)} customers differ, e.g. {differing[:3]}"
    assert final.report == reference.report
