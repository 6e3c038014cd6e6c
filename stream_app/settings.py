"""The one settings object, read from the environment once at start and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["CohortRule", "Settings", "Topics"]


@dataclass(frozen=True)
class CohortRule:
    """The snapshot cohort (DOMAIN.md): spend over `months` months ending at the snapshot month
    of at least `min_spend`; a member is lost at an exit, or after `churn_months` months in a row
    each under `churn_spend` (revenue churn). Members are followed for `follow_months` months."""

    months: int = 3
    min_spend: float = 360.0
    churn_months: int = 3
    churn_spend: float = 50.0
    follow_months: int = 15


class Topics(BaseSettings):
    """Topic names. All input topics are keyed by customer id and co-partitioned."""

    model_config = SettingsConfigDict(env_prefix="CHURNWATCH_TOPIC_", frozen=True, extra="forbid")

    cdr: str = "cdr"
    billing: str = "billing"
    customers: str = "customers"
    outcomes: str = "retention.outcomes"
    alerts: str = "churn.alerts"
    deadletter: str = "deadletter"
    snapshots: str = "churn.snapshots"  # daily model features per customer, msgpack
    churn_events: str = "churn.events"  # exits and revenue churn, JSON
    labels: str = "churn.labels"  # one partition: one trainer learns them in order, msgpack
    model_events: str = "churn.model.events"
    calls_daily: str = "churn.calls.daily"  # each day's call list, in priority order, JSON
    calls_monthly: str = "churn.calls.monthly"  # each month's warning list, JSON

    def inputs(self) -> tuple[str, ...]:
        """The topics that update customer state, in the order their offsets are stored
        (`contracts.inputs.Input`)."""
        return (self.cdr, self.billing, self.customers, self.outcomes)


class Settings(BaseSettings):
    """Every setting the service reads. Environment names are `CHURNWATCH_<FIELD>`,
    except `KAFKA_BOOTSTRAP` and `REDIS_URL`, which follow common practice."""

    model_config = SettingsConfigDict(env_prefix="CHURNWATCH_", frozen=True, extra="forbid")

    kafka_bootstrap: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "CHURNWATCH_KAFKA_BOOTSTRAP")
    )
    # How every Kafka client connects (kafka_clients.py); the password comes from the environment only.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None  # the CA that signed the brokers' certificates; the system's if unset
    kafka_ssl_certfile: Path | None = None  # a client certificate, for brokers that ask for one (mutual TLS)
    kafka_ssl_keyfile: Path | None = None
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "CHURNWATCH_REDIS_URL")
    )
    redis_cluster: bool = False  # REDIS_URL names one node of a Redis Cluster
    app_id: str = "churnwatch"
    partitions: int = Field(default=4, ge=1)
    timezone: str = "Asia/Shanghai"
    rules_dir: Path = Path("alert_rules")
    batch_size: int = Field(default=2000, ge=1)
    batch_within_s: float = Field(default=0.5, gt=0)
    late_grace_days: int = Field(default=3, ge=0, le=30)
    # The edge's bounds (admission.py): a record over this size is refused before it is decoded;
    # an event time before the floor, or ahead of the wall clock by more than the skew, goes to
    # dead letter, so that no record can move a customer's clock.
    max_record_bytes: int = Field(default=256 * 1024, ge=1024, le=64 << 20)
    max_clock_skew_s: float = Field(default=3600.0, ge=0, le=7 * 86400)
    event_time_floor: date = Field(default=date(2000, 1, 1), ge=date(1970, 1, 2), le=date(2099, 1, 1))
    idle_expiry_days: int = Field(default=120, ge=1)
    metrics_port: int = Field(default=9108, ge=0, le=65535)
    log_format: Literal["auto", "json", "console"] = "auto"  # auto: console in a terminal, JSON otherwise
    log_pseudonym_key: SecretStr | None = None  # HMAC key for customer ids in logs; random per process if unset
    # Set: phone numbers are replaced by their HMAC-SHA256 pseudonyms as events are read (privacy.py).
    pseudonym_key: SecretStr | None = Field(default=None, min_length=16)  # a short key is guessed
    # HMAC key for the pickles kept in Redis (the trainer's checkpoint, a forest model; signing.py):
    # the trainer needs it, and workers need it to score with a forest.
    model_signing_key: SecretStr | None = Field(default=None, min_length=16)
    redis_retry_max_s: float = Field(default=10.0, gt=0)
    # How soon a dead worker's partitions move to the others (Kafka's default is 45 s).
    kafka_session_timeout_s: float = Field(default=10.0, ge=3)
    topics: Topics = Field(default_factory=Topics)
    # The model (README, "The model").
    model_kind: Literal["logistic", "forest"] = "logistic"
    horizon_days: int = Field(default=30, ge=1, le=180)  # churn within this many days of a snapshot is a positive
    label_revenue_churn: bool = True  # revenue churn (DOMAIN.md) is a positive label, like an exit
    snapshot_every_days: int = Field(default=1, ge=1, le=30)
    model_publish_labels: int = Field(default=500, ge=1)  # publish a new version after this many labels ...
    model_publish_s: float = Field(default=60.0, gt=0)  # ... or this many seconds, whichever is first
    trainer_lease_s: float = Field(default=30.0, ge=2)  # a dead trainer's successor waits this long
    model_refresh_s: float = Field(default=5.0, gt=0)  # how often scorers look for a new version
    validation_window: int = Field(default=5000, ge=100)  # labels behind the progressive-validation figures
    call_budget_share: float = Field(default=0.01, gt=0, le=1)  # customers the call centre can call per week
    holdout_share: float = Field(default=0.10, ge=0, lt=1)  # alerts flagged as control group, never called
    daily_call_budget: int = Field(default=200, ge=1)  # calls the call centre makes a day, top value at risk first
    # Value at risk = churn probability x ARPU x margin share x expected lifetime (1 / the segment's monthly
    # churn rate, at most 60 months). Set the rates from `churnwatch report churn` on your own base.
    margin_share: float = Field(default=1.0, gt=0, le=1)
    segment_monthly_churn: dict[str, float] = Field(
        default_factory=lambda: {"mid_high_end": 0.01, "potential_mid_high_end": 0.015, "mass": 0.025})
    model_min_labels: int = Field(default=2000, ge=0)  # a score raises levels only from a model this trained
    model_medium_score: float = Field(default=0.35, gt=0, lt=1)  # a score alone reaches this level
    model_high_score: float = Field(default=0.6, gt=0, lt=1)
    # Live segment baselines (baselines.py): the samples (customer-days) a segment's month needs
    # before its quantiles are used, the most one may move in a day, how often workers reread them.
    baseline_min_samples: int = Field(default=200, ge=1)
    baseline_max_step: float = Field(default=0.05, gt=0)
    baseline_refresh_s: float = Field(default=60.0, gt=0)
    # The campaign report (`churnwatch report campaign`): what a call and an accepted offer cost, the
    # months a kept customer is worth, and how long after an alert a churn counts against it.
    call_cost: float = Field(default=2.0, ge=0)
    offer_cost: float = Field(default=30.0, ge=0)
    kept_value_months: float = Field(default=12.0, gt=0)
    campaign_churn_days: int = Field(default=90, ge=7, le=365)
    # The snapshot cohort of the retention report (DOMAIN.md); facts are recorded under the values in force.
    cohort_months: int = Field(default=3, ge=1, le=6)  # spend summed over this many months to the snapshot ...
    cohort_min_spend: float = Field(default=360.0, ge=0)  # ... must reach this to be photographed
    cohort_churn_months: int = Field(default=3, ge=1, le=6)  # a member this many months in a row ...
    cohort_churn_spend: float = Field(default=50.0, ge=0)  # ... under this spend is lost (revenue churn)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone, got {value!r}; expected an IANA name such as 'Asia/Shanghai'") from exc
        return value

    @model_validator(mode="after")
    def _kafka_security_is_whole(self) -> "Settings":
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(f"kafka_security_protocol {self.kafka_security_protocol} needs "
                             "CHURNWATCH_KAFKA_SASL_USERNAME and CHURNWATCH_KAFKA_SASL_PASSWORD")
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(f"a SASL user is set but kafka_security_protocol is {self.kafka_security_protocol}; "
                             "expected SASL_SSL (or SASL_PLAINTEXT)")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("kafka_ssl_certfile and kafka_ssl_keyfile go together (a client certificate and its key)")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def cohort(self) -> CohortRule:
        return CohortRule(self.cohort_months, self.cohort_min_spend, self.cohort_churn_months,
                          self.cohort_churn_spend)
