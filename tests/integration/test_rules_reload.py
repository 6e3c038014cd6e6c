"""Hot reload in a live worker: an edited threshold takes effect on the next batch, a broken
edit leaves the old rules in force and flips the success gauge, and SIGHUP reloads now."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from kafka import KafkaProducer

from stream_app.connect.topics import ensure_topics
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import scrape, stop_worker
from stream_app.tools.embedded.process import free_port
from tests.factories import Log, decliner
from tests.integration.test_end_to_end import consume_until

pytestmark = pytest.mark.integration
TOPICS = ("cdr", "billing", "customers", "outcomes", "alerts", "deadletter")
RULE = """
levels:
  default: {high: 3, medium: 2, low: 1}
groups:
  - name: monthly
    cadence: monthly
    rules:
      - id: minutes_drop
        expr: mou_out_mom <= THRESHOLD and mou_out_m2 >= 100
        importance: 2
        labels: {reason_code: 205}
        annotations: {summary: "minutes {mou_out_mom:+.0%}"}
"""


@pytest.fixture
def live(tansu_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> Iterator[dict]:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "r.yaml").write_text(RULE.replace("THRESHOLD", "-0.3"))
    names = {t: f"{t}-{unique}" for t in TOPICS}
    ensure_topics(Settings(topics=Topics(**names)), tansu_bootstrap)
    port = free_port()
    env = dict(os.environ, KAFKA_BOOTSTRAP=tansu_bootstrap, REDIS_URL=redis_url, CHURNWATCH_APP_ID=f"cw-{unique}",
               CHURNWATCH_METRICS_PORT=str(port), CHURNWATCH_RULES_DIR=str(rules_dir),
               CHURNWATCH_BATCH_WITHIN_S="0.2", **{f"CHURNWATCH_TOPIC_{t.upper()}": n for t, n in names.items()})
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream_app.cli", "worker"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"topics": names, "metrics_port": port, "proc": proc, "log": log, "bootstrap": tansu_bootstrap,
               "rules": rules_dir / "r.yaml", "seen": 0}
    finally:
        stop_worker(proc)


def send_decliner(w: dict, customer: str, minutes: tuple[int, ...]) -> None:
    log = Log()
    decliner(log, customer, minutes=minutes)
    producer = KafkaProducer(bootstrap_servers=w["bootstrap"])
    for rec in log.records:
        producer.send(w["topics"][rec.topic], key=rec.key, value=rec.value)
    producer.flush()
    producer.close()
    w["produced"] = w.get("produced", 0) + len(log.records)


def alerted(w: dict, customer: str, minutes: tuple[int, ...], timeout_s: float = 60) -> bool:
    """Send a decliner; True if an alert for it arrives."""
    send_decliner(w, customer, minutes)
    alerts, _ = consume_until(w, want_alerts=w["seen"] + 1, want_dead=0, timeout_s=timeout_s)
    w["seen"] = len(alerts)
    return any(a.customer_id == customer for a in alerts)


def wait_metric(w: dict, name: str, value: float, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if scrape(w["metrics_port"]).get(name) == value:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{name} never became {value}: {w['log'].read_text()[-2000:]}")


def test_edits_take_effect_broken_edits_do_not_and_sighup_reloads(live: dict, tmp_path: Path) -> None:
    # A cold worker on a busy box: imports, the group join and the first batch take a while.
    wait_metric(live, "churnwatch_rules_last_reload_success", 1, timeout_s=120)
    assert alerted(live, "8613800000101", (300, 300, 60), timeout_s=120)  # -80% <= -30%

    live["rules"].write_text(RULE.replace("THRESHOLD", "-0.9"))
    wait_metric(live, "churnwatch_rules_reloads_total{result=success}", 2)
    assert not alerted(live, "8613800000102", (300, 300, 60), timeout_s=8)  # -80% is no longer enough
    assert alerted(live, "8613800000103", (300, 300, 15))  # -95% is

    live["rules"].write_text(RULE.replace("THRESHOLD", "-0.9 +"))  # a syntax error
    wait_metric(live, "churnwatch_rules_last_reload_success", 0)
    assert alerted(live, "8613800000104", (300, 300, 15))  # the last good rules stay in force
    assert scrape(live["metrics_port"])["churnwatch_rules_loaded"] == 1

    # Same size and time stamp: the file watch cannot see it, SIGHUP must.
    # Written aside and moved in whole, so that the watch never sees the file between the
    # write and the old time stamp put back.
    stamp = live["rules"].stat()
    aside = tmp_path / "r.yaml.new"
    aside.write_text(RULE.replace("THRESHOLD", "-0.50 "))
    os.utime(aside, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    os.replace(aside, live["rules"])
    assert live["rules"].stat().st_size == stamp.st_size
    time.sleep(3)
    assert scrape(live["metrics_port"])["churnwatch_rules_last_reload_success"] == 0
    live["proc"].send_signal(signal.SIGHUP)
    wait_metric(live, "churnwatch_rules_last_reload_success", 1)
    assert alerted(live, "8613800000105", (300, 300, 60))  # -80% <= -50%
    # Four reloads under way while events flowed: every event was consumed once, none replayed.
    def consumed() -> float:
        return sum(v for k, v in scrape(live["metrics_port"]).items()
                   if k.startswith("churnwatch_events_consumed_total"))

    deadline = time.monotonic() + 60
    while consumed() < live["produced"] and time.monotonic() < deadline:
        time.sleep(0.3)
    samples = scrape(live["metrics_port"])
    assert consumed() == live["produced"] and samples["churnwatch_events_replayed_total"] == 0
