"""Pseudonymous subscriber ids: with the operator's key set, a phone number is replaced by its
keyed hash as the event is read, so no number reaches Redis keys, output topics, logs or metrics.

HMAC-SHA256 under `CHURNWATCH_PSEUDONYM_KEY` (from the environment, never a file in the
repo): stable for the key, so a customer keeps one state and one alert id across workers
and restarts, and not reversible without it, where a plain hash of a phone number is (there
are few enough numbers to try them all). Whoever must call the customer resolves the
pseudonym with a lookup the operator keeps (`churnwatch pseudonym NUMBER` computes one).

Logs name customers the same way under their own key (`CHURNWATCH_LOG_PSEUDONYM_KEY`, random per
process when unset), so that lines about one customer can be followed but never matched to the
data's pseudonyms, nor to the number.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from stream_app.settings import Settings

__all__ = ["Pseudonyms", "is_pseudonym"]

PREFIX = "p"  # tells a pseudonym from a number at a glance; MSISDNs are digits
_PSEUDONYM = re.compile(r"^p[A-Za-z0-9_-]{22}$")  # PREFIX + 16 bytes in unpadded URL-safe base64


def is_pseudonym(value: str) -> bool:
    """Whether `value` has the shape of a pseudonym (never a phone number).

    >>> is_pseudonym(Pseudonyms(b"k" * 16)("8613800000001")), is_pseudonym("8613800000001")
    (True, False)
    """
    return bool(_PSEUDONYM.match(value))


class Pseudonyms:
    """Customer id -> pseudonym under one key; the id itself when there is no key."""

    def __init__(self, key: bytes | None, cache_size: int = 1_000_000) -> None:
        self._key = key
        self._cache: dict[str, str] = {}
        self._cache_size = cache_size

    @classmethod
    def of(cls, settings: Settings) -> "Pseudonyms":
        """Under the settings' key (none: ids stay as they are)."""
        key = settings.pseudonym_key
        return cls(key.get_secret_value().encode() if key else None)

    @classmethod
    def for_logs(cls, settings: Settings) -> "Pseudonyms":
        """Under the settings' log key; without one, a random key for this process: an unkeyed
        hash of a phone number is reversible by trying them all."""
        key = settings.log_pseudonym_key
        return cls(key.get_secret_value().encode() if key else secrets.token_bytes(32), cache_size=100_000)

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def __call__(self, customer_id: str) -> str:
        if self._key is None:
            return customer_id
        known = self._cache.get(customer_id)
        if known is None:
            if len(self._cache) >= self._cache_size:  # a hash per event costs more than the batch's other work
                self._cache.clear()
            digest = hmac.new(self._key, customer_id.encode(), hashlib.sha256).digest()[:16]
            # 128 bits: no two of a billion subscribers share one (about 1e-21); 23 characters keep
            # the Redis key, and so a customer's memory, short.
            known = self._cache[customer_id] = PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return known
