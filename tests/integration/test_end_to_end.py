"""Events in, alerts and dead letters out: a real worker on a real broker and a real Redis."""

from __future__ import annotations

import collections
import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import msgspec
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from stream_app.alerts.call_plan import alert_day, plan_days
from stream_app.connect.topic_reader import read_alerts
from stream_app.connect.topics import ensure_topics
from stream_app.contracts.calendar import month_index
from stream_app.contracts.events import Alert, DeadLetter
from stream_app.metrics import NotifyMetrics, TrainerMetrics
from stream_app.offline.monthly_data import load_mapping, read_rows
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.privacy import is_pseudonym
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import produce_simulation, scrape, stop_worker
from stream_app.tools.embedded.process import free_port
from stream_app.windows.state import C, Windows
from tests.conftest import flush, shared_data
from tests.factories import Log, cdr, decliner
from tests.probes import get

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
TOPICS = ("cdr", "billing", "customers", "outcomes", "alerts", "deadletter")


def start_worker(bootstrap: str, redis_url: str, names: dict[str, str], app_id: str, log: Path,
                 rules_dir: Path = REPO / "alert_rules") -> dict:
    """A `churnwatch worker` process on these topics, and what tests need to follow it."""
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP=bootstrap, REDIS_URL=redis_url, CHURNWATCH_APP_ID=app_id,
               CHURNWATCH_METRICS_PORT=str(port), CHURNWATCH_RULES_DIR=str(rules_dir),
               CHURNWATCH_BATCH_WITHIN_S="0.2",
               **{f"CHURNWATCH_TOPIC_{t.upper()}": n for t, n in names.items()})
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, cwd=log.parent, start_new_session=True)
    return {"topics": names, "metrics_port": port, "proc": proc, "log": log, "bootstrap": bootstrap}


