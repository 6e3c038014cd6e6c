"""Progressive validation: each label is scored before it is learned, and the last N
(score, outcome) pairs give the model's figures, as a retention team reads them."""

from __future__ import annotations

import numpy as np

__all__ = ["ProgressiveValidation", "auc", "auc_gain_low", "budget_calls", "budget_figures", "figures"]


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN without both classes.

    >>> auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    0.75
    """
    y = np.asarray(y).astype(bool)
    positives, negatives = int(y.sum()), int((~y).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = np.asarray(p)[order]
    # Average ranks over runs of equal scores.
    starts = np.r_[0, np.nonzero(np.diff(sorted_p))[0] + 1]
    ends = np.r_[starts[1:], len(p)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[y].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def auc_gain_low(y: np.ndarray, mine: np.ndarray, theirs: np.ndarray, who: np.ndarray,
                 resamples: int = 200, seed: int = 0) -> float:
    """How much better `theirs` ranks the labels `y` than `mine` does, at least, with 97.5%
    confidence: the 2.5th percentile of AUC(theirs) - AUC(mine) over resamples of the customers
    (`who`; a customer's labels are drawn together, since a customer has a label a day and their
    labels are not independent). Both scores are judged on the same draw, so what the two share
    (the customers that are easy or hard to rank) cancels out: two scores of the same labels
    differ far less by chance than two independent AUCs would. NaN without both classes."""
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    customers, at = np.unique(who, return_inverse=True)
    rng = np.random.default_rng(seed)
    ranked = [_tie_groups(np.asarray(p, np.float64)) for p in (mine, theirs)]
    gains = np.empty(resamples)
    for r in range(resamples):
        weight = rng.multinomial(len(customers), np.full(len(customers), 1 / len(customers)))[at].astype(np.float64)
        gains[r] = _weighted_auc(y, weight, *ranked[1]) - _weighted_auc(y, weight, *ranked[0])
    # A draw without a churner (or without a stayer) says nothing in favour: it counts as a loss.
    return float(np.percentile(np.where(np.isnan(gains), -np.inf, gains), 2.5, method="lower"))


def _tie_groups(p: np.ndarray) -> tuple[np.ndarray, int]:
    """Each score's group among the distinct scores, in ascending order, and how many there are."""
    values, group = np.unique(p, return_inverse=True)
    return group, len(values)


def _weighted_auc(y: np.ndarray, weight: np.ndarray, group: np.ndarray, groups: int) -> float:
    """AUC with each label counted `weight` times (ties count half)."""
    pos = np.bincount(group, weight * y, groups)
    neg = np.bincount(group, weight * ~y, groups)
    total = pos.sum() * neg.sum()
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / total) if total else float("nan")


def budget_calls(labels: int, share: float) -> int:
    """How many of `labels` the top `share` calls: at least one."""
    return max(1, int(round(share * labels)))


def budget_figures(y: np.ndarray, p: np.ndarray, share: float) -> tuple[float, float]:
    """(precision, recall) when only the top `share` of scores can be called."""
    y = np.asarray(y, np.float64)
    if len(y) == 0:
        return float("nan"), float("nan")
    k = budget_calls(len(y), share)
    top = np.argsort(-np.asarray(p), kind="mergesort")[:k]
    hits = y[top].sum()
    return float(hits / k), float(hits / y.sum()) if y.sum() else float("nan")


def lift(y: np.ndarray, p: np.ndarray, share: float = 0.1) -> float:
    """Precision in the top `share` of scores over the base rate."""
    base = float(np.mean(y)) if len(y) else 0.0
    if base == 0:
        return float("nan")
    return budget_figures(y, p, share)[0] / base


def _calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: |mean score - churn rate| over equal-count bins, weighted."""
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    error = 0.0
    for part in np.array_split(order, min(bins, len(order))):
        error += len(part) * abs(float(np.mean(p[part])) - float(np.mean(y[part])))
    return error / len(y)


class ProgressiveValidation:
    """A sliding window of the last `size` labels: outcome, score before learning, features."""

    def __init__(self, size: int, width: int, budget_share: float) -> None:
        self.size = size
        self.budget_share = budget_share
        self.y = np.zeros(size, np.int8)
        self.p = np.zeros(size, np.float64)
        self.x = np.zeros((size, width), np.float64)
        self.seen = 0

    def add(self, x: np.ndarray, y: int, p: float) -> None:
        at = self.seen % self.size
        self.y[at], self.p[at], self.x[at] = y, p, x
        self.seen += 1

    def window(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, p) of the window, oldest first."""
        n = min(self.seen, self.size)
        order = (np.arange(n) + (self.seen - n)) % self.size
        return self.x[order], self.y[order], self.p[order]

    def figures(self) -> dict[str, float]:
        _, y, p = self.window()
        return figures(y, p, self.budget_share)


def figures(y: np.ndarray, p: np.ndarray, budget_share: float) -> dict[str, float]:
    """How scores `p` did on outcomes `y`, as the trainer reports them."""
    eps = 1e-7
    q = np.clip(p, eps, 1 - eps)
    precision, recall = budget_figures(y, p, budget_share)
    return {
        "labels": float(len(y)),
        "positives": float(y.sum()),
        "auc": auc(y, p),
        "log_loss": float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q))) if len(y) else float("nan"),
        "precision_at_budget": precision,
        "recall_at_budget": recall,
        "top_decile_lift": lift(y, p),
        "calibration_error": _calibration_error(y, p),
    }
