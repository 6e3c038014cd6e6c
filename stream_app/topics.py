"""Creating the service's topics (idempotent), with kafka-python's admin client."""

from __future__ import annotations

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from .settings import Settings

__all__ = ["ensure_topics"]


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create every topic the service uses, co-partitioned, unless it exists already."""
    t = settings.topics
    names = [*t.inputs(), t.alerts, t.deadletter, t.snapshots, t.churn_events, t.model_events]
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id=f"{settings.app_id}-admin")
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(n, settings.partitions, 1) for n in names if n not in existing]
        if t.labels not in existing:  # one partition, so that one trainer learns every label in order
            missing.append(NewTopic(t.labels, 1, 1))
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
