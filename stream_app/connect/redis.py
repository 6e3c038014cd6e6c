"""Every Redis client is made here: a single node or a Redis Cluster (`CHURNWATCH_REDIS_CLUSTER`),
blocking for commands and the trainer, asyncio for the worker's hot path."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncCluster
from redis.cluster import RedisCluster

__all__ = ["connect_redis", "connect_redis_sync"]


def connect_redis(url: str, cluster: bool = False) -> aioredis.Redis | AsyncCluster:
    """An asyncio client for `url`; `cluster=True` for Redis Cluster (keys are routed by slot)."""
    return AsyncCluster.from_url(url) if cluster else aioredis.Redis.from_url(url)


def connect_redis_sync(url: str, cluster: bool = False) -> Any:
    """A blocking client, for commands that read or write a few keys (reports, call plans, the trainer)."""
    return RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
