"""The alert ledger (alert_ledger.py) against both brokers: what a worker reads when it is given
partitions, so that an alert a crashed batch sent is not sent again."""

from __future__ import annotations

import asyncio

import pytest
from kafka import KafkaProducer

from stream_app.alerts.ledger import ALERTS, AlertLedger
from stream_app.connect.topics import ensure_topics
from stream_app.settings import Settings, Topics

pytestmark = pytest.mark.integration


def test_the_alert_ledger_finds_the_alerts_sent_after_the_newest_a_state_records(bootstrap: str, unique: str) -> None:
    """Tansu answers list-offsets with something other than the end: the ledger must not rely on it."""
    settings = Settings(kafka_bootstrap=bootstrap, topics=Topics(alerts=f"alerts-{unique}"))
    ensure_topics(settings, bootstrap)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for i in range(250):
        producer.send(settings.topics.alerts, key=b"c", value=b'{"alert_id": "a-%d"}' % i, partition=1)
    for i in range(5):
        producer.send(settings.topics.alerts, key=b"c", value=b'{"alert_id": "b-%d"}' % i, partition=2)
    producer.flush()
    producer.close()
    ledger = AlertLedger(settings)
    asyncio.run(ledger.recover({1, 2, 3}, {(ALERTS, 1): 246, ("cdr", 1): 9_999}))
    assert ledger.sent == {1: {"a-247", "a-248", "a-249"}, 2: {f"b-{i}" for i in range(5)}, 3: set()}
    assert ledger.already_sent(1, "a-248") and not ledger.already_sent(1, "a-248")  # found once
    assert not ledger.already_sent(1, "a-10") and not ledger.already_sent(0, "a-247")
    assert ledger.marks({1, 2, 3}) == {(ALERTS, 1): 246}  # not past alerts whose records wait to be applied again
