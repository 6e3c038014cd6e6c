"""The one trainer: labels snapshots whose horizon has closed, learns the labels, publishes models.

Two stages in one process. The labeller reads `churn.snapshots` H days behind the event
clock (pausing a partition at its first snapshot that is not yet due, so a snapshot that
arrives out of day order holds the ones behind it back until it is due) and `churn.events`
in full, and writes labels to the single-partition `churn.labels`. The learner reads
`churn.labels` in order, scores each label before learning it (progressive validation),
and every N labels or T seconds publishes a model version and its own checkpoint in one
Redis transaction. Each label names the snapshot it came from, and the checkpoint keeps
the last one learned per partition: after a crash the labeller starts again from there,
and the labels it makes a second time are recognised and skipped, so each is learned once.

The labeller also reads the alerts and the call outcomes, and a label carries what the call plan
did with its customer's alert of those days (model/decisions.py): the learner adds it to the
evidence of what calls keep (model/saving.py), published with the model.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import msgspec
import numpy as np

from stream_app.connect.kafka import client_options
from stream_app.connect.redis import connect_redis_sync
from stream_app.connect.topic_reader import TopicFollower, outcome_or_none
from stream_app.contracts import keys
from stream_app.contracts.events import Alert, ChurnEvent, Label, ModelEvent, Snapshot
from stream_app.errors import NotReady
from stream_app.metrics import TrainerMetrics
from stream_app.model.champion import CANDIDATES, Contest, Verdict
from stream_app.model.decisions import Decisions
from stream_app.model.labels import Labeler
from stream_app.model.lease import Lease
from stream_app.model.registry import publish
from stream_app.model.saving import SavingModel
from stream_app.model.scoring import Adaptation, Learner, ModelSnapshot, feature_digest, model_features
from stream_app.model.signing import Signer, Unsigned
from stream_app.settings import Settings

__all__ = ["TrainerCore", "run_trainer", "encode_internal", "decode_feature_snapshot", "decode_label"]

log = logging.getLogger(__name__)
#: How far back a resent snapshot can reach: a worker resends its newest batches after a crash,
#: days at most; the days of customers learned before this are forgotten, keeping the map small.
_RESEND_REACH_DAYS = 120
_msgpack = msgspec.msgpack.Encoder()
decode_feature_snapshot = msgspec.msgpack.Decoder(Snapshot).decode
decode_label = msgspec.msgpack.Decoder(Label).decode
_decode_churn = msgspec.json.Decoder(ChurnEvent).decode
_decode_alert = msgspec.json.Decoder(Alert).decode
encode_internal = _msgpack.encode


@dataclass
class TrainerCore:
    """The candidate models and what they have learned: transport-free, checkpointed as a whole."""

    contest: Contest
    version: int = 0
    learned: dict[int, int] = field(default_factory=dict)  # snapshot partition -> last offset learned
    labels_offset: int = 0  # next offset to read in churn.labels
    # Customer -> day of the last snapshot learned. A worker that crashed after sending its
    # snapshots sends them again at new offsets; a customer's snapshots come in day order, so
    # one of a day already learned is such a resend.
    days: dict[str, int] = field(default_factory=dict)
    since_publish: int = 0
    misfits: int = 0  # labels of another feature count, skipped
    published_at: float = field(default_factory=time.monotonic)
    saving: SavingModel = field(default_factory=SavingModel)  # what calls keep, from the labels' decisions

    @classmethod
    def fresh(cls, settings: Settings) -> "TrainerCore":
        return cls(Contest(settings))

    @property
    def learner(self) -> Learner:
        """The online model (the contest's other candidate is refitted, not learned)."""
        return self.contest.online

    def learn(self, label: Label, offset: int) -> tuple[Adaptation, list[Verdict]] | None:
        """Learn one label read at `offset` of churn.labels. None if it was learned before;
        otherwise what it changed in following drift, and what the contest did."""
        self.labels_offset = offset + 1
        own = self.contest.features
        if len(label.x) != len(own) or label.features not in (0, feature_digest(own)):
            # An upgrade's leftovers, or workers that declare other attributes than this trainer.
            if not self.misfits:
                log.warning("a label of other features (%d, where this trainer learns %d): skipped, as are the next "
                            "such; do workers and trainer declare the same CHURNWATCH_ATTRIBUTES?",
                            len(label.x), len(own))
            self.misfits += 1
            return None
        if label.offset <= self.learned.get(label.partition, -1):
            return None  # learned before
        self.learned[label.partition] = label.offset
        if label.day <= self.days.get(label.customer_id, -1):
            return None  # the same customer and day again: a resent snapshot
        self.days[label.customer_id] = label.day
        self.since_publish += 1
        if (d := label.decision) is not None:
            if d.arm == "control":
                self.saving.learn_control(d.risk, bool(label.y), d.reason)
            else:
                self.saving.learn_call(d.arm, d.reason, d.risk, bool(label.y), d.accepted)
        return self.contest.learn(np.asarray(label.x, np.float64), label.y, label.day, label.customer_id)

    def forget_before(self, day: int) -> None:
        """Drop the days of customers not learned since `day`: a resend comes within a crash's
        replay of the newest batches, never months later."""
        self.days = {c: d for c, d in self.days.items() if d >= day}

    def due(self, settings: Settings) -> bool:
        if self.since_publish == 0:
            return False
        return (self.since_publish >= settings.model_publish_labels
                or time.monotonic() - self.published_at >= settings.model_publish_s)

    def next_model(self, signer: Signer) -> ModelSnapshot:
        self.version += 1
        self.since_publish = 0
        self.published_at = time.monotonic()
        if self.days:
            self.forget_before(max(self.days.values()) - _RESEND_REACH_DAYS)
        evidence = msgspec.msgpack.decode(msgspec.msgpack.encode(self.saving), type=SavingModel)  # as of now
        return msgspec.structs.replace(self.contest.snapshot(self.version, signer), saving=evidence)

    def checkpoint(self, signer: Signer) -> bytes:
        """The trainer as a pickle, signed: it is read back only under the same key."""
        return signer.sign(pickle.dumps((self.contest, self.version, self.learned, self.labels_offset, self.days,
                                         msgspec.msgpack.encode(self.saving))))

    @classmethod
    def restore(cls, raw: bytes, settings: Settings, signer: Signer, version: int = 0) -> "TrainerCore":
        """The checkpointed trainer. One not signed under this key is never unpickled: the
        trainer learns afresh from the start of the labels topic (kept a year) and numbers its
        versions on from `version`, the one published. After an upgrade that changed the model's
        features, a fresh learner goes on from the same place in the labels; a checkpoint from
        before the contest keeps its online model, and the trees start from the labels to come."""
        try:
            contest, version, learned, labels_offset, days, *rest = signer.unpickle(raw)
        except Unsigned as exc:
            log.error("the trainer's checkpoint was refused (%s): learning afresh from the labels topic", exc)
            return dataclasses.replace(cls.fresh(settings), version=version)
        features = model_features(settings.attributes)
        if getattr(contest, "features", None) != features:
            log.warning("the checkpointed model was made for other features: learning afresh for %s",
                        ", ".join(features))
            contest = Contest(settings)
        elif isinstance(contest, Learner):
            online, contest = contest, Contest(settings)
            contest.online = online
        contest.reconfigure(settings)
        saving = msgspec.msgpack.decode(rest[0], type=SavingModel) if rest else SavingModel()  # older: none yet
        return cls(contest, version, learned, labels_offset, days, saving=saving)


def _publish(client: Any, core: TrainerCore, metrics: TrainerMetrics, signer: Signer, token: bytes) -> ModelSnapshot:
    snapshot = core.next_model(signer)
    publish(client, snapshot, core.checkpoint(signer), token)
    metrics.version.set(snapshot.version)
    for name, gauge in metrics.figures.items():
        if name in snapshot.figures:
            gauge.set(snapshot.figures[name])
    for candidate in CANDIDATES:
        metrics.champion.labels(candidate).set(float(candidate == core.contest.champion))
        for name, value in snapshot.candidates.get(candidate, {}).items():
            if name in metrics.CANDIDATE_FIGURES:
                metrics.candidate.labels(candidate, name).set(value)
    return snapshot


class _Labelling:
    """The labeller's consumers: snapshot head (the event clock), churn events, snapshot tail."""

    def __init__(self, settings: Settings, core: TrainerCore) -> None:
        from kafka import KafkaConsumer, TopicPartition

        t = settings.topics
        common = dict(**client_options(settings), enable_auto_commit=False, group_id=None,
                      client_id=f"{settings.app_id}-trainer")
        self.head, self.tail, self.churn = (KafkaConsumer(**common) for _ in range(3))
        snaps = [TopicPartition(t.snapshots, p) for p in _partitions(self.head, t.snapshots)]
        # The head reads from where the tail starts: snapshots are in day order only roughly,
        # so the clock is the largest day among them, not the day of the last one.
        self.head.assign(snaps)
        self.tail.assign(snaps)
        for consumer in (self.head, self.tail):
            for tp in snaps:
                if tp.partition in core.learned:
                    consumer.seek(tp, core.learned[tp.partition] + 1)
                else:
                    consumer.seek_to_beginning(tp)
        churn = [TopicPartition(t.churn_events, p) for p in _partitions(self.churn, t.churn_events)]
        self.churn.assign(churn)
        self.churn.seek_to_beginning(*churn)
        # The alerts and outcomes, from the start of what the topics keep, to join the decisions.
        for topic in (t.alerts, t.outcomes):
            _partitions(self.churn, topic)  # made by the workers: a trainer started first waits for them
        self.alerts = TopicFollower(settings, t.alerts, _decode_alert)
        self.outcomes = TopicFollower(settings, t.outcomes, outcome_or_none)
        self.decisions = Decisions(settings.zone, settings.snapshot_every_days, settings.managed_by_call_centre)
        self.last_day = dict(core.days)  # customer -> day of their last label made
        self.clock: dict[int, int] = {}
        self.paused_at: dict[int, int] = {}
        self.labelled_day: dict[int, int] = {}
        self.forgot_before = -1

    def close(self) -> None:
        for c in (self.head, self.tail, self.churn, self.alerts, self.outcomes):
            c.close()

    def advance(self, labeler: Labeler) -> None:
        """Move the clock, then read churn events up to their end (read after the clock, so every
        churn sent before a snapshot the clock has seen is in)."""
        for tp, records in self.head.poll(timeout_ms=100, max_records=100_000).items():
            for r in records:
                if r.value is None:  # a tombstone: the customer was erased
                    labeler.erase(r.key.decode(), tp.partition, r.offset)
                    continue
                known = decode_feature_snapshot(r.value).exits_known
                self.clock[tp.partition] = max(self.clock.get(tp.partition, 0), known)
        ends = self.churn.end_offsets(list(self.churn.assignment()))
        while any(self.churn.position(tp) < end for tp, end in ends.items()):
            for records in self.churn.poll(timeout_ms=200).values():
                for r in records:
                    labeler.churn(_decode_churn(r.value))
        for alert in self.alerts.read_new():  # a record that is no alert or outcome is skipped, and said
            self.decisions.alert(alert)
        for outcome in self.outcomes.read_new():
            if outcome is not None:  # not an outcome: the worker dead-letters it
                self.decisions.outcome(outcome)

    def due_labels(self, labeler: Labeler) -> list[Label]:
        """Labels of every snapshot whose horizon has closed, in offset order per partition."""
        for tp in list(self.tail.paused()):
            if self.clock.get(tp.partition, 0) > self.paused_at.get(tp.partition, 0):
                self.tail.resume(tp)
        out = []
        for tp, records in self.tail.poll(timeout_ms=200, max_records=20_000).items():
            for r in records:
                if r.value is None:
                    continue
                snap = decode_feature_snapshot(r.value)
                if labeler.is_erased(snap.customer_id, tp.partition, r.offset):
                    continue
                clock = self.clock.get(tp.partition, 0)
                if not labeler.mature(snap.day, clock):
                    self.tail.seek(tp, r.offset)
                    self.tail.pause(tp)
                    self.paused_at[tp.partition] = clock
                    break
                out.append(self._with_decision(labeler.label(snap, tp.partition, r.offset)))
                self.labelled_day[tp.partition] = snap.day
        # Snapshots arrive in day order per partition, give or take the lateness grace. Forgetting
        # walks every customer: once a day further, not at every poll.
        oldest = min(self.labelled_day.values(), default=0) - 2 * labeler.wait
        if self.labelled_day and oldest > self.forgot_before:
            self.forgot_before = oldest
            labeler.forget_before(oldest)
            self.decisions.forget_before(oldest)
            self.last_day = {c: d for c, d in self.last_day.items() if d >= oldest - _RESEND_REACH_DAYS}
        return out

    def _with_decision(self, label: Label) -> Label:
        previous = self.last_day.get(label.customer_id, -1)
        if label.day <= previous:  # a resent snapshot: the learner skips it
            return label
        self.last_day[label.customer_id] = label.day
        decision = self.decisions.for_label(label.customer_id, label.day, previous)
        return msgspec.structs.replace(label, decision=decision) if decision is not None else label


def _partitions(consumer: Any, topic: str, wait_s: float = 30.0) -> list[int]:
    """The topic's partitions, once the client's metadata knows them (it may not, at first)."""
    deadline = time.monotonic() + wait_s
    while not (parts := consumer.partitions_for_topic(topic)):
        if time.monotonic() > deadline:
            raise NotReady(f"topic {topic!r} has no partitions; start a worker first (it creates the topics)")
        time.sleep(0.2)
    return sorted(parts)


def run_trainer(settings: Settings, metrics: TrainerMetrics, stop: Callable[[], bool]) -> None:
    """Label, learn and publish until `stop()` says so. Holds a Redis lease: one trainer at a time."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    assert settings.kafka_bootstrap and settings.redis_url
    url = settings.redis_url.get_secret_value()
    client = connect_redis_sync(url, settings.redis_cluster)
    signer = Signer.of(settings)
    lease = Lease(client, keys.TRAINER_LEASE, settings.trainer_lease_s)
    log.info("waiting for the trainer lease")
    token = lease.acquire()
    stored = client.get(keys.TRAINER_STATE)
    published = int(client.get(keys.MODEL_VERSION) or 0)
    core = TrainerCore.restore(stored, settings, signer, published) if stored else TrainerCore.fresh(settings)
    log.info("trainer at model version %d, %d labels learned", core.version, core.learner.labels)
    metrics.version.set(core.version)  # what is in force, from the first scrape after a restart
    t = settings.topics
    producer = KafkaProducer(**client_options(settings), acks="all", linger_ms=20)
    labelling = _Labelling(settings, core)
    labels_in = KafkaConsumer(**client_options(settings), enable_auto_commit=False, group_id=None)
    labels_tp = TopicPartition(t.labels, 0)
    labels_in.assign([labels_tp])
    labels_in.seek(labels_tp, core.labels_offset)
    labeler = Labeler(settings.horizon_days, settings.late_grace_days, settings.label_revenue_churn)


    def event(kind: str, detail: str) -> None:
        producer.send(t.model_events, _json(ModelEvent(kind, core.version, core.learner.labels,  # type: ignore[arg-type]
                                                       datetime.now(timezone.utc), detail)))
    try:
        while not stop():
            lease.check()
            labelling.advance(labeler)
            made = labelling.due_labels(labeler)
            for label in made:
                producer.send(t.labels, encode_internal(label))
            producer.flush()
            metrics.labels_made.inc(len(made))
            learned = 0
            for records in labels_in.poll(timeout_ms=100 if made else 500, max_records=50_000).values():
                for r in records:
                    label = decode_label(r.value)
                    learnt = core.learn(label, r.offset)
                    if learnt is None:
                        continue
                    learned += 1
                    metrics.labels.labels(str(label.y)).inc()
                    change, verdicts = learnt
                    if change is not Adaptation.NONE:
                        _adapted(change, core.learner, metrics, event)
                    for verdict in verdicts:
                        _contested(verdict, metrics, event)
            if core.due(settings):
                snapshot = _publish(client, core, metrics, signer, token)
                event("published", f"figures {snapshot.figures}")
                log.info("published model version %d (%d labels, AUC %.3f)", snapshot.version, snapshot.labels,
                         snapshot.figures.get("auc", float("nan")))
            if not made and not learned:
                time.sleep(0.2)
    finally:
        producer.flush()
        producer.close()
        labelling.close()
        labels_in.close()
        lease.release()


def _adapted(change: Adaptation, learner: Learner, metrics: TrainerMetrics, event: Callable[[str, str], None]) -> None:
    """Count, log and announce a step of the drift policy (`model.Learner`)."""
    n = learner.validation.size
    if change is Adaptation.DRIFT:
        metrics.drift.inc()
        detail = (f"ADWIN flagged a change in log loss after {learner.labels} labels: a challenger learned the "
                  f"last {n} labels; whichever ranks the next {n} better is kept")
    else:
        metrics.challenges.labels(change.value).inc()
        detail = (f"the challenger ranked the last {n} labels better and replaced the model"
                  if change is Adaptation.REPLACED else
                  f"the model ranked the last {n} labels at least as well as the challenger and is kept")
    log.warning("%s", detail)
    event("drift" if change is Adaptation.DRIFT else change.value, detail)


def _contested(verdict: Verdict, metrics: TrainerMetrics, event: Callable[[str, str], None]) -> None:
    """Count, log and announce a refit of the trees or a new champion (`model.champion`)."""
    if verdict.kind == "promoted":
        metrics.promotions.labels(verdict.candidate).inc()
        log.warning("%s", verdict.detail)
    else:
        metrics.refits.inc()
        log.info("%s", verdict.detail)
    event(verdict.kind, verdict.detail)


def _json(value: object) -> bytes:
    return msgspec.json.encode(value)
