"""The WindowStore contract, against a real redis-server and the in-memory store."""

import asyncio
from typing import Callable

import pytest

from stream_app.reports import read_counts
from stream_app.store import MemoryWindowStore, RedisWindowStore, WindowStore, connect_redis
from stream_app.state import Windows
from tests.conftest import flush
from tests.factories import snapshot_features

pytestmark = pytest.mark.integration


def state(customer: str, seq: int, day0: int) -> bytes:
    """A state whose stored write counter is `seq`."""
    w = Windows.load([customer], [None])
    w.rec["seq"], w.rec["day0"] = seq - 1, day0
    return w.dump([0])[0][1]


@pytest.fixture(params=["memory", "redis", "redis_cluster"])
def make_store(request: pytest.FixtureRequest) -> Callable[[], WindowStore]:
    if request.param == "memory":
        shared = MemoryWindowStore()
        return lambda: shared
    cluster = request.param == "redis_cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    flush(url, cluster)
    return lambda: RedisWindowStore(connect_redis(url, cluster), ttl_s=3600)


def test_a_new_customer_loads_as_none_and_saves(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        assert await store.load(["8613800000001"]) == [None]
        blob = state("8613800000001", 1, 5)
        assert await store.save({"8613800000001": (0, blob)}) == []
        assert await store.load(["8613800000001"]) == [blob]
        await store.close()

    asyncio.run(go())


def test_a_stale_writer_is_refused(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        await store.save({"a1234": (0, state("a1234", 1, 1)), "b1234": (0, state("b1234", 1, 1))})
        assert await store.save({"a1234": (1, state("a1234", 2, 10))}) == []
        # The stale writer read counter 1 too; its write must not land, the other one must.
        assert await store.save({"a1234": (1, state("a1234", 2, 99)), "b1234": (1, state("b1234", 2, 7))}) == ["a1234"]
        a, b = Windows.load(["a1234", "b1234"], await store.load(["a1234", "b1234"])).rec[["day0", "seq"]].tolist()
        assert a == (10, 2) and b == (7, 2)
        await store.close()

    asyncio.run(go())


def test_state_keys_share_a_hash_tag_and_expire(redis_url: str) -> None:
    import redis

    async def go() -> None:
        store = RedisWindowStore(connect_redis(redis_url), ttl_s=3600)
        await store.save({"8613800000007": (0, state("8613800000007", 1, 1))})
        await store.close()

    asyncio.run(go())
    client = redis.Redis.from_url(redis_url)
    [key] = client.keys("*")
    assert key == b"cw:{8613800000007}:s"
    assert 3500 < client.ttl(key) <= 3600


def test_report_increments_count_only_with_the_state_they_came_with(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        customers = [f"86138{i:08d}" for i in range(40)]  # spread over every node of a cluster
        await store.save({c: (0, state(c, 1, 1)) for c in customers},
                         {c: {"2026-07|exits|voluntary": 1, "2026-07|region|north": 2} for c in customers})
        # A stale writer of the first customer: its state is refused, and so are its increments.
        await store.save({customers[0]: (0, state(customers[0], 1, 5)), customers[1]: (1, state(customers[1], 2, 5))},
                         {customers[0]: {"2026-07|exits|voluntary": 1}, customers[1]: {"2026-08|adds": 1}})
        if isinstance(store, MemoryWindowStore):
            counts = dict(store.report)
        else:
            sync = redis_client(store)
            counts = read_counts(sync)
            sync.close()
        assert counts == {"2026-07|exits|voluntary": 40, "2026-07|region|north": 80, "2026-08|adds": 1}
        await store.close()

    asyncio.run(go())


def redis_client(store: RedisWindowStore):
    """A synchronous client to the same server or cluster, as the report command uses."""
    import redis
    from redis.cluster import RedisCluster

    kwargs = store.client.get_connection_kwargs() if not store.cluster else None
    if store.cluster:
        node = store.client.get_nodes()[0]
        return RedisCluster(host=node.host, port=node.port)
    return redis.Redis(host=kwargs["host"], port=kwargs["port"], db=kwargs.get("db", 0))


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "redis_cluster"])
def test_baselines_read_back_the_same_by_command_and_by_worker_and_old_days_are_pruned(
        request: pytest.FixtureRequest, cluster: bool) -> None:
    from datetime import date, timedelta

    import numpy as np
    from prometheus_client import CollectorRegistry

    from stream_app.baseline_store import KEEP_DAYS, BaselineSource, read_baselines
    from stream_app.baselines import BaselineRule, increments
    from stream_app.metrics import Metrics

    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    flush(url, cluster)
    today, old = date(2026, 10, 8), date(2026, 10, 8) - timedelta(days=KEEP_DAYS + 5)
    customers = [f"86138{i:08d}" for i in range(300)]  # spread over every node of a cluster
    n = len(customers)
    features = snapshot_features(n, mou_out_mom=np.linspace(-0.5, 0.5, n), mou_out_m2=np.full(n, 300.0))
    report = increments(customers, features, np.full(n, today.toordinal()))
    for c, old_counts in increments(customers, features, np.full(n, old.toordinal())).items():
        report[c].update(old_counts)
    rule = BaselineRule(min_samples=200)

    async def go() -> None:
        store = RedisWindowStore(connect_redis(url, cluster), ttl_s=3600)
        await store.save({c: (0, state(c, 1, 1)) for c in customers}, report)
        sync = redis_client(store)
        by_command = read_baselines(sync, rule)
        source = BaselineSource(rule, Metrics(CollectorRegistry()))
        await source.refresh(store.client)
        # Compared as text, so that the NaNs of too-small histograms compare equal.
        assert repr(sorted(by_command.values.items())) == repr(sorted(source.current.values.items()))
        assert by_command.samples == source.current.samples and by_command.day == today
        p50, samples = source.current.current("mid_high_end", "mou_out_mom")
        assert samples == n and p50[50] == pytest.approx(0.0, abs=0.03)
        # The refresh dropped the histogram older than KEEP_DAYS; the report counters are untouched.
        left = read_counts(sync, histograms=True)
        assert left and not any(old.isoformat() in name for name in left)
        assert read_counts(sync) == {}
        sync.close()
        await store.close()

    asyncio.run(go())
