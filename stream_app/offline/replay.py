"""Recorded events through the real pipeline, in one process: for evaluation and cold start.

The same `BatchProcessor` as the worker, on an in-memory store, and the same labeller and
learner as the trainer, fed as the event clock moves: a snapshot is labelled once its
horizon has closed, and a new model version is used from the next batch on, exactly as
a live deployment would see them (only without a broker in between).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Callable, Iterable, Iterator

import msgspec
from prometheus_client import CollectorRegistry

from stream_app.contracts.events import Alert, ChurnEvent, Label, Snapshot, WonBack
from stream_app.errors import ConfigError
from stream_app.features.baseline_counts import KEEP_DAYS
from stream_app.features.baselines import BaselineRule, Baselines
from stream_app.metrics import Metrics
from stream_app.model.labels import Labeler
from stream_app.model.registry import ScorerSource
from stream_app.model.scoring import encode_snapshot, model_features
from stream_app.model.signing import Signer
from stream_app.model.trainer import TrainerCore
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings, Topics
from stream_app.windows.book import Entry
from stream_app.windows.store import MemoryWindowStore
from stream_app.worker.pipeline import BatchOutput, BatchProcessor, RawRecord

__all__ = ["ReplayResult", "recorded", "replay"]


@dataclass
class ReplayResult:
    snapshots: list[Snapshot] = field(default_factory=list)  # each with the score it had when taken
    alerts: list[Alert] = field(default_factory=list)
    churn: list[ChurnEvent] = field(default_factory=list)
    won_back: list[WonBack] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0
    core: TrainerCore | None = None
    report: dict[str, int] = field(default_factory=dict)  # the report counters (reports/facts.py)
    states: dict[str, bytes] = field(default_factory=dict)  # every customer's state at the end
    book: dict[str, dict[str, Entry]] = field(default_factory=dict)  # the off-net book, by month (windows/book.py)
    refused: int = 0  # records sent to dead letter
    refusal: str = ""  # the first one's reason, field and detail


class _Learning:
    """The trainer's two stages, driven by the batches' outputs instead of topics."""

    def __init__(self, settings: Settings, core: TrainerCore, source: ScorerSource,
                 on_label: Callable[[Label], None] | None = None) -> None:
        self.settings = settings
        self.on_label = on_label
        self.core = core
        self.source = source
        self.labeler = Labeler(settings.horizon_days, settings.late_grace_days, settings.label_revenue_churn)
        self.pending: deque[Snapshot] = deque()
        self.clock = 0
        self.made = 0

    def feed(self, out: BatchOutput) -> None:
        if out.erased:
            gone = set(out.erased)
            self.pending = deque(s for s in self.pending if s.customer_id not in gone)
        for c in out.churn_events:
            self.labeler.churn(c)
        for s in out.snapshots:
            self.pending.append(s)
            self.clock = max(self.clock, s.exits_known)
        while self.pending and self.labeler.mature(self.pending[0].day, self.clock):
            label = self.labeler.label(self.pending.popleft(), 0, self.made)
            if self.on_label is not None:
                self.on_label(label)
            self.core.learn(label, self.made)
            self.made += 1
            if self.core.since_publish >= self.settings.model_publish_labels:
                self.source.offer(encode_snapshot(self.core.next_model(self.source.signer)))


class _DailyBaselines:
    """The segment baselines, reread from the store once a day of snapshots is in: workers
    reread theirs every minute, which at a live rate is far more often than a day."""

    def __init__(self, store: MemoryWindowStore, rule: BaselineRule) -> None:
        self.store, self.rule = store, rule
        self.current = Baselines()
        self.day = 0  # the newest snapshot day

    def __call__(self) -> Baselines:
        return self.current

    def seen(self, snapshots: list[Snapshot]) -> None:
        newest = max((s.day for s in snapshots), default=0)
        if newest > self.day:
            self.day = newest
            self.store.prune_baselines(date.fromordinal(newest - KEEP_DAYS))
            self.current = Baselines.from_counts(dict(self.store.baselines), self.rule)


Record = tuple[str | None, bytes, bytes]  # (topic, key, value); a topic of None: process what is held now
#: Records a replay's batch holds, whatever the worker's `batch_size`. The batch is a replay's grain of
#: time: its model and baselines move on between batches (a worker's move on with its clock), so the
#: evaluations' figures depend on it. In batches of 4,000, the slumped month of
#: tests/unit/test_holiday_month.py warned 24 customers against a normal month's 9.
BATCH = 2000


def replay(records: Iterable[Record], settings: Settings, rules: Callable[[], Ruleset],
           learn: bool = True, keep_snapshots: bool = True,
           on_alerts: Callable[[list[Alert]], None] | None = None,
           on_label: Callable[[Label], None] | None = None) -> ReplayResult:
    """Process (topic, key, value) records in order, in batches of `BATCH`;
    with `learn`, label and learn as the trainer would, starting from no model. Without
    `keep_snapshots`, the daily snapshots (a kilobyte each) are not kept in the result. A
    record whose topic is None is a barrier: what the batch holds is processed before the
    records after it are asked for, so that `on_alerts` (given each batch's alerts) has seen
    every alert they raised (the simulated call centre's closed loop, call_centre.py). `on_label`
    sees each label as it is made, before the model learns it."""
    return asyncio.run(_replay(records, settings, rules, learn, keep_snapshots, on_alerts, on_label))


async def _replay(records: Iterable[Record], settings: Settings, rules: Callable[[], Ruleset],
                  learn: bool, keep_snapshots: bool, on_alerts: Callable[[list[Alert]], None] | None,
                  on_label: Callable[[Label], None] | None = None) -> ReplayResult:
    metrics = Metrics(CollectorRegistry())
    # Models published within this process only: a key of its own signs a forest's pickle.
    source = ScorerSource(metrics, Signer.ephemeral(), model_features(settings.attributes))
    core = TrainerCore.fresh(settings)
    store = MemoryWindowStore()
    # Replays compare what they find with the truth by customer id: simulated or public data,
    # kept under its own ids.
    baselines = _DailyBaselines(store, BaselineRule.of(settings))
    # Recorded traffic keeps its own time, not today's: event times are bounded by the floor only.
    processor = BatchProcessor(settings.model_copy(update={"pseudonym_key": None}), store, rules, metrics,
                               model=source, baselines=baselines, wall_clock_bound=False)
    learning = _Learning(settings, core, source, on_label) if learn else None
    result = ReplayResult(core=core)
    offsets: dict[str, int] = {}
    batch: list[RawRecord] = []
    started = time.perf_counter()

    async def collect(out: BatchOutput) -> None:
        baselines.seen(out.snapshots)
        if keep_snapshots:
            result.snapshots += out.snapshots
        result.alerts += out.alerts
        if on_alerts is not None and out.alerts:
            on_alerts(out.alerts)
        result.churn += out.churn_events
        result.won_back += out.won_back
        if out.deadletters and not result.refusal:
            d = out.deadletters[0]
            result.refusal = f"{d.reason} (field {d.field}): {d.detail}" if d.field else f"{d.reason}: {d.detail}"
        result.refused += len(out.deadletters)
        if learning is not None:
            learning.feed(out)

    async def flush() -> None:
        await processor.run(batch, collect)
        result.events += len(batch)
        batch.clear()

    for topic, key, value in records:
        if topic is None:
            if batch:
                await flush()
            continue
        offset = offsets.get(topic, 0)
        offsets[topic] = offset + 1
        batch.append(RawRecord(topic, 0, offset, key, value))
        if len(batch) >= BATCH:
            await flush()
    if batch:
        await flush()
    result.seconds = time.perf_counter() - started
    result.report, result.states, result.book = dict(store.report), store.data, store.book
    return result


def recorded(path: Path, topics: Topics) -> Iterator[tuple[str, bytes, bytes]]:
    """(topic, key, value) of each line of a recording, as `churnwatch simulate --out` and
    `churnwatch replay-monthly --out` write them: {"topic", "key", "value"}, topics by their
    usual names (cdr, billing, customers) or by the configured ones."""
    names = {"cdr": topics.cdr, "billing": topics.billing, "customers": topics.customers,
             "outcomes": topics.outcomes} | {t: t for t in topics.inputs()}
    try:
        f = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    with f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = msgspec.json.decode(line)
                topic, key, value = rec["topic"], rec["key"].encode(), rec["value"].encode()
            except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
                raise ConfigError(f"{path}:{n}: expected a JSON object with topic, key and value (as `churnwatch "
                                  f"simulate --out` writes); got {line[:80].decode(errors='replace')!r}") from None
            if topic not in names:
                raise ConfigError(f"{path}:{n}: unknown topic {topic!r}; expected one of cdr, billing, customers")
            yield names[topic], key, value
