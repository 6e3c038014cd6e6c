"""A score that means what it says: of the customers scored 0.6, about 60% leave.

A model learning online from a few percent of churners scores timidly where it matters. On the
simulator, of the snapshots a worker scored 0.46 on average, 62-66% were of customers who left
within the horizon; so the model alone rated a churner high late, or not at all, and the call
queue multiplied value by a risk below the real one. The learner's own progressive scores look
better than the worker's: the labels of a customer's earlier days, learned in between, make it
surer of the later ones. So the map is fitted on what the workers scored.

Each label carries the score its snapshot had before the map (`raw_score`, and the model version
that gave it). The trainer tallies them by score (bins on the log-odds) per snapshot day over the
last `WINDOW_DAYS` days, and at each publication fits an isotonic regression (scikit-learn) of the
outcome on the score. It is published with the model as points of a piecewise-linear curve, made
strictly increasing: the map changes no ranking, only what a score says, and so the level a score
reaches alone, the risk an alert carries and the value at risk the queue orders by. With fewer
than `MIN_EACH` churners or stayers in the window there is no map, and scores are as the model
gives them. Scores of another kind of model (a new champion) are not counted: the tally starts
again from the first version of the new kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["WINDOW_DAYS", "MIN_EACH", "ScoreTally", "calibrated"]

#: Days of snapshots the map is fitted on: long enough for a few hundred churners on a small base.
WINDOW_DAYS = 60
#: Labels of churners, and of stayers, the window must hold before a map is fitted. A churner's
#: last weeks give a label a day, so 200 is about ten churners.
MIN_EACH = 200
_BINS = 160
_LOGIT_RANGE = 8.0  # bins span log-odds -8..8 (scores 0.0003..0.9997); beyond, the end bins
_STEP = 1e-6  # what keeps the curve strictly increasing
_EDGE = 1e-4  # and off 0 and 1


@dataclass
class ScoreTally:
    """Per snapshot day: per score bin, the labels, those who churned, and their scores' sum."""

    since_version: int = 0  # labels of snapshots scored by an earlier version are not counted
    kind: str = ""  # the kind of model whose scores are counted
    days: dict[int, np.ndarray] = field(default_factory=dict)  # day -> (3, _BINS)

    def add(self, day: int, score: float | None, y: int, version: int | None) -> None:
        """Count one label, if a model of the counted kind scored its snapshot."""
        if score is None or not np.isfinite(score) or version is None or version < self.since_version:
            return
        tally = self.days.get(day)
        if tally is None:
            tally = self.days[day] = np.zeros((3, _BINS))
        b = _bin(score)
        tally[0, b] += 1
        tally[1, b] += y
        tally[2, b] += score

    def restart(self, kind: str, version: int) -> None:
        """Count only scores from `version` on, of a model of `kind`: another kind scores otherwise."""
        self.kind, self.since_version, self.days = kind, version, {}

    def fit(self) -> list[list[float]]:
        """[scores, probabilities] of the curve over the last `WINDOW_DAYS` days; [] without enough."""
        from sklearn.isotonic import IsotonicRegression

        if not self.days:
            return []
        newest = max(self.days)
        for day in [d for d in self.days if d <= newest - WINDOW_DAYS]:
            del self.days[day]
        n, churned, total = np.sum(list(self.days.values()), axis=0)
        if min(churned.sum(), (n - churned).sum()) < MIN_EACH:
            return []
        used = n > 0
        x, rate, weight = total[used] / n[used], churned[used] / n[used], n[used]
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, rate, sample_weight=weight)
        xs, ys = fitted.X_thresholds_, fitted.y_thresholds_
        # Strictly increasing and strictly inside (0, 1), so that no two scores become equal.
        ys = _EDGE + (1 - 2 * _EDGE - _STEP * len(ys)) * ys + _STEP * np.arange(len(ys))
        return [[round(float(v), 7) for v in xs], [round(float(v), 7) for v in ys]]


def calibrated(score: np.ndarray, curve: list[list[float]]) -> np.ndarray:
    """Scores through the published curve (`ScoreTally.fit`); as they are without one. Straight
    lines between its points, and from its ends to (0, 0) and (1, 1): a score keeps its rank."""
    if not curve or not curve[0]:
        return score
    xs = np.concatenate([[0.0], curve[0], [1.0]])
    ys = np.concatenate([[0.0], curve[1], [1.0]])
    keep = np.concatenate([[True], np.diff(xs) > 0])  # a point at 0 or 1 already: once
    return np.interp(score, xs[keep], ys[keep])


def _bin(score: float) -> int:
    p = min(max(score, 1e-12), 1 - 1e-12)
    logit = np.log(p / (1 - p))
    return int(np.clip((logit + _LOGIT_RANGE) / (2 * _LOGIT_RANGE) * _BINS, 0, _BINS - 1))
