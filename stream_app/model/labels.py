"""Late labels: a snapshot of day d is positive if its customer churned in (d, d + H].

Churn is known weeks after the signs, and "did not churn" only once the horizon has
passed. Every snapshot is therefore labelled when its horizon closes, positives and
negatives alike: labelling positives at the exit instead would feed the model (and its
validation window) churners from recent days next to non-churners from a month ago.
"""

from __future__ import annotations

import bisect

from stream_app.contracts.events import ChurnEvent, Label, Snapshot

__all__ = ["Labeler"]


class Labeler:
    """Remembers churn days per customer and labels matured snapshots."""

    def __init__(self, horizon_days: int, grace_days: int, revenue_churn: bool = True) -> None:
        self.horizon = horizon_days
        self.revenue_churn = revenue_churn  # whether revenue churn (DOMAIN.md) counts as churn
        # An exit of day e may be processed up to `grace` days after the clock reached e.
        self.wait = horizon_days + grace_days
        self.churned: dict[str, list[int]] = {}
        # Customers erased on request: (snapshot partition, offset of the tombstone). Their
        # snapshots before it are dropped unlabelled; the churn days they had are forgotten.
        self.erased: dict[str, tuple[int, int]] = {}

    def churn(self, event: ChurnEvent) -> None:
        if event.kind == "revenue" and not self.revenue_churn:
            return
        days = self.churned.setdefault(event.customer_id, [])
        if event.day not in days:
            bisect.insort(days, event.day)

    def erase(self, customer: str, partition: int, offset: int) -> None:
        self.erased[customer] = (partition, offset)
        self.churned.pop(customer, None)

    def is_erased(self, customer: str, partition: int, offset: int) -> bool:
        """Whether the snapshot at (`partition`, `offset`) came before its customer's erasure."""
        at = self.erased.get(customer)
        return at is not None and at[0] == partition and offset < at[1]

    def mature(self, snapshot_day: int, clock_day: int) -> bool:
        """Whether every churn that could make this snapshot positive has been seen."""
        return clock_day >= snapshot_day + self.wait

    def label(self, snap: Snapshot, partition: int, offset: int) -> Label:
        days = self.churned.get(snap.customer_id, ())
        at = bisect.bisect_right(days, snap.day)
        y = int(at < len(days) and days[at] <= snap.day + self.horizon)
        return Label(snap.customer_id, snap.day, snap.x, y, partition, offset, snap.features)

    def forget_before(self, day: int) -> None:
        """Drop churn days no pending snapshot can reach (snapshots older than `day` are labelled)."""
        for customer in [c for c, days in self.churned.items() if days[-1] < day]:
            del self.churned[customer]
