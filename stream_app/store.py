"""Where customer state lives: a small protocol, with Redis and in-memory implementations.

A batch reads every touched customer in one pipelined call and writes every changed one
in one round trip. The write is a compare-and-set on the state's write counter, done by a
Lua script per hash slot, so a worker that lost its partitions in a rebalance cannot
overwrite what the new owner wrote: its stale writes come back as conflicts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import Awaitable, Callable, Protocol, Sequence, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys
from .windows import CustomerState, decode_state, encode_state

__all__ = ["WindowStore", "RedisWindowStore", "MemoryWindowStore", "connect_redis", "retry_forever"]

log = logging.getLogger(__name__)

# KEYS: state keys. ARGV[1]: TTL in ms; then per key: expected write counter, new state, new counter.
_CAS = """
local ttl = ARGV[1]
local conflicts = {}
for i, key in ipairs(KEYS) do
  local expected = ARGV[3 * i - 1]
  local current = redis.call('HGET', key, 'q') or '0'
  if current == expected then
    redis.call('HSET', key, 's', ARGV[3 * i], 'q', ARGV[3 * i + 1])
    redis.call('PEXPIRE', key, ttl)
  else
    conflicts[#conflicts + 1] = i - 1
  end
end
return conflicts
"""


class WindowStore(Protocol):
    async def load(self, customers: Sequence[str]) -> list[CustomerState | None]: ...

    async def save(self, states: dict[str, CustomerState]) -> list[str]:
        """Write states whose `seq` is one past the stored one; return the customers that conflicted."""
        ...

    async def close(self) -> None: ...


class MemoryWindowStore:
    """The same contract in a dict: for unit tests and tools that need no server."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def load(self, customers: Sequence[str]) -> list[CustomerState | None]:
        return [decode_state(self.data[c]) if c in self.data else None for c in customers]

    async def save(self, states: dict[str, CustomerState]) -> list[str]:
        conflicts = []
        for customer, state in states.items():
            stored = decode_state(self.data[customer]).seq if customer in self.data else 0
            if stored != state.seq - 1:
                conflicts.append(customer)
            else:
                self.data[customer] = encode_state(state)
        return conflicts

    async def close(self) -> None:
        return None


def connect_redis(url: str, cluster: bool = False) -> aioredis.Redis | RedisCluster:
    """A client for `url`; `cluster=True` for Redis Cluster (keys are routed by slot)."""
    if cluster:
        return RedisCluster.from_url(url)
    return aioredis.Redis.from_url(url)


class RedisWindowStore:
    """Customer state in Redis, one hash per customer."""

    def __init__(self, client: aioredis.Redis | RedisCluster, ttl_s: int) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.ttl_ms = ttl_s * 1000
        self._cas = client.register_script(_CAS)

    async def load(self, customers: Sequence[str]) -> list[CustomerState | None]:
        pipe = self.client.pipeline(transaction=False)
        for c in customers:
            pipe.hget(keys.customer_state(c), "s")
        raws = await pipe.execute()
        return [decode_state(r) if r is not None else None for r in raws]

    async def save(self, states: dict[str, CustomerState]) -> list[str]:
        if not states:
            return []
        groups = self._by_slot(states)
        pipe = self.client.pipeline(transaction=False)
        for group in groups:
            argv: list[bytes | int | str] = [self.ttl_ms]
            for c in group:
                s = states[c]
                argv += [str(s.seq - 1), encode_state(s), str(s.seq)]
            # A Script queues EVALSHA on the pipeline and reloads itself if Redis lost it.
            await self._cas(keys=[keys.customer_state(c) for c in group], args=argv, client=pipe)
        replies = await pipe.execute()
        return [group[i] for group, conflicts in zip(groups, replies) for i in conflicts]

    def _by_slot(self, states: dict[str, CustomerState]) -> list[list[str]]:
        if not self.cluster:
            return [list(states)]
        slots: dict[int, list[str]] = defaultdict(list)
        for c in states:
            slots[key_slot(keys.customer_state(c).encode())].append(c)
        return list(slots.values())

    async def close(self) -> None:
        await self.client.aclose()


TRANSIENT = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError, asyncio.TimeoutError)


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

