"""The one settings object, read from the environment once at start and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import AliasChoices, Field, NonNegativeInt, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from stream_app.settings.attributes import Attribute, attribute_key, checked_attributes
from stream_app.settings.notify import Notify
from stream_app.yaml_source import load_yaml

__all__ = ["Attribute", "CohortRule", "Notify", "Settings", "Topics", "attribute_key", "checked_attributes"]

MAX_REGIONS = 50  # regions named in metrics at most: each is a series per level and per churn kind


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

    cdr: str = Field(default="cdr", description="input: voice, SMS and data records")
    billing: str = Field(default="billing",
                         description="input: bills, payments, recharges, plan changes, arrears, exits")
    customers: str = Field(default="customers", description="input: CRM profiles; a tombstone erases the customer")
    outcomes: str = Field(default="retention.outcomes", description="input: what the call centre did with an alert")
    alerts: str = Field(default="churn.alerts", description="output: the alerts, for the call centre's queue")
    deadletter: str = Field(default="deadletter", description="output: records refused at the edge, with the reason")
    snapshots: str = Field(default="churn.snapshots",
                           description="internal: daily model features per customer, msgpack")
    churn_events: str = Field(default="churn.events", description="output: exits and revenue churn, JSON")
    won_back: str = Field(default="churn.won_back", description="output: customers who came back after leaving, JSON")
    labels: str = Field(default="churn.labels", description="internal: labelled snapshots; one partition, so one "
                        "trainer learns them in order (msgpack)")
    model_events: str = Field(default="churn.model.events",
                              description="output: model published, drift detected, challenger kept or replaced")
    calls_daily: str = Field(default="churn.calls.daily",
                             description="output: each day's call list, in priority order, JSON")
    calls_monthly: str = Field(default="churn.calls.monthly", description="output: each month's warning list, JSON")
    calls_winback: str = Field(default="churn.calls.winback",
                               description="output: the win-back list of customers who left, JSON")
    calls_competitor: str = Field(default="churn.calls.competitor",
                                  description="output: the competitor list of off-net numbers our base knows, JSON")
    calls_growth: str = Field(default="churn.calls.growth",
                              description="output: the growth list of customers nearing the mid/high-end line, JSON")

    def inputs(self) -> tuple[str, ...]:
        """The topics that update customer state, in the order their offsets are stored
        (`contracts.inputs.Input`)."""
        return (self.cdr, self.billing, self.customers, self.outcomes)


class Settings(BaseSettings):
    """Every setting the service reads. Environment names are `CHURNWATCH_<FIELD>`,
    except `KAFKA_BOOTSTRAP` and `REDIS_URL`, which follow common practice. Each field's description is
    its meaning in `docs/configuration.md` (`python -m stream_app.tools.reference_docs`)."""

    model_config = SettingsConfigDict(env_prefix="CHURNWATCH_", frozen=True, extra="forbid")

    kafka_bootstrap: str | None = Field(
        default=None, validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "CHURNWATCH_KAFKA_BOOTSTRAP"),
        description="Kafka bootstrap servers, `host:port[,host:port]`; the worker needs it (the demo embeds a broker)")
    # How every Kafka client connects (connect/kafka.py); the password comes from the environment only.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="how every Kafka client connects (docs/security.md, \"Kafka security\")")
    kafka_sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="the SASL mechanism, with a `SASL_` protocol")
    kafka_sasl_username: str | None = Field(default=None, description="the SASL user; needed with a `SASL_` protocol")
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="the SASL user's password, from the environment or a Secret")
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="the CA that signed the brokers' certificates; the system's CAs if unset")
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="a client certificate, for brokers that ask for one (mutual TLS); set with its key")
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="the client certificate's key; set with the certificate")
    redis_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "CHURNWATCH_REDIS_URL"),
        description="`redis://host:port/db`, or `rediss://user:password@host:port/db` for TLS; the worker needs it "
                    "(the demo embeds a Redis)")
    redis_cluster: bool = Field(default=False, description="`REDIS_URL` names one node of a Redis Cluster")
    app_id: str = Field(
        default="churnwatch", description="faust app id; the input consumer group is `<app id>-ingest`")
    partitions: int = Field(
        default=4, ge=1, description="partitions of every topic (all co-partitioned by customer id)")
    timezone: str = Field(default="Asia/Shanghai", description="operator's zone: days and months are cut here")
    rules_dir: Path = Field(default=Path("alert_rules"), description="rule files, watched for changes")
    # 4,000: most of what 8,000 gains over 2,000 in `bench`, and a lower p99 than 8,000 near saturation
    # (docs/performance.md, "Batches of up to 4,000 events").
    batch_size: int = Field(default=4000, ge=1,
                            description="events per worker batch at most (replays keep their own 2,000)")
    batch_within_s: float = Field(default=0.5, gt=0, description="longest wait to fill a batch")
    # Large batches cost the worker's CPU least a record (docs/performance.md, "Outputs as record
    # batches"); a topic refuses any over its max.message.bytes, on every try (`connect/batches.py`).
    output_batch_bytes: int = Field(
        default=256 * 1024, ge=1024, le=1 << 20,
        description="record batches the worker sends to its output topics hold up to this many bytes; keep it "
                    "below the topics' max.message.bytes (Kafka's default: 1 MB)")
    late_grace_days: int = Field(
        default=3, ge=0, le=30, description="events older than the customer's newest day minus this go to dead letter")
    # The edge's bounds (admission.py): a record over this size is refused before it is decoded;
    # an event time before the floor, or ahead of the wall clock by more than the skew, goes to
    # dead letter, so that no record can move a customer's clock.
    max_record_bytes: int = Field(
        default=256 * 1024, ge=1024, le=64 << 20,
        description="a record (key and value) larger than this goes to dead letter before it is decoded")
    max_clock_skew_s: float = Field(
        default=3600.0, ge=0, le=7 * 86400,
        description="an event time further ahead of the worker's clock goes to dead letter")
    event_time_floor: date = Field(default=date(2000, 1, 1), ge=date(1970, 1, 2), le=date(2099, 1, 1),
                                   description="an event time before this day goes to dead letter")
    # A release reads the layouts up to its own: one before layout 4 starts afresh a customer a newer
    # worker wrote, one of layout 4 or later holds the batch (NewerState). Roll an upgrade out with the layout
    # of the release before, then switch (docs/operations.md).
    state_layout: int = Field(
        default=6, ge=3, le=6, description="the layout workers write customers' states in: 6 packed, with the event "
                                           "ids as bytes; 5 with them as a map, 4 also without SMS and data sessions "
                                           "by day, 3 the same whole (for a rolling upgrade from a release that reads "
                                           "no newer); every worker reads them all")
    idle_expiry_days: int = Field(
        default=120, ge=1,
        description="state of a customer with no events for this long expires (up to two days and "
                    "CHURNWATCH_MAX_CLOCK_SKEW_S later)")
    metrics_port: int = Field(
        default=9108, ge=0, le=65535, description="`/metrics`, `/healthz` and `/readyz` port")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="`json`: one object per line; `auto`: console in a terminal, JSON otherwise")
    log_pseudonym_key: SecretStr | None = Field(
        default=None, description="HMAC key for customer ids in logs; set one to follow a customer across workers "
                                  "and restarts (random per process if unset)")
    # privacy.py; min_length because a short key is guessed.
    pseudonym_key: SecretStr | None = Field(
        default=None, min_length=16,
        description="HMAC-SHA256 key: phone numbers are replaced by pseudonyms as events are read "
                    "(docs/security.md, \"Subscriber privacy\"); unset, ids are the numbers")
    # signing.py.
    model_signing_key: SecretStr | None = Field(
        default=None, min_length=16,
        description="HMAC key that signs the pickles kept in Redis (the trainer's checkpoint, a forest model); "
                    "required by the trainer, and by workers scoring with a forest")
    redis_retry_max_s: float = Field(
        default=10.0, gt=0, description="longest back-off between Redis retries while Redis is away")
    kafka_session_timeout_s: float = Field(
        default=10.0, ge=3,
        description="how soon a dead worker's partitions move to the others (Kafka's default is 45 s)")
    topics: Topics = Field(
        default_factory=Topics, description="topic names, each from its own `CHURNWATCH_TOPIC_<NAME>` variable")
    notify: Notify = Field(
        default_factory=Notify, description="account managers' warnings, each from its own `CHURNWATCH_NOTIFY_<NAME>` "
                                            "variable (`churnwatch notify`, docs/managers.md)")
    # The model (docs/model.md).
    model_kind: Literal["logistic", "forest"] = Field(
        default="logistic",
        description="`logistic`: standardise + logistic regression; `forest`: adaptive random forest")
    horizon_days: int = Field(
        default=30, ge=1, le=180, description="a snapshot is positive if its customer churns within this many days")
    label_revenue_churn: bool = Field(
        default=True, description="revenue churn (3 months under 50 yuan) is a positive label, like an exit")
    snapshot_every_days: int = Field(default=1, ge=1, le=30, description="snapshot cadence per customer")
    model_publish_labels: int = Field(
        default=500, ge=1, description="the trainer publishes after this many labels, or after "
                                       "`CHURNWATCH_MODEL_PUBLISH_S` seconds, whichever is first")
    model_publish_s: float = Field(
        default=60.0, gt=0, description="the trainer publishes after this many seconds, or after "
                                        "`CHURNWATCH_MODEL_PUBLISH_LABELS` labels, whichever is first")
    trainer_lease_s: float = Field(
        default=30.0, ge=2, description="how long a dead trainer's lease blocks its successor")
    model_refresh_s: float = Field(
        default=5.0, gt=0, description="how often workers look for a new model version")
    validation_window: int = Field(
        default=5000, ge=100, description="labels behind the progressive-validation figures")
    model_challenger: bool = Field(
        default=True, description="beside the online model, refit boosted trees on recent labels; whichever "
                                  "ranks the labels neither has learned better is the champion workers score with")
    model_store_labels: int = Field(
        default=30_000, ge=500, description="the recent labels the boosted trees are refitted on (4 bytes a feature "
                                            "each, kept in the trainer's checkpoint)")
    model_store_days: int = Field(
        default=90, ge=30, description="the days the stored labels span: once the store is full, labels are sampled "
                                       "to spread it over them; older ones are not refitted on")
    model_refit_labels: int = Field(
        default=20_000, ge=100, description="the trees are refitted after this many new labels at most (sooner "
                                            "while the store is small: once it has grown by a quarter)")
    model_round_labels: int = Field(
        default=1000, ge=100, description="the candidates are compared every this many labels, on the "
                                          "validation window's labels that both scored before learning them")
    model_promote_margin: float = Field(
        default=0.005, ge=0, lt=0.5, description="a challenger wins a round by beating the champion's AUC by "
                                                 "this much (or by calling two more churners at the call "
                                                 "budget), without a lower precision at the budget")
    model_promote_rounds: int = Field(
        default=2, ge=1, description="rounds in a row a challenger must win before it becomes the champion")
    call_budget_share: float = Field(
        default=0.01, gt=0, le=1, description="share of customers the call centre can call per week")
    holdout_share: float = Field(
        default=0.10, ge=0, lt=1,
        description="share of customers in the control group (alerts flagged `holdout`, never called)")
    daily_call_budget: int = Field(
        default=200, ge=1,
        description="calls the call centre makes a day: the daily list's length, top value at risk first")
    region_call_budgets: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description="regions (branches) with call budgets of their own, as JSON (`{\"north\": 40}`): their alerts "
                    "compete only with each other; the other regions share `CHURNWATCH_DAILY_CALL_BUDGET`")
    managed_by_call_centre: bool = Field(
        default=False, description="customers with an account manager (profile `account_manager`) are on the call "
                                   "centre's lists too; by default their manager calls them, not the call centre")
    regions: list[str] = Field(
        default_factory=list, max_length=MAX_REGIONS,
        description="the operator's regions (branches), as JSON (`[\"north\", \"south\"]`): metrics and the report "
                    "counters count per region for these and those of `CHURNWATCH_REGION_CALL_BUDGETS`; any other as "
                    "`other`")
    # Value at risk = churn probability x ARPU x margin share x expected lifetime (1 / the segment's monthly
    # churn rate, at most 60 months).
    margin_share: float = Field(
        default=1.0, gt=0, le=1, description="monthly margin as a share of ARPU, in value at risk (1: revenue at risk)")
    segment_monthly_churn: dict[str, float] = Field(
        default_factory=lambda: {"mid_high_end": 0.01, "potential_mid_high_end": 0.015, "mass": 0.025},
        description="monthly churn rate per value segment (JSON); a customer's expected remaining lifetime is its "
                    "inverse, at most 60 months. Set from `churnwatch report churn` on your own base")
    attributes: dict[str, Attribute] = Field(
        default_factory=dict,
        description="the operator's own customer attributes the model learns from, as JSON "
                    "(`{\"credit_class\": {\"kind\": \"category\", \"values\": [\"A\", \"B\"]}}`); "
                    "workers and trainer must declare the same (docs/model.md, \"The operator's own attributes\")")
    attributes_file: Path | None = Field(
        default=None, description="a YAML file of attributes (`attributes:` name -> declaration), added to "
                                  "`CHURNWATCH_ATTRIBUTES`; read at start")
    model_min_labels: int = Field(
        default=2000, ge=0, description="a score raises levels only once its model has learned this many labels "
                                        "(it is on the alert before)")
    model_medium_score: float = Field(
        default=0.35, gt=0, lt=1, description="a score alone reaches `medium` from this")
    model_high_score: float = Field(default=0.6, gt=0, lt=1, description="a score alone reaches `high` from this")
    # Live segment baselines (baselines.py).
    baseline_min_samples: int = Field(
        default=200, ge=1,
        description="segment baselines: samples (customer-days) a segment's month needs before "
                    "its percentiles are used")
    baseline_max_step: float = Field(
        default=0.05, gt=0, description="segment baselines: the most a percentile moves in a day")
    baseline_refresh_s: float = Field(
        default=60.0, gt=0, description="segment baselines: how often workers reread them")
    # The campaign report (`churnwatch report campaign`).
    call_cost: float = Field(
        default=2.0, ge=0, description="cost of a call, in `CHURNWATCH_CURRENCY` (campaign report)")
    offer_cost: float = Field(
        default=30.0, ge=0, description="cost of an accepted offer, in `CHURNWATCH_CURRENCY` (campaign report)")
    kept_value_months: float = Field(
        default=12.0, gt=0, description="months of ARPU a kept customer is worth (campaign report)")
    campaign_churn_days: int = Field(
        default=90, ge=7, le=365, description="churn this long after an alert counts against it (campaign report)")
    currency: str = Field(
        default="CNY", pattern=r"^[A-Z]{3}$",
        description="the ISO 4217 code of the operator's money, shown with amounts on the call-queue page")
    # The call-queue page (`churnwatch queue`, alerts/queue_page.py).
    queue_accounts: Path | None = Field(
        default=None, description="the call-queue page's agents: a YAML file of accounts with Argon2 password hashes "
                                  "and queues, written by `churnwatch agent add` (docs/call-centre.md)")
    queue_auth_header: str | None = Field(
        default=None, description="behind an auth proxy: the request header naming the logged-in agent, in place of "
                                  "the page's own login (the proxy must drop it from clients' requests)")
    queue_session_key: SecretStr | None = Field(
        default=None, description="the key that encrypts the page's session cookies (a Fernet key); unset, each "
                                  "start makes a new one and every agent logs in again")
    queue_cookie_secure: bool = Field(
        default=True, description="the page's session cookie goes over HTTPS only; browsers count http://localhost "
                                  "as secure. Turn off only to try the page over plain HTTP from another machine")
    queue_correct_minutes: float = Field(
        default=15.0, ge=0, le=1440, description="how long an agent can change an outcome they recorded; a call "
                                                 "not reached can be tried again all day")
    # The competitor list (`churnwatch calls competitor`, windows/book.py).
    competitor_days: int = Field(
        default=90, ge=0, le=400, description="how long the off-net book keeps a month's calls with each competitor's "
                                              "number after its last write; 0: no book, no competitor list")
    competitor_top: int = Field(
        default=50, ge=1, le=10_000, description="the competitor list's numbers per competitor at most")
    competitor_share: float = Field(
        default=0.4, gt=0, le=1, description="an off-net customer's calls with our base as a share of all their calls "
                                             "(about our market share): turns their minutes with us into a value "
                                             "estimate")
    # The snapshot cohort of the retention report (DOMAIN.md); facts are recorded under the values in force.
    cohort_months: int = Field(
        default=3, ge=1, le=6, description="the snapshot cohort: customers whose spend over this many months to the "
                                           "snapshot month reaches `CHURNWATCH_COHORT_MIN_SPEND`")
    cohort_min_spend: float = Field(
        default=360.0, ge=0, description="the snapshot cohort: customers whose spend over `CHURNWATCH_COHORT_MONTHS` "
                                         "months to the snapshot month reaches this")
    cohort_churn_months: int = Field(
        default=3, ge=1, le=6, description="a cohort member this many months in a row under "
                                           "`CHURNWATCH_COHORT_CHURN_SPEND` is lost (revenue churn), as at an exit")
    cohort_churn_spend: float = Field(
        default=50.0, ge=0, description="a cohort member `CHURNWATCH_COHORT_CHURN_MONTHS` months in a row under this "
                                        "spend is lost (revenue churn), as at an exit")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone, got {value!r}; expected an IANA name such as 'Asia/Shanghai'") from exc
        return value

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, value: dict[str, Attribute]) -> dict[str, Attribute]:
        return checked_attributes(value)

    @field_validator("regions", "region_call_budgets")
    @classmethod
    def _region_names(cls, value: list[str] | dict[str, int]) -> list[str] | dict[str, int]:
        """A region names report counters and metric labels: it cannot be one of their reserved words."""
        bad = [r for r in value if not r or r in ("other", "unknown") or set(r) & set("|\t\n")]
        if bad:
            raise ValueError(f"region names {bad}: expected non-empty names without |, tabs or line breaks, "
                             "and neither `other` nor `unknown` (they count the regions not named)")
        return value

    @model_validator(mode="after")
    def _attributes_file_read(self) -> "Settings":
        if self.attributes_file is None:
            return self
        try:
            doc = load_yaml(self.attributes_file.read_text()) or {}
            declared = {name: Attribute.model_validate(spec) for name, spec in (doc.get("attributes") or {}).items()}
        except (OSError, yaml.YAMLError, AttributeError, TypeError, ValueError) as exc:
            raise ValueError(f"attributes_file {self.attributes_file}: {_first_line(exc)}") from None
        if clash := sorted(set(declared) & set(self.attributes)):
            raise ValueError(f"attributes_file {self.attributes_file} declares {clash} again; "
                             "CHURNWATCH_ATTRIBUTES declares them already")
        object.__setattr__(self, "attributes", checked_attributes(self.attributes | declared))
        return self

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
    def metric_regions(self) -> frozenset[str]:
        """The regions metrics name (`regions` and those with a budget of their own); bounded."""
        return frozenset(self.regions) | frozenset(self.region_call_budgets)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def cohort(self) -> CohortRule:
        return CohortRule(self.cohort_months, self.cohort_min_spend, self.cohort_churn_months,
                          self.cohort_churn_spend)


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:300]
