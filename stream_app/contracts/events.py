"""Wire contracts: the events churnwatch consumes and emits, JSON on the wire.

Each contract is a msgspec struct, so one pass decodes and validates (the customer ids' pattern
is checked just after it); `json_schema` writes the same contract as JSON Schema for producers
(see `stream_app/contracts/schemas/`).

>>> decode_cdr(b'{"event_id":"e1","customer_id":"8613800000001","ts":"2026-03-01T10:00:00+08:00",'
...            b'"kind":"voice","direction":"MO","duration_s":60}').duration_s
60
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Callable, Literal, TypeVar, get_args, get_type_hints

import msgspec
from msgspec import Meta, Struct

from stream_app.contracts.lists import CompetitorEntry, GrowthEntry, WinbackEntry
from stream_app.errors import InvalidEvent

__all__ = [
    "Alert", "AlertReason", "Billing", "CallDecision", "CallListEntry", "ChurnEvent", "Cdr", "DeadLetter", "Label",
    "ModelEvent", "Outcome",
    "Profile", "Snapshot", "WonBack", "WinbackEntry", "GrowthEntry", "CompetitorEntry", "LEVELS", "QUEUES", "QueueName",
    "TREATMENTS", "Treatment",
    "CUSTOMER_ID_PATTERN", "REASON_CODES", "CONTRACTS", "is_customer_id", "decode_cdr", "decode_billing", "decode_profile",
    "decode_outcome", "json_schema",
]

CUSTOMER_ID_PATTERN = r"^[0-9A-Za-z_-]{5,64}$"
#: The pattern is the schema's; decoding checks it after msgspec (`_decoder`), whose own check of
#: a pattern calls Python's `re` for each value and cost about 0.55 us of a CDR's 1.0 us decode.
CustomerId = Annotated[str, Meta(description="MSISDN or its pseudonym",
                                 extra_json_schema={"pattern": CUSTOMER_ID_PATTERN})]
EventId = Annotated[str, Meta(min_length=1, max_length=128)]
AwareTime = Annotated[datetime, Meta(tz=True, description="RFC 3339 with a UTC offset")]
Money = Annotated[float, Meta(ge=0, le=1e7, description="yuan")]
#: Free text kept in the state or sent on (cells, plans, regions, competitors): bounded, so no record
#: can bloat a customer's state or the outputs built from it.
Name = Annotated[str, Meta(max_length=64)]
AttributeName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,39}$")]

#: Churn reason codes used in churn reports (DOMAIN.md): voluntary 1xx/2xx, involuntary 3xx.
REASON_CODES: dict[int, str] = {
    101: "price", 102: "promotion", 103: "customer service", 205: "network",
    207: "billing", 210: "relocation", 335: "credit", 345: "fraud", 380: "non-use",
}


class Cdr(Struct, frozen=True, forbid_unknown_fields=True):
    """One call detail record: a voice call, an SMS or a data session."""

    event_id: EventId
    customer_id: CustomerId
    ts: AwareTime
    kind: Literal["voice", "sms", "data"]
    direction: Literal["MO", "MT"] = "MO"
    duration_s: Annotated[int, Meta(ge=0, le=86_400)] = 0
    data_bytes: Annotated[int, Meta(ge=0, le=1 << 40)] = 0
    peer_id: Name | None = None
    peer_network: Literal["on_net", "off_net", "fixed", "international"] | None = None
    competitor: Name | None = None
    roaming: bool = False
    long_distance: bool = False
    forwarded: bool = False
    termination: Literal["normal", "dropped", "busy", "no_answer", "failed"] = "normal"
    customer_service: bool = False
    cell_id: Name | None = None


class Billing(Struct, frozen=True, forbid_unknown_fields=True):
    """A billing fact. `disconnect` and `port_out` end the line and carry a reason code; `port_in`
    (the number ported back) and `reconnect` bring a line that had ended back (a win-back)."""

    event_id: EventId
    customer_id: CustomerId
    ts: AwareTime
    kind: Literal["bill", "payment", "recharge", "plan_change", "arrears", "disconnect", "port_out", "port_in",
                  "reconnect"]
    amount: Money = 0.0
    period: Annotated[str, Meta(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")] | None = None
    plan: Name | None = None
    reason_code: int | None = None
    voluntary: bool | None = None
    competitor: Name | None = None


class Profile(Struct, frozen=True, forbid_unknown_fields=True):
    """The customer as the CRM knows them; the latest profile wins."""

    event_id: EventId
    customer_id: CustomerId
    ts: AwareTime
    activation_date: date
    plan: Name
    region: Name
    vip_tier: Literal["none", "silver", "gold", "diamond"] = "none"
    segment: Literal["consumer", "enterprise", "government"] = "consumer"
    age: Annotated[int, Meta(ge=10, le=120)] | None = None
    value_level: Annotated[int, Meta(ge=1, le=10)] | None = None
    key_person: bool = False
    prepaid: bool = False
    #: The customer's own account manager, by id in the managers file (settings `notify.managers_file`):
    #: they are told of the customer's warnings and call them in place of the call centre.
    account_manager: Name = ""  # "": none
    #: The operator's own attributes (handset age, contract end, credit class ...): the model learns
    #: from those that settings declare (contracts/attributes.py), a date as YYYY-MM-DD.
    attributes: Annotated[dict[AttributeName, float | Name | None], Meta(max_length=32)] = {}
    #: The line the same person left us on, when they come back on a new one (a win-back); read
    #: from their first profile. A customer back on the same number needs none: a `port_in` or
    #: `reconnect` on the billing topic says so.
    previous_customer_id: CustomerId | None = None


class Outcome(Struct, frozen=True, forbid_unknown_fields=True):
    """What happened when the call centre acted on an alert."""

    event_id: EventId
    customer_id: CustomerId
    ts: AwareTime
    alert_id: Annotated[str, Meta(min_length=1, max_length=128)]
    result: Literal["not_reached", "contacted", "accepted", "declined"]
    offer: Name | None = None
    agent_id: Name | None = None


class AlertReason(Struct, frozen=True):
    """One fired indicator, with the values that made it fire."""

    rule_id: str
    reason_code: int | None
    importance: float
    values: dict[str, float]
    thresholds: dict[str, float]
    text: str


LEVELS = ("none", "low", "medium", "high")  # a rule's or an alert's level, by index
QueueName = Literal["general", "account_manager", "technical", "retention_specialist"]  # who in the call centre calls
QUEUES: tuple[str, ...] = get_args(QueueName)
# What a call does for the customer, whatever its wording: what uplift is learned and measured per.
Treatment = Literal["plan_offer", "promotion_match", "technical_fix", "service_recovery", "billing_review",
                    "reactivation", "relationship"]
TREATMENTS: tuple[str, ...] = get_args(Treatment)


class Alert(Struct, frozen=True):
    """A high-risk customer for the outbound retention call queue."""

    alert_id: str
    customer_id: str
    level: Literal["high", "medium", "low"]
    period: str
    created_at: AwareTime
    expires_at: AwareTime
    event_time: AwareTime
    reasons: list[AlertReason]
    reason_code: int | None
    segment: str
    vip_tier: str
    arpu: float  # the monthly spend its value at risk rests on (alerts.build.monthly_value)
    value_at_risk: float
    suggested_action: str
    queue: QueueName = "general"
    treatment: Treatment = "relationship"
    region: str = ""  # the customer's region (branch) from their profile; "" when none is known
    account_manager: str = ""  # the customer's account manager from their profile; "" when they have none
    lifecycle: Literal["A", "B", "C", "D", "E"] = "C"  # acquisition, build-up, mature, decline, exit
    holdout: bool = False  # control group: not to be called, so that the effect of calls can be measured
    score: float | None = None
    model_version: int | None = None
    model_labels: int | None = None  # labels the model had learned when it scored
    # What a call with this action is expected to save, net of its cost (model/saving.py): the
    # call list ranks by it, and calls no one it is at or below zero for. None until calls and
    # the control group have given the evidence: the call list ranks by value at risk.
    expected_saving: float | None = None


class CallListEntry(Struct, frozen=True, omit_defaults=True):
    """One line of a call list: the daily list (`day`) or the monthly warning list (`month`)."""

    rank: Annotated[int, Meta(ge=1)]
    alert: Alert
    day: Annotated[str, Meta(pattern=r"^\d{4}-\d{2}-\d{2}$")] | None = None
    month: Annotated[str, Meta(pattern=r"^\d{4}-\d{2}$")] | None = None


class DeadLetter(Struct, frozen=True):
    """An input that could not be used, with everything needed to find and replay it.

    It carries at most the record's first `deadletters.DEAD_LETTER_PREFIX` bytes, with its size and SHA-256,
    so that a dead letter always fits the producer's limit whatever the record was: topic,
    partition and offset find the whole record."""

    topic: str
    partition: int
    offset: int
    reason: str
    field: str | None
    detail: str
    key: str | None
    value_b64: str | None  # the record's first bytes; None with pseudonymous ids (they hold numbers) or a tombstone
    at: AwareTime
    size: int = 0  # bytes of the record's value
    sha256: str | None = None  # of the whole value; None with pseudonymous ids or a tombstone
    truncated: bool = False  # value_b64 holds a prefix only


class Snapshot(Struct, frozen=True, array_like=True):
    """A customer's model features on one day, kept until the horizon tells its label.

    `x` follows the feature order of the model spec (`model.MODEL_FEATURES`)."""

    customer_id: str
    day: int  # proleptic ordinal of the event-time day
    x: list[float]
    score: float | None = None
    model_version: int | None = None
    rules_level: int = 0  # index into LEVELS: what the rules alone said that day
    rules_score: float = 0.0  # summed importance of the rules that fired
    exits_known: int = 0  # day up to which the worker had read every exit of this partition
    features: int = 0  # which features `x` holds (`model.scoring.feature_digest`); 0: from before the digest


class ChurnEvent(Struct, frozen=True):
    """A customer who left (disconnect, port-out) or revenue-churned (DOMAIN.md)."""

    customer_id: str
    day: int
    kind: Literal["disconnect", "port_out", "revenue"]
    reason_code: int | None
    voluntary: bool | None
    region: str
    segment: str
    arpu: float  # spend in the month before the exit's; for revenue churn, the monthly average of the 3 before the cut
    tenure_days: int = 0  # days from activation to the churn (0: activation unknown)

    @property
    def by_choice(self) -> bool:
        """The customer's own doing: by the reason code, else a port-out or revenue churn is, and a
        disconnect without a reason is the operator's (how the churn report and the win-back list count it)."""
        return self.voluntary if self.voluntary is not None else self.kind in ("port_out", "revenue")


