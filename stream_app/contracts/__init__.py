"""The shared vocabulary every stage speaks: the wire records and their JSON Schemas, the input
topics by position, the Redis key layout, the operator's calendar (how days and months are counted
in its time zone) and its value segments."""

from stream_app.contracts.calendar import (
    EPOCH_ORDINAL,
    LocalClock,
    local_clock,
    local_days,
    month_index,
    month_label,
    month_of_label,
    months_of_days,
)
from stream_app.contracts.events import (
    CONTRACTS,
    CUSTOMER_ID_PATTERN,
    LEVELS,
    REASON_CODES,
    Alert,
    AlertReason,
    Billing,
    CallListEntry,
    Cdr,
    ChurnEvent,
    DeadLetter,
    Label,
    ModelEvent,
    Outcome,
    Profile,
    Snapshot,
    decode_billing,
    decode_cdr,
    decode_outcome,
    decode_profile,
    json_schema,
)
from stream_app.contracts.inputs import CLOCKED, Input
from stream_app.contracts.keys import (
    APPLIED_PATTERN,
    BASELINE_FIELD,
    CALL_PLAN,
    MODEL,
    MODEL_VERSION,
    PREFIX,
    QUARANTINE_TTL_S,
    REPORT_PATTERN,
    TRAINER_LEASE,
    TRAINER_STATE,
    applied,
    customer_state,
    quarantined_state,
    report,
)
from stream_app.contracts.segments import (
    MID_HIGH_MOU,
    MID_HIGH_SPEND,
    NAMES,
    POTENTIAL_SPEND,
    REVENUE_CHURN_SPEND,
    SEGMENTS,
    mid_high,
    potential,
)

__all__ = [
    "Alert", "AlertReason", "applied", "APPLIED_PATTERN", "BASELINE_FIELD", "Billing", "CALL_PLAN",
    "CallListEntry", "Cdr", "ChurnEvent", "CLOCKED", "CONTRACTS", "CUSTOMER_ID_PATTERN", "customer_state",
    "DeadLetter", "decode_billing", "decode_cdr", "decode_outcome", "decode_profile", "EPOCH_ORDINAL", "Input",
    "json_schema", "Label", "LEVELS", "local_clock", "local_days", "LocalClock", "mid_high", "MID_HIGH_MOU",
    "MID_HIGH_SPEND", "MODEL", "MODEL_VERSION", "ModelEvent", "month_index", "month_label", "month_of_label",
    "months_of_days", "NAMES", "Outcome", "potential", "POTENTIAL_SPEND", "PREFIX", "Profile",
    "QUARANTINE_TTL_S", "quarantined_state", "REASON_CODES", "report", "REPORT_PATTERN", "REVENUE_CHURN_SPEND",
    "SEGMENTS", "Snapshot", "TRAINER_LEASE", "TRAINER_STATE"
]
