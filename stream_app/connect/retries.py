"""Waiting out Redis outages: the worker's batches stop, and retry, until Redis is back; and
waiting on a call only until something else happens first (its write sent, the worker stopping)."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

from redis.exceptions import AskError, ClusterDownError, MovedError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["TRANSIENT", "first_of", "retry_forever"]

log = logging.getLogger(__name__)

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


async def first_of(task: asyncio.Future, event: asyncio.Event) -> None:
    """Until the task is done or the event set, whichever comes first; the task goes on either way."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
