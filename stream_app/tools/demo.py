"""`churnwatch demo`: the whole service on the embedded default, fed by the simulator.

Starts Tansu and Redis unless KAFKA_BOOTSTRAP / REDIS_URL are set, runs a real worker as a
child process, produces simulated traffic, and shows alerts as they arrive.
"""

from __future__ import annotations

import collections
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Callable

import msgspec
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from stream_app.connect.kafka import client_options
from stream_app.connect.topics import ensure_topics
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.errors import NotReady
from stream_app.offline.simulator import SimConfig, Simulator, Truth
from stream_app.privacy import Pseudonyms
from stream_app.settings import Settings
from stream_app.tools.embedded.process import ServerProcess, free_port
from stream_app.tools.embedded.servers import redis_server, tansu

__all__ = ["DemoSummary", "alert_line", "run_demo", "produce_simulation", "scrape", "consumed", "start_command",
           "stop_worker"]


@dataclass
class DemoSummary:
    events_by_topic: dict[str, int] = field(default_factory=dict)
    events_consumed: int = 0
    deadletters: dict[str, int] = field(default_factory=dict)
    alerts_by_level: dict[str, int] = field(default_factory=dict)
    churners: int = 0
    churners_with_signs: int = 0
    churners_warned_before_churn: int = 0
    alerted_customers_not_churning: int = 0
    model_version: int = 0  # the version the worker scored with at the end (0: rules alone)
    customers: int = 0
    seconds: float = 0.0
    # With `keep`: the settings that point the other commands at the broker and Redis left
    # running, and the process ids that stop them.
    kept_environment: dict[str, str] = field(default_factory=dict)
    kept_pids: list[int] = field(default_factory=list)
    kept_login: dict[str, str] = field(default_factory=dict)  # an agent account for the queue page


def _demo_agent(workdir: Path, summary: DemoSummary) -> Path:
    """An account for the queue page on what the demo leaves: agent `demo`, a new password each run."""
    from stream_app.alerts.agents import add_agent

    password = secrets.token_urlsafe(12)
    add_agent(workdir / "agents.yaml", "demo", password, None, "Demo agent")
    summary.kept_login = {"agent": "demo", "password": password}
    return workdir / "agents.yaml"


def produce_simulation(sim: Simulator, bootstrap: str, settings: Settings, stop: threading.Event,
                       counts: collections.Counter[str] | None = None) -> dict[str, int]:
    """Send every simulated record to its topic, counting them by topic in `counts` as they go
    (for a live status), and return the counts."""
    topics = {"cdr": settings.topics.cdr, "billing": settings.topics.billing, "customers": settings.topics.customers}
    producer = KafkaProducer(**client_options(settings, bootstrap), linger_ms=20, batch_size=256 * 1024, acks="all")
    counts = collections.Counter() if counts is None else counts
    try:
        for rec in sim.records():
            if stop.is_set():
                break
            producer.send(topics[rec.topic], key=rec.key, value=rec.value)
            counts[topics[rec.topic]] += 1
        producer.flush()
    finally:
        producer.close()
    return dict(counts)


def scrape(port: int) -> dict[str, float]:
    """Sample name (with labels) -> value from a /metrics endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def consumed(port: int) -> int:
    """Events the worker serving metrics on `port` has consumed (0 while it is not up)."""
    try:
        samples = scrape(port)
    except OSError:
        return 0
    return events_consumed(samples)


def events_consumed(samples: dict[str, float]) -> int:
    """Events consumed, from a worker's metrics as `scrape` reads them."""
    return int(sum(v for k, v in samples.items() if k.startswith("churnwatch_events_consumed_total")))


def demo_settings(settings: Settings) -> Settings:
    """The settings as given, but with the repository's alert rules when no rules folder was named
    and the default one (`alert_rules`, relative to where the command runs) is not there. A folder
    named in CHURNWATCH_RULES_DIR is the user's: if it is missing, the worker says so."""
    if "rules_dir" in settings.model_fields_set or Path(settings.rules_dir).is_dir():
        return settings
    bundled = Path(__file__).resolve().parents[2] / "alert_rules"
    return settings.model_copy(update={"rules_dir": bundled}) if bundled.is_dir() else settings


