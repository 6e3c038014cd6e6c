"""Creating the service's topics (idempotent), with kafka-python's admin client."""

from __future__ import annotations

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from stream_app.connect.kafka import client_options
from stream_app.settings import Settings

__all__ = ["ensure_topics", "retention_days", "WINBACK_DAYS"]


_DAY_MS = 86_400_000
WINBACK_DAYS = 90  # the win-back list's window at most, and its look-back for warnings (alerts/winback.py)


def retention_days(settings: Settings) -> dict[str, int]:
    """Topics that must outlive the broker's default retention (7 days on Kafka): snapshots
    wait a horizon (plus lateness) for their label, and the trainer re-reads churn events
    after a restart; labels are kept a year for audits and bootstraps; alerts feed the monthly
    warning list of the month before; call lists are kept for audits. The campaign report follows
    each alert for `campaign_churn_days` after it, so alerts and churn events outlive that, and
    outcomes are kept a year like the call lists they answer (and the growth list, and the customers won back). The win-back list looks back up to
    `WINBACK_DAYS` for leavers and as long again before each exit for warnings of it."""
    t = settings.topics
    wait = settings.horizon_days + settings.late_grace_days
    campaign = max(settings.campaign_churn_days + 31, 2 * WINBACK_DAYS + 14)
    return {t.snapshots: wait + 14, t.churn_events: max(campaign, wait + 14), t.won_back: 400, t.labels: 365,
            t.alerts: max(62, campaign), t.outcomes: 400, t.calls_daily: 400, t.calls_monthly: 400,
            t.calls_winback: 400, t.calls_growth: 400, t.calls_competitor: 400}


def ensure_topics(settings: Settings, bootstrap: str) -> None:
    """Create every topic the service uses, co-partitioned, unless it exists already."""
    t = settings.topics
    names = [*t.inputs(), t.alerts, t.deadletter, t.snapshots, t.churn_events, t.won_back, t.model_events,
             t.calls_daily, t.calls_monthly, t.calls_winback, t.calls_growth, t.calls_competitor]
    keep = retention_days(settings)
    admin = KafkaAdminClient(**client_options(settings, bootstrap), client_id=f"{settings.app_id}-admin")
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(n, settings.partitions, 1, topic_configs=_retention(keep.get(n)))
                   for n in names if n not in existing]
        if t.labels not in existing:  # one partition, so that one trainer learns every label in order
            missing.append(NewTopic(t.labels, 1, 1, topic_configs=_retention(keep[t.labels])))
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def _retention(days: int | None) -> dict[str, str]:
    return {"retention.ms": str(days * _DAY_MS)} if days else {}
