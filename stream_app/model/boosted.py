"""Boosted trees: the model the trainer refits on its recent labels, as workers receive and score it.

The trainer fits scikit-learn's histogram gradient boosting. What travels to the workers is not
a pickle but the trees as plain arrays (per node: the feature, the threshold, the children, the
value), so a worker runs no code it reads from Redis and needs no signing key for it. Each score
is explained by the features on its decision paths: every split passes the change of the expected
value between the node and the child taken to its feature (Saabas' attribution).

Scores come from scikit-learn's compiled tree walk, fed the checked arrays (about 8 us a customer
in a batch of 10,000, `churnwatch bench`, against 35-45 us for the numpy walk that stands in where
that walk is missing; both give scikit-learn's own probabilities). Its walk trusts its input,
which is why `TreeScorer` first checks that every child index lies inside its tree and after its
parent: nothing read from Redis can send it outside an array or round a loop.
"""

from __future__ import annotations

import msgspec
import numpy as np
from threadpoolctl import threadpool_limits

from stream_app.errors import ChurnwatchError

__all__ = ["Trees", "TreeScorer", "fit_trees", "one_thread", "TreesRefused"]

#: The reference's settings (`offline/evaluate_monthly.py`): the same library, the same trees.
BOOSTING = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 31, "min_samples_leaf": 20}
#: What a worker accepts: ten times what these settings make (200 trees of at most 61 nodes), so that
#: arrays read from Redis cannot hold a batch for seconds.
MAX_TREES, MAX_NODES = 2_000, 200_000


def one_thread() -> threadpool_limits:
    """Holds scikit-learn's trees (OpenMP) and the linear algebra under its other learners (BLAS)
    to one thread while in use. On a shared two-core machine their threads wait on each other,
    spinning for whole time slices: a fit of a few thousand labels has run past 300 s (seen in CI,
    inside the trainer's refit). One thread costs 1.2-1.8x on a quiet machine (trees on 2,000 to
    100,000 rows of 25 features), and workers keep the other core busy. BLAS's limit is the
    process's: hold it from one thread at a time (every fit here runs on the caller's thread)."""
    return threadpool_limits(limits=1)


class TreesRefused(ChurnwatchError, ValueError):
    """Tree arrays that do not form trees over this build's features."""


class Trees(msgspec.Struct, frozen=True):
    """All trees of a boosted model, node arrays end to end; `roots` says where each tree starts."""

    width: int  # features per row
    depth: int  # the longest path from a root to a leaf
    baseline: float  # the log-odds every tree's value is added to
    roots: bytes  # int32, one per tree
    feature: bytes  # int32 per node; -1 at a leaf
    threshold: bytes  # float64: a value <= threshold goes left
    missing_left: bytes  # uint8: where a missing (NaN) value goes
    left: bytes  # int32 node index
    right: bytes  # int32 node index
    value: bytes  # float64: a leaf's log-odds; a split's, its leaves' mean weighted by training rows


