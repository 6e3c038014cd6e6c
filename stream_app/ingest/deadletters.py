"""What a refused record becomes: a dead letter that names the record, the reason and the field.

A dead letter must always reach the broker, whatever the record was: a 2 MB record sent back
whole in base64 is over the producer's 1 MB limit, and a failed send would stop the batch.
So it carries a bounded prefix of the record, its size and its SHA-256; topic, partition and
offset find the whole record on its input topic.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import datetime
from typing import Protocol

from stream_app.contracts.events import DeadLetter
from stream_app.errors import InvalidEvent

__all__ = ["DEAD_LETTER_PREFIX", "dead_letter"]

#: Bytes of the record a dead letter carries; enough to see what a producer sent.
DEAD_LETTER_PREFIX = 4096
_KEY_CHARS = 128  # a key is a customer id (at most 64 characters); a longer one is shown cut
_DETAIL_CHARS = 1000
_NUMBER = re.compile(r"\d{6,}")


class Located(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def dead_letter(rec: Located, err: InvalidEvent, now: datetime, private: bool = False,
                customer: str | None = None) -> DeadLetter:
    """The record and why it was refused. With `private` (pseudonymous ids) the key is the
    `customer`'s pseudonym and nothing of the record's bytes is kept, since they hold numbers."""
    # A message can quote the values it refused, the customer's number among them.
    detail = _NUMBER.sub("<number>", err.detail) if private else err.detail
    value = rec.value
    if private or value is None:
        kept, digest = None, None
    else:
        kept, digest = base64.b64encode(value[:DEAD_LETTER_PREFIX]).decode(), hashlib.sha256(value).hexdigest()
    key = customer if private else rec.key.decode("utf-8", "replace")[:_KEY_CHARS] if rec.key is not None else None
    return DeadLetter(
        topic=rec.topic, partition=rec.partition, offset=rec.offset, reason=err.reason, field=err.field,
        detail=detail[:_DETAIL_CHARS], key=key, value_b64=kept, at=now, size=len(value or b""), sha256=digest,
        truncated=kept is not None and len(value or b"") > DEAD_LETTER_PREFIX,
    )