def run_demo(settings: Settings, customers: int, days: int, seconds: float | None, show: Callable[[str], None],
             seed: int = 7, monthly_churn: float = 0.02, keep: bool = False,
             status: Callable[[str], None] = lambda line: None) -> DemoSummary:
    """Replay simulated traffic through a worker and a trainer; with `keep`, the embedded broker
    and Redis outlive the demo, so that reports, call lists and the queue page can be tried on
    what it left."""
    started = time.monotonic()
    summary = DemoSummary(customers=customers)
    # The simulated days end yesterday: the worker refuses event times ahead of its clock.
    start = date.today() - timedelta(days=days)
    sim = Simulator(SimConfig(customers=customers, days=days, seed=seed, monthly_churn=monthly_churn, start=start))
    stop = threading.Event()
    with ExitStack() as stack:
        if keep:
            workdir = Path(tempfile.mkdtemp(prefix="churnwatch-demo-"))
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="churnwatch-demo-")))

        def server(process: ServerProcess) -> ServerProcess:
            if not keep:
                return stack.enter_context(process)
            process.start()
            summary.kept_pids.append(process.proc.pid)  # type: ignore[union-attr]
            stack.push(lambda failed, *_: process.stop() if failed else None)  # kept only if the demo ran
            return process

        bootstrap = settings.kafka_bootstrap
        if not bootstrap:
            bootstrap = f"127.0.0.1:{server(tansu(workdir)).port}"
            show(f"embedded Kafka-protocol broker (Tansu) on {bootstrap}")
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        if not redis_url:
            redis_url = f"redis://127.0.0.1:{server(redis_server(workdir)).port}/0"
            show(f"embedded Redis on {redis_url}")
        ensure_topics(settings, bootstrap)
        metrics_port = free_port()
        # The trainer signs its checkpoint (signing.py); a demo makes a key for its own run.
        key = {} if settings.model_signing_key else {"CHURNWATCH_MODEL_SIGNING_KEY": secrets.token_hex(16)}
        if keep:  # what points the other commands at the servers; `model report` checks the model with the key
            accounts = _demo_agent(workdir, summary)
            summary.kept_environment = {"KAFKA_BOOTSTRAP": bootstrap, "REDIS_URL": redis_url,
                                        "CHURNWATCH_QUEUE_ACCOUNTS": str(accounts), **key}
        worker = start_command(["worker"], settings, bootstrap, redis_url, metrics_port, workdir / "worker.log", key)
        stack.callback(stop_worker, worker)
        show(f"worker started (pid {worker.pid}); metrics on http://127.0.0.1:{metrics_port}/metrics")
        trainer_port = free_port()
        trainer = start_command(["trainer", "--metrics-port", str(trainer_port)], settings, bootstrap, redis_url,
                                free_port(), workdir / "trainer.log", key)
        stack.callback(stop_worker, trainer)
        show(f"trainer started (pid {trainer.pid}); metrics on http://127.0.0.1:{trainer_port}/metrics")
        produced: collections.Counter[str] = collections.Counter()
        producer = threading.Thread(target=produce_simulation, args=(sim, bootstrap, settings, stop, produced),
                                    daemon=True)
        producer.start()
        stack.callback(stop.set)
        live = _Status(sim, metrics_port, Pseudonyms.of(settings))
        try:
            alerts = _watch(settings, bootstrap, summary, show, metrics_port, worker, producer, produced,
                            deadline=None if seconds is None else started + seconds,
                            status=lambda alerts: status(live.line(alerts, summary, produced)))
        except NotReady as exc:  # the log goes with the demo's folder: say what it ended with
            raise NotReady(f"{exc}, which ends: {_last_line(workdir / 'worker.log')}") from None
        summary.events_by_topic = dict(produced)
        summary.events_consumed = consumed(metrics_port)
        summary.model_version = int(scrape(metrics_port).get("churnwatch_model_version", 0))
    _score(sim, alerts, summary, Pseudonyms.of(settings))
    summary.seconds = round(time.monotonic() - started, 1)
    return summary


