"""How often alerted customers churn uncalled, by the risk they were alerted with and their reason.

The control group (alerts never called) says how often alerted customers churn when nobody
calls them: what the calls of each action are compared with. One rate for all is not enough: a
ranking's calls are a different mix of reasons and risks from the control's, and customers
leaving over the network churn more for the same risk than those leaving over price, while a
risk score is seldom off by the same factor at every level (alerts at 0.05 and at 0.15 may both
churn about a third of the time).

So the control's evidence is kept per reason code and risk band (`RISK_BANDS`), and the churn
per alert of a (reason, band) is fitted as a reason's factor times a band's rate: a Poisson
model of the churners with the alerts as exposure and main effects only, fitted by alternating
the two margins' updates until they settle. It counts churn per alert within a band, not per
unit of risk: within a band the score says little more (the saving ceiling measured, on the
simulator's truth, that ranking by per-alert cells keeps more than by per-risk ones at every
budget; docs/model.md). Each factor has a prior of `PRIOR_ALERTS` alerts: a reason's at 1, a
band's on a smooth curve, churn per alert = a x risk^g at the band's midpoint, fitted to the
bands themselves. A reason never seen has factor 1.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

__all__ = ["RISK_BANDS", "ControlRates", "band"]

#: Upper bounds of the risk bands (the last band runs to 1): fixed, so that evidence learned
#: under one model version counts under the next.
RISK_BANDS = (0.1, 0.2, 0.3, 0.45, 0.6)
PRIOR_ALERTS = 20.0
_MIDPOINTS = np.array([0.05, 0.15, 0.25, 0.375, 0.525, 0.8])  # where the curve places each band
_TOLERANCE, _MAX_ROUNDS = 1e-10, 10_000


def band(risk: float) -> int:
    """The band of a risk: 0 below 0.1 ... len(RISK_BANDS) from 0.6."""
    return bisect.bisect_right(RISK_BANDS, risk)


@dataclass(frozen=True)
class ControlRates:
    """Churn per uncalled alert, per reason and band."""

    whole: float
    reasons: dict[int, float]  # the reason's factor, near 1 for most
    bands: np.ndarray  # per band, the churn per alert of a reason of factor 1

    @classmethod
    def fit(cls, cells: dict[tuple[int, int], tuple[float, float]], whole: float) -> "ControlRates":
        """From (reason, band) -> (churners, alerts) of the control alerts, and the churn per alert
        of all of them (`whole`, the start and the reasons' prior)."""
        whole = max(whole, 1e-3)
        reasons = sorted({r for r, _ in cells})
        observed, alerts = (np.zeros((len(reasons), len(_MIDPOINTS))) for _ in range(2))
        for (r, b), (o, n) in cells.items():
            observed[reasons.index(r), b], alerts[reasons.index(r), b] = o, n
        row, col, curve = np.ones(len(reasons)), np.full(len(_MIDPOINTS), whole), np.array([np.log(whole), 0.0])
        mid, prior = np.log(_MIDPOINTS), PRIOR_ALERTS
        for _ in range(_MAX_ROUNDS):
            last = col
            row = (observed.sum(1) + prior * whole) / ((alerts * col).sum(1) + prior * whole)
            at = (alerts * row[:, None]).sum(0)
            curve = _power_curve(observed.sum(0) + whole * prior, at + prior, mid, curve)
            col = (observed.sum(0) + prior * np.exp(curve[0] + curve[1] * mid)) / (at + prior)
            if np.abs(col - last).max() <= _TOLERANCE * col.max():
                break
        return cls(whole, dict(zip(reasons, row.tolist())), col)

    def rate(self, reason: int | None, risk_band: int) -> float:
        """Churn per uncalled alert of `reason` in `risk_band`."""
        return self.reasons.get(reason or 0, 1.0) * float(self.bands[risk_band])


def _power_curve(observed: np.ndarray, exposure: np.ndarray, log_risk: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(log a, g) of the Poisson fit observed ~ exposure * a * risk^g, a few Newton steps from `start`."""
    beta = start
    x = np.stack([np.ones_like(log_risk), log_risk], axis=1)
    for _ in range(3):
        mu = exposure * np.exp(np.clip(x @ beta, -30.0, 30.0))
        beta = beta + np.linalg.solve(x.T @ (x * mu[:, None]) + 1e-9 * np.eye(2), x.T @ (observed - mu))
    return beta
