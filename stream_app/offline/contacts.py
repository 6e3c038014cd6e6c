"""Who a simulated customer talks to: customers of ours on our network, and people on the
competitors' networks (DOMAIN.md: the competitor's valuable customers).

Each customer has a ranked list of on-net contacts (other customers of ours) and one of off-net
contacts, drawn once from their own random stream. Off-net people are a population of their own,
twice the size of our base, each with a monthly spend at their operator drawn like ours; how much
of our base talks to them grows with that spend (people who spend more talk more) and with the
share of their own circle that is on our network, which nobody on our side can see. So the off-net
numbers heavy in our traffic are often, not always, valuable customers of a competitor.

A customer of ours who ports out keeps their number: from then on the customers of ours who call
them call a competitor's customer, and their calls say so. A disconnected number is not called.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["SLOTS", "COMPETITORS", "Contacts"]

SLOTS = 32  # ranked contacts kept per customer and network; a call's rank beyond wraps around
COMPETITORS = ("op-b", "op-c")
_SHARE_OF_FIRST = 0.6  # of the off-net people and of the leavers who port out, those who go to COMPETITORS[0]
_NUMBER_PREFIX = "86137"  # off-net people's numbers; ours are 86138...


class Contacts:
    """The contact lists of `len(ids)` customers, and the off-net people they call."""

    def __init__(self, ids: Sequence[str], seed: int) -> None:
        n = len(ids)
        rng = np.random.default_rng([seed, 3])
        people = max(2 * n, 10)
        self.ids = ids
        #: Each off-net person's monthly spend at their operator (yuan) and operator (index in COMPETITORS).
        self.value = rng.lognormal(np.log(60), 0.6, people)
        self.operator = (rng.random(people) >= _SHARE_OF_FIRST).astype(np.int8)
        reach = (self.value / 60) ** 0.8 * rng.beta(2, 3, people)
        cumulative = np.cumsum(reach) / reach.sum()
        self.off = np.minimum(np.searchsorted(cumulative, rng.random((n, SLOTS))), people - 1).astype(np.int32)
        on = rng.integers(0, max(n - 1, 1), (n, SLOTS))
        self.on = (on + (on >= np.arange(n)[:, None])).clip(0, n - 1).astype(np.int32)  # never themselves
        #: Where each customer of ours would go if they ported out (index in COMPETITORS).
        self.goes_to = (rng.random(n) >= _SHARE_OF_FIRST).astype(np.int8)

    def off_net(self, i: int, rank: int) -> tuple[str, str]:
        """Customer `i`'s off-net contact of that rank: (number, competitor)."""
        j = int(self.off[i, rank % SLOTS])
        return self.number(j), COMPETITORS[self.operator[j]]

    def call(self, i: int, rank: int, off: bool, gone: bool, ported: bool) -> tuple[str, str, str | None]:
        """Customer `i`'s call with their contact of that rank on the network `off` says: (peer id,
        peer network, competitor). `gone`, `ported`: whether the on-net contact of that rank has
        left us, and by porting out (then they are the competitor's customer); a disconnected
        number is not called, their off-net contact of that rank is."""
        if not off and not gone:
            return self.ids[self.on[i, rank % SLOTS]], "on_net", None
        if not off and ported:
            j = int(self.on[i, rank % SLOTS])
            return self.ids[j], "off_net", COMPETITORS[self.goes_to[j]]
        number, competitor = self.off_net(i, rank)
        return number, "off_net", competitor

    def on_net(self, i: int, rank: int) -> int:
        """Customer `i`'s on-net contact of that rank (their index)."""
        return int(self.on[i, rank % SLOTS])

    @staticmethod
    def number(j: int) -> str:
        return f"{_NUMBER_PREFIX}{j:08d}"

    def truth(self, leavers: dict[int, float]) -> dict[str, tuple[str, float]]:
        """Number -> (competitor, monthly spend) of every off-net person our base calls, and of the
        customers of ours who ported out (`leavers`: index -> their monthly spend with us)."""
        out = {self.number(int(j)): (COMPETITORS[self.operator[j]], round(float(self.value[j]), 2))
               for j in np.unique(self.off)}
        for i, spend in leavers.items():
            out[self.ids[i]] = (COMPETITORS[self.goes_to[i]], round(spend, 2))
        return out
