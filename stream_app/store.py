"""Where customer state lives: a small protocol, with Redis and in-memory implementations.

A batch reads every touched customer in one pipelined call and writes every changed one
in one round trip. The write is a compare-and-set on the state's write counter, done by a
Lua script per hash slot, so a worker that lost its partitions in a rebalance cannot
overwrite what the new owner wrote: its stale writes come back as conflicts.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from datetime import date
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import keys
from .baselines import PREFIX as BASELINE_PREFIX
from .state import SEQ_OFFSET

__all__ = ["Write", "WindowStore", "RedisWindowStore", "MemoryWindowStore", "connect_redis", "connect_redis_sync",
           "retry_forever"]

log = logging.getLogger(__name__)

# keys: state keys. argv[1]: TTL in ms, argv[2]: where the 8-byte write counter starts (1-based),
# argv[3]: the report counters' hash, argv[4]: their increments as lines "<key index>\t<field>\t<delta>";
# then per key: the counter the writer read, and the new state (which carries the next counter).
# A customer's increments are added only if their state was written: both count once.
_CAS_FUNCTION = """
local function cas(keys, argv)
  local ttl, at, report = argv[1], tonumber(argv[2]), argv[3]
  local conflicts, refused = {}, {}
  for i, key in ipairs(keys) do
    local current = redis.call('GET', key)
    local seq = current and string.sub(current, at, at + 7) or string.rep('\\0', 8)
    if seq == argv[2 * i + 3] then
      redis.call('SET', key, argv[2 * i + 4], 'PX', ttl)
    else
      conflicts[#conflicts + 1] = i - 1
      refused[i - 1] = true
    end
  end
  for i, field, delta in string.gmatch(argv[4], '(%d+)\\t([^\\t\\n]+)\\t(-?%d+)\\n') do
    if not refused[tonumber(i)] then redis.call('HINCRBY', report, field, delta) end
  end
  return conflicts
end
"""
_CAS = _CAS_FUNCTION + "return cas(KEYS, ARGV)"
# On a cluster the keys of one call share a node, not a slot. Redis refuses declared keys of
# several slots, so they travel in ARGV, counted by ARGV[1] (Redis 7 reads the flag). The
# report hash of a call is one whose slot that node serves (`_report_key`).
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


#: Report counter increments per customer (`report_facts.report_increments`).
Increments = dict[str, dict[str, int]]


class WindowStore(Protocol):
    async def load(self, customers: Sequence[str]) -> list[bytes | None]: ...

    async def save(self, writes: dict[str, Write], report: Increments | None = None) -> list[str]:
        """Write each state whose stored counter is still the one read, and add the report increments
        of the customers written; return the customers that conflicted."""
        ...

    async def close(self) -> None: ...


class MemoryWindowStore:
    """The same contract in a dict: for unit tests and tools that need no server."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.report: collections.Counter[str] = collections.Counter()
        # The segment histograms share the report hash in Redis; readers keep them apart (read_counts).
        self.baselines: collections.Counter[str] = collections.Counter()

    async def load(self, customers: Sequence[str]) -> list[bytes | None]:
        return [self.data.get(c) for c in customers]

    async def save(self, writes: dict[str, Write], report: Increments | None = None) -> list[str]:
        conflicts = []
        for customer, (expected, blob) in writes.items():
            stored = _seq_of(self.data[customer]) if customer in self.data else 0
            if stored != expected:
                conflicts.append(customer)
            else:
                self.data[customer] = blob
                for name, delta in (report or {}).get(customer, {}).items():
                    (self.baselines if name.startswith(BASELINE_PREFIX) else self.report)[name] += delta
        return conflicts

    def prune_baselines(self, before: date) -> None:
        """Drop the histograms of days before `before`, as the workers prune theirs in Redis."""
        cutoff = before.isoformat()
        for name in [n for n in self.baselines if n.split("|")[1] < cutoff]:
            del self.baselines[name]

    async def close(self) -> None:
        return None


def connect_redis(url: str, cluster: bool = False) -> aioredis.Redis | RedisCluster:
    """A client for `url`; `cluster=True` for Redis Cluster (keys are routed by slot)."""
    if cluster:
        return RedisCluster.from_url(url)
    return aioredis.Redis.from_url(url)


def connect_redis_sync(url: str, cluster: bool = False) -> Any:
    """A blocking client, for commands that read or write a few keys (reports, call plans)."""
    import redis
    from redis.cluster import RedisCluster as SyncCluster

    return SyncCluster.from_url(url) if cluster else redis.Redis.from_url(url)


class RedisWindowStore:
    """Customer state in Redis, one string per customer."""

    def __init__(self, client: aioredis.Redis | RedisCluster, ttl_s: int) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.ttl_ms = ttl_s * 1000
        self._cas = client.register_script(_CAS)
        self._slots_known = False
        self._report_keys: dict[str, str] = {}  # cluster node -> a report hash it serves

    async def load(self, customers: Sequence[str]) -> list[bytes | None]:
        if not self.cluster:  # one command: a pipeline costs the client ~16 us per queued GET
            return await self.client.mget([keys.customer_state(c) for c in customers])
        pipe = self.client.pipeline(transaction=False)
        for c in customers:
            pipe.get(keys.customer_state(c))
        return await pipe.execute()

    async def save(self, writes: dict[str, Write], report: Increments | None = None) -> list[str]:
        if not writes:
            return []
        report = report or {}
        if not self.cluster:
            group = list(writes)
            pipe = self.client.pipeline(transaction=False)
            # A Script queues EVALSHA on the pipeline and reloads itself if Redis lost it.
            await self._cas(keys=[keys.customer_state(c) for c in group],
                            args=self._argv(group, writes, report, keys.report(0)), client=pipe)
            [conflicts] = await pipe.execute()
            return [group[i] for i in conflicts]
        groups = await self._by_node(writes)
        # Redis Cluster refuses scripts in pipelines: one EVAL per node, all under way at once.
        replies = await asyncio.gather(*(
            self.client.execute_command("EVAL", _CLUSTER_CAS, 0, len(group),
                                        *(keys.customer_state(c) for c in group),
                                        *self._argv(group, writes, report, self._report_key(node)),
                                        target_nodes=node)
            for node, group in groups))
        return [group[i] for (_, group), conflicts in zip(groups, replies) for i in conflicts]

    def _argv(self, group: list[str], writes: dict[str, Write], report: Increments,
              report_key: str) -> list[bytes | int | str]:
        lines = "".join(f"{i}\t{name}\t{delta}\n" for i, c in enumerate(group)
                        for name, delta in report.get(c, {}).items())
        argv: list[bytes | int | str] = [self.ttl_ms, SEQ_OFFSET + 1, report_key, lines]
        for c in group:
            expected, blob = writes[c]
            argv += [expected.to_bytes(8, "little"), blob]
        return argv

    def _report_key(self, node: Any) -> str:
        """A report hash whose slot `node` serves, so its script may add to it."""
        cached = self._report_keys.get(node.name)
        if cached is not None and self.client.get_node_from_key(cached).name == node.name:
            return cached
        shard = next(n for n in range(1 << 16) if self.client.get_node_from_key(keys.report(n)).name == node.name)
        self._report_keys[node.name] = keys.report(shard)
        return keys.report(shard)

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