class WonBack(Struct, frozen=True):
    """A customer who came back after leaving (windows/lifecycle.py): on the same number, ported
    back or reconnected, or, as their first profile says, the same person on a new line."""

    customer_id: str
    day: int  # the day they were activated again (ordinal)
    previous_customer_id: str  # the line they had left: their own for the same number
    left_on: int | None  # the day they had left (ordinal); None: left on another line
    region: str
    segment: str


class CallDecision(Struct, frozen=True, array_like=True):
    """What the call plan did with the customer's alert behind a label (model/decisions.py)."""

    arm: str  # "control" (never called), or the treatment the call was made with
    reason: int  # the alert's top reason code, 0 for none
    risk: float  # the churn risk the alert was raised with
    accepted: bool = False  # the customer took the call's offer


class Label(Struct, frozen=True, array_like=True):
    """A snapshot whose outcome is known: churned within the horizon (1) or not (0).

    `partition` and `offset` locate the snapshot, so a trainer can tell a resent label."""

    customer_id: str
    day: int
    x: list[float]
    y: int
    partition: int
    offset: int
    features: int = 0  # as on its snapshot
    decision: CallDecision | None = None  # the call or the control alert of these days, if any


class ModelEvent(Struct, frozen=True):
    """Something the trainer wants people to know: drift detected and how the challenger's
    trial ended (replaced or kept, `model.Learner`), the boosted trees refitted, a new champion
    (`model.champion`), a model published."""

    kind: Literal["drift", "replaced", "kept", "published", "refused", "refit", "promoted"]
    version: int
    labels: int
    at: AwareTime
    detail: str


