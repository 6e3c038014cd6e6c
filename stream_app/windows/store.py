"""Where customer state lives: a small protocol, with Redis and in-memory implementations.

A batch reads every touched customer in one pipelined call and writes every changed one
in one round trip. The write is a compare-and-set on the state's write counter, done by a
Lua script per hash slot, so a worker that lost its partitions in a rebalance cannot
overwrite what the new owner wrote: its stale writes come back as conflicts.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from datetime import date
from itertools import chain
from typing import Any, Collection, Protocol, Sequence

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from stream_app.contracts import keys
from stream_app.errors import ChurnwatchError
from stream_app.settings import Settings
from stream_app.windows.book import Book, Entry, book_lines
from stream_app.windows.book import add as book_add
from stream_app.windows.scripts import CAS, CLUSTER_CAS, CLUSTER_STALE, STALE
from stream_app.windows.state import RENEWAL_SLACK_S, SEQ_OFFSET, stored_seq

__all__ = ["Applied", "StateLost", "Write", "WindowStore", "RedisWindowStore", "MemoryWindowStore", "state_ttl_s"]

#: What a batch writes per customer: the write counter's bytes as it read them, and the new state.
Write = tuple[bytes, bytes]


def _counted(expected: bytes) -> bytes:
    """A write counter's bytes as read (`state.stored_seq`), after their count in a byte."""
    return bytes([len(expected)]) + expected


def state_ttl_s(idle_expiry_days: int, max_clock_skew_s: float) -> int:
    """A state's time to live from a write that renews it (`Windows.renewed`): it outlives its
    customer's last event by at least `idle_expiry_days`. An event dated up to the clock skew
    ahead moves the newest day on early, and the days it skips renew nothing: the skew is added."""
    return idle_expiry_days * 86_400 + math.ceil(max_clock_skew_s) + RENEWAL_SLACK_S


#: Report counter increments per customer (`reports.facts.report_increments`).
Increments = dict[str, dict[str, int]]
#: The newest offset of a batch per input partition: (topic, partition) -> offset.
Applied = dict[tuple[str, int], int]


class StateLost(ChurnwatchError):
    """Redis no longer holds an applied offset this writer recorded: it lost data (a restart
    without persistence, a failover to a replica behind). Nothing of the batch was written."""


class WindowStore(Protocol):
    async def load(self, customers: Sequence[str]) -> list[bytes | None]: ...

    async def stale(self, writes: dict[str, Write]) -> list[str]:
        """The customers whose stored counter is no longer the one read (another writer moved
        them); `StateLost` if an applied offset this store recorded is gone. A check before a
        batch sends anything: no output is built on a state that moved or vanished."""
        ...

    async def save(self, writes: dict[str, Write], report: Increments | None = None,
                   applied: Applied | None = None, book: Book | None = None,
                   renew: Collection[str] | None = None, sent: asyncio.Event | None = None) -> list[str]:
        """Write each state whose stored counter is still the one read, add the report increments
        and the off-net book's calls of the customers written, and raise the applied offsets
        (`applied`), all at once; return the customers that conflicted. `StateLost` if an applied
        offset this store recorded before is gone: then nothing is written. The states of `renew`
        (None: all), and any written where there was none, expire the store's time to live after
        this write; the others keep the expiry they had. `sent` is set once the write is on its
        way, all of it: from then on the store runs it, and the caller may go on meanwhile. A
        store that cannot tell (a cluster's, whose calls go out node by node) leaves it unset,
        and the caller waits for the write to end."""
        ...

    async def applied(self) -> Applied:
        """The newest offset applied per input partition; a partition missing was never applied,
        or its record was lost with Redis."""
        ...

    async def quarantine(self, states: dict[str, bytes]) -> None:
        """Set aside states that could not be read, for a person to look at."""
        ...

    async def customers(self) -> int:
        """How many customers have state."""
        ...

    async def close(self) -> None: ...


