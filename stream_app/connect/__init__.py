"""Clients of the outside world: Kafka producers, consumers and admin (topics), and a reader
of a whole topic for the commands that list what is on one."""

from stream_app.connect.kafka import KafkaUnreachable, check_connection, client_options, faust_credentials, ssl_context
from stream_app.connect.redis import connect_redis, connect_redis_sync
from stream_app.connect.topic_reader import read_alerts, read_churn_events, read_outcomes, read_topic
from stream_app.connect.topics import ensure_topics, retention_days

__all__ = [
    "check_connection", "client_options", "connect_redis", "connect_redis_sync", "ensure_topics",
    "faust_credentials", "KafkaUnreachable", "read_alerts", "read_churn_events", "read_outcomes", "read_topic",
    "retention_days", "ssl_context"
]
