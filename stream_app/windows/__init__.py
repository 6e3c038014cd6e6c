"""Per-customer rolling usage windows: the packed record layout, applying events to it, and the
Redis store that writes a batch's states exactly once."""

from stream_app.windows.apply import ApplyResult, Envelope, erase_first
from stream_app.windows.scan import read_counts
from stream_app.windows.state import (
    CONTACT_BITS,
    COUNTERS,
    DAILY,
    EXIT_KINDS,
    ID_DIGEST,
    LAST_SEEN_KINDS,
    N_DAYS,
    N_MONTHS,
    N_TOPICS,
    NEVER_WRITTEN,
    REVENUE_CHURN_FLAG,
    SCALE,
    SEQ_OFFSET,
    STATE,
    STATE_VERSION,
    VIP_TIERS,
    C,
    D,
    StateTail,
    Windows,
    contacts_estimate,
    rule_key,
    usage_fingerprint,
)
from stream_app.windows.store import Applied, MemoryWindowStore, RedisWindowStore, StateLost, WindowStore, Write

__all__ = [
    "Applied", "ApplyResult", "C", "CONTACT_BITS", "contacts_estimate", "COUNTERS", "D", "DAILY", "Envelope",
    "erase_first", "EXIT_KINDS", "ID_DIGEST", "LAST_SEEN_KINDS", "MemoryWindowStore", "N_DAYS", "N_MONTHS",
    "N_TOPICS", "NEVER_WRITTEN", "read_counts", "RedisWindowStore", "REVENUE_CHURN_FLAG",
    "rule_key", "SCALE", "SEQ_OFFSET", "STATE", "STATE_VERSION", "StateLost", "StateTail", "usage_fingerprint",
    "VIP_TIERS", "Windows", "WindowStore", "Write"
]