def fit_trees(x: np.ndarray, y: np.ndarray, seed: int = 7) -> Trees:
    """Fit boosted trees on (x, y) and return them as arrays; an infinite value counts as missing."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    # scikit-learn refuses infinities (one label could carry one) but reads NaN as missing.
    x = np.where(np.isfinite(x), x, np.nan)
    with one_thread():
        model = HistGradientBoostingClassifier(**BOOSTING, random_state=seed).fit(x, y)
    parts, offset = [], 0
    for (predictor,) in model._predictors:  # binary: one tree per iteration
        nodes = predictor.nodes
        parts.append((nodes, offset))
        offset += len(nodes)
    return _pack(parts, x.shape[1], float(np.ravel(model._baseline_prediction)[0]))


def _pack(parts: list[tuple[np.ndarray, int]], width: int, baseline: float) -> Trees:
    leaf = np.concatenate([n["is_leaf"].astype(bool) for n, _ in parts])
    feature = np.where(leaf, -1, np.concatenate([n["feature_idx"] for n, _ in parts])).astype(np.int32)
    left = np.concatenate([np.where(n["is_leaf"], 0, n["left"].astype(np.int64) + o) for n, o in parts])
    right = np.concatenate([np.where(n["is_leaf"], 0, n["right"].astype(np.int64) + o) for n, o in parts])
    value = np.concatenate([_expected_values(n) for n, _ in parts])
    depth = max(int(n["depth"].max()) for n, _ in parts) if parts else 0
    return Trees(width, depth, baseline, np.array([o for _, o in parts], np.int32).tobytes(), feature.tobytes(),
                 np.concatenate([n["num_threshold"] for n, _ in parts]).astype(np.float64).tobytes(),
                 np.concatenate([n["missing_go_to_left"] for n, _ in parts]).astype(np.uint8).tobytes(),
                 left.astype(np.int32).tobytes(), right.astype(np.int32).tobytes(), value.tobytes())


def _expected_values(nodes: np.ndarray) -> np.ndarray:
    """Leaves keep their value; a split gets its children's, weighted by the training rows in
    each (scikit-learn leaves a split's own value unshrunk, which attribution cannot use)."""
    value = nodes["value"].astype(np.float64).copy()
    count = nodes["count"].astype(np.float64)
    for i in np.argsort(-nodes["depth"], kind="stable"):  # children before parents
        if not nodes["is_leaf"][i]:
            a, b = nodes["left"][i], nodes["right"][i]
            total = count[a] + count[b]
            value[i] = (value[a] * count[a] + value[b] * count[b]) / total if total else 0.0
    return value


class TreeScorer:
    """Scores rows with `Trees`, after checking that they are trees over `width` features."""

    def __init__(self, trees: Trees, width: int) -> None:
        self.trees = trees
        if trees.width != width:
            raise TreesRefused(f"trees made for {trees.width} features; this build computes {width}")
        try:
            self.roots = np.frombuffer(trees.roots, np.int32)
            self.feature = np.frombuffer(trees.feature, np.int32)
            self.threshold = np.frombuffer(trees.threshold, np.float64)
            self.missing_left = np.frombuffer(trees.missing_left, np.uint8).astype(bool)
            self.left = np.frombuffer(trees.left, np.int32)
            self.right = np.frombuffer(trees.right, np.int32)
            self.value = np.frombuffer(trees.value, np.float64)
        except ValueError as exc:
            raise TreesRefused(f"unreadable tree arrays: {exc}") from None
        self.depth, self.baseline, self.width = trees.depth, trees.baseline, width
        self._check(width)
        self._compiled = _compiled(self)

    def __reduce__(self) -> tuple:
        """Pickled (in the trainer's checkpoint) as its trees: the compiled walk's copies are remade."""
        return TreeScorer, (self.trees, self.trees.width)

    def _check(self, width: int) -> None:
        n = len(self.feature)
        if any(len(a) != n for a in (self.threshold, self.missing_left, self.left, self.right, self.value)):
            raise TreesRefused("tree arrays of different lengths")
        if not 0 < len(self.roots) <= MAX_TREES or n > MAX_NODES:
            raise TreesRefused(f"{len(self.roots)} trees of {n} nodes; at most {MAX_TREES} trees of {MAX_NODES} nodes")
        split = self.feature >= 0
        roots = self.roots.astype(np.int64)  # int32 differences could wrap round
        if roots[0] != 0 or np.any(np.diff(roots) <= 0) or roots[-1] >= n:
            raise TreesRefused("a tree points outside its nodes")
        end = np.r_[self.roots[1:], n][np.searchsorted(self.roots, np.arange(n), side="right") - 1]
        at = np.arange(n)[split]
        for child in (self.left[split], self.right[split]):
            if np.any(child <= at) or np.any(child >= end[split]):  # inside its tree, after its parent
                raise TreesRefused("a tree points outside its nodes")
        if (self.feature.max(initial=-1) >= width or not np.isfinite(self.value).all()
                or not np.isfinite(self.baseline) or self.depth > 64):
            raise TreesRefused("a tree splits on an unknown feature, or has non-finite values")

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """(rows, trees): the leaf each row reaches in each tree. All (row, tree) pairs step
        down together, and those at a leaf drop out: most paths are far shorter than the deepest."""
        rows, trees = len(x), len(self.roots)
        node = np.tile(self.roots, rows)
        flat = np.ascontiguousarray(x, np.float64).ravel()
        base = np.repeat(np.arange(rows) * x.shape[1], trees)
        active = np.flatnonzero(self.feature[node] >= 0)
        while active.size:
            at = node[active]
            v = flat[base[active] + self.feature[at]]
            go_left = (v <= self.threshold[at]) | (self.missing_left[at] & np.isnan(v))
            step = np.where(go_left, self.left[at], self.right[at])
            node[active] = step
            active = active[self.feature[step] >= 0]
        return node.reshape(rows, trees)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Churn probability of each row."""
        x = np.ascontiguousarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] != self.width:  # the compiled walk reads columns unchecked
            raise ValueError(f"rows of {x.shape[-1]} features; these trees read {self.width}")
        if self._compiled is None:
            return self.walked(x)
        predict, trees, no_categories, no_map = self._compiled
        logit = np.full(len(x), self.baseline)
        out = np.empty(len(x))
        for nodes in trees:
            predict(nodes, x, no_categories, no_categories, no_map, 1, out)
            logit += out
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))

    def walked(self, x: np.ndarray) -> np.ndarray:
        """Churn probability of each row, by the numpy walk."""
        logit = self.value[self.leaves(x)].sum(axis=1) + self.baseline
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))

    def contributions(self, row: np.ndarray) -> np.ndarray:
        """Per feature, how much the splits on it moved this row's log-odds (they sum, with the
        roots' expected values and the baseline, to the row's log-odds)."""
        out = np.zeros(len(row))
        for root in self.roots:
            node = int(root)
            while self.feature[node] >= 0:
                f = int(self.feature[node])
                v = row[f]
                go_left = self.missing_left[node] if np.isnan(v) else v <= self.threshold[node]
                child = int(self.left[node] if go_left else self.right[node])
                out[f] += self.value[child] - self.value[node]
                node = child
        return out


def _compiled(scorer: TreeScorer) -> tuple | None:
    """scikit-learn's compiled walk and each tree in its node layout; None where this scikit-learn
    lays its nodes out otherwise (the numpy walk then scores)."""
    try:
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    except ImportError:
        return None
    if not {"value", "feature_idx", "num_threshold", "missing_go_to_left", "left", "right", "is_leaf",
            "is_categorical"} <= set(PREDICTOR_RECORD_DTYPE.names or ()):
        return None
    ends = np.r_[scorer.roots[1:], len(scorer.feature)]
    trees = []
    for start, end in zip(scorer.roots, ends):
        nodes = np.zeros(end - start, PREDICTOR_RECORD_DTYPE)
        leaf = scorer.feature[start:end] < 0
        nodes["value"], nodes["is_leaf"] = scorer.value[start:end], leaf
        nodes["feature_idx"] = np.maximum(scorer.feature[start:end], 0)
        nodes["num_threshold"] = scorer.threshold[start:end]
        nodes["missing_go_to_left"] = scorer.missing_left[start:end]
        nodes["left"] = np.where(leaf, 0, scorer.left[start:end] - start)
        nodes["right"] = np.where(leaf, 0, scorer.right[start:end] - start)
        trees.append(nodes)
    return _predict_from_raw_data, trees, np.zeros((0, 8), np.uint32), np.zeros(scorer.feature.max(initial=0) + 1,
                                                                                 np.uint32)
