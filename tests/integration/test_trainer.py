"""Worker and trainer on a real broker and Redis: late labels, published versions, a trainer
killed mid-stream that resumes without learning any label twice."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import msgspec
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry

from stream_app.contracts import keys
from stream_app.contracts.events import Label, Snapshot
from stream_app.metrics import TrainerMetrics
from stream_app.model.scoring import decode_model
from stream_app.model.signing import Signer
from stream_app.model.trainer import TrainerCore
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.settings import Settings
from stream_app.tools.demo import scrape, stop_worker
from stream_app.tools.embedded.process import free_port

# Longer than the suite's 300 s: days of simulated traffic, a crash and the trainer's waits, on a busy machine;
# its own deadlines say what timed out before this does.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
SIGNING_KEY = "a-key-for-these-tests"
SIGNER = Signer(SIGNING_KEY.encode())
REPO = Path(__file__).resolve().parents[2]
TOPICS = ("cdr", "billing", "customers", "outcomes", "alerts", "deadletter", "snapshots", "churn_events", "labels",
          "model_events")


EARLY_RULES = """
levels:
  default: {high: 5, medium: 3, low: 2}
groups:
  - name: early
    cadence: daily
    rules:
      - id: dropped_calls
        expr: dropped_rate_30d >= 0.015
        importance: 5
        labels: {reason_code: 205}
        annotations:
          summary: "Dropped calls {dropped_rate_30d:.1%}"
actions:
  - action: "technical follow-up"
    treatment: technical_fix
