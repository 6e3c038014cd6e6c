"""One batch from raw records to alerts and dead letters: decode, window, derive, rule.

Transport-free: the faust agents hand it raw records and send what it returns. The order
that keeps Redis exactly-once in effect is: compute, send alerts and dead letters (ids are
deterministic, so a resend after a crash is a duplicate the queue can drop), write state
with the offsets in it, and only then let the consumer commit. The worker leaves the write
under way (`start`) while it decodes the next batch, which reads no state before the write has
landed (`Writing.landed`): Redis runs the script on its core while this one decodes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Awaitable, Callable, Sequence, TypeVar

import numpy as np
from redis.exceptions import RedisError

from stream_app.alerts.build import AlertPolicy, ModelView, build_alerts, levels_with_score
from stream_app.connect.retries import first_of, retry_forever
from stream_app.contracts.attributes import columns as attribute_columns
from stream_app.contracts.events import DeadLetter
from stream_app.errors import InvalidEvent, NotReady
from stream_app.features.baselines import Baselines
from stream_app.features.baselines import increments as baseline_increments
from stream_app.features.derive import derive
from stream_app.ingest.admission import Edge, Erasure
from stream_app.ingest.deadletters import dead_letter
from stream_app.metrics import Metrics
from stream_app.model.observations import churn_events, snapshot_days, snapshots, won_back
from stream_app.model.scoring import Scorer, feature_digest, model_features, model_inputs, monthly_pending
from stream_app.privacy import Pseudonyms
from stream_app.reports.facts import Before, report_increments
from stream_app.rules.evaluate import with_segments
from stream_app.rules.in_state import evaluate_rules, remember_streaks
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings
from stream_app.windows.apply import Envelope, apply, erase_first
from stream_app.windows.book import gather
from stream_app.windows.lifecycle import Moves
from stream_app.windows.state import Windows
from stream_app.windows.store import WindowStore
from stream_app.worker.event_clock import EventClock
from stream_app.worker.output import BatchOutput, RawRecord, newest_offsets, observe, sending

__all__ = ["Admitted", "RawRecord", "BatchOutput", "BatchProcessor", "Sender", "Writing"]

log = logging.getLogger(__name__)


#: Sends a batch's outputs; may return offsets to record with its state, as applied offsets
#: (where the alerts it sent went: `alerts/ledger.py`).
Sender = Callable[[BatchOutput], Awaitable[dict[tuple[str, int], int] | None]]
#: A batch's records decoded and checked, each as (customer, envelope), with the output its refused
#: ones went to (`BatchProcessor.admit`).
Admitted = tuple[BatchOutput, list[tuple[str, Envelope]]]
R = TypeVar("R")


class BatchProcessor:
    """Turns a batch of raw records into state writes, alerts and dead letters."""

    def __init__(self, settings: Settings, store: WindowStore, rules: Callable[[], Ruleset], metrics: Metrics,
                 policy: AlertPolicy | None = None, clock: Callable[[], datetime] | None = None,
                 model: Callable[[], Scorer | None] = lambda: None,
                 baselines: Callable[[], Baselines] = Baselines, wall_clock_bound: bool = True) -> None:
        """`wall_clock_bound`: refuse event times ahead of `clock` (off for replays of recordings,
        whose own time is not today's)."""
        self.settings = settings
        self.log_ids = Pseudonyms.for_logs(settings)  # customers as logs name them
        self.store = store
        self.rules = rules
        self.model = model
        self.baselines = baselines
        self.metrics = metrics
        self.policy = policy or AlertPolicy.of(settings)
        # Read once: the model's attribute columns, the features a snapshot's `x` holds, the regions named.
        self._attribute_columns = attribute_columns(settings.attributes)
        self._digest = feature_digest(model_features(settings.attributes))
        self.regions = settings.metric_regions  # as the metrics name them
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.edge = Edge(settings, self.clock if wall_clock_bound else None)
        self.event_clock = EventClock(settings.zone)
        # In a replay, the newest usage or billing time read before the batch under way (the event
        # clock's): the bound of its records (`Bounds.latest`), the same however often it is prepared.
        self._read_to = 0

    def decode(self, records: Sequence[RawRecord], out: BatchOutput) -> list[tuple[str, Envelope]]:
        """Each record as (customer, envelope); a record refused for any reason goes to dead letter."""
        decoded: list[tuple[str, Envelope]] = []
        now = self.clock()
        latest = self.edge.bounds.latest(self._read_to)
        # Looked up once per batch, not once per record.
        admit, topic_index, add = self.edge.admit, self.edge.topic_index, decoded.append
        for rec in records:
            try:
                event, seconds = admit(rec, latest)
            except InvalidEvent as err:
                out.deadletters.append(self._dead_letter(rec, err, now))
                continue
            except Exception as exc:  # noqa: BLE001 - a record no check foresaw goes, the batch goes on
                log.warning("a record raised %s while it was read", type(exc).__name__, exc_info=True)
                out.deadletters.append(self._dead_letter(rec, _unexpected(exc), now))
                continue
            add((event.customer_id, Envelope(topic_index[rec.topic], rec.partition, rec.offset, event, seconds)))
        return decoded

    def admit(self, records: Sequence[RawRecord]) -> Admitted:
        """A batch's records decoded and checked (the decode stage), which reads no state: done
        while the batch before's write lands (`worker/runtime.py`)."""
        self._read_to = max(self.event_clock.topic_seen.values(), default=0)
        out = BatchOutput()
        with self.metrics.stage("decode"):
            return out, self.decode(records, out)

    async def prepare(self, records: Sequence[RawRecord], admitted: Admitted | None = None) -> BatchOutput:
        """Everything a batch produces, without writing anything yet; `admitted`: its records as
        `admit` read them, if it did."""
        out, decoded = admitted or (BatchOutput(), None)
        stage = self.metrics.stage
        with stage("decode"):
            decoded = self.decode(records, out) if decoded is None else decoded
            # The events as (row, envelope), the rows numbering the customers as first seen: one pass.
            row: dict[str, int] = {}
            batch = [(row.setdefault(c, len(row)), env) for c, env in decoded]
            customers = list(row)
        if not customers:
            return out
        out.partitions = {c: env.partition for c, env in decoded}
        with stage("load"):
            raws = await self._redis("load", lambda: self.store.load(customers))
            w = Windows.load(customers, raws)
        if w.quarantined:
            await self._quarantine(w, raws)
        with stage("apply"):
            out.erased = erase_first(w, [(r, env) for r, env in batch if isinstance(env.event, Erasure)])
            before = Before.of(w, self.settings.zone, self.settings.late_grace_days)
            result = apply(w, batch, self.settings.zone, self.settings.late_grace_days)
            out.applied, out.replayed, out.duplicates = result.applied, result.replayed, result.duplicates
            if self.settings.competitor_days:
                out.book = gather(customers, result.offnet, self.edge.pseudonyms)
            self._refused(records, result.refused, out)
            now_day = self.event_clock.advance(w, batch)
        changed = sorted(result.changed)
        # An erased customer sends nothing in the batch that erased them; events after the
        # tombstone are kept, and judged with their next batch.
        erased = set(out.erased)
        judged = [i for i in changed if customers[i] not in erased]
        if result.applied and judged:
            self._derive(w, judged, now_day, self.clock(), before, result.moves, out.partitions, out)
        with stage("encode"):
            out.writes = dict(zip((customers[i] for i in changed), w.dump(changed, self.settings.state_layout)))
            out.renew = {customers[i] for i in w.renewed(changed)}
        return out

    def _refused(self, records: Sequence[RawRecord], refused: list[tuple[Envelope, InvalidEvent]],
                 out: BatchOutput) -> None:
        """Events refused while applied (late, before a return, raised) go to dead letter."""
        if not refused:  # most batches: no index of the batch's records to build
            return
        now = self.clock()
        by_offset = {(r.topic, r.partition, r.offset): r for r in records}
        inputs = self.settings.topics.inputs()
        for env, err in refused:
            rec = by_offset[(inputs[env.topic], env.partition, env.offset)]
            out.deadletters.append(self._dead_letter(rec, err, now))

    async def _quarantine(self, w: Windows, raws: Sequence[bytes | None]) -> None:
        """States that cannot be read are set aside and their customers start afresh: a record of
        another layout must be neither misread nor allowed to stop every batch it is in."""
        for i, why in w.quarantined:
            self.metrics.quarantined.inc()
            log.error("a stored state could not be read (%s); set aside, the customer starts afresh", why,
                      extra={"customer": self.log_ids(w.customers[i])})
        aside = {w.customers[i]: raws[i] for i, _ in w.quarantined}
        await self._redis("quarantine", lambda: self.store.quarantine(aside))  # type: ignore[arg-type]

    def _derive(self, w: Windows, rows: list[int], now_day: np.ndarray, now: datetime, before: Before, moves: Moves,
                partition_of: dict[str, int], out: BatchOutput) -> None:
        """Features, model score, rules, alerts, snapshots, churn events and report facts of the changed rows."""
        ruleset, scorer, s, stage = self.rules(), self.model(), self.settings, self.metrics.stage
        features, x = self._features(w, now_day, scorer, ruleset, day_over=False)
        with stage("rules"):
            ev = evaluate_rules(w, ruleset, features, now_day)
            remember_streaks(w, ruleset, ev, rows)
            for j, rule_id in enumerate(ruleset.ids):
                fired = int(ev.fired[rows, j].sum())
                if fired:
                    self.metrics.rule_fired.labels(rule_id).inc(fired)
        picks, days = snapshot_days(w, rows, before.day0, s.snapshot_every_days)
        if picks:
            # A copy as of the snapshot days: what its rules say is not the customers' streaks.
            sub = w.subset(picks)
            sub_features, sub_x = self._features(sub, days, scorer, ruleset)
            with stage("rules"):
                sub_ev = evaluate_rules(sub, ruleset, sub_features, days)
            with stage("outputs"):
                partitions = [partition_of[w.customers[i]] for i in picks]
                out.snapshots = snapshots(sub, sub_x, sub_features, sub_ev, days, scorer,
                                          self.event_clock.exits_known(partitions), self._digest)
        with stage("outputs"):
            out.churn_events, reported = churn_events(w, features, rows, moves, now_day, s.zone)
            out.won_back = won_back(w, features, moves.returns, s.zone)
            w.mark_revenue_churn(reported)
            out.report, tails = report_increments(w, rows, before, out.churn_events, moves, s.zone, s.cohort,
                                                  s.late_grace_days, self.regions)
            w.keep_tails(tails)
            if picks:  # each snapshot adds its customer to the day's segment histograms, written with the state
                defined = [name for name, _ in ruleset.segments]
                for customer, counts in baseline_increments(sub.customers, sub_features, days, defined).items():
                    mine = out.report.setdefault(customer, {})
                    for name, n in counts.items():
                        mine[name] = mine.get(name, 0) + n
            if scorer is not None and scorer.labels >= s.model_min_labels:
                score = np.where(monthly_pending(features), 0.0, features["churn_score"])
                ev = replace(ev, level=levels_with_score(ev.level, score, s.model_medium_score, s.model_high_score))
            view = ModelView(scorer, x, features["churn_score"], s.attributes) if scorer is not None else None
            out.alerts, out.cooled, alerted = build_alerts(w, ev.features, ev, ruleset, rows, now_day, s.zone,
                                                           self.policy, now, view)
            w.mark_alerted(alerted)

    def _features(self, w: Windows, day: np.ndarray, scorer: Scorer | None, ruleset: Ruleset,
                  day_over: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The features as of `day` (still under way unless `day_over`: `derive`), with the rule
        files' segments, the model's score (NaN, never true in a rule, without a model) and the
        live segment baselines. The model measures changes against the built-in segments'
        baselines: its inputs do not change with the rule files."""
        stage = self.metrics.stage
        with stage("derive"):
            baselines, defined = self.baselines(), [name for name, _ in ruleset.segments]
            features = with_segments(ruleset, derive(w, day, self.settings.zone, self.settings.attributes, day_over))
            columns = baselines.columns(features, day, defined)
            x = model_inputs(features, baselines.medians(features, day, columns, defined), self._attribute_columns)
            features |= columns
        with stage("model"):
            features["churn_score"] = scorer.score(x) if scorer is not None else np.full(len(w.customers), np.nan)
        return features, x

    async def run(self, records: Sequence[RawRecord], send: Sender, silent: bool = False) -> BatchOutput:
        """Process a batch end to end: prepare, check, send, write. Customers another writer moved
        on since they were read are prepared again before anything is sent; if one moves in the
        instant between the check and the write, its customers are prepared and sent again
        (under the same alert ids). Only customers with something to send are checked: one with
        nothing that another writer moved on is caught by the write's compare-and-set, and
        prepared again. `silent`: a rebuild of records whose outputs were sent
        before the state was lost (`worker/consumer.py`), which writes the state and sends nothing."""
        return await (await self.start(records, send, silent)).landed()

    async def start(self, records: Sequence[RawRecord], send: Sender, silent: bool = False,
                    admitted: Admitted | None = None) -> Writing:
        """`run` up to the state's write, which is left under way: `Writing.landed` waits for it
        (and for whatever its conflicts need). `admitted`: the records as `admit` read them."""
        started = time.perf_counter()
        admitted = admitted if admitted is not None else self.admit(records)
        batch = _Batch(records, send, silent, started, newest_offsets(records))
        return await self._attempt(batch, list(records), 0, admitted)

    async def _attempt(self, batch: _Batch, pending: list[RawRecord], tried: int,
                       admitted: Admitted | None = None) -> Writing:
        stage = self.metrics.stage
        for attempt in range(tried, 10):
            out = await self.isolated(pending, admitted)
            admitted = None
            with stage("check"):
                checked = sending(out)
                stale = await self._redis("check", lambda: self.store.stale(checked))
            if stale:
                self.metrics.redis_conflicts.inc(len(stale))
                continue  # read again: the stored offsets skip what the other writer applied
            with stage("send"):
                marks = None if batch.silent else await batch.send(out)
            if not batch.silent:
                for _ in out.alerts:
                    self.metrics.arrival_to_alert.observe(time.perf_counter() - batch.started)
            done = batch.applied | (marks or {})
            with stage("write"):
                sent, save = asyncio.Event(), self.store.save
                task = asyncio.ensure_future(self._redis("save", lambda: save(out.writes, out.report, done, out.book,
                                                                              out.renew, sent)))
                task.add_done_callback(_retrieved)
                await first_of(task, sent)  # on its way, all of it: Redis runs it while the worker goes on
            return Writing(self, batch, pending, out, task, attempt)
        raise NotReady("customers' states kept changing under this worker: another worker owns them")

    def _landed(self, batch: _Batch) -> None:
        # Counted once the batch went through: a batch tried again (`runtime.until_done`) is one batch.
        for topic, n in Counter(rec.topic for rec in batch.records).items():
            self.metrics.events.labels(topic).inc(n)
        self.metrics.batch_size.observe(len(batch.records))
        self.metrics.batch_seconds.observe(time.perf_counter() - batch.started)

    async def isolated(self, records: Sequence[RawRecord], admitted: Admitted | None = None) -> BatchOutput:
        """`prepare`, but if it raises, the batch is split by customer until the customers whose
        records make it raise are found: their records go to dead letter, the others go on.
        Every stage is per customer, so halves give what the whole would have. Redis errors and
        `NotReady` (a newer release's state, loops that cannot compile) are not theirs: raised."""
        try:
            return await self.prepare(records, admitted)
        except (RedisError, NotReady):
            raise
        except Exception as exc:  # noqa: BLE001 - isolate the customer, keep the service
            groups: dict[str | None, list[RawRecord]] = {}
            for rec in records:
                groups.setdefault(self.edge.customer_of(rec), []).append(rec)
            if len(groups) == 1:
                log.error("the records of one customer made the batch raise %s: sent to dead letter",
                          type(exc).__name__, exc_info=True)
                now, err = self.clock(), InvalidEvent("processing_failed", None, f"{type(exc).__name__}: {exc}")
                return BatchOutput(deadletters=[self._dead_letter(rec, err, now) for rec in records])
            parts = list(groups.values())
            half = len(parts) // 2
            out = await self.isolated([r for part in parts[:half] for r in part])
            out.merge(await self.isolated([r for part in parts[half:] for r in part]))
            return out

    def _dead_letter(self, rec: RawRecord, err: InvalidEvent, now: datetime) -> DeadLetter:
        return dead_letter(rec, err, now, self.edge.pseudonyms.enabled, self.edge.customer_of(rec))

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


def _retrieved(task: asyncio.Future) -> None:
    """A write no one waits for any more (the worker stopped) fails quietly: its batch is read again."""
    if not task.cancelled():
        task.exception()


def _unexpected(exc: Exception) -> InvalidEvent:
    """A record that raised something no check foresaw: refused, with what it raised."""
    return InvalidEvent("unreadable", None, f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class _Batch:
    records: Sequence[RawRecord]
    send: Sender
    silent: bool
    started: float  # perf_counter
    applied: dict[tuple[str, int], int]  # `newest_offsets`


@dataclass
class Writing:
    """A batch whose outputs are sent and whose state's write is under way (`BatchProcessor.start`)."""

    processor: BatchProcessor
    batch: _Batch
    pending: list[RawRecord]  # the records of the attempt being written
    out: BatchOutput
    task: asyncio.Future[list[str]]  # the customers the write refused
    attempt: int

    async def landed(self) -> BatchOutput:
        """Wait for the write. Customers it refused, another writer moved on since they were read:
        their records are prepared, checked, sent and written again, and waited for."""
        p = self.processor
        with p.metrics.stage("write"):
            # Shielded: a worker stopping while it waits here still lets the write land (`BatchConsumer.run`).
            conflicts = await asyncio.shield(self.task)
        observe(self.out, p.metrics, p.log_ids, p.regions)
        if not conflicts:
            p._landed(self.batch)
            return self.out
        p.metrics.redis_conflicts.inc(len(conflicts))
        lost = set(conflicts)
        pending = [r for r in self.pending if p.edge.customer_of(r) in lost]
        return await (await p._attempt(self.batch, pending, self.attempt + 1)).landed()
