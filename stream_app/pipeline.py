"""One batch from raw records to alerts and dead letters: decode, window, derive, rule.

Transport-free: the faust agents hand it raw records and send what it returns. The order
that keeps Redis exactly-once in effect is: compute, send alerts and dead letters (ids are
deterministic, so a resend after a crash is a duplicate the queue can drop), write state
with the offsets in it, and only then let the consumer commit.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, Sequence, TypeVar

import msgspec
import numpy as np

from .alerts import AlertPolicy, ModelView, build_alerts
from .baselines import Baselines
from .baselines import increments as baseline_increments
from .errors import InvalidEvent
from .events import Alert, ChurnEvent, DeadLetter, Snapshot, decode_billing, decode_cdr, decode_outcome, decode_profile
from .features import derive, month_of
from .logs import pseudonym
from .metrics import Metrics
from .model import Scorer, model_inputs, monthly_pending
from .privacy import Pseudonyms
from .observations import churn_events, snapshot_days, snapshots
from .report_facts import Before, report_increments
from .rule_eval import Evaluation, Streaks, evaluate, with_segments
from .rules import Ruleset
from .settings import Settings
from .store import WindowStore, Write, retry_forever
from .state import EPOCH_ORDINAL, Windows, rule_key
from .windows import Envelope, apply

__all__ = ["RawRecord", "BatchOutput", "BatchProcessor", "evaluate_rules"]

log = logging.getLogger(__name__)


class RawRecord(msgspec.Struct, frozen=True, gc=False):
    """A record as the consumer read it (a struct: one is made per event, cheaply)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass
class BatchOutput:
    alerts: list[Alert] = field(default_factory=list)
    deadletters: list[DeadLetter] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    churn_events: list[ChurnEvent] = field(default_factory=list)
    cooled: int = 0  # alerts the cooldown held back
    writes: dict[str, Write] = field(default_factory=dict)
    report: dict[str, dict[str, int]] = field(default_factory=dict)  # customer -> report counter increments
    applied: int = 0
    replayed: int = 0
    duplicates: int = 0


Sender = Callable[[BatchOutput], Awaitable[None]]
R = TypeVar("R")


def dead_letter(rec: RawRecord, err: InvalidEvent, now: datetime, private: bool = False,
                customer: str | None = None) -> DeadLetter:
    """The record and why it was refused. With `private` (pseudonymous ids) the key is the
    `customer`'s pseudonym and the record's bytes are left out, since they hold numbers: its
    topic, partition and offset find it."""
    return DeadLetter(
        topic=rec.topic, partition=rec.partition, offset=rec.offset, reason=err.reason, field=err.field,
        # A message can quote the values it refused, the customer's number among them.
        detail=_NUMBER.sub("<number>", err.detail) if private else err.detail,
        key=customer if private else rec.key.decode("utf-8", "replace") if rec.key is not None else None,
        value_b64=None if private else base64.b64encode(rec.value).decode(), at=now,
    )


_NUMBER = re.compile(r"\d{6,}")