"""


@pytest.fixture
def env(tansu_bootstrap: str, redis_url: str, unique: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # Rules that fire within the weeks simulated, so that calls and the control group have alerts.
    rules = tmp_path_factory.mktemp("rules")
    (rules / "early.yaml").write_text(EARLY_RULES)
    return dict(
        os.environ, KAFKA_BOOTSTRAP=tansu_bootstrap, REDIS_URL=redis_url, CHURNWATCH_APP_ID=f"cw-{unique}",
        CHURNWATCH_RULES_DIR=str(rules), CHURNWATCH_BATCH_WITHIN_S="0.2",
        CHURNWATCH_HORIZON_DAYS="7", CHURNWATCH_MODEL_PUBLISH_LABELS="300", CHURNWATCH_MODEL_PUBLISH_S="1",
        CHURNWATCH_MODEL_REFRESH_S="1", CHURNWATCH_TRAINER_LEASE_S="5", CHURNWATCH_METRICS_PORT=str(free_port()),
        CHURNWATCH_MODEL_SIGNING_KEY=SIGNING_KEY, CHURNWATCH_HOLDOUT_SHARE="0.3",
        **{f"CHURNWATCH_TOPIC_{t.upper()}": f"{t}-{unique}" for t in TOPICS},
    )


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "stream_app.cli", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True)


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[subprocess.Popen]:
    proc = start(["worker"], env, tmp_path / "worker.log")
    yield proc
    stop_worker(proc)


def produce(records: list, settings: Settings) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20)
    for r in records:
        producer.send(getattr(settings.topics, r.topic), key=r.key, value=r.value)
    producer.flush()
    producer.close()


class Feed:
    """Simulated traffic fed a day at a time, each day once the worker has read the ones before."""

    def __init__(self, records: list, settings: Settings, worker_port: int, logs: list[Path]) -> None:
        self.records, self.settings, self.port, self.logs = records, settings, worker_port, logs
        self.day, self.sent = 0, 0

    def days_before(self, end: int) -> None:
        for day in range(self.day, end):
            batch = [r for r in self.records if r.day == day]
            produce(batch, self.settings)
            self.sent += len(batch)
            wait_for(f"the worker to save day {day}", lambda: self.saved() >= self.sent, 120, self.logs)
        self.day = end

    def saved(self) -> float:
        """Events in the batches the worker has saved (0 while its metrics are not up)."""
        try:
            return scrape(self.port).get("churnwatch_batch_size_events_sum", 0)
        except OSError:
            return 0


def read_all(bootstrap: str, topic: str, kind: type) -> list:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    try:
        return [(m.partition, m.offset, msgspec.msgpack.decode(m.value, type=kind)) for m in consumer]
    finally:
        consumer.close()


def call_the_alerts(env: dict[str, str]) -> int:
    """Outcomes for every alert outside the control group so far, the day after it; how many."""
    from stream_app.contracts.events import Alert, Outcome

    consumer = KafkaConsumer(env["CHURNWATCH_TOPIC_ALERTS"], bootstrap_servers=env["KAFKA_BOOTSTRAP"],
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)
    alerts = [msgspec.json.decode(m.value, type=Alert) for m in consumer]
    consumer.close()
    producer = KafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP"])
    called = [a for a in alerts if not a.holdout]
    for k, a in enumerate(called):
        result, offer = ("accepted", "PLAN01") if k % 2 else ("declined", None)
        outcome = Outcome(f"outcome-{a.alert_id}", a.customer_id, a.event_time + timedelta(days=1), a.alert_id,
                          result, offer)  # type: ignore[arg-type]
        producer.send(env["CHURNWATCH_TOPIC_OUTCOMES"], key=a.customer_id.encode(), value=msgspec.json.encode(outcome))
    producer.flush()
    producer.close()
    return len(called)


def trainer_names_in_deploy_files() -> set[str]:
    registry = CollectorRegistry()
    TrainerMetrics(registry)
    ours = {family.name for family in registry.collect()}
    text = (REPO / "deploy" / "prometheus" / "alerts.yml").read_text()
    text += (REPO / "deploy" / "grafana" / "dashboards" / "churnwatch.json").read_text()
    return {re.sub(r"_total$", "", n) for n in re.findall(r"\bchurnwatch_[a-z_]+", text)} & ours


def wait_for(what: str, check, timeout_s: float, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-2500:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.5)


def test_trainer_learns_late_labels_once_across_a_crash_and_workers_score_with_its_versions(
        env: dict[str, str], worker: subprocess.Popen, tmp_path: Path) -> None:
    settings = Settings(_env_file=None, kafka_bootstrap=env["KAFKA_BOOTSTRAP"])
    settings = settings.model_copy(update={"topics": settings.topics.model_copy(update={
        "cdr": env["CHURNWATCH_TOPIC_CDR"], "billing": env["CHURNWATCH_TOPIC_BILLING"],
        "customers": env["CHURNWATCH_TOPIC_CUSTOMERS"]})})
    sim = Simulator(SimConfig(customers=60, days=45, warmup_days=10, monthly_churn=0.15, seed=3))
    records = list(sim.records())
    client = redis.Redis.from_url(env["REDIS_URL"])
    logs = [tmp_path / "worker.log", tmp_path / "trainer.log"]
    # Two thirds of the days before the crash and the rest after, so that both trainers have labels
    # to learn. Each day is fed once the worker has read the one before, as mediation delivers it:
    # a worker that read weeks in one batch would snapshot only the newest day.
    feed = Feed(records, settings, int(env["CHURNWATCH_METRICS_PORT"]), logs)
    feed.days_before(30)
    called = call_the_alerts(env)  # the call centre's outcomes, before any of their labels is made
    trainer = start(["trainer", "--metrics-port", str(free_port())], env, logs[1])
    try:
        wait_for("a first model version", lambda: client.get(keys.MODEL_VERSION) is not None, 240, logs)
        os.killpg(trainer.pid, signal.SIGKILL)
        trainer.wait()
        trainer_port = free_port()
        trainer = start(["trainer", "--metrics-port", str(trainer_port)], env, logs[1])
        feed.days_before(45)  # every batch saved, so every snapshot sent
        snapshots = read_all(env["KAFKA_BOOTSTRAP"], env["CHURNWATCH_TOPIC_SNAPSHOTS"], Snapshot)
        clock: dict[int, int] = {}  # the trainer's event clock runs per partition
        for p, _, s in snapshots:
            clock[p] = max(clock.get(p, 0), s.exits_known)
        due = 0
        for p in clock:  # in offset order, up to the first snapshot whose horizon is still open
            for _, _, s in sorted((r for r in snapshots if r[0] == p), key=lambda r: r[1]):
                if s.day + 7 + settings.late_grace_days > clock[p]:
                    break
                due += 1

        def all_learned() -> bool:
            raw = client.get(keys.TRAINER_STATE)
            return raw is not None and TrainerCore.restore(raw, Settings(), SIGNER).learner.labels >= due

        wait_for(f"{due} labels learned", all_learned, 240, logs)
        # Every trainer metric the SREs' files query is exported by this live trainer, and moved.
        exported = scrape(trainer_port)
        used = trainer_names_in_deploy_files()
        assert used and all(any(k.startswith(n) for k in exported) for n in used), used
        assert exported["churnwatch_model_published_version"] >= 1
        learned = sum(v for k, v in exported.items() if k.startswith("churnwatch_model_labels_learned_total"))
        assert 0 < learned <= due  # this process's share: the killed one learned the rest
        assert 0 < exported["churnwatch_model_auc"] <= 1 and exported["churnwatch_model_log_loss"] > 0
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.wait(30)
    labels = read_all(env["KAFKA_BOOTSTRAP"], env["CHURNWATCH_TOPIC_LABELS"], Label)
    sources = {(lb.partition, lb.offset) for _, _, lb in labels}
    core = TrainerCore.restore(client.get(keys.TRAINER_STATE), Settings(), SIGNER)
    assert core.learner.labels == len(sources)  # every label once, though some were sent twice
    assert sum(lb.y for _, _, lb in labels) > 0  # churners gave positives, though exits were read first
    model = decode_model(client.get(keys.MODEL))
    assert model.version == core.version >= 2 and model.labels == core.learner.labels
    # Each learned label's decision counted once, across the crash: the first copy of a label is the one learned.
    first: dict[tuple[int, int], Label] = {}
    for _, _, lb in sorted(labels, key=lambda r: r[1]):
        first.setdefault((lb.partition, lb.offset), lb)
    arms = collections.Counter(lb.decision.arm == "control" for lb in first.values() if lb.decision is not None)
    assert called and arms[False] > 0 and arms[True] > 0
    assert (core.saving.calls.decisions, core.saving.control.decisions) == (arms[False], arms[True])
    assert model.saving is not None and model.saving.calls.decisions == arms[False]
    report = subprocess.run([sys.executable, "-m", "stream_app.cli", "model", "report", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    shown = json.loads(report.stdout.strip().splitlines()[-1])["calls"]
    assert sum(a["calls"] for a in shown["actions"].values()) == arms[False] and "evidence of calls" in report.stderr
    assert "churn per alert, by risk: 0-0.1 " in report.stderr and len(shown["churn_by_band"]) == 6
    wait_for("the worker to score with a published version",
             lambda: scrape(int(env["CHURNWATCH_METRICS_PORT"])).get("churnwatch_model_version", 0) >= 1, 30, logs)


def test_a_trainer_paused_past_its_lease_cannot_publish_over_its_successor(redis_url: str) -> None:
    from stream_app.model.registry import LeaseLost, publish

    client = redis.Redis.from_url(redis_url)
    core = TrainerCore.fresh(Settings())
    old = client.lock(keys.TRAINER_LEASE, timeout=1)
    assert old.acquire(blocking=False)
    time.sleep(1.5)  # paused (a long GC, a frozen VM) while its lease ran out
    new = client.lock(keys.TRAINER_LEASE, timeout=30)
    assert new.acquire(blocking=False)
    publish(client, core.next_model(SIGNER), core.checkpoint(SIGNER), new.local.token)
    with pytest.raises(LeaseLost):
        publish(client, core.next_model(SIGNER), core.checkpoint(SIGNER), old.local.token)
    assert int(client.get(keys.MODEL_VERSION)) == 1 and decode_model(client.get(keys.MODEL)).version == 1
    client.close()


def test_the_lease_outlives_a_busy_loop_and_says_when_it_was_taken(redis_url: str) -> None:
    from stream_app.model.lease import Lease
    from stream_app.model.registry import LeaseLost

    client = redis.Redis.from_url(redis_url)
    client.delete(keys.TRAINER_LEASE)
    lease = Lease(client, keys.TRAINER_LEASE, ttl_s=2)
    token = lease.acquire()
    deadline = time.monotonic() + 6.5
    while time.monotonic() < deadline:  # a refit holding the main thread for three times the lease
        sum(range(10_000))
    assert client.get(keys.TRAINER_LEASE) == token
    lease.check()
    successor = client.lock(keys.TRAINER_LEASE, timeout=30)
    assert not successor.acquire(blocking=False)
    client.set(keys.TRAINER_LEASE, b"another-trainer")  # as if it had lapsed during a pause and been taken
    deadline = time.monotonic() + 10  # the next beat finds it taken; on a busy machine it may come late
    while True:
        try:
            lease.check()
        except LeaseLost:
            break
        assert time.monotonic() < deadline, "the heartbeat never noticed the lease was taken"
        time.sleep(0.2)
    lease.release()
    assert client.get(keys.TRAINER_LEASE) == b"another-trainer"  # not released from under its holder
    client.close()
