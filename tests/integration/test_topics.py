"""Topics are created with what the service needs of them, on Apache Kafka."""

from __future__ import annotations

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from stream_app.connect.topics import ensure_topics
from stream_app.settings import Settings, Topics

pytestmark = [pytest.mark.integration, pytest.mark.apache_kafka]


def test_snapshots_outlive_the_horizon_and_labels_have_one_partition(kafka_bootstrap: str, unique: str) -> None:
    names = {f: f"{f}-{unique}" for f in Topics.model_fields}
    settings = Settings(_env_file=None, horizon_days=45, topics=Topics(**names))
    ensure_topics(settings, kafka_bootstrap)
    ensure_topics(settings, kafka_bootstrap)  # idempotent
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        wanted = [ConfigResource(ConfigResourceType.TOPIC, names[t]) for t in ("snapshots", "labels", "cdr")]
        described = admin.describe_configs(wanted, config_filter="all")
        by_topic = next(iter(described.values()))
        retention = {topic: int(configs["retention.ms"]["value"]) for topic, configs in by_topic.items()}
        partitions = {t["name"]: len(t["partitions"])
                      for t in admin.describe_topics([names["labels"], names["snapshots"]])}
    finally:
        admin.close()
    day = 86_400_000
    assert retention[names["snapshots"]] >= (45 + settings.late_grace_days) * day
    assert retention[names["labels"]] == 365 * day
    assert retention[names["cdr"]] == 7 * day  # the broker's default: input retention is the operator's call
    assert partitions == {names["labels"]: 1, names["snapshots"]: settings.partitions}
