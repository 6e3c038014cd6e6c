"""`churnwatch bench`: what the state costs, measured on a real Redis.

The state phase feeds simulated traffic straight into the batch pipeline (decode, windows,
features, rules, alerts, one pipelined read and one Lua write per batch) against a real
Redis, then samples `MEMORY USAGE` of the customers' keys. The phases through a broker
(the bare-consumer ceiling and the full worker) build on this.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import msgspec
import redis
from prometheus_client import CollectorRegistry

from stream_app.connect.redis import connect_redis, connect_redis_sync
from stream_app.contracts import keys
from stream_app.contracts.keys import customer_state
from stream_app.metrics import STAGES, Metrics
from stream_app.offline.delivery import in_time_order
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings
from stream_app.tools.embedded.servers import redis_server
from stream_app.windows.id_memory import grouped
from stream_app.windows.scan import book_hashes
from stream_app.windows.state import ID_DIGEST, STATE, Windows
from stream_app.windows.store import RedisWindowStore
from stream_app.worker.pipeline import BatchOutput, BatchProcessor, RawRecord

__all__ = ["StateBench", "bench_state", "bench_rules", "book_memory", "id_memory", "memory_per_key", "stage_figures"]


@dataclass
class StateBench:
    events: int
    customers: int
    days: int
    pipeline_events_per_s: float
    redis_bytes_per_customer: float
    redis_used_memory_per_customer: float
    state_record_bytes: int
    # What the memory of event ids over the grace window costs (`state.StateTail.ids`), in the
    # bytes above, and how many ids it holds: exact resends are dropped however much lies between.
    id_memory_bytes_per_customer: float
    ids_remembered_per_customer: float
    # The off-net book (windows/book.py): the same traffic without it, in the same run, and what it
    # keeps: numbers (per month), their bytes, and those bytes spread over the customers.
    pipeline_events_per_s_without_book: float
    offnet_numbers: int
    offnet_bytes_per_number: float
    offnet_bytes_per_customer: float
    stages: dict[str, dict[str, float]]  # per stage of the batches, with the book: see `stage_figures`


def bench_state(settings: Settings, customers: int, days: int, batch: int = 5000, seed: int = 3) -> StateBench:
    """Run `days` of traffic for `customers` through the pipeline into Redis and measure it."""
    records = in_time_order(Simulator(SimConfig(customers=customers, days=days, seed=seed)).records())
    with ExitStack() as stack:
        url = settings.redis_url.get_secret_value() if settings.redis_url else None
        if url is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="churnwatch-bench-")))
            url = f"redis://127.0.0.1:{stack.enter_context(redis_server(workdir)).port}/0"
        client = connect_redis_sync(url, settings.redis_cluster)
        plain, _ = asyncio.run(_feed(settings.model_copy(update={"competitor_days": 0}), url, records, batch))
        _clear(client)
        before = client.info("memory")["used_memory"]
        seconds, stages = asyncio.run(_feed(settings, url, records, batch))
        # Customers' states only: the report and baseline hashes are shared, not per customer.
        states = list(client.scan_iter(customer_state("*"), count=1000))
        sample = random.Random(seed).sample(states, k=min(2000, len(states)))
        per_key = memory_per_key(client, sample)
        id_bytes, ids = id_memory(client, sample)
        used = (client.info("memory")["used_memory"] - before) / customers
        numbers, book_bytes = book_memory(client)
        client.close()
    return StateBench(len(records), customers, days, round(len(records) / seconds), per_key,
                      round(used, 1), STATE.itemsize, id_bytes, ids, round(len(records) / plain), numbers,
                      round(book_bytes / max(numbers, 1), 1), round(book_bytes / customers, 1),
                      stage_figures(stages, len(records), seconds))


def stage_figures(seconds: dict[str, float], events: int, wall_s: float,
                  ceiling: float | None = None) -> dict[str, dict[str, float]]:
    """Per stage of the batches (metrics.STAGES), from the seconds each took over `events` in
    `wall_s`: microseconds per event, share of the wall time, and with a bare-consumer ceiling
    (events/s) the `ratio` of the rate the stage alone would allow to that ceiling, comparable
    with the worker's own ratio: the stage with the smallest is the next bottleneck. A stage that
    awaits also counts what the event loop ran meanwhile (`metrics.StageClock`), so its ratio is
    a lower bound. `other` is the wall time no stage was under way."""
    out: dict[str, dict[str, float]] = {}
    rest = wall_s
    for stage in STAGES:
        spent = seconds.get(stage, 0.0)
        rest -= spent
        if spent:
            out[stage] = _stage(spent, events, wall_s, ceiling)
    out["other"] = _stage(max(rest, 0.0), events, wall_s, ceiling)
    return out


def _stage(spent: float, events: int, wall_s: float, ceiling: float | None) -> dict[str, float]:
    us = spent / max(events, 1) * 1e6
    figures = {"us_per_event": round(us, 2), "share": round(spent / max(wall_s, 1e-9), 3)}
    if ceiling:
        figures["ratio"] = round(1e6 / max(us, 1e-3) / ceiling, 3)
    return figures


def _clear(client: redis.Redis) -> None:
    """Remove what a pass wrote (every key of churnwatch's), so the next starts from nothing."""
    found = [k for k in client.scan_iter(match=f"{keys.PREFIX}:*", count=1000)]
    for k in found:  # one by one: the keys span a cluster's slots
        client.unlink(k)


def book_memory(client: redis.Redis) -> tuple[int, int]:
    """(numbers, bytes) of the off-net book in Redis: its fields over every month's hash, and their
    `MEMORY USAGE`."""
    numbers = total = 0
    for _, book in book_hashes(client):
        numbers += client.hlen(book)
        total += client.memory_usage(book, samples=0) or 0
    return numbers, total


async def _feed(settings: Settings, url: str, records: list, batch: int) -> tuple[float, dict[str, float]]:
    """Seconds to run `records` through the pipeline in batches, and seconds per stage."""
    store = RedisWindowStore.of(connect_redis(url, settings.redis_cluster), settings)
    rules = load_rules([Path(settings.rules_dir)])
    metrics = Metrics(CollectorRegistry())
    processor = BatchProcessor(settings, store, lambda: rules, metrics)
    offsets: dict[str, int] = {}

    async def discard(out: BatchOutput) -> None:
        return None

    started = time.perf_counter()
    for k in range(0, len(records), batch):
        raws = []
        for r in records[k:k + batch]:
            topic = getattr(settings.topics, r.topic)
            raws.append(RawRecord(topic, 0, offsets.setdefault(topic, 0), r.key, r.value))
            offsets[topic] += 1
        await processor.run(raws, discard)
    elapsed = time.perf_counter() - started
    await store.close()
    stages = {s.labels["stage"]: s.value for s in metrics.stage_seconds.collect()[0].samples
              if s.name.endswith("_total")}
    return elapsed, stages


def memory_per_key(client: redis.Redis, keys: list) -> float:
    """Average `MEMORY USAGE` of `keys` (the value, the key and Redis's overhead for it)."""
    return round(sum(client.memory_usage(k, samples=0) or 0 for k in keys) / max(len(keys), 1), 1)


def id_memory(client: redis.Redis, keys: list) -> tuple[float, float]:
    """(bytes, ids) of the memory of event ids in the states at `keys`, on average."""
    raws = [client.get(k) for k in keys]  # one by one: the keys span a cluster's slots
    w = Windows.load([str(k) for k in keys], raws)
    memories = w.id_memories()
    size = [len(msgspec.msgpack.encode(ids)) if ids else 0 for ids in memories]
    count = [sum(len(ids) for ids in grouped(m).values()) // ID_DIGEST for m in memories]
    n = max(len(keys), 1)
    return round(sum(size) / n, 1), round(sum(count) / n, 1)


def bench_rules(settings: Settings, customers: int = 10_000, rules: int = 20, rounds: int = 5) -> tuple[int, float]:
    """Microseconds per customer to evaluate `rules` rules (the default pack, repeated) over one batch."""
    import dataclasses

    import numpy as np

    from stream_app.features.derive import FEATURES
    from stream_app.rules.evaluate import Streaks, evaluate

    base = load_rules([Path(settings.rules_dir)])
    pack = [dataclasses.replace(c, rule=c.rule.model_copy(update={"id": f"{c.rule.id}_{k}"}))
            for k in range(rules // len(base.rules) + 1) for c in base.rules][:rules]
    ruleset = dataclasses.replace(base, rules=tuple(pack), combinations=())
    rng = np.random.default_rng(0)
    features = {name: rng.normal(0, 100, customers) for name in FEATURES}
    periods = {"daily": np.full(customers, 1), "monthly": np.full(customers, 1)}
    started = time.perf_counter()
    for _ in range(rounds):
        evaluate(ruleset, features, Streaks.empty(customers, len(pack)), periods)
    return len(pack), round((time.perf_counter() - started) / rounds / customers * 1e6, 3)


def bench_model(settings: Settings, customers: int = 10_000,
                labels: int = 5_000) -> tuple[float, float, float, float]:
    """(microseconds per customer to score a batch, microseconds per label to learn) for the
    configured online model, then (microseconds per customer to score a batch, seconds to refit on
    `CHURNWATCH_MODEL_STORE_LABELS` labels) for the boosted trees: what a worker and the trainer spend."""
    import numpy as np

    from stream_app.model.boosted import TreeScorer, fit_trees
    from stream_app.model.scoring import NAMES, Learner, Scorer

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (max(customers, labels), len(NAMES)))
    y = (x[:, 0] + rng.normal(0, 1, len(x)) > 1.5).astype(int)
    learner = Learner(settings.model_kind, settings.validation_window, settings.call_budget_share)
    started = time.perf_counter()
    for xi, yi in zip(x[:labels], y[:labels]):
        learner.learn(xi, int(yi))
    learn_us = (time.perf_counter() - started) / labels * 1e6
    scorer = Scorer(learner.snapshot(1))
    started = time.perf_counter()
    scorer.score(x[:customers])
    score_us = (time.perf_counter() - started) / customers * 1e6
    stored = rng.normal(0, 1, (settings.model_store_labels, len(NAMES)))
    started = time.perf_counter()
    trees = TreeScorer(fit_trees(stored, (stored[:, 0] + rng.normal(0, 1, len(stored)) > 1.5).astype(int)), len(NAMES))
    refit_s = time.perf_counter() - started
    started = time.perf_counter()
    trees.score(x[:customers])
    tree_us = (time.perf_counter() - started) / customers * 1e6
    return round(score_us, 3), round(learn_us, 1), round(tree_us, 3), round(refit_s, 2)
