"""Prometheus metrics, built against a registry that is passed in (no hidden globals)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

__all__ = ["Metrics", "NotifyMetrics", "STAGES", "StageClock", "TrainerMetrics", "region_label"]

#: The stages of a worker's batch, in the order a batch goes through them: waiting for and reading
#: records (fetch), decoding and admitting them, loading the states, applying the events to the
#: windows, deriving features, scoring, evaluating rules, making the outputs (snapshots, churn
#: events, report facts, alerts), encoding the states, checking that no other writer moved them
#: on (a round trip to Redis), sending the outputs, writing the states, committing the offsets.
STAGES = ("fetch", "decode", "load", "apply", "derive", "model", "rules", "outputs", "encode", "check", "send", "write",
          "commit")

OTHER_REGION = "other"


def region_label(region: str | None, named: frozenset[str]) -> str:
    """A region as metrics name it: one of the regions settings name, else `other` (profiles carry
    free text, and a label must stay bounded)."""
    return region if region in named else OTHER_REGION


class StageClock:
    """Adds the wall time of each stage of a batch to `churnwatch_stage_seconds_total`: the
    stage that takes most is the next one to make faster. A few clock reads per batch. A stage
    that awaits Redis or the broker (fetch, load, send, write, commit) also counts what the event
    loop ran meanwhile (timers, the metrics endpoint, the client's own fetching)."""

    def __init__(self, counter: Counter) -> None:
        self._children = {stage: counter.labels(stage) for stage in STAGES}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._children[stage].inc(time.perf_counter() - started)


class Metrics:
    """Every metric the worker exports. Labels are bounded: topic, reason, level, rule, and region
    (those settings name, the rest as `other`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter("churnwatch_events_consumed_total",
                              "Events consumed, by topic: a batch counts once it went through", ["topic"],
                              registry=registry)
        self.replayed = Counter(
            "churnwatch_events_replayed_total", "Events skipped because their offset was already applied",
            registry=registry)
        self.duplicates = Counter(
            "churnwatch_events_duplicate_total", "Events skipped because the customer had just seen their event id",
            registry=registry)
        self.rebuilds = Counter(
            "churnwatch_state_rebuilds_total",
            "Input partitions found behind in Redis (it lost data) and rebuilt from Kafka, by topic and whether "
            "Kafka still held every offset needed", ["topic", "result"], registry=registry)
        self.quarantined = Counter(
            "churnwatch_states_quarantined_total",
            "Stored customer states that could not be read (unknown layout, cut short): set aside, started afresh",
            registry=registry)
        self.erased = Counter(
            "churnwatch_customers_erased_total", "Customers erased on request (a tombstone on the customers topic)",
            registry=registry)
        self.deadletters = Counter(
            "churnwatch_deadletters_total", "Events sent to dead letter, by reason", ["reason"], registry=registry)
        self.alerts = Counter("churnwatch_alerts_total", "Alerts emitted, by level and region", ["level", "region"],
                              registry=registry)
        self.suppressed = Counter(
            "churnwatch_alerts_suppressed_total", "Alerts not emitted (cooldown) or not to be called (holdout), by cause",
            ["cause"], registry=registry)
        self.rule_fired = Counter(
            "churnwatch_rule_fired_total", "Customers for whom a rule fired", ["rule"], registry=registry)
        self.batch_seconds = Histogram(
            "churnwatch_batch_processing_seconds", "Time to process one batch", registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.stage_seconds = Counter(
            "churnwatch_stage_seconds_total",
            "Seconds spent in each stage of the batches: " + ", ".join(STAGES) + " (fetch includes waiting for "
            "records)", ["stage"], registry=registry)
        self.stage = StageClock(self.stage_seconds)
        self.batch_retries = Counter(
            "churnwatch_batch_retries_total", "Batches tried again after Redis or the broker failed them, by error",
            ["error"], registry=registry)
        self.batch_size = Histogram(
            "churnwatch_batch_size_events", "Events per batch", registry=registry,
            buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000, 20000))
        self.event_to_alert = Histogram(
            "churnwatch_event_to_alert_seconds",
            "From the own time of the newest event behind an alert to the alert's creation: how far behind "
            "its events an alert comes (a backlog or a replay makes it large; the latency objective is on "
            "churnwatch_arrival_to_alert_seconds)",
            registry=registry, buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0))
        self.arrival_to_alert = Histogram(
            "churnwatch_arrival_to_alert_seconds",
            "From the consumer's hand-over of a batch to the broker's acknowledgement of its alerts, per alert: "
            "the worker's own latency, whatever the events' age",
            registry=registry, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0))
        self.redis_seconds = Histogram(
            "churnwatch_redis_call_seconds", "One Redis round trip of a batch, by operation", ["op"],
            registry=registry, buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.build = Info("churnwatch_build", "Version of the running worker", registry=registry)
        self.redis_errors = Counter(
            "churnwatch_redis_errors_total", "Failed Redis calls (retried)", registry=registry)
        self.ready = Gauge(
            "churnwatch_ready", "1 while the worker's /readyz says ready (input partitions assigned, Redis answering, "
                                "not blocked nor rebuilding)", registry=registry)
        self.redis_up = Gauge(
            "churnwatch_redis_up", "0 while Redis calls fail and consumption waits for Redis", registry=registry)
        self.redis_conflicts = Counter(
            "churnwatch_redis_write_conflicts_total", "State writes refused because another writer got there first",
            registry=registry)
        self.rules_loaded = Gauge("churnwatch_rules_loaded", "Rules in force", registry=registry)
        self.rules_reload_success = Gauge(
            "churnwatch_rules_last_reload_success", "1 if the last rule reload succeeded", registry=registry)
        self.rules_reloads = Counter(
            "churnwatch_rules_reloads_total", "Rule reloads, by result", ["result"], registry=registry)
        self.customers = Gauge(
            "churnwatch_customers_tracked", "Customers with state in Redis (its keys less the service's own)",
            registry=registry)
        self.consumer_lag = Gauge(
            "churnwatch_consumer_lag_messages",
            "Messages behind the high watermark, per input partition this worker owns (from its fetch position)",
            ["topic", "partition"], registry=registry)
        self.model_version = Gauge(
            "churnwatch_model_version", "Model version scoring customers (0: rules only, no model yet)",
            registry=registry)
        self.model_labels = Gauge(
            "churnwatch_model_labels", "Labels the scoring model had learned when published", registry=registry)
        self.model_refused = Counter(
            "churnwatch_model_refused_total", "Published models refused as corrupt or incompatible",
            registry=registry)
        self.call_plan = Gauge(
            "churnwatch_call_plan_alerts",
            "Alerts in the latest daily call plan, by outcome: called, waiting (over the budget), expired, holdout",
            ["outcome"], registry=registry)
        self.call_plan_day = Gauge(
            "churnwatch_call_plan_day_timestamp_seconds", "Start of the day the latest call plan was made for (0: none)",
            registry=registry)
        self.list_customers = Gauge(
            "churnwatch_list_customers", "Customers on the lifecycle list last produced (winback, growth)",
            ["list"], registry=registry)
        self.list_value = Gauge(
            "churnwatch_list_monthly_value", "Monthly spend of the customers on the lifecycle list last produced "
            "(yuan: before they left on the win-back list, now on the growth list)", ["list"], registry=registry)
        self.list_day = Gauge(
            "churnwatch_list_day_timestamp_seconds", "Start of the day the lifecycle list last produced was made for",
            ["list"], registry=registry)
        self.baseline = Gauge(
            "churnwatch_segment_baseline", "Live segment percentile of a month-over-month change (NaN: too few "
            "customers yet)", ["segment", "feature", "percentile"], registry=registry)
        self.baseline_customers = Gauge(
            "churnwatch_segment_baseline_customers", "Customers behind a segment's baselines, over their window",
            ["segment", "feature"], registry=registry)
        self.snapshots = Counter(
            "churnwatch_snapshots_total", "Daily feature snapshots sent for labelling", registry=registry)
        self.churned = Counter(
            "churnwatch_churn_events_total", "Customers seen to churn, by kind and region", ["kind", "region"],
            registry=registry)
        self.won_back = Counter(
            "churnwatch_won_back_total", "Customers seen to come back after leaving, by region", ["region"],
            registry=registry)


class TrainerMetrics:
    """What the trainer exports: learning progress and progressive-validation figures."""

    FIGURES = ("auc", "log_loss", "precision_at_budget", "recall_at_budget", "top_decile_lift",
               "calibration_error")
    CANDIDATE_FIGURES = ("auc", "precision_at_budget")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.labels = Counter("churnwatch_model_labels_learned_total", "Labels learned, by outcome", ["label"],
                              registry=registry)
        for y in ("0", "1"):  # exported from the start: a restarted trainer may have nothing left to learn
            self.labels.labels(y)
        self.labels_made = Counter("churnwatch_labels_made_total", "Snapshots labelled once their horizon closed",
                                   registry=registry)
        self.version = Gauge("churnwatch_model_published_version", "Latest model version published",
                             registry=registry)
        self.drift = Counter("churnwatch_model_drift_total", "Drift detections on the model's error stream",
                             registry=registry)
        self.challenges = Counter("churnwatch_model_challenges_total",
                                  "Trials of a challenger after drift, by outcome: replaced the model, or kept it",
                                  ["outcome"], registry=registry)
        for outcome in ("replaced", "kept"):
            self.challenges.labels(outcome)
        self.figures = {
            name: Gauge(f"churnwatch_model_{name}", f"Progressive validation over the last labels: {name}",
                        registry=registry)
            for name in self.FIGURES
        }
        self.refits = Counter("churnwatch_model_refits_total", "Refits of the boosted trees on recent labels",
                              registry=registry)
        self.promotions = Counter("churnwatch_model_promotions_total",
                                  "Champions replaced, by the candidate that took over", ["candidate"],
                                  registry=registry)
        self.champion = Gauge("churnwatch_model_champion", "1 for the candidate workers score with, 0 for the others",
                              ["candidate"], registry=registry)
        self.candidate = Gauge("churnwatch_model_candidate_figure",
                               "Each candidate's figures on the recent labels both scored before learning them (before "
                               "the first round, out of fold on the label store)",
                               ["candidate", "figure"], registry=registry)
        for candidate in ("online", "boosted"):  # from the first scrape: no promotion yet is a figure too
            self.promotions.labels(candidate)
            self.champion.labels(candidate).set(float(candidate == "online"))


class NotifyMetrics:
    """What `churnwatch notify` exports: the alerts it read and what became of the messages."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.alerts = Counter(
            "churnwatch_notify_alerts_total", "Alerts read by the notifier, by what became of them: for a manager, "
            "no manager, control group, expired, or an account manager the managers file does not list", ["outcome"],
            registry=registry)
        self.messages = Counter(
            "churnwatch_notify_messages_total", "Messages to account managers, by kind, channel and result: sent, "
            "failed (to dead letter) or already sent (a resend after a restart, not sent again)",
            ["kind", "channel", "result"], registry=registry)
        self.retries = Counter("churnwatch_notify_retries_total", "Tries of a message that failed and were retried",
                               ["channel"], registry=registry)
        self.pending = Gauge("churnwatch_notify_digest_pending", "Alerts waiting for the next digest",
                             registry=registry)
        for channel in ("webhook", "email"):  # from the first scrape, so that a rate of failures is never absent
            self.retries.labels(channel)
            for kind in ("warning", "digest"):
                for result in ("sent", "failed"):
                    self.messages.labels(kind, channel, result)
