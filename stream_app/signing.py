"""Signed pickles: the trainer's checkpoint and a forest model are Python pickles kept in Redis,
and unpickling runs code. Whoever can write those keys would run code in every worker and in
the trainer, so a pickle is read back only if it carries an HMAC-SHA256 under
`CHURNWATCH_MODEL_SIGNING_KEY`, a secret the trainer and the workers share (from the
environment, like every secret). The linear model's snapshot is plain data (msgpack) and
needs no key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from .errors import ChurnwatchError
from .settings import Settings

__all__ = ["Signer", "Unsigned"]

_MAGIC = b"cwsig1"
_MAC = 32


class Unsigned(ChurnwatchError):
    """A pickle that is not signed under this key: never unpickled."""


class Signer:
    """Signs and opens pickles under one key."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    @classmethod
    def of(cls, settings: Settings) -> "Signer":
        key = settings.model_signing_key
        return cls(key.get_secret_value().encode() if key else None)

    @classmethod
    def ephemeral(cls) -> "Signer":
        """A key for one process, for pickles that never leave it (in-process replays)."""
        return cls(secrets.token_bytes(32))

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def sign(self, data: bytes) -> bytes:
        if self._key is None:
            raise Unsigned("CHURNWATCH_MODEL_SIGNING_KEY is not set: a pickle cannot be signed")
        return _MAGIC + hmac.new(self._key, data, hashlib.sha256).digest() + data

    def open(self, blob: bytes) -> bytes:
        """The signed bytes, or `Unsigned` saying why they cannot be trusted."""
        if self._key is None:
            raise Unsigned("CHURNWATCH_MODEL_SIGNING_KEY is not set: a stored pickle is never read without it")
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _MAC:
            raise Unsigned("not signed")
        mac, data = blob[len(_MAGIC):len(_MAGIC) + _MAC], blob[len(_MAGIC) + _MAC:]
        if not hmac.compare_digest(mac, hmac.new(self._key, data, hashlib.sha256).digest()):
            raise Unsigned("signature does not match CHURNWATCH_MODEL_SIGNING_KEY")
        return data
