"""The operator's value segments (DOMAIN.md), in one place: the features flag them, the
baselines, reports and alerts are kept per segment, and the call-queue page names them.

>>> bool(mid_high(np.float64(130.0), np.float64(100.0))), bool(potential(np.float64(110.0)))
(True, True)
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

__all__ = ["MID_HIGH_MOU", "MID_HIGH_SPEND", "NAMES", "POTENTIAL_SPEND", "SEGMENTS", "REVENUE_CHURN_SPEND",
           "mid_high", "potential"]

MID_HIGH_SPEND = 120.0  # yuan in a month, with MID_HIGH_MOU outgoing minutes: mid/high-end that month
MID_HIGH_MOU = 100.0
POTENTIAL_SPEND = 100.0  # a 3-month average spend from here up to MID_HIGH_SPEND: potential mid/high-end
REVENUE_CHURN_SPEND = 50.0  # yuan a month: three months in a row under it after one at or above is revenue churn
SEGMENTS = ("mid_high_end", "potential_mid_high_end", "mass")  # built in: every deployment has them
NAMES = {"mid_high_end": "mid/high-end", "potential_mid_high_end": "potential mid/high-end", "mass": "mass market"}

Amount = TypeVar("Amount", float, np.ndarray)


def mid_high(spend: Amount, mou: Amount) -> Amount:
    """Whether a month's spend and outgoing minutes make the customer mid/high-end (element-wise)."""
    return (spend >= MID_HIGH_SPEND) & (mou >= MID_HIGH_MOU)


def potential(spend_3m: Amount) -> Amount:
    """Whether a 3-month average spend makes the customer a potential mid/high-end one."""
    return (spend_3m >= POTENTIAL_SPEND) & (spend_3m < MID_HIGH_SPEND)
