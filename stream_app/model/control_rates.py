"""How often alerted customers churn uncalled, by the risk they were alerted with and their reason.

The control group (alerts never called) says how far the alerts' risks are from what happens:
its churners over the sum of its risks, a calibration factor. One factor for all is not enough
to judge calls against: a risk score is seldom off by the same factor at every level (alerts at
0.2 may churn twice as often as that, alerts at 0.6 about as often), and customers leaving over
the network churn more for the same risk than those leaving over price. The calls of a ranking
are a different mix of both from the control group's, so one factor reads the mix as an effect.

So the control's evidence is kept per reason code and risk band (`RISK_BANDS`), and the factor
of a (reason, band) is fitted as a reason's times a band's (a Poisson model of the churners with
the risks as exposure and main effects only: iterative proportional fitting of the table's
margins). Each cell starts with `PRIOR_CHURNERS` / bands pseudo-churners at the whole control's
factor, so a reason or a band with little evidence stays near it, and one never seen is at it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

__all__ = ["RISK_BANDS", "ControlRates", "band"]

#: Upper bounds of the risk bands (the last band runs to 1): fixed, so that evidence learned
#: under one model version counts under the next.
RISK_BANDS = (0.1, 0.2, 0.3, 0.45, 0.6)
_ROUNDS = 50


def band(risk: float) -> int:
    """The band of a risk: 0 below 0.1 ... len(RISK_BANDS) from 0.6."""
    return bisect.bisect_right(RISK_BANDS, risk)


@dataclass(frozen=True)
class ControlRates:
    """Churners per unit of risk of uncalled alerts, per reason and band."""

    whole: float
    reasons: dict[int, float]  # the reason's factor, the control-weighted mean of them 1
    bands: np.ndarray  # per band, the factor of a reason of mean factor

    @classmethod
    def fit(cls, cells: dict[tuple[int, int], tuple[float, float]], whole: float, prior: float) -> "ControlRates":
        """From (reason, band) -> (churners, sum of risks) of the control alerts."""
        reasons = sorted({r for r, _ in cells})
        if not reasons:
            return cls(whole, {}, np.full(len(RISK_BANDS) + 1, whole))
        observed = np.zeros((len(reasons), len(RISK_BANDS) + 1))
        exposure = np.zeros_like(observed)
        for (r, b), (o, e) in cells.items():
            observed[reasons.index(r), b], exposure[reasons.index(r), b] = o, e
        pseudo = prior / observed.shape[1]
        observed, exposure = observed + whole * pseudo, exposure + pseudo
        row, col = np.ones(len(reasons)), np.full(observed.shape[1], whole)
        weight = exposure.sum(axis=1) / exposure.sum()
        for _ in range(_ROUNDS):
            row = observed.sum(axis=1) / (exposure * col).sum(axis=1)
            col = observed.sum(axis=0) / (exposure * row[:, None]).sum(axis=0)
            scale = weight @ row  # the reasons' factors averaged to 1, the bands' carry the level
            row, col = row / scale, col * scale
        return cls(whole, dict(zip(reasons, row.tolist())), col)

    def factor(self, reason: int | None, risk_band: int) -> float:
        """Churners per unit of risk of an uncalled alert of `reason` in `risk_band`."""
        return self.reasons.get(reason or 0, 1.0) * float(self.bands[risk_band])
