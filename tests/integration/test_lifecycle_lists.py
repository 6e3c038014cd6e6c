"""`churnwatch calls growth` against a real Redis (and a Redis Cluster) and a real broker: it reads
every customer's state the workers keep, lists the growing ones, sends the list in order to its
topic, and leaves its size where the workers' metrics pick it up."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from stream_app.alerts.call_plan import observe_lists
from stream_app.cli import main
from stream_app.connect.redis import connect_redis_sync
from stream_app.connect.topic_reader import read_topic
from stream_app.contracts import keys
from stream_app.contracts.lists import GrowthEntry
from stream_app.metrics import Metrics
from stream_app.settings import Settings, Topics
from stream_app.windows.scan import read_states
from stream_app.windows.store import MemoryWindowStore
from tests.conftest import flush
from tests.unit.test_growth_list import DAY, RULES_DIR, ZONE, store  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration


def _write(url: str, cluster: bool, states: dict[str, bytes]) -> None:
    client = connect_redis_sync(url, cluster)
    try:
        for customer, raw in states.items():
            client.set(keys.customer_state(customer), raw)
        client.set(keys.customer_state("c-from-elsewhere"), b"\xfenot a state")  # another version's: unreadable
        client.hset(keys.CALL_PLAN, mapping={"called": "1"})  # a service key is no customer
    finally:
        client.close()


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_every_state_is_read_once_in_chunks(store: MemoryWindowStore, cluster: bool,  # noqa: F811
                                            request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    flush(url, cluster)
    _write(url, cluster, store.data)
    client = connect_redis_sync(url, cluster)
    try:
        chunks = list(read_states(client, chunk=3))
    finally:
        client.close()
    read = {c: raw for names, raws in chunks for c, raw in zip(names, raws)}
    assert sum(len(names) for names, _ in chunks) == len(read) == len(store.data) + 1
    assert all(read[c] == raw for c, raw in store.data.items())
    assert max(len(names) for names, _ in chunks) <= 3


def test_the_growth_list_reads_the_workers_state_produces_itself_and_its_size(
        store: MemoryWindowStore, redis_url: str, tansu_bootstrap: str, unique: str,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _write(redis_url, False, store.data)
    topic = f"growth-{unique}"
    for name, value in {"REDIS_URL": redis_url, "KAFKA_BOOTSTRAP": tansu_bootstrap, "CHURNWATCH_TIMEZONE": str(ZONE),
                        "CHURNWATCH_TOPIC_CALLS_GROWTH": topic, "CHURNWATCH_RULES_DIR": str(RULES_DIR)}.items():
        monkeypatch.setenv(name, value)
    args = ["calls", "growth", "--day", DAY.isoformat(), "--produce", "--csv", str(tmp_path / "growth.csv"),
            "--plot", str(tmp_path / "growth.png"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert (summary["customers"], summary["read"], summary["unreadable"]) == (3, len(store.data) + 1, 1)
    assert summary["by_driver"] == {"voice": 2, "data": 1}
    settings = Settings(_env_file=None, kafka_bootstrap=tansu_bootstrap, topics=Topics(calls_growth=topic))
    sent = sorted(read_topic(settings, topic, msgspec.json.Decoder(GrowthEntry).decode), key=lambda e: e.rank)
    assert [e.customer_id for e in sent] == ["c-near", "c-data", "c-few-minutes"]
    with (tmp_path / "growth.csv").open() as f:
        assert [row["customer_id"] for row in csv.DictReader(f)] == ["c-near", "c-data", "c-few-minutes"]
    assert (tmp_path / "growth.png").stat().st_size > 10_000
    # The workers' health check reads the list's size back into their metrics.
    client = connect_redis_sync(redis_url)
    metrics = Metrics(CollectorRegistry())
    observe_lists(metrics, client.hgetall(keys.LISTS), ZONE)
    client.close()
    assert metrics.list_customers.labels("growth")._value.get() == 3
    assert metrics.list_value.labels("growth")._value.get() == pytest.approx(summary["monthly_value"])
    assert metrics.list_day.labels("growth")._value.get() > 0


def test_without_redis_the_growth_list_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    result = CliRunner().invoke(main, ["calls", "growth"])
    assert result.exit_code == 2 and "REDIS_URL is not set" in result.output


def test_an_output_that_cannot_be_made_is_refused_before_the_scan(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    result = CliRunner().invoke(main, ["calls", "growth", "--produce"])
    assert result.exit_code == 2 and "KAFKA_BOOTSTRAP is not set: --produce" in result.output
    result = CliRunner().invoke(main, ["calls", "growth", "--plot", str(tmp_path / "chart.foo")])
    assert result.exit_code == 2 and "written as .png, .svg or .pdf" in result.output


def test_a_month_whose_bills_are_not_read_yet_is_said_so(store: MemoryWindowStore, redis_url: str,  # noqa: F811
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _write(redis_url, False, store.data)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("CHURNWATCH_RULES_DIR", str(RULES_DIR))
    result = CliRunner().invoke(main, ["calls", "growth", "--day", "2026-08-02", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["customers"] == 0
    assert "bills are not read yet" in result.stderr
