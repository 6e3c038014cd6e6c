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
import io
import pickle
import secrets
from typing import Any

from stream_app.errors import ChurnwatchError
from stream_app.settings import Settings

__all__ = ["Signer", "Unsigned"]

_MAGIC = b"cwsig1"
_MAC = 32
# Where the modules named by pickles written before the package was split by stage live now:
# a trainer's checkpoint or a published forest must outlive an upgrade.
_MOVED = {
    "stream_app.model": "stream_app.model.scoring",
    "stream_app.trainer": "stream_app.model.trainer",
    "stream_app.labels": "stream_app.model.labels",
    "stream_app.validation": "stream_app.model.validation",
    "stream_app.features": "stream_app.features.derive",
    "stream_app.baselines": "stream_app.features.baselines",
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(_MOVED.get(module, module), name)


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

    def unpickle(self, blob: bytes) -> Any:
        """The object of a signed pickle (`open` says why when it cannot be trusted)."""
        return _Unpickler(io.BytesIO(self.open(blob))).load()