class MemoryWindowStore:
    """The same contract in a dict, whose states never expire: for unit tests and tools that need no server."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.report: collections.Counter[str] = collections.Counter()
        # The segment histograms share the report hash in Redis; readers keep them apart (read_counts).
        self.baselines: collections.Counter[str] = collections.Counter()
        self.quarantined: dict[str, bytes] = {}
        self.offsets: Applied = {}
        self.book: dict[str, dict[str, Entry]] = {}  # month -> "competitor|number" -> its record
        self._recorded: set[tuple[str, int]] = set()

    async def load(self, customers: Sequence[str]) -> list[bytes | None]:
        return [self.data.get(c) for c in customers]

    async def stale(self, writes: dict[str, Write]) -> list[str]:
        if any(where not in self.offsets for where in self._recorded):
            self._recorded.clear()
            raise StateLost("an applied offset recorded before is gone")
        return [c for c, (expected, _) in writes.items() if stored_seq(self.data.get(c)) != expected]

    async def save(self, writes: dict[str, Write], report: Increments | None = None,
                   applied: Applied | None = None, book: Book | None = None,
                   renew: Collection[str] | None = None, sent: asyncio.Event | None = None) -> list[str]:
        if sent is not None:
            sent.set()
        if any(where in self._recorded and where not in self.offsets for where in applied or {}):
            self._recorded.clear()
            raise StateLost("an applied offset recorded before is gone")
        conflicts = []
        for customer, (expected, blob) in writes.items():
            if stored_seq(self.data.get(customer)) != expected:
                conflicts.append(customer)
            else:
                self.data[customer] = blob
                for name, delta in (report or {}).get(customer, {}).items():
                    (self.baselines if name.startswith(keys.BASELINE_FIELD) else self.report)[name] += delta
                for (month, name), (calls, tenths) in (book or {}).get(customer, {}).items():
                    records = self.book.setdefault(month, {})
                    records[name] = book_add(records.get(name, Entry()), customer, calls, tenths)
        for where, offset in (applied or {}).items():
            self.offsets[where] = max(offset, self.offsets.get(where, -1))
            self._recorded.add(where)
        return conflicts

    async def applied(self) -> Applied:
        return dict(self.offsets)

    async def quarantine(self, states: dict[str, bytes]) -> None:
        self.quarantined.update(states)

    async def customers(self) -> int:
        return len(self.data)

    def prune_baselines(self, before: date) -> None:
        """Drop the histograms of days before `before`, as the workers prune theirs in Redis."""
        cutoff = before.isoformat()
        for name in [n for n in self.baselines if n.split("|")[1] < cutoff]:
            del self.baselines[name]

    async def close(self) -> None:
        return None


class RedisWindowStore:
    """Customer state in Redis, one string per customer."""

    def __init__(self, client: aioredis.Redis | RedisCluster, ttl_s: int, book_ttl_s: int = 90 * 86400) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.ttl_ms = ttl_s * 1000
        self.book_ttl_ms = book_ttl_s * 1000
        self._cas = client.register_script(CAS)
        self._stale = client.register_script(STALE)
        self._slots_known = False
        self._report_shards: dict[str, int] = {}  # cluster node -> a report shard whose hashes it serves
        self._recorded: set[tuple[int, tuple[str, int]]] = set()  # (shard, input partition) this store recorded

    @classmethod
    def of(cls, client: aioredis.Redis | RedisCluster, settings: Settings) -> "RedisWindowStore":
        """The store the settings describe: states renewed for their idle expiry (`state_ttl_s`),
        the off-net book's months kept `CHURNWATCH_COMPETITOR_DAYS`."""
        return cls(client, state_ttl_s(settings.idle_expiry_days, settings.max_clock_skew_s),
                   settings.competitor_days * 86400)

    async def load(self, customers: Sequence[str]) -> list[bytes | None]:
        if not self.cluster:  # one command: a pipeline costs the client ~16 us per queued GET
            return await self.client.mget([keys.customer_state(c) for c in customers])
        pipe = self.client.pipeline(transaction=False)
        for c in customers:
            pipe.get(keys.customer_state(c))
        return await pipe.execute()

    async def stale(self, writes: dict[str, Write]) -> list[str]:
        # With no customer to check, the applied offsets this store recorded are still checked:
        # a batch with nothing to send must not write onto a Redis that lost them.
        if not writes and not self._recorded:
            return []
        if not self.cluster:
            group = list(writes)
            found = await self._evalsha(self._stale, [keys.customer_state(c) for c in group],
                                        self._stale_argv(group, writes, 0))
            return self._conflicts([(0, group, found)], {})
        groups = await self._by_node(writes)
        # Every node this store recorded offsets on, whether or not it holds a customer to check.
        named = {node.name for node, _ in groups}
        for shard in sorted({shard for shard, _ in self._recorded}):
            node = self.client.get_node_from_key(keys.report(shard))
            if node.name not in named:
                named.add(node.name)
                groups.append((node, []))
        shards = [self._report_shard(node) for node, _ in groups]
        replies = await asyncio.gather(*(
            self.client.execute_command("EVAL", CLUSTER_STALE, 0, len(group),
                                        *(keys.customer_state(c) for c in group),
                                        *self._stale_argv(group, writes, shard), target_nodes=node)
            for shard, (node, group) in zip(shards, groups)))
        return self._conflicts([(shard, group, r) for shard, (_, group), r in zip(shards, groups, replies)], {})

    def _stale_argv(self, group: list[str], writes: dict[str, Write], shard: int) -> list[bytes | int | str]:
        recorded = "".join(f"{t}|{p}\n" for s, (t, p) in self._recorded if s == shard)
        return [SEQ_OFFSET + 1, keys.applied(shard), recorded, b"".join(_counted(writes[c][0]) for c in group)]

    async def save(self, writes: dict[str, Write], report: Increments | None = None,
                   applied: Applied | None = None, book: Book | None = None,
                   renew: Collection[str] | None = None, sent: asyncio.Event | None = None) -> list[str]:
        if not writes and not applied:
            if sent is not None:
                sent.set()
            return []
        report, applied, book = report or {}, applied or {}, book or {}
        renew = writes.keys() if renew is None else renew
        if not self.cluster:
            group = list(writes)
            conflicts = await self._evalsha(self._cas, [keys.customer_state(c) for c in group],
                                            self._argv(group, writes, report, 0, applied, book, renew), sent)
            return self._conflicts([(0, group, conflicts)], applied)
        # Each node keeps the applied offsets of the batches that wrote to it; a batch that
        # wrote nothing (all dead letters) records them on the node of the first report hash.
        groups = await self._by_node(writes) or [(self.client.get_node_from_key(keys.report(0)), [])]
        shards = [self._report_shard(node) for node, _ in groups]
        # Redis Cluster refuses scripts in pipelines: one EVAL per node, all under way at once.
        # One call a node, each sent in a task of its own: `sent` is left unset, and the caller
        # waits for the whole write.
        replies = await asyncio.gather(*(
            self.client.execute_command("EVAL", CLUSTER_CAS, 0, len(group),
                                        *(keys.customer_state(c) for c in group),
                                        *self._argv(group, writes, report, shard, applied, book, renew),
                                        target_nodes=node)
            for shard, (node, group) in zip(shards, groups)))
        return self._conflicts([(shard, group, r) for shard, (_, group), r in zip(shards, groups, replies)], applied)

    def _conflicts(self, replies: list[tuple[int, list[str], list[int]]], applied: Applied) -> list[str]:
        """The customers refused, from each script's reply; `StateLost` if one found Redis had lost data."""
        if any(reply == [-1] for _, _, reply in replies):
            self._recorded.clear()  # a rebuild records them again
            raise StateLost("Redis no longer holds the applied offsets this worker recorded")
        self._recorded |= {(shard, where) for shard, _, _ in replies for where in applied}
        return [group[i] for _, group, reply in replies for i in reply]

    async def applied(self) -> Applied:
        """The newest offset per input partition, over every node's hash of them."""
        if self.cluster:  # SCAN, not KEYS: churnwatch's ACL user has nothing @dangerous
            names = [k.decode() async for k in self.client.scan_iter(match=keys.APPLIED_PATTERN, count=1000)]
        else:
            names = [keys.applied(0)]
        out: Applied = {}
        for name in names:
            for field, value in (await self.client.hgetall(name)).items():
                topic, partition = field.decode().rsplit("|", 1)
                out[(topic, int(partition))] = max(int(value), out.get((topic, int(partition)), -1))
        return out

    async def quarantine(self, states: dict[str, bytes]) -> None:
        for customer, raw in states.items():  # rare: one command each is fine
            await self.client.set(keys.quarantined_state(customer), raw, ex=keys.QUARANTINE_TTL_S)
            await self.client.zadd(keys.QUARANTINE_INDEX, {customer: time.time() + keys.QUARANTINE_TTL_S})

    async def customers(self) -> int:
        """Customers with state, exactly: every key (DBSIZE, O(1)) less the service's own, a
        handful checked by name, and the quarantined states, whose index drops them as they
        expire. (After a cluster is resharded, a report shard left on a node another shard now
        stands for is counted as a customer until the node loses it.)"""
        await self.client.zremrangebyscore(keys.QUARANTINE_INDEX, "-inf", time.time())
        quarantined = await self.client.zcard(keys.QUARANTINE_INDEX)
        if self.cluster:
            await self._by_node({})  # the slot map
            shards = [self._report_shard(node) for node in self.client.get_primaries()]
            total = await self.client.dbsize(target_nodes=RedisCluster.PRIMARIES)  # the sum, not one node's
        else:
            shards, total = [0], await self.client.dbsize()
        names = [*keys.SERVICE_KEYS,
                 *(k for s in shards for k in (keys.report(s), keys.applied(s), keys.offnet_months(s)))]
        for s in shards:  # the off-net book's hashes, one per month (windows/book.py)
            names += [keys.offnet_book(s, m.decode()) for m in await self.client.smembers(keys.offnet_months(s))]
        return total - quarantined - await self.client.exists(*names)

    def _argv(self, group: list[str], writes: dict[str, Write], report: Increments, shard: int,
              applied: Applied, book: Book, renew: Collection[str]) -> list[bytes | int | str]:
        lines = "".join(f"{i}\t{name}\t{delta}\n" for i, c in enumerate(group)
                        for name, delta in report.get(c, {}).items())
        marks = "".join(f"{t}|{p}\t{o}\t{int((shard, (t, p)) in self._recorded)}\n" for (t, p), o in applied.items())
        return [self.ttl_ms, SEQ_OFFSET + 1, keys.report(shard), lines, keys.applied(shard), marks,
                book_lines(group, book), keys.offnet_book(shard, ""), keys.offnet_months(shard), self.book_ttl_ms,
                bytes(c in renew for c in group), *chain.from_iterable(map(writes.__getitem__, group))]

    async def _evalsha(self, script: AsyncScript, names: list[str], args: list[bytes | int | str],
                       sent: asyncio.Event | None = None) -> Any:
        """The script's reply, run by its digest on a connection of its own; `sent` is set once the
        call is all on its way (a pipeline would send it and wait for the reply in one step). A
        Redis that does not know the script (restarted since) is sent its text."""
        pool = self.client.connection_pool
        conn = await pool.get_connection()
        try:
            await conn.send_command("EVALSHA", script.sha, len(names), *names, *args)
            if sent is not None:
                sent.set()
            try:
                return await conn.read_response()
            except NoScriptError:
                await conn.send_command("EVAL", script.script, len(names), *names, *args)
                return await conn.read_response()
        finally:
            await pool.release(conn)

    def _report_shard(self, node: Any) -> int:
        """A report shard whose hashes' slot `node` serves, so its script may write them."""
        cached = self._report_shards.get(node.name)
        if cached is not None and self.client.get_node_from_key(keys.report(cached)).name == node.name:
            return cached
        shard = next(n for n in range(1 << 16) if self.client.get_node_from_key(keys.report(n)).name == node.name)
        self._report_shards[node.name] = shard
        return shard

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
