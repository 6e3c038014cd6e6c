"""How far chance alone moves `evaluate`'s figures: bootstrap confidence intervals.

A run judges a few hundred calls and a few dozen churners' lead times, so one seed's precision
moves by several points from chance alone, and two runs can only be told apart by more than that.
The intervals are percentile bootstraps (scipy.stats.bootstrap):
- precision at the budget, and its ratio to the ceiling's: the test period's weeks are resampled,
  each with its calls and hits (a week's calls are chosen together, so they are not independent
  of each other), the service's and the ceiling's weeks paired, as both called in the same weeks;
- a median lead time: the churners are resampled.
Weeks are taken as independent of each other; a customer called week after week ties them, so
the intervals are somewhat narrow. So is the ratio's: the ceiling's learner is picked on the same
test weeks, and the resamples keep that pick. A resample without a figure (no calls, or no hits
of the ceiling) is left out.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import numpy as np

__all__ = ["LEVEL", "WeeklyCalls", "precision_interval", "median_interval", "outwards"]

#: Two-sided confidence level of every interval.
LEVEL = 0.95
_ROUNDS = 2000


class WeeklyCalls:
    """Per week of a test period: the calls made at the budget and those to a churner."""

    def __init__(self, hits: Sequence[int], calls: Sequence[int]) -> None:
        self.hits = np.asarray(hits, np.float64)
        self.calls = np.asarray(calls, np.float64)

    @property
    def precision(self) -> float:
        total = self.calls.sum()
        return float(self.hits.sum() / total) if total else math.nan


def precision_interval(service: WeeklyCalls, ceiling: WeeklyCalls | None = None,
                       seed: int = 7) -> list[float] | None:
    """The interval of the service's precision, or with `ceiling` (the same weeks) of the ratio of
    the two; None when there are too few weeks, or calls, to resample."""
    if len(service.calls) < 3 or not service.calls.sum():
        return None
    if ceiling is None:
        data: tuple[np.ndarray, ...] = (service.hits, service.calls)

        def statistic(h: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
            return _ratio(h.sum(axis=axis), c.sum(axis=axis))
    else:
        if len(ceiling.calls) != len(service.calls) or not ceiling.hits.sum():
            return None
        data = (service.hits, service.calls, ceiling.hits, ceiling.calls)

        def statistic(h: np.ndarray, c: np.ndarray, ch: np.ndarray, cc: np.ndarray,  # type: ignore[misc]
                      axis: int = -1) -> np.ndarray:
            return _ratio(_ratio(h.sum(axis=axis), c.sum(axis=axis)), _ratio(ch.sum(axis=axis), cc.sum(axis=axis)))
    return _bootstrap(data, statistic, seed)


def median_interval(values: Sequence[float], seed: int = 7) -> list[float] | None:
    """The interval of the median of `values`; None for fewer than three."""
    if len(values) < 3:
        return None
    return _bootstrap((np.asarray(values, np.float64),), np.median, seed)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray], seed: int) -> list[float] | None:
    from scipy.stats import DegenerateDataWarning, bootstrap

    with warnings.catch_warnings():
        # Every resample alike (a precision of 1 each week): the interval is that one value. A
        # resample with no calls, or no ceiling hits, has no figure: dropped below, not the interval.
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = bootstrap(data, statistic, paired=True, vectorized=True, n_resamples=_ROUNDS,
                           confidence_level=LEVEL, method="percentile", rng=np.random.default_rng(seed))
    figures = np.asarray(result.bootstrap_distribution, np.float64)
    figures = figures[np.isfinite(figures)]
    if len(figures) < _ROUNDS // 2:
        return None
    return outwards(*np.percentile(figures, [50 * (1 - LEVEL), 50 * (1 + LEVEL)]))


def outwards(low: float, high: float) -> list[float]:
    """An interval to 4 places, rounded outwards, so that it still holds what it was computed to hold."""
    return [math.floor(low * 1e4) / 1e4, math.ceil(high * 1e4) / 1e4]
