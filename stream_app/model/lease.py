"""The trainer's lease: one trainer at a time, kept alive by a heartbeat thread.

The lease is a Redis lock with a time to live. A heartbeat renews it every third of that time,
from its own thread, so that nothing the trainer's loop does (a backlog of labels, a refit, a
starved CPU) lets it lapse: only a paused process (a long GC, a frozen VM) does, and then a
successor may take over. The publish script checks the lease's token (`registry.publish`), so a
trainer that wakes up after losing its lease cannot overwrite its successor's work; `check()`
tells the loop to stop as soon as the heartbeat finds the lease gone.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from redis.exceptions import LockError, LockNotOwnedError, RedisError

from stream_app.model.registry import LeaseLost

__all__ = ["Lease"]

log = logging.getLogger(__name__)


class Lease:
    """Hold `name` in Redis for as long as this process runs, renewed every `ttl_s / 3` seconds."""

    def __init__(self, client: Any, name: str, ttl_s: float) -> None:
        # Not thread-local: the heartbeat thread renews the token the main thread acquired.
        self._lock = client.lock(name, timeout=ttl_s, thread_local=False)
        self._every_s = ttl_s / 3
        self._stopped = threading.Event()
        self._beat: threading.Thread | None = None
        self._lost: str | None = None

    def acquire(self) -> bytes:
        """Wait for the lease, start the heartbeat, and return the token that fences publishing."""
        self._lock.acquire(blocking=True)
        self._beat = threading.Thread(target=self._renew, name="trainer-lease", daemon=True)
        self._beat.start()
        return self._lock.local.token

    def check(self) -> None:
        """Raise `LeaseLost` once the heartbeat has found the lease taken or expired."""
        if self._lost is not None:
            raise LeaseLost(f"the trainer lease lapsed: {self._lost}")

    def release(self) -> None:
        """Stop the heartbeat and give the lease up, if it is still ours."""
        self._stopped.set()
        if self._beat is not None:
            self._beat.join()
        try:
            self._lock.release()
        except LockError:  # lapsed or taken by another trainer already
            pass
        except RedisError as exc:  # it lapses by itself: a successor waits out its time at most
            log.warning("could not release the trainer lease: %s", exc)

    def _renew(self) -> None:
        wait = self._every_s
        while not self._stopped.wait(wait):
            try:
                self._lock.reacquire()
                wait = self._every_s
            except LockNotOwnedError as exc:
                self._lost = str(exc)
                return
            except RedisError as exc:  # Redis unreachable for a moment: try again soon, the lease still holds
                log.warning("could not renew the trainer lease, trying again: %s", exc)
                wait = min(1.0, self._every_s)
