"""Customers who come back, through a live worker on a real broker and a real Redis: the worker
records each once on its topic, the churn report counts them in the base again, and the campaign
report says how many the win-back list had named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import msgspec
import pytest
from kafka import KafkaProducer

from stream_app.connect.topic_reader import read_topic
from stream_app.contracts.events import WonBack
from stream_app.settings import Settings, Topics
from stream_app.tools.demo import scrape, stop_worker
from tests.integration.test_end_to_end import counter_sum, start_worker
from tests.unit.test_won_back import BACK, LEFT, NEW, story

pytestmark = pytest.mark.integration
TOPICS = ("cdr", "billing", "customers", "outcomes", "alerts", "deadletter", "churn_events", "won_back",
          "calls_winback")


def written(port: int) -> float:
    """Events the worker has written so far (0 until its metrics are up)."""
    try:
        return counter_sum(scrape(port), "churnwatch_batch_size_events_sum")
    except urllib.error.URLError:
        return 0


def test_customers_back_are_recorded_once_counted_in_the_base_and_in_the_campaign_report(
        tansu_bootstrap: str, redis_url: str, unique: str, tmp_path: Path) -> None:
    names = {t: f"{t}-{unique}" for t in TOPICS}
    worker = start_worker(tansu_bootstrap, redis_url, names, f"cw-{unique}", tmp_path / "worker.log")
    try:
        records = story().records
        producer = KafkaProducer(bootstrap_servers=tansu_bootstrap, acks="all")
        for r in records:
            producer.send(names[r.topic], key=r.key, value=r.value)
        producer.flush()
        producer.close()
        deadline = time.monotonic() + 120
        while written(worker["metrics_port"]) < len(records):
            assert time.monotonic() < deadline and worker["proc"].poll() is None, worker["log"].read_text()[-3000:]
            time.sleep(0.5)
        assert counter_sum(scrape(worker["metrics_port"]), "churnwatch_won_back_total") == 2
    finally:
        stop_worker(worker["proc"])
    settings = Settings(_env_file=None, kafka_bootstrap=tansu_bootstrap, topics=Topics(won_back=names["won_back"]))
    sent = list(read_topic(settings, names["won_back"], msgspec.json.Decoder(WonBack).decode))
    assert sorted((b.customer_id, b.previous_customer_id) for b in sent) == [(BACK, BACK), (NEW, LEFT)]
    env = dict(os.environ, KAFKA_BOOTSTRAP=tansu_bootstrap, REDIS_URL=redis_url,
               **{f"CHURNWATCH_TOPIC_{t.upper()}": n for t, n in names.items()})

    def cli(*args: str) -> dict:
        done = subprocess.run([sys.executable, "-m", "stream_app.cli", *args, "--json"], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.splitlines()[-1])

    listed = cli("calls", "winback", "--day", "2026-08-01", "--produce")
    assert listed["customers"] == 2  # BACK and LEFT, who ported out in July
    september = cli("report", "churn", "--month", "2026-09", "--months", "1")["months"][0]
    assert (september["gross_adds"], september["won_back"], september["customers_end"]) == (2, 2, 3)
    won = cli("report", "campaign")["won_back"]
    total = won[-1]
    assert total["week"] == "all"
    assert (total["won_back"], total["same_number"], total["new_line"], total["listed"]) == (2, 1, 1, 2)
    assert total["monthly_value"] == 300.0  # what BACK and LEFT spent in June, their last month before
    assert {w["week"] for w in won[:-1]} == {"2026-W37", "2026-W38"}  # 10 and 20 September
