"""Every Redis key template, in one place. Each key of a customer carries the hash tag
`{customer}`, so all of them share a slot and the same code runs on Redis Cluster."""

from __future__ import annotations

__all__ = ["PREFIX", "customer_state"]

PREFIX = "cw"


def customer_state(customer: str) -> str:
    """The customer's windows, offsets and profile (one string, see `state.STATE`)."""
    return f"{PREFIX}:{{{customer}}}:s"


