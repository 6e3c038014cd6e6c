"""Every Redis client is made here: a single node or a Redis Cluster (`CHURNWATCH_REDIS_CLUSTER`),
blocking for commands and the trainer, asyncio for the worker's hot path."""

from __future__ import annotations

from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster
from redis.exceptions import DataError

__all__ = ["connect_redis", "connect_redis_sync", "pack_command"]


def pack_command(*args: Any) -> list[bytes]:
    """A command in Redis's protocol, packed by hiredis in C. redis-py's asyncio connections pack
    each argument in Python (about 0.5 us a key, where hiredis takes 0.06), and a batch's read and
    write name every customer's key. The same bytes as redis-py's, and the same split of a command
    whose name has words (`SCRIPT LOAD`)."""
    if isinstance(args[0], str):
        args = (*args[0].encode().split(), *args[1:])
    elif b" " in args[0]:
        args = (*args[0].split(), *args[1:])
    if bool in map(type, args):  # hiredis would send True as 1; redis-py refuses it (in C: no loop in Python)
        raise DataError("Invalid input of type: 'bool'. Convert to a bytes, string, int or float first.")
    try:
        return [hiredis.pack_command(args)]
    except TypeError as exc:  # None, a dict...: refused as redis-py refuses them
        raise DataError(str(exc)) from exc


class _PackedInC:
    """A connection whose commands `pack_command` packs. What hiredis does not take as redis-py
    would (a bytearray, an int subclass, strings in another encoding than UTF-8) is packed, or
    refused, by redis-py itself, as before. A command is handed whole to the socket before its
    sender goes on: asyncio's `drain` returns once what waits to be sent is below the buffer's low
    mark, 16 KiB by default, and a batch's write (megabytes) must all reach Redis while the
    worker decodes the next batch without yielding to the event loop (`windows/store.py`)."""

    encoder: Any
    _writer: Any

    async def _connect(self) -> None:
        await super()._connect()  # type: ignore[misc]
        self._writer.transport.set_write_buffer_limits(high=0)

    def pack_command(self, *args: Any) -> list[bytes]:
        encoder = self.encoder
        if encoder.encoding.lower().replace("-", "") == "utf8" and encoder.encoding_errors == "strict":
            try:
                return pack_command(*args)
            except DataError:
                pass
        return super().pack_command(*args)  # type: ignore[misc]


def _packed_in_c(connection_class: type) -> type:
    """`connection_class` with its commands packed by `pack_command`."""
    return type(f"PackedInC{connection_class.__name__}", (_PackedInC, connection_class), {})


def connect_redis(url: str, cluster: bool = False) -> aioredis.Redis | AsyncCluster:
    """An asyncio client for `url`; `cluster=True` for Redis Cluster (keys are routed by slot)."""
    if cluster:
        client = AsyncCluster.from_url(url)
        kwargs = client.nodes_manager.connection_kwargs  # read as each node is found
        kwargs["connection_class"] = _packed_in_c(kwargs["connection_class"])
        for node in client.nodes_manager.startup_nodes.values():  # made already, connected later
            node.connection_class = kwargs["connection_class"]
        return client
    client = aioredis.Redis.from_url(url)
    pool = client.connection_pool
    pool.connection_class = _packed_in_c(pool.connection_class)
    return client


def connect_redis_sync(url: str, cluster: bool = False) -> Any:
    """A blocking client, for commands that read or write a few keys (reports, call plans, the trainer)."""
    return RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
