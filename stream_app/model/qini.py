"""The Qini coefficient: how well a score ranks customers by what a call does for them, measured
on called and control customers (Radcliffe 2007).

Customers are sorted by the score, highest first. At each cut the Qini curve counts the
customers the calls kept among the first k: stayers among the called, less the stayers the
control group shows for as many customers (control stayers scaled by called / control so far).
A score that knows nothing gives, on average, the straight line from 0 to the whole campaign's
gain; the coefficient is the area between the curve and that line, over the number of customers
squared, so that runs of different sizes compare. Positive: the score puts those a call keeps
first. Its 95% interval comes from resampling the customers (a bootstrap), so "positive" can be
told from luck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Qini", "qini", "qini_curve"]


@dataclass(frozen=True)
class Qini:
    coefficient: float
    low: float
    high: float
    called: int
    control: int

    def to_json(self) -> dict:
        return {"qini": round(self.coefficient, 5), "qini_low": round(self.low, 5), "qini_high": round(self.high, 5),
                "called": self.called, "control": self.control}


def qini_curve(score: np.ndarray, called: np.ndarray, churned: np.ndarray) -> np.ndarray:
    """Customers kept among the first k by `score`, for k = 0 .. n."""
    order = np.argsort(-score, kind="stable")
    t, stayed = called[order].astype(bool), ~churned[order].astype(bool)
    n_t, n_c = np.cumsum(t), np.cumsum(~t)
    kept_t, kept_c = np.cumsum(stayed & t), np.cumsum(stayed & ~t)
    gain = kept_t - np.divide(kept_c * n_t, n_c, out=np.zeros(len(t)), where=n_c > 0)
    return np.concatenate([[0.0], gain])


def _coefficient(score: np.ndarray, called: np.ndarray, churned: np.ndarray) -> float:
    curve = qini_curve(score, called, churned)
    n = len(score)
    random_line = np.linspace(0.0, curve[-1], n + 1)
    return float(np.trapezoid(curve - random_line) / n**2) if n else 0.0


def qini(score: np.ndarray, called: np.ndarray, churned: np.ndarray, resamples: int = 200, seed: int = 0) -> Qini:
    """The coefficient and its 95% bootstrap interval."""
    score, called, churned = (np.asarray(a) for a in (score, called, churned))
    rng = np.random.default_rng(seed)
    draws = [_coefficient(score[i], called[i], churned[i])
             for i in (rng.integers(0, len(score), len(score)) for _ in range(resamples))]
    low, high = np.percentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan)
    return Qini(_coefficient(score, called, churned), float(low), float(high), int(called.sum()),
                int(len(called) - called.sum()))
