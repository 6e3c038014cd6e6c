"""`churnwatch calls winback` on a real broker: it reads the churn events, alerts and outcomes the
live service wrote, and `--produce` sends the list, in order, to its own topic."""

from __future__ import annotations

import json

import msgspec
import pytest
from click.testing import CliRunner
from kafka import KafkaProducer

from stream_app.cli import main
from stream_app.connect.topic_reader import read_topic
from stream_app.connect.topics import ensure_topics
from stream_app.contracts.lists import WinbackEntry
from stream_app.settings import Settings, Topics
from tests.unit.test_winback import TODAY, left, warned

pytestmark = pytest.mark.integration


def test_the_winback_list_reads_the_services_topics_and_produces_itself_in_order(
        tansu_bootstrap: str, unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    names = {"churn_events": f"events-{unique}", "alerts": f"alerts-{unique}", "outcomes": f"outcomes-{unique}",
             "calls_winback": f"winback-{unique}"}
    settings = Settings(_env_file=None, kafka_bootstrap=tansu_bootstrap, topics=Topics(**names))
    ensure_topics(settings, tansu_bootstrap)
    producer = KafkaProducer(bootstrap_servers=tansu_bootstrap, acks="all")
    for c in (left("c-small", 2, 80.0), left("c-big", 20, 400.0), left("c-fraud", 1, 900.0, code=345, voluntary=False)):
        producer.send(names["churn_events"], key=c.customer_id.encode(), value=msgspec.json.encode(c))
    alert = warned("c-big", 30)
    producer.send(names["alerts"], key=b"c-big", value=msgspec.json.encode(alert))
    producer.flush()
    producer.close()
    monkeypatch.setenv("KAFKA_BOOTSTRAP", tansu_bootstrap)
    for name, topic in names.items():
        monkeypatch.setenv(f"CHURNWATCH_TOPIC_{name.upper()}", topic)
    result = CliRunner().invoke(main, ["calls", "winback", "--day", TODAY.isoformat(), "--produce", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert (summary["customers"], summary["warned"], summary["reached"]) == (2, 1, 0)
    sent = list(read_topic(settings, names["calls_winback"], msgspec.json.Decoder(WinbackEntry).decode))
    # Keyed by customer, so partitions may interleave: the rank gives the order.
    assert sorted((e.rank, e.customer_id, e.warned) for e in sent) == [(1, "c-big", "high"), (2, "c-small", None)]
