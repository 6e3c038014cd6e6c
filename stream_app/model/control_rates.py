"""How often alerted customers churn uncalled, by the risk they were alerted with and their reason.

The control group (alerts never called) says how far the alerts' risks are from what happens:
its churners over the sum of its risks, a calibration factor. One factor for all is not enough
to judge calls against: a risk score is seldom off by the same factor at every level (alerts at
0.2 may churn twice as often as that, alerts at 0.6 about as often), and customers leaving over
the network churn more for the same risk than those leaving over price. The calls of a ranking
are a different mix of both from the control group's, so one factor reads the mix as an effect.

So the control's evidence is kept per reason code and risk band (`RISK_BANDS`), and the factor
of a (reason, band) is fitted as a reason's times a band's: a Poisson model of the churners with
the risks as exposure and main effects only, fitted by alternating the two margins' updates
until they settle. Each factor has a prior of `PRIOR_ALERTS` alerts: a reason's at 1, a band's
on a smooth calibration curve, churners per unit of risk = a x risk^g, fitted to the bands
themselves (a score that understates low risks understates them more the lower they are). The
prior counts alerts, not expected churners: an alert at 0.05 carries a sixth of the risk of one
at 0.3, so a prior in churners would hold the low bands, where scores are furthest off, at the
neutral rate long after their alerts have said otherwise. A reason never seen has factor 1.
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
_MIDPOINTS = np.array([0.05, 0.15, 0.25, 0.375, 0.525, 0.8])  # a band's risk before it has alerts
_TOLERANCE, _MAX_ROUNDS = 1e-10, 10_000


def band(risk: float) -> int:
    """The band of a risk: 0 below 0.1 ... len(RISK_BANDS) from 0.6."""
    return bisect.bisect_right(RISK_BANDS, risk)


@dataclass(frozen=True)
class ControlRates:
    """Churners per unit of risk of uncalled alerts, per reason and band."""

    whole: float
    reasons: dict[int, float]  # the reason's factor, near 1 for most
    bands: np.ndarray  # per band, the factor of a reason of factor 1

    @classmethod
    def fit(cls, cells: dict[tuple[int, int], tuple[float, float, int]], whole: float) -> "ControlRates":
        """From (reason, band) -> (churners, sum of risks, alerts) of the control alerts."""
        reasons = sorted({r for r, _ in cells})
        observed, exposure, alerts = (np.zeros((len(reasons), len(_MIDPOINTS))) for _ in range(3))
        for (r, b), (o, e, n) in cells.items():
            observed[reasons.index(r), b], exposure[reasons.index(r), b], alerts[reasons.index(r), b] = o, e, n
        # The prior's alerts, at each margin's mean risk (a band's midpoint before it has any).
        mean = exposure.sum() / alerts.sum() if alerts.sum() else float(_MIDPOINTS.mean())
        row_prior = PRIOR_ALERTS * np.divide(exposure.sum(1), alerts.sum(1), out=np.full(len(reasons), mean),
                                             where=alerts.sum(1) > 0)
        col_prior = PRIOR_ALERTS * np.divide(exposure.sum(0), alerts.sum(0), out=_MIDPOINTS.copy(),
                                             where=alerts.sum(0) > 0)
        row, col, curve = np.ones(len(reasons)), np.full(len(_MIDPOINTS), whole), np.array([np.log(whole), 0.0])
        mid = np.log(_MIDPOINTS)
        for _ in range(_MAX_ROUNDS):
            last = col
            row = (observed.sum(1) + row_prior * whole) / ((exposure * col).sum(1) + row_prior * whole)
            at = (exposure * row[:, None]).sum(0)
            curve = _power_curve(observed.sum(0) + whole * col_prior, at + col_prior, mid, curve)
            centre = np.exp(curve[0] + curve[1] * mid)
            col = (observed.sum(0) + col_prior * centre) / (at + col_prior)
            if np.abs(col - last).max() <= _TOLERANCE * col.max():
                break
        return cls(whole, dict(zip(reasons, row.tolist())), col)

    def factor(self, reason: int | None, risk_band: int) -> float:
        """Churners per unit of risk of an uncalled alert of `reason` in `risk_band`."""
        return self.reasons.get(reason or 0, 1.0) * float(self.bands[risk_band])


def _power_curve(observed: np.ndarray, exposure: np.ndarray, log_risk: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(log a, g) of the Poisson fit observed ~ exposure * a * risk^g, a few Newton steps from `start`."""
    beta = start
    x = np.stack([np.ones_like(log_risk), log_risk], axis=1)
    for _ in range(3):
        mu = exposure * np.exp(np.clip(x @ beta, -30.0, 30.0))
        beta = beta + np.linalg.solve(x.T @ (x * mu[:, None]) + 1e-9 * np.eye(2), x.T @ (observed - mu))
    return beta
