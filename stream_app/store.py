"""Where customer state lives: a small protocol, with Redis and in-memory implementations.

A batch reads every touched customer in one pipelined call and writes every changed one
in one round trip. The write is a compare-and-set on the state's write counter, done by a
Lua script per hash slot, so a worker that lost its partitions in a rebalance cannot
overwrite what the new owner wrote: its stale writes come back as conflicts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys
from .state import SEQ_OFFSET

__all__ = ["Write", "WindowStore", "RedisWindowStore", "MemoryWindowStore", "connect_redis", "retry_forever"]

log = logging.getLogger(__name__)

# keys: state keys. argv[1]: TTL in ms, argv[2]: where the 8-byte write counter starts (1-based);
# then per key: the counter the writer read, and the new state (which carries the next counter).
_CAS_FUNCTION = """
local function cas(keys, argv)
  local ttl, at = argv[1], tonumber(argv[2])
  local conflicts = {}
  for i, key in ipairs(keys) do
    local current = redis.call('GET', key)
    local seq = current and string.sub(current, at, at + 7) or string.rep('\\0', 8)
    if seq == argv[2 * i + 1] then
      redis.call('SET', key, argv[2 * i + 2], 'PX', ttl)
    else
      conflicts[#conflicts + 1] = i - 1
    end
  end
  return conflicts
end
"""
_CAS = _CAS_FUNCTION + "return cas(KEYS, ARGV)"
# On a cluster the keys of one call share a node, not a slot. Redis refuses declared keys of
# several slots, so they travel in ARGV, counted by ARGV[1] (Redis 7 reads the flag).
_CLUSTER_CAS = "#!lua flags=allow-cross-slot-keys\n" + _CAS_FUNCTION + """
local n, keys, rest = tonumber(ARGV[1]), {}, {}
for i = 1, n do keys[i] = ARGV[i + 1] end
for i = n + 2, #ARGV do rest[#rest + 1] = ARGV[i] end
return cas(keys, rest)
"""

#: What a batch writes per customer: the write counter it read, and the new state.
Write = tuple[int, bytes]


def _seq_of(raw: bytes) -> int:
    return int.from_bytes(raw[SEQ_OFFSET:SEQ_OFFSET + 8], "little")


class WindowStore(Protocol):
    async def load(self, customers: Sequence[str]) -> list[bytes | None]: ...

    async def save(self, writes: dict[str, Write]) -> list[str]:
        """Write each state whose stored counter is still the one read; return the customers that conflicted."""
        ...

    async def close(self) -> None: ...


class MemoryWindowStore:
    """The same contract in a dict: for unit tests and tools that need no server."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def load(self, customers: Sequence[str]) -> list[bytes | None]:
        return [self.data.get(c) for c in customers]

    async def save(self, writes: dict[str, Write]) -> list[str]:
        conflicts = []
        for customer, (expected, blob) in writes.items():
            stored = _seq_of(self.data[customer]) if customer in self.data else 0
            if stored != expected:
                conflicts.append(customer)
            else:
                self.data[customer] = blob
        return conflicts

    async def close(self) -> None:
        return None


def connect_redis(url: str, cluster: bool = False) -> aioredis.Redis | RedisCluster:
    """A client for `url`; `cluster=True` for Redis Cluster (keys are routed by slot)."""
    if cluster:
        return RedisCluster.from_url(url)
    return aioredis.Redis.from_url(url)


class RedisWindowStore:
    """Customer state in Redis, one string per customer."""

    def __init__(self, client: aioredis.Redis | RedisCluster, ttl_s: int) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.ttl_ms = ttl_s * 1000
        self._cas = client.register_script(_CAS)
        self._slots_known = False

    async def load(self, customers: Sequence[str]) -> list[bytes | None]:
        pipe = self.client.pipeline(transaction=False)
        for c in customers:
            pipe.get(keys.customer_state(c))
        return await pipe.execute()

    async def save(self, writes: dict[str, Write]) -> list[str]:
        if not writes:
            return []
        if not self.cluster:
            group = list(writes)
            pipe = self.client.pipeline(transaction=False)
            # A Script queues EVALSHA on the pipeline and reloads itself if Redis lost it.
            await self._cas(keys=[keys.customer_state(c) for c in group], args=self._argv(group, writes), client=pipe)
            [conflicts] = await pipe.execute()
            return [group[i] for i in conflicts]
        groups = await self._by_node(writes)
        # Redis Cluster refuses scripts in pipelines: one EVAL per node, all under way at once.
        replies = await asyncio.gather(*(
            self.client.execute_command("EVAL", _CLUSTER_CAS, 0, len(group),
                                        *(keys.customer_state(c) for c in group), *self._argv(group, writes),
                                        target_nodes=node)
            for node, group in groups))
        return [group[i] for (_, group), conflicts in zip(groups, replies) for i in conflicts]

    def _argv(self, group: list[str], writes: dict[str, Write]) -> list[bytes | int]:
        argv: list[bytes | int] = [self.ttl_ms, SEQ_OFFSET + 1]
        for c in group:
            expected, blob = writes[c]
            argv += [expected.to_bytes(8, "little"), blob]
        return argv

    async def _by_node(self, writes: dict[str, Write]) -> list[tuple[Any, list[str]]]:
        """(cluster node, its customers) for every node that serves one of `writes`."""
        if not self._slots_known:
            await self.client.initialize()  # the slot map
            self._slots_known = True
        groups: dict[str, tuple[Any, list[str]]] = {}
        for c in writes:
            node = self.client.get_node_from_key(keys.customer_state(c))
            groups.setdefault(node.name, (node, []))[1].append(c)
        return list(groups.values())

    async def close(self) -> None:
        await self.client.aclose()


# Including a cluster's slots moving between nodes: the next try groups customers afresh.
TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, asyncio.TimeoutError,
             MovedError, AskError, TryAgainError, ClusterDownError)


R = TypeVar("R")


async def retry_forever(
    what: str, call: Callable[[], Awaitable[R]], max_backoff_s: float,
    on_error: Callable[[BaseException], None] | None = None,
) -> R:
    """Await `call()` until it succeeds, backing off on transient errors.

    Events must never be acked while Redis is away, so the batch waits here instead of
    raising (faust acks a batch whose agent raised).
    """
    backoff = 0.1
    while True:
        try:
            return await call()
        except TRANSIENT as exc:
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, backoff)
            if on_error is not None:
                on_error(exc)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff_s)

