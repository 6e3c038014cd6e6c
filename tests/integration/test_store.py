"""The WindowStore contract, against a real redis-server and the in-memory store."""

import asyncio
from typing import Callable

import pytest

from stream_app.store import MemoryWindowStore, RedisWindowStore, WindowStore, connect_redis
from stream_app.windows import CustomerState

pytestmark = pytest.mark.integration


@pytest.fixture(params=["memory", "redis"])
def make_store(request: pytest.FixtureRequest) -> Callable[[], WindowStore]:
    if request.param == "memory":
        shared = MemoryWindowStore()
        return lambda: shared
    url = request.getfixturevalue("redis_url")
    return lambda: RedisWindowStore(connect_redis(url), ttl_s=3600)


def test_a_new_customer_loads_as_none_and_saves(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        assert await store.load(["8613800000001"]) == [None]
        state = CustomerState(seq=1, day0=5, daily=b"\x01" * 8)
        assert await store.save({"8613800000001": state}) == []
        [back] = await store.load(["8613800000001"])
        assert back == state
        await store.close()

    asyncio.run(go())


def test_a_stale_writer_is_refused(make_store: Callable[[], WindowStore]) -> None:
    async def go() -> None:
        store = make_store()
        await store.save({"a1234": CustomerState(seq=1), "b1234": CustomerState(seq=1)})
        owner, stale = CustomerState(seq=2, day0=10), CustomerState(seq=2, day0=99)
        assert await store.save({"a1234": owner}) == []
        # The stale writer read seq 1 too; its write must not land.
        assert await store.save({"a1234": stale, "b1234": CustomerState(seq=2)}) == ["a1234"]
        a, b = await store.load(["a1234", "b1234"])
        assert a is not None and a.day0 == 10 and b is not None and b.seq == 2
        await store.close()

    asyncio.run(go())


def test_state_keys_share_a_hash_tag_and_expire(redis_url: str) -> None:
    import redis

    async def go() -> None:
        store = RedisWindowStore(connect_redis(redis_url), ttl_s=3600)
        await store.save({"8613800000007": CustomerState(seq=1)})
        await store.close()

    asyncio.run(go())
    client = redis.Redis.from_url(redis_url)
    [key] = client.keys("*")
    assert key == b"cw:{8613800000007}:s"
    assert 3500 < client.ttl(key) <= 3600
