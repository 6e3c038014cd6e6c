"""Out-of-fold scores of the contest's candidates on its label store (`model/champion.py`).

Before the contest has judged a round, the online model is the champion only because it came
first, and a young store holds too few labels for rounds: a base that makes 800 labels a month
would wait more than a month for its first one. A data team with those labels would compare the
two ways of learning by cross-validation, and so does the contest then: each candidate learns
the other folds (the online model in the order the labels came, as it does live; the trees fitted
on them) and scores the fold it did not see. Folds are drawn by customer, so that no customer's
labels are on both sides (a churner's daily labels look alike; trees would recognise them), and
balanced in churners: the scores of the five folds are ranked together, and models learned on
folds of other churn rates would score on other scales.
"""

from __future__ import annotations

import numpy as np

from stream_app.model.boosted import TreeScorer, fit_trees
from stream_app.model.scoring import Learner

__all__ = ["FOLDS", "out_of_fold"]

FOLDS = 5


def out_of_fold(like: Learner, x: np.ndarray, y: np.ndarray, who: np.ndarray) -> np.ndarray | None:
    """(n, 2) scores of each label by a fresh online model like `like` and by trees, each learned
    from the folds without it; None when the store has too few customers for the folds."""
    from sklearn.model_selection import StratifiedGroupKFold

    if len(np.unique(who)) < FOLDS:
        return None
    out = np.empty((len(y), 2))
    for train, test in StratifiedGroupKFold(FOLDS).split(x, y, who):
        if len(np.unique(y[train])) < 2:
            return None  # a fold of one outcome: trees cannot be fitted on it
        online = Learner(like.kind, like.validation.size, like.validation.budget_share, like.features)
        for row in train:  # in the order the store learned them
            online.learn(x[row], int(y[row]))
        out[test, 0] = [online.predict(row) for row in x[test]]
        out[test, 1] = TreeScorer(fit_trees(x[train], y[train]), x.shape[1]).score(x[test])  # as the contest scores
    return out
