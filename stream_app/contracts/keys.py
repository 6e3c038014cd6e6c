"""Every Redis key template, in one place. Each key of a customer carries the hash tag
`{customer}`, so all of them share a slot and the same code runs on Redis Cluster."""

from __future__ import annotations

__all__ = ["PREFIX", "BASELINE_FIELD", "customer_state", "STATE_PATTERN", "customer_of_state", "quarantined_state",
           "QUARANTINE_TTL_S", "QUARANTINE_INDEX", "report", "REPORT_PATTERN", "applied", "APPLIED_PATTERN",
           "offnet_book", "offnet_months", "OFFNET_MONTHS_PATTERN", "CALL_PLAN", "LISTS", "MODEL", "MODEL_VERSION",
           "TRAINER_STATE", "TRAINER_LEASE", "SERVICE_KEYS", "NOTIFY_SENT", "NOTIFY_PENDING", "NOTIFY_DIGESTED",
           "NOTIFY_DIGEST_DAY", "NOTIFY_DIGEST_LOCK", "NOTIFY_DIGEST_INFLIGHT"]

PREFIX = "cw"
# Fields of the report hashes (`report`) that hold segment baselines' histograms, not report counters.
BASELINE_FIELD = "baseline|"


def customer_state(customer: str) -> str:
    """The customer's windows, offsets and profile (one string, see `state.STATE`)."""
    return f"{PREFIX}:{{{customer}}}:s"


STATE_PATTERN = customer_state("*")


def customer_of_state(key: str) -> str:
    """The customer whose state is at `key` (a `customer_state` key)."""
    return key[key.index("{") + 1:key.rindex("}")]


def quarantined_state(customer: str) -> str:
    """A state the worker could not read, set aside for a person to look at (same slot as the state)."""
    return f"{PREFIX}:{{{customer}}}:quarantined"


QUARANTINE_TTL_S = 90 * 86400
# Every quarantined customer, scored by when their quarantined state expires: what keeps the
# count of customers with state exact (`windows/store.RedisWindowStore.customers`).
QUARANTINE_INDEX = f"{PREFIX}:{{quarantine}}:index"


def report(shard: int) -> str:
    """One hash of report counters (reports/facts.py). A single Redis has one; on a cluster every
    node keeps its own, written in the same script as its customers' states, and a report sums them."""
    return f"{PREFIX}:{{report-{shard}}}:counts"


REPORT_PATTERN = f"{PREFIX}:{{report-*}}:counts"


def applied(shard: int) -> str:
    """The newest input offset applied per partition ("<topic>|<partition>" -> offset), written in
    the same script as the states, next to the report hash of the same shard: if Redis loses
    data, this says what it lost (`worker/consumer.py` rebuilds it from Kafka)."""
    return f"{PREFIX}:{{report-{shard}}}:applied"


APPLIED_PATTERN = f"{PREFIX}:{{report-*}}:applied"


def offnet_book(shard: int | str, month: str) -> str:
    """The off-net book of one month on one node (`windows/book.py`): beside the report hash of the
    same shard, written in the same script as the customers whose calls it counts."""
    return f"{PREFIX}:{{report-{shard}}}:offnet:{month}"


def offnet_months(shard: int | str) -> str:
    """The months whose off-net book this shard holds (a set), so that a reader finds them and the
    count of customers leaves them out."""
    return f"{PREFIX}:{{report-{shard}}}:offnet-months"


OFFNET_MONTHS_PATTERN = offnet_months("*")
CALL_PLAN = f"{PREFIX}:{{calls}}:latest"  # the latest daily call plan's counts, for the workers' metrics
# The lifecycle lists last produced ("<list>|<figure>" -> value: their day, customers and value), for
# the workers' metrics: the lists are made by `churnwatch calls`, which serves no metrics itself.
LISTS = f"{PREFIX}:{{calls}}:lists"

# The model registry: one hash tag, so a publication is one MULTI/EXEC on Redis Cluster too.
MODEL = f"{PREFIX}:{{model}}:current"  # the latest published snapshot (model.encode_snapshot)
MODEL_VERSION = f"{PREFIX}:{{model}}:version"  # its version, so scorers poll a few bytes
TRAINER_STATE = f"{PREFIX}:{{model}}:trainer"  # the trainer's own checkpoint
TRAINER_LEASE = f"{PREFIX}:{{model}}:lease"  # held by the one trainer that may publish
# The notifier's (stream_app/notify): messages delivered (id|channel -> when, a sorted set pruned by
# age), the alerts waiting for the next digest (alert id -> alert), those a digest carried (a
# sorted set, pruned by age) and the day the last digests went out to.
NOTIFY_SENT = f"{PREFIX}:{{notify}}:sent"
NOTIFY_PENDING = f"{PREFIX}:{{notify}}:pending"
NOTIFY_DIGESTED = f"{PREFIX}:{{notify}}:digested"
NOTIFY_DIGEST_DAY = f"{PREFIX}:{{notify}}:digest-day"
NOTIFY_DIGEST_LOCK = f"{PREFIX}:{{notify}}:digest-lock"  # held while one notifier sends the digests
NOTIFY_DIGEST_INFLIGHT = f"{PREFIX}:{{notify}}:digest-inflight"  # the alerts a digest run carries, until it ends
# The service's own keys of fixed name: with the report shards' and the quarantine's, every key
# that is not a customer's state.
SERVICE_KEYS = (CALL_PLAN, LISTS, MODEL, MODEL_VERSION, TRAINER_STATE, TRAINER_LEASE, QUARANTINE_INDEX, NOTIFY_SENT,
                NOTIFY_PENDING, NOTIFY_DIGESTED, NOTIFY_DIGEST_DAY, NOTIFY_DIGEST_LOCK,
                NOTIFY_DIGEST_INFLIGHT)
