"""The WindowStore contract, against a real redis-server and the in-memory store."""

import asyncio
import time
from typing import Callable

import pytest

from stream_app.connect.redis import connect_redis, connect_redis_sync
from stream_app.contracts import keys
from stream_app.contracts.calendar import month_index
from stream_app.windows.book import Entry, distinct, gather, in_months, sketch_bit
from stream_app.windows.scan import read_book, read_counts
from stream_app.windows.state import Windows
from stream_app.windows.store import MemoryWindowStore, RedisWindowStore, StateLost, WindowStore
from tests.conftest import flush
from tests.factories import snapshot_features

pytestmark = pytest.mark.integration


def seq(n: int) -> bytes:
    """A write counter as the store compares it."""
    return n.to_bytes(8, "little")


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
        assert await store.save({"8613800000001": (seq(0), blob)}) == []
        assert await store.load(["8613800000001"]) == [blob]
        await store.close()

    asyncio.run(go())


def test_a_stale_writer_is_refused(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        await store.save({"a1234": (seq(0), state("a1234", 1, 1)), "b1234": (seq(0), state("b1234", 1, 1))})
        assert await store.save({"a1234": (seq(1), state("a1234", 2, 10))}) == []
        # The stale writer read counter 1 too; its write must not land, the other one must.
        assert await store.save({"a1234": (seq(1), state("a1234", 2, 99)), "b1234": (seq(1), state("b1234", 2, 7))}) == ["a1234"]
        a, b = Windows.load(["a1234", "b1234"], await store.load(["a1234", "b1234"])).rec[["day0", "seq"]].tolist()
        assert a == (10, 2) and b == (7, 2)
        await store.close()

    asyncio.run(go())


def test_a_value_cut_short_is_compared_as_read_and_replaced(make_store: Callable[[], WindowStore]) -> None:
    """Values a worker cannot read (it sets them aside and starts the customer afresh): the write
    goes to them, compared with the counter's bytes as far as the value reaches, or as none."""
    async def go() -> None:
        store = make_store()
        cut = {"a1234": b"\x04", "b1234": b"\x04\x00\x07\x00\x00", "c1234": state("c1234", 3, 2)[:12]}
        for customer, raw in cut.items():
            if isinstance(store, RedisWindowStore):
                await store.client.set(keys.customer_state(customer), raw)
            else:
                store.data[customer] = raw
        w = Windows.load(list(cut), await store.load(list(cut)))
        assert [row for row, _ in w.quarantined] == [0, 1, 2]
        writes = dict(zip(cut, w.dump([0, 1, 2])))
        assert await store.stale(writes) == [] and await store.save(writes) == []
        # The count goes on from the bytes there were: none, 7 in the three bytes there, 3.
        assert [raw[2:10] for raw in await store.load(list(cut))] == [seq(1), seq(8), seq(4)]
        await store.close()

    asyncio.run(go())


def test_a_check_before_sending_finds_who_another_writer_moved_on(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        customers = [f"86138{i:08d}" for i in range(30)]  # spread over every node of a cluster
        await store.save({c: (seq(0), state(c, 1, 1)) for c in customers})
        mine = {c: (seq(1), state(c, 2, 2)) for c in customers}
        mine["8613800000099"] = (seq(0), state("8613800000099", 1, 2))  # a customer nobody wrote yet
        assert await store.stale(mine) == []
        await store.save({customers[3]: (seq(1), state(customers[3], 2, 9))})  # the other writer
        assert await store.stale(mine) == [customers[3]]
        await store.close()

    asyncio.run(go())


def test_the_applied_offsets_only_grow_and_are_written_even_without_a_state(
        make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        assert await store.applied() == {}
        customers = [f"86138{i:08d}" for i in range(30)]
        await store.save({c: (seq(0), state(c, 1, 1)) for c in customers}, None, {("cdr", 0): 41, ("cdr", 1): 7})
        await store.save({}, None, {("cdr", 0): 12, ("billing.v2", 3): 5})  # a batch of dead letters only
        assert await store.applied() == {("cdr", 0): 41, ("cdr", 1): 7, ("billing.v2", 3): 5}
        await store.close()

    asyncio.run(go())


def test_state_keys_share_a_hash_tag_and_expire(redis_url: str) -> None:
    import redis

    client, c = redis.Redis.from_url(redis_url), "8613800000007"

    async def go() -> None:
        store = RedisWindowStore(connect_redis(redis_url), ttl_s=3600)
        await store.save({c: (seq(0), state(c, 1, 1))}, renew=())  # a new key: its expiry starts whatever
        [key] = client.keys("*")
        assert key == b"cw:{8613800000007}:s"
        assert 3500 < client.ttl(key) <= 3600
        client.expire(key, 100)
        await store.save({c: (seq(1), state(c, 2, 1))}, renew=())  # kept
        assert 0 < client.ttl(key) <= 100 and await store.load([c]) == [state(c, 2, 1)]
        await store.save({c: (seq(2), state(c, 3, 1))}, renew={c})  # started again
        assert 3500 < client.ttl(key) <= 3600
        client.expire(key, 100)
        await store.save({c: (seq(3), state(c, 4, 1))})  # every write renews unless told
        assert 3500 < client.ttl(key) <= 3600
        await store.close()

    asyncio.run(go())


def test_report_increments_count_only_with_the_state_they_came_with(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        customers = [f"86138{i:08d}" for i in range(40)]  # spread over every node of a cluster
        await store.save({c: (seq(0), state(c, 1, 1)) for c in customers},
                         {c: {"2026-07|exits|voluntary": 1, "2026-07|region|north": 2} for c in customers})
        # A stale writer of the first customer: its state is refused, and so are its increments.
        await store.save({customers[0]: (seq(0), state(customers[0], 1, 5)), customers[1]: (seq(1), state(customers[1], 2, 5))},
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

    from stream_app.features.baseline_counts import KEEP_DAYS, BaselineSource, read_baselines
    from stream_app.features.baselines import BaselineRule, increments
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
        await store.save({c: (seq(0), state(c, 1, 1)) for c in customers}, report)
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


async def lose_everything(store: WindowStore) -> None:
    """What Redis restarted without persistence looks like to a worker that goes on."""
    if isinstance(store, MemoryWindowStore):
        store.data.clear(), store.offsets.clear()
    elif store.cluster:  # type: ignore[attr-defined]
        await store.client.flushall(target_nodes=store.client.PRIMARIES)  # type: ignore[attr-defined]
    else:
        await store.client.flushall()  # type: ignore[attr-defined]


def test_a_writer_finds_out_when_redis_has_lost_what_it_wrote(make_store: Callable[[], WindowStore]) -> None:
    """It must not write onto the empty database as if nothing had happened, nor send what it
    computed from it."""
    async def go() -> None:
        store = make_store()
        customers = [f"86138{i:08d}" for i in range(30)]
        await store.save({c: (seq(0), state(c, 1, 1)) for c in customers}, None, {("cdr", 0): 41})
        await lose_everything(store)
        mine = {customers[0]: (seq(0), state(customers[0], 1, 2))}
        with pytest.raises(StateLost):  # the check before anything of a batch is sent
            await store.stale(mine)
        assert await store.stale(mine) == []  # said once; meanwhile the worker rebuilds
        await store.save(mine, None, {("cdr", 0): 60})
        await lose_everything(store)
        with pytest.raises(StateLost):  # lost in the instant between the check and the write
            await store.save(mine, None, {("cdr", 0): 61})
        assert await store.load([customers[0]]) == [None] and await store.applied() == {}
        await store.close()

    asyncio.run(go())


def test_a_check_with_no_customer_to_check_still_finds_that_redis_lost_what_it_wrote(
        make_store: Callable[[], WindowStore]) -> None:
    """A batch with nothing to send checks no customer, but must still not write onto a Redis
    that lost the applied offsets: written, a partition recorded afresh would hide from the
    rebuild the records it lost."""
    async def go() -> None:
        store = make_store()
        assert await store.stale({}) == []  # nothing recorded yet: nothing to find lost
        customers = [f"86138{i:08d}" for i in range(30)]  # on every node of a cluster
        await store.save({c: (seq(0), state(c, 1, 1)) for c in customers}, None, {("cdr", 0): 41})
        assert await store.stale({}) == []
        await lose_everything(store)
        with pytest.raises(StateLost):
            await store.stale({})
        await store.close()

    asyncio.run(go())


def test_customers_are_counted_exactly_beside_the_services_own_keys(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> int:
        store = make_store()
        customers = [f"86138{k:08d}" for k in range(25)]
        await store.save({c: (seq(0), state(c, 1, 5)) for c in customers}, {customers[0]: {"2026-08|adds": 1}},
                         {("cdr", 0): 10, ("billing", 3): 7})
        await store.quarantine({"86139000000001": b"unreadable", customers[1]: b"unreadable too"})
        if isinstance(store, RedisWindowStore):  # what the trainer and the call plan add beside the states
            for key in (keys.MODEL, keys.MODEL_VERSION, keys.TRAINER_STATE, keys.TRAINER_LEASE, keys.CALL_PLAN):
                await store.client.set(key, b"x")
        counted = await store.customers()
        await store.close()
        return counted

    assert asyncio.run(go()) == 25


@pytest.fixture(params=["memory", "redis", "redis_cluster"])
def book_store(request: pytest.FixtureRequest) -> tuple[WindowStore, Callable[[list[str]], dict[str, Entry]]]:
    """A store, and what reads its off-net book of some months."""
    if request.param == "memory":
        memory = MemoryWindowStore()
        return memory, lambda months: in_months(memory.book, months)
    cluster = request.param == "redis_cluster"
    url = request.getfixturevalue("redis_cluster_url" if cluster else "redis_url")
    flush(url, cluster)
    reader = connect_redis_sync(url, cluster)
    request.addfinalizer(reader.close)
    return RedisWindowStore(connect_redis(url, cluster), ttl_s=3600), lambda months: read_book(reader, months)


def test_the_off_net_book_counts_the_calls_of_customers_written_once_and_keeps_three_who_know_a_number(
        book_store: tuple[WindowStore, Callable[[list[str]], dict[str, Entry]]]) -> None:
    store, read = book_store
    customers = [f"86138{i:08d}" for i in range(40)]  # spread over every node of a cluster

    async def go() -> list[str]:
        calls = {c: {("2026-09", "op-b|8613700000001"): (2, 30), ("2026-10", "op-b|8613700000001"): (1, 5)}
                 for c in customers}
        calls[customers[0]][("2026-10", "op-c|8613700000002")] = (4, 100)
        await store.save({c: (seq(0), state(c, 1, 1)) for c in customers}, None, None, calls)
        # A stale writer's batch for the first ten, and a fresh one for the next ten: only the fresh adds.
        again = {c: (seq(0), state(c, 2, 2)) for c in customers[:10]} | {
            c: (seq(1), state(c, 2, 2)) for c in customers[10:20]}
        refused = await store.save(again, None, None, {c: calls[c] for c in customers[:20]})
        count = await store.customers()
        await store.close()
        assert count == len(customers)  # the book's hashes are not customers
        return refused

    assert sorted(asyncio.run(go())) == customers[:10]
    both = read(["2026-09", "2026-10"])
    assert set(both) == {"op-b|8613700000001", "op-c|8613700000002"}
    b = both["op-b|8613700000001"]
    assert (b.calls, b.tenths) == (3 * 50, 35 * 50)  # 40 customers once, 10 of them twice
    # The first three of each month on each node, each once.
    assert len(b.acquaintances) == len(set(b.acquaintances)) >= 3 and set(b.acquaintances) <= set(customers)
    assert 32 <= distinct(b.sketch) <= 50  # 40 customers, however many times each
    assert both["op-c|8613700000002"].acquaintances == [customers[0]]
    september = read(["2026-09"])["op-b|8613700000001"]
    assert (september.calls, september.tenths) == (2 * 50, 30 * 50)
    assert len(september.acquaintances) % 3 == 0  # three on each node that holds some of the customers


def test_a_competitor_or_peer_named_with_separators_cannot_break_the_books_lines(
        book_store: tuple[WindowStore, Callable[[list[str]], dict[str, Entry]]]) -> None:
    store, read = book_store
    customers = ["8613800000001", "8613800000002"]
    month = month_index(2026, 9)
    rows = [(0, month, "op\tb|c,d\n", "86137|x\ty", 12), (1, month, "op-c", "8613700000009", 30)]

    async def go() -> None:
        await store.save({c: (seq(0), state(c, 1, 1)) for c in customers}, None, None, gather(customers, rows, str))
        await store.close()

    asyncio.run(go())
    book = read(["2026-09"])
    assert set(book) == {"op_b_c_d_|86137_x_y", "op-c|8613700000009"}
    assert book["op_b_c_d_|86137_x_y"].acquaintances == [customers[0]] and book["op-c|8613700000009"].tenths == 30


def test_the_scripts_book_holds_what_the_in_memory_book_holds(redis_url: str) -> None:
    """Every word of the sketch, counts added over several writes, records made and then added to:
    the script changes only what a customer's calls change, and the same as `book.add`."""
    flush(redis_url, False)
    customers = [f"86138{i:08d}" for i in range(60)]  # their bits fall in every word of the sketch
    numbers = [f"op-b|86137{k:08d}" for k in range(4)]
    writes = [{c: {("2026-09", numbers[(i + r) % 4]): (1 + r, 7 * i + r), ("2026-10", numbers[i % 2]): (2, 9)}
               for i, c in enumerate(customers) if (i + r) % 3} for r in range(3)]
    memory, redis = MemoryWindowStore(), RedisWindowStore(connect_redis(redis_url, False), ttl_s=3600)

    async def go() -> None:
        written = dict.fromkeys(customers, 0)
        for calls in writes:
            for store in (memory, redis):
                states = {c: (seq(written[c]), state(c, written[c] + 1, 1)) for c in calls}
                assert await store.save(states, None, None, calls) == []  # every write lands
            written.update({c: written[c] + 1 for c in calls})
        await redis.close()

    asyncio.run(go())
    reader = connect_redis_sync(redis_url, False)
    for month in ("2026-09", "2026-10"):
        expected, found = in_months(memory.book, [month]), read_book(reader, [month])
        assert set(found) == set(expected) and len(found) == (4 if month == "2026-09" else 2)
        for name, entry in expected.items():
            got = found[name]
            assert (got.calls, got.tenths, got.sketch) == (entry.calls, entry.tenths, entry.sketch), (month, name)
            assert sorted(got.acquaintances) == sorted(entry.acquaintances)
    reader.close()
    assert {sketch_bit(c) // 32 for c in customers} == set(range(8))


def test_a_redis_that_forgot_the_scripts_is_sent_them_again(redis_url: str) -> None:
    # A restarted Redis knows no script: the store sends the text, once, where the digest failed.
    async def go() -> None:
        store = RedisWindowStore(connect_redis(redis_url), ttl_s=3600)
        await store.save({"a1234": (seq(0), state("a1234", 1, 1))})
        await store.client.script_flush()
        assert await store.stale({"a1234": (seq(1), b"")}) == []
        await store.client.script_flush()
        assert await store.save({"a1234": (seq(1), state("a1234", 2, 3))}, None, {("cdr", 0): 7}) == []
        assert await store.load(["a1234"]) == [state("a1234", 2, 3)] and await store.applied() == {("cdr", 0): 7}
        await store.close()

    asyncio.run(go())


def test_a_write_is_all_on_its_way_to_redis_once_it_says_so(redis_url: str) -> None:
    # The worker goes on with the next batch, without yielding to the event loop for a while, once
    # `sent` is set: Redis must then have every byte of the write, or it waits for that batch.
    # 10 MB, more than the socket's send buffer grows to (4 MB at most by default on Linux).
    customers = [f"86139{i:08d}" for i in range(10_000)]
    writes = {c: (seq(0), state(c, 1, 1) + bytes(1000)) for c in customers}
    watcher = connect_redis_sync(redis_url)

    async def go() -> bool:
        store = RedisWindowStore(connect_redis(redis_url), ttl_s=3600)
        await store.save({"a1234": (seq(0), state("a1234", 1, 1))})  # connected, the script loaded
        sent = asyncio.Event()
        task = asyncio.create_task(store.save(writes, sent=sent))
        await sent.wait()
        landed = False
        for _ in range(200):  # the event loop held: nothing more of the write can leave this process
            if watcher.exists(keys.customer_state(customers[-1])):
                landed = True
                break
            time.sleep(0.05)
        assert await task == []
        await store.close()
        return landed

    assert asyncio.run(go())
    watcher.close()