T = TypeVar("T")

_MISSING = re.compile(r"(?:missing required|contains unknown) field `([^`]+)`")
_AT = re.compile(r" - at `\$\.?([^`]*)`")


def _decoder(kind: type[T]) -> Callable[[bytes], T]:
    """The decoder of an input contract; each has a `customer_id`."""
    decoder = msgspec.json.Decoder(kind)
    ids = tuple(name for name, hint in get_type_hints(kind, include_extras=True).items()
                if CustomerId in (hint, *get_args(hint)))
    others = ids != ("customer_id",)

    def decode(raw: bytes) -> T:
        try:
            event = decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise InvalidEvent("invalid_field", _field_of(str(exc)), str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InvalidEvent("not_json", None, str(exc)) from None
        if others or not is_customer_id(event.customer_id):  # type: ignore[attr-defined]
            _check_ids(event, ids)
        return event

    return decode


_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)


def is_customer_id(value: str) -> bool:
    """Whether `value` matches `CUSTOMER_ID_PATTERN`. Most ids are letters and digits, which two
    string methods tell in a tenth of the pattern's time; the pattern judges the rest."""
    return (value.isalnum() and value.isascii() and 5 <= len(value) <= 64) or _CUSTOMER_ID.match(value) is not None


def _check_ids(event: object, names: tuple[str, ...]) -> None:
    """`InvalidEvent` naming the first of the fields `names` whose id does not match `CUSTOMER_ID_PATTERN`."""
    for name in names:
        value = getattr(event, name)
        if value is not None and not is_customer_id(value):
            raise InvalidEvent("invalid_field", name, f"Expected `str` matching regex {CUSTOMER_ID_PATTERN!r}"
                                                      f" - at `$.{name}`")


