"""Which of the simulator's leavers come back, and when (`SimConfig.comeback_share`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["COMEBACK_REASONS", "plan_returns"]

COMEBACK_REASONS = (101, 102)  # price, promotion: a better deal elsewhere can end, a move or a death does not


def plan_returns(exits: Sequence[tuple[str | None, int | None]], exit_day: np.ndarray, days: int, seed: int,
                 share: float) -> np.ndarray:
    """Per customer, from how and why they leave (`exits`: churn kind, reason code), the day they
    port their number back in (`days + 1`: never). Drawn from a generator of their own, the same
    draws for every customer, so that the rest of the traffic stays the same."""
    back = np.full(len(exits), days + 1)
    rng = np.random.default_rng([seed, 4])
    for i, (kind, reason) in enumerate(exits):
        draw, after = rng.random(), int(rng.integers(30, 121))
        if kind == "port_out" and reason in COMEBACK_REASONS and draw < share and exit_day[i] + after < days:
            back[i] = exit_day[i] + after
    return back