class BatchProcessor:
    """Turns a batch of raw records into state writes, alerts and dead letters."""

    def __init__(self, settings: Settings, store: WindowStore, rules: Callable[[], Ruleset], metrics: Metrics,
                 policy: AlertPolicy | None = None, clock: Callable[[], datetime] | None = None,
                 model: Callable[[], Scorer | None] = lambda: None,
                 baselines: Callable[[], Baselines] = Baselines) -> None:
        self.settings = settings
        self.store = store
        self.rules = rules
        self.model = model
        self.baselines = baselines
        self.metrics = metrics
        self.policy = policy or AlertPolicy(holdout_share=settings.holdout_share, margin_share=settings.margin_share,
                                            segment_churn=tuple(settings.segment_monthly_churn.items()))
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        inputs = settings.topics.inputs()
        self._topic_index = {t: i for i, t in enumerate(inputs)}
        self._decoders = dict(zip(inputs, (decode_cdr, decode_billing, decode_profile, decode_outcome)))
        self.pseudonyms = Pseudonyms.of(settings)
        # Outcomes name the customer as their alert did: already a pseudonym.
        self._numbered = set(inputs[:3])
        # Event-time clock per partition: the newest day reached by any customer in it. Per
        # partition, because partitions progress at their own pace and a lagging one must
        # not make its customers look inactive.
        self.watermarks: dict[int, int] = {}
        # Newest event-time (unix s) read per (topic, partition) of usage and billing: how far
        # the labeller may trust that every exit of a partition has been reported.
        self.topic_seen: dict[tuple[int, int], int] = {}

    def decode(self, records: Sequence[RawRecord], out: BatchOutput) -> list[tuple[str, Envelope]]:
        decoded = []
        now = self.clock()
        for topic, n in Counter(rec.topic for rec in records).items():
            self.metrics.events.labels(topic).inc(n)
        private = self.pseudonyms.enabled
        for rec in records:
            try:
                if rec.key is None:
                    raise InvalidEvent("missing_key", "key", "topics are keyed by customer id; got no key")
                event = self._decoders[rec.topic](rec.value)
                if rec.key.decode("utf-8", "replace") != event.customer_id:
                    raise InvalidEvent("key_mismatch", "customer_id",
                                       f"got {event.customer_id!r} under key {rec.key!r}; topics are keyed by customer")
            except InvalidEvent as err:
                out.deadletters.append(self._dead_letter(rec, err, now))
                continue
            if private and rec.topic in self._numbered:
                event = msgspec.structs.replace(event, customer_id=self.pseudonyms(event.customer_id))
            decoded.append((event.customer_id, Envelope(self._topic_index[rec.topic], rec.partition, rec.offset, event)))
        return decoded

    async def prepare(self, records: Sequence[RawRecord]) -> BatchOutput:
        """Everything a batch produces, without writing anything yet."""
        out = BatchOutput()
        decoded = self.decode(records, out)
        customers = list(dict.fromkeys(c for c, _ in decoded))
        if not customers:
            return out
        raws = await self._redis("load", lambda: self.store.load(customers))
        w = Windows.load(customers, raws)
        before = Before.of(w, self.settings.zone, self.settings.late_grace_days)
        row = {c: i for i, c in enumerate(customers)}
        result = apply(w, [(row[c], env) for c, env in decoded], self.settings.zone, self.settings.late_grace_days)
        out.applied, out.replayed, out.duplicates = result.applied, result.replayed, result.duplicates
        now = self.clock()
        by_offset = {(r.topic, r.partition, r.offset): r for r in records}
        inputs = self.settings.topics.inputs()
        for env, why in result.late:
            rec = by_offset[(inputs[env.topic], env.partition, env.offset)]
            out.deadletters.append(self._dead_letter(rec, InvalidEvent("late", "ts", why), now))
        now_day = self._advance_clock(w, decoded, row)
        changed = sorted(result.changed)
        if result.applied:
            partition_of = {c: env.partition for c, env in decoded}
            self._derive(w, changed, now_day, now, before, partition_of, out)
        out.writes = dict(zip((customers[i] for i in changed), w.dump(changed)))
        return out

    def _advance_clock(self, w: Windows, decoded: list[tuple[str, Envelope]], row: dict[str, int]) -> np.ndarray:
        partition = np.zeros(len(w.customers), np.int64)
        partition[[row[c] for c, _ in decoded]] = [env.partition for _, env in decoded]  # the last one wins
        seen = self.topic_seen
        newest: dict[tuple[int, int], datetime] = {}
        for _, env in decoded:
            if env.topic < 2:  # cdr, billing
                key = (env.topic, env.partition)
                if key not in newest or newest[key] < env.event.ts:
                    newest[key] = env.event.ts
        for key, ts in newest.items():
            seen[key] = max(seen.get(key, 0), int(ts.timestamp()))
        for p in np.unique(partition):
            self.watermarks[int(p)] = max(self.watermarks.get(int(p), 0), int(w.day0[partition == p].max()))
        clock = np.array([self.watermarks[int(p)] for p in partition], np.int64)
        return np.maximum(clock, w.day0)

    def _derive(self, w: Windows, rows: list[int], now_day: np.ndarray, now: datetime, before: Before,
                partition_of: dict[str, int], out: BatchOutput) -> None:
        """Features, model score, rules, alerts, snapshots, churn events and report facts of the changed rows."""
        ruleset, scorer, s = self.rules(), self.model(), self.settings
        features, x = self._features(w, now_day, scorer, ruleset)
        ev = evaluate_rules(w, ruleset, features, now_day, rows)
        for j, rule_id in enumerate(ruleset.ids):
            fired = int(ev.fired[rows, j].sum())
            if fired:
                self.metrics.rule_fired.labels(rule_id).inc(fired)
        picks, days = snapshot_days(w, rows, before.day0, s.snapshot_every_days)
        if picks:
            # Rules are evaluated on a copy, so the snapshot leaves the customers' streaks alone.
            sub = w.subset(picks)
            partitions = [partition_of[w.customers[i]] for i in picks]
            sub_features, sub_x = self._features(sub, days, scorer, ruleset)
            sub_ev = evaluate_rules(sub, ruleset, sub_features, days, list(range(len(picks))))
            out.snapshots = snapshots(sub, sub_x, sub_features, sub_ev, days, scorer, self._exits_known(partitions))
        out.churn_events = churn_events(w, features, rows, before.exit_ts, now_day)
        out.report = report_increments(w, rows, before, out.churn_events, s.zone, s.cohort, s.late_grace_days)
        if picks:  # each snapshot adds its customer to the day's segment histograms, written with the state
            defined = [name for name, _ in ruleset.segments]
            for customer, counts in baseline_increments(sub.customers, sub_features, days, defined).items():
                mine = out.report.setdefault(customer, {})
                for name, n in counts.items():
                    mine[name] = mine.get(name, 0) + n
        if scorer is not None and scorer.labels >= s.model_min_labels:
            score = np.where(monthly_pending(features), 0.0, features["churn_score"])
            by_score = np.where(score >= s.model_high_score, 3, np.where(score >= s.model_medium_score, 2, 0))
            ev = dataclasses.replace(ev, level=np.maximum(ev.level, by_score))
        view = ModelView(scorer, x, features["churn_score"]) if scorer is not None else None
        out.alerts, out.cooled = build_alerts(w, ev.features, ev, ruleset, rows, now_day, s.zone, self.policy, now, view)

    def _exits_known(self, partitions: list[int]) -> list[int]:
        """Per snapshot: the day up to which its partition's exits have been read (usage and billing
        both past it; in a catch-up one topic can run days ahead of the other)."""
        out = []
        for p in partitions:
            both = min(self.topic_seen.get((0, p), 0), self.topic_seen.get((1, p), 0))
            out.append(both // 86400 + EPOCH_ORDINAL - 1 if both else 0)
        return out

    def _features(self, w: Windows, day: np.ndarray, scorer: Scorer | None,
                  ruleset: Ruleset) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The features as of `day`, with the rule files' segments, the model's score (NaN, never
        true in a rule, without a model) and the live segment baselines. The model measures
        changes against the built-in segments' baselines: its inputs do not change with the
        rule files."""
        baselines, defined = self.baselines(), [name for name, _ in ruleset.segments]
        features = with_segments(ruleset, derive(w, day))
        columns = baselines.columns(features, day, defined)
        x = model_inputs(features, baselines.medians(features, day, columns, defined))
        features |= columns
        features["churn_score"] = scorer.score(x) if scorer is not None else np.full(len(w.customers), np.nan)
        return features, x

    async def run(self, records: Sequence[RawRecord], send: Sender) -> BatchOutput:
        """Process a batch end to end: prepare, send, write; retry customers that conflicted."""
        started = time.perf_counter()
        pending = list(records)
        for _attempt in range(5):
            out = await self.prepare(pending)
            await send(out)
            conflicts = await self._redis("save", lambda: self.store.save(out.writes, out.report))
            self._count(out)
            if not conflicts:
                break
            # Another writer moved these customers on: re-read them and apply again (offsets skip what it did).
            self.metrics.redis_conflicts.inc(len(conflicts))
            lost = set(conflicts)
            pending = [r for r in pending if self._customer_of(r) in lost]
        else:
            raise RuntimeError(f"state of {len(lost)} customers kept changing under this worker")
        self.metrics.batch_size.observe(len(records))
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        return out

    def _dead_letter(self, rec: RawRecord, err: InvalidEvent, now: datetime) -> DeadLetter:
        return dead_letter(rec, err, now, self.pseudonyms.enabled, self._customer_of(rec))

    def _customer_of(self, rec: RawRecord) -> str | None:
        """The customer a record's state is kept under."""
        if rec.key is None:
            return None
        customer = rec.key.decode("utf-8", "replace")
        return self.pseudonyms(customer) if rec.topic in self._numbered else customer

    async def _redis(self, what: str, call: Callable[[], Awaitable[R]]) -> R:
        """A Redis call that waits out an outage: the batch, and so consumption, stops here."""

        def failed(_: BaseException) -> None:
            self.metrics.redis_errors.inc()
            self.metrics.redis_up.set(0)

        async def timed() -> R:
            with self.metrics.redis_seconds.labels(what).time():
                return await call()

        result = await retry_forever(f"redis {what}", timed, self.settings.redis_retry_max_s, failed)
        self.metrics.redis_up.set(1)
        return result

    def _count(self, out: BatchOutput) -> None:
        for d in out.deadletters:
            self.metrics.deadletters.labels(d.reason).inc()
            log.info("dead letter", extra={"topic": d.topic, "partition": d.partition, "offset": d.offset,
                                           "reason": d.reason, "field": d.field,
                                           "customer": pseudonym(d.key) if d.key else None})
        for a in out.alerts:
            self.metrics.alerts.labels(a.level).inc()
            if a.holdout:
                self.metrics.suppressed.labels("holdout").inc()
            log.info("alert", extra={"alert_id": a.alert_id, "level": a.level, "customer": pseudonym(a.customer_id),
                                     "score": a.score, "reason_code": a.reason_code, "holdout": a.holdout})
            self.metrics.event_to_alert.observe(max(0.0, (a.created_at - a.event_time).total_seconds()))
        self.metrics.suppressed.labels("cooldown").inc(out.cooled)
        self.metrics.snapshots.inc(len(out.snapshots))
        for c in out.churn_events:
            self.metrics.churned.labels(c.kind).inc()
        self.metrics.replayed.inc(out.replayed)
        self.metrics.duplicates.inc(out.duplicates)


def evaluate_rules(w: Windows, ruleset: Ruleset, features: dict[str, np.ndarray], now_day: np.ndarray,
                   rows: Sequence[int]) -> Evaluation:
    """Evaluate the rules, carrying the streaks of rules with `for` in the customers' state."""
    lasting = [j for j, c in enumerate(ruleset.rules) if c.rule.for_ > 1]
    keys = [rule_key(ruleset.ids[j]) for j in lasting]
    streaks = Streaks.empty(len(w.customers), len(ruleset.rules))
    streaks.count[:, lasting], streaks.period[:, lasting] = w.streaks(keys)
    periods = {"daily": now_day, "monthly": month_of(now_day)}
    ev = evaluate(ruleset, features, streaks, periods)
    w.set_streaks(keys, ev.streaks.count[:, lasting], ev.streaks.period[:, lasting], rows)
    return ev