def start_command(command: list[str], settings: Settings, bootstrap: str, redis_url: str, port: int,
                  log_file: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`churnwatch COMMAND` as a child process, its output in `log_file`."""
    env = dict(os.environ, KAFKA_BOOTSTRAP=bootstrap, REDIS_URL=redis_url, CHURNWATCH_METRICS_PORT=str(port),
               CHURNWATCH_RULES_DIR=str(Path(settings.rules_dir).resolve()))
    env.update(extra_env or {})
    with open(log_file, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "stream_app.cli", *command], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(nothing)"


def stop_worker(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def _watch(settings: Settings, bootstrap: str, summary: DemoSummary, show: Callable[[str], None], metrics_port: int,
           worker: subprocess.Popen, producer: threading.Thread, produced: collections.Counter[str],
           deadline: float | None, status: Callable[[list[Alert]], None] = lambda alerts: None) -> list[Alert]:
    """Print alerts as they arrive, and the status every `STATUS_S`, until the deadline or Ctrl-C."""
    consumer = KafkaConsumer(settings.topics.alerts, settings.topics.deadletter, **client_options(settings, bootstrap),
                             auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=500)
    alerts: list[Alert] = []
    dls: collections.Counter[str] = collections.Counter()
    levels: collections.Counter[str] = collections.Counter()
    said_done = False
    next_status = time.monotonic() + STATUS_S
    try:
        while deadline is None or time.monotonic() < deadline:
            if worker.poll() is not None:
                raise NotReady(f"the worker exited with code {worker.returncode}")
            if time.monotonic() >= next_status:
                summary.deadletters, summary.alerts_by_level = dict(dls), dict(levels)
                status(alerts)
                next_status = time.monotonic() + STATUS_S
            for msg in consumer:
                if msg.topic == settings.topics.alerts:
                    alert = msgspec.json.decode(msg.value, type=Alert)
                    alerts.append(alert)
                    levels[alert.level] += 1
                    show(alert_line(alert))
                else:
                    dl = msgspec.json.decode(msg.value, type=DeadLetter)
                    dls[dl.reason] += 1
                if deadline is not None and time.monotonic() >= deadline:
                    break
            if not producer.is_alive() and not said_done and consumed(metrics_port) >= sum(produced.values()) > 0:
                said_done = True
                show(f"all {sum(produced.values())} events processed" + ("; Ctrl-C to stop" if deadline is None else ""))
    except KeyboardInterrupt:
        show("stopping")
    finally:
        consumer.close()
    summary.deadletters, summary.alerts_by_level = dict(dls), dict(levels)
    return alerts


STATUS_S = 2.0  # how often the live status is refreshed


class _Status:
    """The demo's live line: events sent and processed (and how fast), alerts by level, dead
    letters, and how many of the churners up to the newest alert's day were warned before they left."""

    def __init__(self, sim: Simulator, metrics_port: int, name: Pseudonyms) -> None:
        self.sim, self.metrics_port, self.name = sim, metrics_port, name
        self._last = (time.monotonic(), 0)

    def line(self, alerts: list[Alert], summary: DemoSummary, produced: collections.Counter[str]) -> str:
        done, now = consumed(self.metrics_port), time.monotonic()
        speed = (done - self._last[1]) / max(now - self._last[0], 1e-3)
        self._last = (now, done)
        levels = ", ".join(f"{summary.alerts_by_level.get(level, 0)} {level}" for level in ("high", "medium", "low"))
        newest = max((str(a.event_time.date()) for a in alerts), default="")
        churned = [t for t in self.sim.truth if t.churn_date and t.churn_date <= newest]
        early = _warned_before(churned, _first_alerts(alerts), self.name)
        return (f"events {sum(produced.values()):,} sent, {done:,} processed ({speed:,.0f}/s) | alerts {levels} | "
                f"dead letters {sum(summary.deadletters.values())} | churners to {newest or '-'}: "
                f"{early} of {len(churned)} warned before")


ALERT_LINE = 150  # characters: an alert on one terminal line, its first reason cut to fit


def alert_line(a: Alert) -> str:
    """One short line per alert: level, customer, value, the strongest reason and where the call goes
    (the whole alert is on the topic, and `churnwatch queue` shows it as an agent reads it)."""
    head = (f"[{a.level.upper():6}] {a.event_time:%m-%d} {a.customer_id} {a.arpu:.0f} yuan/month, "
            f"at risk {a.value_at_risk:,.0f}: ")
    tail = (f" (+{len(a.reasons) - 1} more)" if len(a.reasons) > 1 else "") + f" -> {a.queue.replace('_', ' ')}"
    why = max(a.reasons, key=lambda r: r.importance).text if a.reasons else "model score"
    room = ALERT_LINE - len(head) - len(tail)
    return head + (why if len(why) <= room else why[:room - 1].rstrip() + "…") + tail


def _score(sim: Simulator, alerts: list[Alert], summary: DemoSummary, name: Pseudonyms) -> None:
    """Compare alerts with the simulator's ground truth (customers as the worker names them)."""
    truth = {name(t.customer_id): t for t in sim.truth}
    first = _first_alerts(alerts)
    churners = [t for t in sim.truth if t.churn_date]
    summary.churners = len(churners)
    summary.churners_with_signs = sum(t.pattern == "decliner" for t in churners)
    summary.churners_warned_before_churn = _warned_before(churners, first, name)
    summary.alerted_customers_not_churning = sum(1 for c in first if truth[c].churn_date is None)


def _first_alerts(alerts: list[Alert]) -> dict[str, str]:
    """Each alerted customer's first alert day (ISO)."""
    first: dict[str, str] = {}
    for a in alerts:
        day = str(a.event_time.date())
        first[a.customer_id] = min(first.get(a.customer_id, day), day)
    return first


def _warned_before(churners: list[Truth], first: dict[str, str], name: Pseudonyms) -> int:
    """Churners whose first alert came before the day they churned."""
    return sum(1 for t in churners if name(t.customer_id) in first and first[name(t.customer_id)] < (t.churn_date or ""))