@pytest.fixture
def worker(bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Iterator[dict]:
    w = start_worker(bootstrap, redis_url, {t: f"{t}-{unique}" for t in TOPICS}, f"cw-{unique}", tmp_path / "worker.log")
    try:
        yield w
    finally:
        stop_worker(w["proc"])


# The default pack warns one or two of 120 customers in a quarter, and which ones can depend on
# when the worker rereads the segment baselines (a wall-clock timer, while a quarter of events
# passes in seconds). A test of what is done with alerts adds a rule that reads only the
# customer's own usage, so that the quarter raises a few dozen of them, at event times that do
# not depend on the machine's speed.
WATCHFUL_RULE = """
groups:
  - name: watchful_daily
    cadence: daily
    rules:
      - id: minutes_falling
        expr: mou_out_30d_mom <= -0.3 and mou_out_prev_30d >= 30
        importance: 3
        labels: {reason_code: 205}
        annotations:
          summary: "Outgoing minutes in the last 30 days: {mou_out_30d:.0f}, {mou_out_30d_mom:change}"
"""


@pytest.fixture
def watchful_worker(bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Iterator[dict]:
    """A worker whose rules are the default pack and WATCHFUL_RULE."""
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "churn.yaml").write_text((REPO / "alert_rules" / "churn.yaml").read_text())
    (rules / "watchful.yaml").write_text(WATCHFUL_RULE)
    w = start_worker(bootstrap, redis_url, {t: f"{t}-{unique}" for t in TOPICS}, f"cw-{unique}",
                     tmp_path / "worker.log", rules)
    try:
        yield w
    finally:
        stop_worker(w["proc"])


def consume_until(w: dict, want_alerts: int, want_dead: int, timeout_s: float) -> tuple[list[Alert], list[DeadLetter]]:
    t = w["topics"]
    options = w.get("kafka_options") or {"bootstrap_servers": w["bootstrap"]}  # a secured broker's, if given
    consumer = KafkaConsumer(t["alerts"], t["deadletter"], **options, auto_offset_reset="earliest",
                             consumer_timeout_ms=500)
    alerts: list[Alert] = []
    dead: list[DeadLetter] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and (len(alerts) < want_alerts or len(dead) < want_dead):
            assert w["proc"].poll() is None, w["log"].read_text()[-3000:]
            for msg in consumer:
                if msg.topic == t["alerts"]:
                    alerts.append(msgspec.json.decode(msg.value, type=Alert))
                else:
                    dead.append(msgspec.json.decode(msg.value, type=DeadLetter))
    finally:
        consumer.close()
    return alerts, dead


DEPLOY = REPO / "deploy"
NAME = re.compile(r"\bchurnwatch_[a-z_]+")
SUFFIXES = re.compile(r"_(total|bucket|sum|count|info)$")


def worker_names_in_deploy_files() -> set[str]:
    """Metric families the alerting rules and the dashboard query, but the trainer's and the notifier's."""
    text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    text += (DEPLOY / "grafana" / "dashboards" / "churnwatch.json").read_text()
    registry = CollectorRegistry()
    TrainerMetrics(registry)
    NotifyMetrics(registry)
    others = {family.name for family in registry.collect()}
    return {SUFFIXES.sub("", n) for n in NAME.findall(text)} - others


def live_families(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        return {SUFFIXES.sub("", f.name) for f in text_string_to_metric_families(resp.read().decode())}


def test_events_in_alerts_and_dead_letters_out(worker: dict, redis_url: str) -> None:
    t = worker["topics"]
    log = Log()
    decliner(log, "8613800000001")
    decliner(log, "8613800000002", minutes=(300, 300, 300))
    c = "8613800000002"
    bad = [b"not json at all", cdr(c, "2026-06-02T10:00:00+08:00", duration_s="x"),
           b'{"event_id":"e","ts":"2026-06-02T10:00:00+08:00","kind":"voice"}',
           cdr(c, "2026-06-02T10:00:00+08:00", duration_s=-30), cdr(c, "2026-06-02T10:00:00+08:00", kind="fax")]
    producer = KafkaProducer(bootstrap_servers=worker["bootstrap"])
    topic_of = {"cdr": t["cdr"], "billing": t["billing"], "customers": t["customers"]}
    records = list(log.records)
    middle = len(records) // 2
    for rec in records[:middle]:
        producer.send(topic_of[rec.topic], key=rec.key, value=rec.value)
    for raw in bad:
        producer.send(t["cdr"], key=c.encode(), value=raw)
    for rec in records[middle:]:
        producer.send(topic_of[rec.topic], key=rec.key, value=rec.value)
    producer.flush()
    producer.close()

    alerts, dead = consume_until(worker, want_alerts=1, want_dead=len(bad), timeout_s=120)

    assert [a.customer_id for a in alerts] == ["8613800000001"], worker["log"].read_text()[-3000:]
    assert "mou_out_drop_mom" in {r.rule_id for r in alerts[0].reasons}
    assert sorted((d.reason, d.field) for d in dead) == sorted([
        ("not_json", None), ("invalid_field", "duration_s"), ("invalid_field", "customer_id"),
        ("invalid_field", "duration_s"), ("invalid_field", "kind")])
    assert all(d.topic == t["cdr"] and d.value_b64 for d in dead)
    # The batches' state, counters and logs are written after their alerts and dead letters are
    # sent: wait until every batch is (the batch-size histogram is observed last).
    deadline = time.monotonic() + 60
    while scrape(worker["metrics_port"]).get("churnwatch_batch_size_events_sum", 0) < len(records) + len(bad):
        assert time.monotonic() < deadline, "the last batch was never written"
        time.sleep(0.3)
    # Every good call around the bad ones was counted, once.
    client = redis.Redis.from_url(redis_url)
    calls = sum(1 for r in records if r.topic == "cdr" and r.key == c.encode())
    windows = Windows.load([c], [client.get(f"cw:{{{c}}}:s")])
    assert windows.monthly[0, :, C["out_calls"]].sum() == calls
    samples = scrape(worker["metrics_port"])
    consumed = sum(v for k, v in samples.items() if k.startswith("churnwatch_events_consumed_total"))
    assert consumed == len(records) + len(bad)
    assert samples["churnwatch_deadletters_total{reason=invalid_field}"] == 4
    # No region is named in the settings: each counts as `other`, so the label stays bounded.
    assert samples["churnwatch_alerts_total{level=%s,region=other}" % alerts[0].level] == 1
    # Structured logs: one JSON object per dead letter, with where it came from, and no raw customer id.
    lines = [json.loads(line) for line in worker["log"].read_text().splitlines() if line.startswith("{")]
    logged = [r for r in lines if r.get("event") == "dead letter"]
    assert sorted(r["offset"] for r in logged) == sorted(d.offset for d in dead)
    assert all(r["topic"] == t["cdr"] and r["level"] == "info" and is_pseudonym(r["customer"]) for r in logged
               if r["customer"] is not None)
    assert c not in worker["log"].read_text() and "8613800000001" not in worker["log"].read_text()
    # Consumer lag per owned input partition, from the worker's own position: all caught up. The
    # worker sets these, and the customers it tracks, on its next look (every 5 s): wait for both.
    deadline = time.monotonic() + 60
    while True:
        samples = scrape(worker["metrics_port"])
        lag = {k: v for k, v in samples.items() if k.startswith("churnwatch_consumer_lag")}
        cdr_partitions = [k for k in lag if f"topic={t['cdr']}" in k]
        caught_up = len(cdr_partitions) == 4 and sum(lag.values()) == 0
        if (caught_up and samples.get("churnwatch_customers_tracked", 0) >= 2) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(cdr_partitions) == 4 and sum(lag.values()) == 0, lag
    # What the SREs' files query is what this live worker exports (the trainer's: test_trainer).
    families = live_families(worker["metrics_port"])
    assert worker_names_in_deploy_files() <= families, worker_names_in_deploy_files() - families
    assert scrape(worker["metrics_port"])["churnwatch_customers_tracked"] >= 2
    assert get(worker["metrics_port"], "/healthz") == (200, "ok\n")
    assert get(worker["metrics_port"], "/readyz")[0] == 200
    # The dashboard's "workers ready" follows /readyz, at the worker's next look at its health.
    deadline = time.monotonic() + 60
    while scrape(worker["metrics_port"]).get("churnwatch_ready") != 1:
        assert time.monotonic() < deadline, "churnwatch_ready never said what /readyz says"
        time.sleep(1)


def wait_ready(worker: dict, timeout_s: float = 120) -> None:
    """Until the worker's /readyz says it reads its partitions."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert worker["proc"].poll() is None, worker["log"].read_text()[-3000:]
        try:
            if get(worker["metrics_port"], "/readyz")[0] == 200:
                return
        except OSError:  # not listening yet
            pass
        assert time.monotonic() < deadline, "the worker never became ready"
        time.sleep(0.5)


def counter_sum(samples: dict[str, float], name: str) -> float:
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


@pytest.mark.parametrize("bootstrap", ["tansu"], indirect=True)  # what brokers differ in is covered above
def test_each_metric_moves_as_expected_during_a_simulated_replay(worker: dict) -> None:
    """What an SRE reads off /metrics while a replay runs is what the worker really did."""
    t, port = worker["topics"], worker["metrics_port"]
    settings = Settings(topics=Topics(**t))
    sim = Simulator(SimConfig(customers=100, days=100, seed=3))
    # The worker, once it reads its partitions, is paused while the replay is sent, so that it has a
    # backlog to work through however its speed compares with the producer's (one that kept up
    # would show no lag).
    wait_ready(worker)
    os.kill(worker["proc"].pid, signal.SIGSTOP)
    try:
        produced = produce_simulation(sim, worker["bootstrap"], settings, threading.Event())
    finally:
        os.kill(worker["proc"].pid, signal.SIGCONT)
    total = sum(produced.values())

    # While the worker works through the backlog, lag is seen above zero and counters only grow.
    max_lag, before, seen = 0.0, {}, []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert worker["proc"].poll() is None, worker["log"].read_text()[-3000:]
        now = scrape(port)
        max_lag = max(max_lag, counter_sum(now, "churnwatch_consumer_lag_messages"))
        for name in ("churnwatch_events_consumed_total", "churnwatch_batch_size_events_count",
                     "churnwatch_redis_call_seconds_count", "churnwatch_snapshots_total"):
            assert counter_sum(now, name) >= counter_sum(before, name), name
        before = now
        seen.append(counter_sum(now, "churnwatch_events_consumed_total"))
        written = counter_sum(now, "churnwatch_batch_size_events_sum")  # observed once a batch is saved
        # Customers tracked is counted by the 5-second health check, which may come after the last batch.
        if written == total and counter_sum(now, "churnwatch_consumer_lag_messages") == 0 \
                and any(k.startswith("churnwatch_consumer_lag_messages") for k in now) \
                and now.get("churnwatch_customers_tracked", 0) >= len(sim.ids):
            break
        time.sleep(0.5)
    end = scrape(port)
    assert seen[-1] == total, (seen[-5:], total)
    assert any(0 < s < total for s in seen), "the replay was never seen in progress"
    assert max_lag > 0, "lag never rose above zero while the backlog was worked through"

    for topic, count in produced.items():
        assert end[f"churnwatch_events_consumed_total{{topic={topic}}}"] == count
    # Every consumed event went through exactly one batch; batches were timed; Redis was called per batch.
    assert end["churnwatch_batch_size_events_sum"] == total
    batches = end["churnwatch_batch_size_events_count"]
    assert 1 < batches < total and end["churnwatch_batch_processing_seconds_count"] == batches
    assert end["churnwatch_redis_call_seconds_count{op=save}"] >= batches
    assert end["churnwatch_redis_up"] == 1 and counter_sum(end, "churnwatch_redis_errors_total") == 0
    # The simulator resends some events and delivers a few far too late: counted, not applied twice.
    assert end["churnwatch_events_duplicate_total"] > 0
    assert counter_sum(end, "churnwatch_deadletters_total") > 0
    # Alerts: the counter, the latency histogram and the topic agree.
    alerts, _ = consume_until(worker, want_alerts=int(counter_sum(end, "churnwatch_alerts_total")), want_dead=0,
                              timeout_s=30)
    assert len(alerts) == counter_sum(end, "churnwatch_alerts_total") > 0
    assert end["churnwatch_event_to_alert_seconds_count"] == len(alerts)
    # A replay of 100 days in seconds: the events are days old, the worker is not that slow.
    assert end["churnwatch_arrival_to_alert_seconds_count"] == len(alerts)
    assert end['churnwatch_arrival_to_alert_seconds_bucket{le=10.0}'] == len(alerts)
    assert end['churnwatch_event_to_alert_seconds_bucket{le=10.0}'] < len(alerts)
    assert end.get("churnwatch_alerts_suppressed_total{cause=holdout}", 0) == sum(a.holdout for a in alerts)
    fired = {r.rule_id for a in alerts for r in a.reasons if r.rule_id != "model"}
    assert all(end[f"churnwatch_rule_fired_total{{rule={rule}}}"] >= 1 for rule in fired)
    assert end["churnwatch_snapshots_total"] > 0
    assert end["churnwatch_rules_loaded"] > 0 and end["churnwatch_rules_last_reload_success"] == 1
    assert end["churnwatch_model_version"] == 0  # no trainer here: rules only (the trainer test covers versions)
    assert end["churnwatch_customers_tracked"] >= len(sim.ids)
    assert any(k.startswith("churnwatch_build_info{") for k in end)


@pytest.mark.parametrize("bootstrap", ["tansu"], indirect=True)
def test_reports_and_call_lists_after_a_simulated_quarter(watchful_worker: dict, redis_url: str,
                                                          tmp_path: Path) -> None:
    """The managers' reports agree with the simulator's ground truth; the call lists follow the budget."""
    worker = watchful_worker
    t = worker["topics"]
    env = dict(os.environ, KAFKA_BOOTSTRAP=worker["bootstrap"], REDIS_URL=redis_url,
               CHURNWATCH_TOPIC_CALLS_DAILY=f"calls-{t['alerts']}",
               **{f"CHURNWATCH_TOPIC_{name.upper()}": topic for name, topic in t.items()})
    truth_file = tmp_path / "truth.jsonl"
    cli = [sys.executable, "-m", "stream_app.cli"]
    summary = json.loads(subprocess.run(
        [*cli, "simulate", "--customers", "120", "--days", "92", "--seed", "11", "--monthly-churn", "0.06",
         "--warmup-days", "5", "--truth", str(truth_file), "--json"],
        env=env, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    total = sum(summary["events_by_topic"].values())
    deadline = time.monotonic() + 240
    while counter_sum(scrape(worker["metrics_port"]), "churnwatch_batch_size_events_sum") < total:  # written
        assert time.monotonic() < deadline and worker["proc"].poll() is None, worker["log"].read_text()[-3000:]
        time.sleep(1)

    def report(*args: str) -> dict:
        done = subprocess.run([*cli, "report", *args, "--json"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    churn = report("churn", "--month", "2026-10", "--months", "3", "--plot", str(tmp_path / "churn.png"))
    truth = [json.loads(line) for line in truth_file.read_text().splitlines()]
    base = len(truth)
    for row in churn["months"]:
        left = [x for x in truth if (x["churn_date"] or "")[:7] == row["month"]]
        involuntary = [x for x in left if x["reason_code"] in (335, 345, 380)]
        assert (row["customers_start"], row["gross_adds"], row["churn"], row["voluntary_churn"],
                row["involuntary_churn"], row["customers_end"]) == (
            base, 0, len(left), len(left) - len(involuntary), len(involuntary), base - len(left)), row["month"]
        reasons: dict[str, int] = {}
        for x in left:
            reasons[str(x["reason_code"])] = reasons.get(str(x["reason_code"]), 0) + 1
        assert churn["by_reason"][row["month"]] == reasons
        base -= len(left)
    assert sum(row["churn"] for row in churn["months"]) > 5  # the quarter had churners in it
    base_report = report("base", "--month", "2026-10", "--months", "3")
    assert [row["customers_end"] for row in base_report["months"]] == [row["customers_end"] for row in churn["months"]]
    for row in base_report["months"][:2]:
        # August and September have closed for everyone still there whose billing has moved on
        # too: a prepaid customer who has not recharged since keeps the month open (a late
        # recharge could still count in it), and a simulated base has 5-15% of them.
        assert 0.8 * row["customers_end"] <= row["customers_billed"] <= row["customers_end"]
        assert 0 < row["mid_high_end"] < row["customers_billed"]
        assert 0 < row["mid_high_end_revenue_share"] < 1 and row["revenue"] > 0
    cohort = report("cohort", "--snapshot", "2026-09", "--through", "2026-10", "--plot", str(tmp_path / "cohort.png"))
    assert cohort["members"] > 0 and cohort["months"] == ["2026-10"]
    assert cohort["retained"][0] == cohort["members"] - cohort["lost"][0]
    for png in ("churn.png", "cohort.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / png).stat().st_size > 20_000
    table = subprocess.run([*cli, "report", "churn", "--month", "2026-10"], env=env, capture_output=True, text=True)
    assert "Churn totals" in table.stdout and "205 network" in table.stdout and "customers at end" in table.stdout
    check_call_lists(env, cli, tmp_path, worker["metrics_port"])


def check_call_lists(env: dict[str, str], cli: list[str], tmp_path: Path, metrics_port: int) -> None:
    settings = Settings(topics=Topics(alerts=env["CHURNWATCH_TOPIC_ALERTS"]), kafka_bootstrap=env["KAFKA_BOOTSTRAP"])
    alerts = {a.alert_id: a for a in read_alerts(settings)}
    assert len(alerts) >= 10, f"the simulated quarter raised {len(alerts)} alerts"
    days = collections.Counter(alert_day(a, settings.zone) for a in alerts.values() if not a.holdout)
    busiest = max(days, key=lambda d: (days[d], d))
    done = subprocess.run([*cli, "calls", "daily", "--day", busiest.isoformat(), "--budget", "1", "--csv",
                           str(tmp_path / "daily.csv"), "--produce", "--json"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    with open(tmp_path / "daily.csv") as f:
        rows = list(csv.DictReader(f))
    # What the command read from the live topic and wrote is the plan of the alerts the worker raised
    # (the plan's rules are unit-tested in test_call_plan).
    [expected] = plan_days(alerts.values(), busiest, busiest, 1, settings.zone)
    assert [r["alert_id"] for r in rows] == [a.alert_id for a in expected.calls] and len(rows) == 1
    assert summary == expected.to_json()
    assert all(r["holdout"] == "False" for r in rows)
    consumer = KafkaConsumer(env["CHURNWATCH_TOPIC_CALLS_DAILY"], bootstrap_servers=env["KAFKA_BOOTSTRAP"],
                             auto_offset_reset="earliest", consumer_timeout_ms=1000)
    received: list[dict] = []
    deadline = time.monotonic() + 30  # the topic was just created: the group may take a while to be assigned
    while len(received) < len(rows) and time.monotonic() < deadline:
        received += [json.loads(m.value) for m in consumer]
    consumer.close()
    sent = sorted(received, key=lambda body: body["rank"])
    assert [(b["day"], b["alert"]["alert_id"]) for b in sent] == [(busiest.isoformat(), r["alert_id"]) for r in rows]
    # The plan in force is on the workers' dashboards: called, waiting over budget, expired, control group.
    deadline = time.monotonic() + 20
    while scrape(metrics_port).get("churnwatch_call_plan_alerts{outcome=called}") != 1:
        assert time.monotonic() < deadline, "the worker never exported the call plan"
        time.sleep(1)
    exported = scrape(metrics_port)
    assert exported["churnwatch_call_plan_alerts{outcome=waiting}"] == summary["waiting"]
    assert exported["churnwatch_call_plan_day_timestamp_seconds"] > 0
    month = busiest.strftime("%Y-%m")
    done = subprocess.run([*cli, "calls", "monthly", "--month", month, "--json"], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout.splitlines()[-1])
    warned = {a.customer_id for a in alerts.values() if alert_day(a, settings.zone).strftime("%Y-%m") == month}
    assert listed["customers"] == len(warned) and sum(listed["by_level"].values()) == len(warned)


@pytest.mark.parametrize("bootstrap", ["tansu"], indirect=True)
def test_real_monthly_data_replayed_through_a_live_worker_keeps_its_totals(worker: dict, redis_url: str) -> None:
    """1,000 real prepaid customers x 3 months, through the broker, the worker and Redis."""
    env = dict(os.environ, KAFKA_BOOTSTRAP=worker["bootstrap"],
               **{f"CHURNWATCH_TOPIC_{name.upper()}": topic for name, topic in worker["topics"].items()})
    name = "telecom_monthly_sample1000"
    data, mapping = shared_data(f"{name}.csv"), REPO / "mappings" / f"{name}.yaml"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "stream_app.cli", "replay-monthly", str(data), "--mapping",
                           str(mapping), "--json"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    total = sum(summary["events_by_topic"].values())
    while counter_sum(scrape(worker["metrics_port"]), "churnwatch_batch_size_events_sum") < total:  # written
        assert time.monotonic() - started < 120 and worker["proc"].poll() is None, worker["log"].read_text()[-3000:]
        time.sleep(0.5)
    rows = read_rows(data, load_mapping(mapping))
    client = redis.Redis.from_url(redis_url)
    ids = [r.customer_id for r in rows]
    w = Windows.load(ids, client.mget([f"cw:{{{c}}}:s" for c in ids]))
    client.close()
    for i, r in enumerate(rows):
        for month, table in r.months.items():
            k = int(w.month0[i]) - month_index(int(month[:4]), int(month[5:]))
            assert w.monthly[i, k, C["spend"]] == round(round(table["spend"], 2) * 100), (r.customer_id, month)
            assert abs(w.monthly[i, k, C["out_min"]] / 10 - table["out_min"]) <= 1.0, (r.customer_id, month)
    assert {ids[i] for i in range(len(ids)) if w.rec["exit_ts"][i] > 0} == {r.customer_id for r in rows if r.churned}
    assert counter_sum(scrape(worker["metrics_port"]), "churnwatch_deadletters_total") == 0


def escalating_customer(log: Log, c: str) -> list[int]:
    """A mid/high-end customer who gets worse in three steps; the record count after each.
    Step 1: outgoing minutes fell and complaints pile up for two days (medium). Step 2: a day of
    dropped calls (high). Step 3: one more dropped call (still high: a repeat)."""
    decliner(log, c, minutes=(300, 300, 100))
    for day in (20, 21, 22):
        log.add("cdr", c, cdr(c, f"2026-06-{day}T09:00:00+08:00", duration_s=300, customer_service=True))
    ends = [len(log.records)]
    log.add("cdr", c, cdr(c, "2026-06-23T09:00:00+08:00", duration_s=60))  # the complaints' second day
    ends.append(len(log.records))
    for hour in range(8, 20):
        log.add("cdr", c, cdr(c, f"2026-06-24T{hour:02d}:00:00+08:00", duration_s=20, termination="dropped"))
    ends.append(len(log.records))
    log.add("cdr", c, cdr(c, "2026-06-25T10:00:00+08:00", duration_s=20, termination="dropped"))
    ends.append(len(log.records))
    return ends


def saved(w: dict) -> float:
    """Events in batches the worker has finished: alerts sent, state written."""
    try:
        return scrape(w["metrics_port"]).get("churnwatch_batch_size_events_sum", 0)
    except urllib.error.URLError:  # still starting
        return 0


def feed_in_steps(w: dict, log: Log, ends: list[int]) -> list[list[str]]:
    """Send the records up to each end, one step at a time, each read before the next is sent
    (a rule with `for: 2` needs evaluations on two days, so two batches); the alert levels
    on the topic after each step."""
    t = w["topics"]
    settings = Settings(kafka_bootstrap=w["bootstrap"], topics=Topics(**t))
    producer = KafkaProducer(bootstrap_servers=w["bootstrap"], acks="all")
    start, levels = 0, []
    for end in ends:
        for rec in log.records[start:end]:
            producer.send(t[rec.topic], key=rec.key, value=rec.value)
        producer.flush()
        start = end
        while saved(w) < end:
            assert w["proc"].poll() is None, w["log"].read_text()[-3000:]
            time.sleep(0.2)
        levels.append([a.level for a in read_alerts(settings)])
    producer.close()
    return levels


@pytest.mark.parametrize("bootstrap", ["tansu"], indirect=True)  # broker differences are covered above
def test_an_escalation_alerts_again_a_repeat_does_not_and_a_replay_gives_the_same_alert_ids(
        worker: dict, redis_port: int, tmp_path: Path) -> None:
    c = "8613800000021"
    log = Log()
    ends = escalating_customer(log, c)
    # Step 4 is a producer's resend of everything after step 1: the same event ids again.
    log.records.extend(log.records[ends[0]:ends[-1]])
    ends.append(len(log.records))
    levels = feed_in_steps(worker, log, ends)
    assert levels == [[], ["medium"], ["medium", "high"], ["medium", "high"], ["medium", "high"]]
    first = list(read_alerts(Settings(kafka_bootstrap=worker["bootstrap"], topics=Topics(**worker["topics"]))))

    # The same input, in the same steps, through a fresh worker, group, topics and Redis database.
    replay_db = f"redis://127.0.0.1:{redis_port}/6"
    flush(replay_db, False)
    topics = {k: f"{v}-again" for k, v in worker["topics"].items()}
    ensure_topics(Settings(topics=Topics(**topics)), worker["bootstrap"])
    again = start_worker(worker["bootstrap"], replay_db, topics, f"again-{topics['cdr']}", tmp_path / "again.log")
    try:
        assert feed_in_steps(again, log, ends) == levels
        second = list(read_alerts(Settings(kafka_bootstrap=worker["bootstrap"], topics=Topics(**topics))))
    finally:
        stop_worker(again["proc"])
    assert [a.alert_id for a in second] == [a.alert_id for a in first]