def _field_of(message: str) -> str | None:
    """The field a msgspec message names: `$.duration_s` -> `duration_s`."""
    if found := _MISSING.search(message):
        at = _AT.search(message)
        prefix = f"{at.group(1)}." if at and at.group(1) else ""
        return prefix + found.group(1)
    if found := _AT.search(message):
        return found.group(1) or None
    return None


decode_cdr = _decoder(Cdr)
decode_profile = _decoder(Profile)
decode_outcome = _decoder(Outcome)
_decode_billing_raw = _decoder(Billing)


def decode_billing(raw: bytes) -> Billing:
    """Decode a billing event; exits must say why the customer left."""
    event = _decode_billing_raw(raw)
    if event.kind in ("disconnect", "port_out"):
        if event.reason_code is None:
            raise InvalidEvent("invalid_field", "reason_code", f"required for kind {event.kind!r}")
        if event.reason_code not in REASON_CODES:
            raise InvalidEvent(
                "invalid_field", "reason_code",
                f"got {event.reason_code!r}; expected one of {sorted(REASON_CODES)}",
            )
    if event.kind == "bill" and event.period is None:
        raise InvalidEvent("invalid_field", "period", "required for kind 'bill' (YYYY-MM)")
    return event


#: Every contract with a schema file, by file stem.
CONTRACTS: dict[str, type] = {
    "cdr": Cdr, "billing": Billing, "customer_profile": Profile, "retention_outcome": Outcome,
    "alert": Alert, "deadletter": DeadLetter, "churn_event": ChurnEvent, "won_back": WonBack,
    "model_event": ModelEvent,
    "call_list_entry": CallListEntry, "winback_entry": WinbackEntry, "growth_entry": GrowthEntry,
    "competitor_entry": CompetitorEntry,
}


def json_schema(kind: type) -> dict:
    """The JSON Schema (2020-12) of one contract, as producers should validate."""
    schema = msgspec.json.schema(kind)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = kind.__name__
    return schema
