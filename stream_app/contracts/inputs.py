"""The input topics by position: a customer's state keeps one offset, newest time and event-id
memory per input topic, in this order (`Settings.topics.inputs` names them)."""

from __future__ import annotations

import enum

__all__ = ["CLOCKED", "Input"]


class Input(enum.IntEnum):
    CDR = 0
    BILLING = 1
    CUSTOMERS = 2
    OUTCOMES = 3


# The topics whose event times move a partition's clock: usage and bills arrive every day,
# profiles and outcomes only when something changes.
CLOCKED = frozenset({Input.CDR, Input.BILLING})
