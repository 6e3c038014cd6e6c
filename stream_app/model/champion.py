"""Champion and challenger: the online model beside boosted trees refitted on recent labels, each
judged on labels it has not learned yet; workers score with the one that ranks them better.

- `online`: `scoring.Learner`, one label at a time, following drift by its own trials.
- `boosted`: trees (`boosted.py`) refitted on the label store (`label_store.py`) after
  `CHURNWATCH_MODEL_REFIT_LABELS` new labels, or sooner while the store is small (once it has
  grown by a quarter since the last fit); it has no score before its first fit. At each refit it
  becomes the trees blended with the online model (`scoring.blend`: the mean of the two
  probabilities) if, on the last window's labels, the blend ranked them better (AUC) than the trees
  alone did, and the trees alone if not (always beside a forest). On the simulator the blend
  calls more churners than either; on the Iranian set, where trees rank far better than a straight
  line, the trees alone are better.

Every label is scored by each candidate before any of them learns it (progressive validation).
Every `CHURNWATCH_MODEL_ROUND_LABELS` labels the candidates are compared on the last
`CHURNWATCH_VALIDATION_WINDOW` labels that both scored. The challenger wins a round when its
precision at the call budget is no lower and either its AUC beats the champion's by
`CHURNWATCH_MODEL_PROMOTE_MARGIN`, better with 97.5% confidence (`validation.auc_gain_low`: the two
scored the same labels, resampled by customer, since a customer has a label a day and a window of a
small base holds a few churners many times over), or it calls at least two more churners at the
budget with an AUC no lower: the call list is what the service is for, and a blend that calls more
churners while ranking the rest as well wins no AUC margin (one more churner in a window's few
calls comes and goes between rounds: on the simulator, the champion changed 7 to 9 times where it
needed only one more). After `CHURNWATCH_MODEL_PROMOTE_ROUNDS` rounds won in a row it becomes the
champion. The margin and the rounds keep the champion from flapping between two models that rank
alike. The comparison is paired: it judged each AUC's own error before, as if the two were
independent, and on the Iranian set (2,520 labels a fold) trees better by 0.03 to 0.05 of AUC lost
the first round in every fold, and the online model stayed champion.

Before a round has counted, the online model is champion only by coming first: at each refit the
two are judged instead by cross-validation on the store (`store_folds.py`), where the challenger
wins its first promotion on the margin (or two more churners called) and the precision alone, with
no confidence bound and no streak; a change after that needs the confidence too, so that a young
store's noise does not make the champion flap. A store of a few hundred labels leaves no round a
chance (a fold of the monthly sample holds 800 labels, a round 1,000), and there trees fitted on
all 800 ranked the held-out customers better than the online model in each of five folds. The store
judges only while it holds every label the online model learned (a model restored from before the
store, or one that has outlived the store's capacity or age, knows more than a fresh one learning
the store would), up to `CHURNWATCH_VALIDATION_WINDOW` labels, and for the linear online model: the
forest's learning is too slow to cross-validate on the trainer's path.

Only the labels of customers the trees did not learn as churners are judged: a churner has a
positive label for each of the horizon's days before leaving, and trees refitted on the first of
them recognise the customer in the next (their features barely move from a day to the next),
which live scoring never sees: there, a customer's positive labels come only after the churn. On
1,000 simulated customers, judged on all labels, the trees won, and the test period's AUC fell
from 0.83 (the online model) to 0.73.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass
from typing import Literal

import msgspec
import numpy as np

from stream_app.model.boosted import Trees, TreeScorer, fit_trees
from stream_app.model.label_store import LabelStore
from stream_app.model.scoring import Adaptation, Learner, ModelSnapshot, blend, model_features
from stream_app.model.signing import Signer
from stream_app.model.store_folds import FOLDS, out_of_fold
from stream_app.model.validation import auc, auc_gain_low, budget_calls, figures
from stream_app.settings import Settings

__all__ = ["CANDIDATES", "Contest", "Policy", "Verdict"]

CANDIDATES = ("online", "boosted")
FIRST_FIT_LABELS = 500  # the trees' first fit waits for this many labels ...
FIRST_FIT_POSITIVES = 20  # ... and this many churners among them
_JUDGED_MIN = 200  # labels both candidates scored, at least, for a round to count
_JUDGED_MIN_POSITIVES = 10  # customers with a positive label


@dataclass(frozen=True)
class Policy:
    """The contest's settings, reread from the environment when a checkpoint is restored."""

    challenger: bool
    window: int
    budget_share: float
    store_labels: int
    store_days: int
    refit_labels: int
    round_labels: int
    margin: float
    rounds: int

    @classmethod
    def of(cls, s: Settings) -> "Policy":
        return cls(s.model_challenger, s.validation_window, s.call_budget_share, s.model_store_labels,
                   s.model_store_days, s.model_refit_labels, s.model_round_labels, s.model_promote_margin,
                   s.model_promote_rounds)


@dataclass(frozen=True)
class Verdict:
    """Something the contest did that the trainer announces: a refit, or a new champion."""

    kind: Literal["refit", "promoted"]
    detail: str
    candidate: str = "boosted"


class _Scores:
    """The last `size` labels, with each candidate's score before learning it (NaN: no model yet)."""

    def __init__(self, size: int) -> None:
        self.y = np.zeros(size, np.int8)
        self.p = np.full((size, len(CANDIDATES)), np.nan)  # the online model, the trees alone
        self.mixed = np.full(size, np.nan)  # the two blended (apart: a rollback's build reads `p` as it was)
        self.who = np.zeros(size, np.int64)  # the customer, hashed
        self.blind = np.zeros(size, bool)  # a customer the trees scoring it had not learned as a churner
        self.seen = 0

    def add(self, y: np.ndarray, p: np.ndarray, who: np.ndarray, blind: np.ndarray) -> None:
        """`p`: per label, the online model's score, the trees', and the two blended."""
        for row in range(len(y)):
            at = self.seen % len(self.y)
            self.y[at], self.who[at], self.blind[at] = y[row], who[row], blind[row]
            self.p[at], self.mixed[at] = p[row, :2], p[row, 2]
            self.seen += 1

    def judged(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(y, p, customer) of the labels in the window that every candidate scored blind; `p` as `add`
        takes it."""
        n = min(self.seen, len(self.y))
        p = np.column_stack([self.p[:n], self.mixed[:n]])
        both = np.isfinite(p).all(axis=1) & self.blind[:n]
        return self.y[:n][both], p[both], self.who[:n][both]


def _enough(y: np.ndarray, who: np.ndarray) -> bool:
    """Whether labels can judge: enough of them, not all churners, and enough customers among the churners."""
    return len(y) >= _JUDGED_MIN and not y.all() and len(np.unique(who[y == 1])) >= _JUDGED_MIN_POSITIVES


class Contest:
    """The candidates, what they are judged on, and which one is the champion."""

    def __init__(self, settings: Settings) -> None:
        self.policy = Policy.of(settings)
        features = model_features(settings.attributes)
        self.online = Learner(settings.model_kind, settings.validation_window, settings.call_budget_share, features)
        self.store = LabelStore(self.policy.store_labels, len(features), self.policy.store_days)
        self.trees: Trees | None = None
        self._trees: TreeScorer | None = None
        self._churners = np.zeros(0, np.int64)  # the customers the trees learned as churners, hashed
        self.scores = _Scores(self.policy.window)
        self._pending: list[tuple[np.ndarray, int, float, int]] = []  # labels the trees have not scored yet
        self.fitted = 0  # the store's label count at the last fit
        self.refits = 0
        self.champion = "online"
        self.streak = 0  # rounds the challenger has won in a row
        self.promotions = 0
        self.since_round = 0
        self.figures: dict[str, dict[str, float]] = {}  # per candidate, at the last judgement
        self.rounds_counted = 0  # rounds judged with enough evidence; before the first, the store judges
        self.blended = False  # the boosted candidate: the trees blended with the online model, or alone

    def reconfigure(self, settings: Settings) -> None:
        """Take the settings in force (after a restart): a store or window of another size keeps its
        newest labels; without the challenger, the online model is the champion again."""
        self.policy = Policy.of(settings)
        p = self.policy
        # A checkpoint from before the store's judgement: a round had counted if it kept figures.
        self.__dict__.setdefault("rounds_counted", int(bool(self.figures)))
        self.store.upgrade()
        self.__dict__.setdefault("blended", False)
        if (self.store.capacity, self.store.max_age_days) != (p.store_labels, p.store_days):
            self.store = self.store.resized(p.store_labels, p.store_days)
        if len(self.scores.y) != p.window or not hasattr(self.scores, "mixed"):
            self.scores = _Scores(p.window)  # the rounds to come are judged on labels scored from now on
        if not p.challenger:
            self.champion, self.streak = "online", 0

    @property
    def features(self) -> tuple[str, ...]:
        """What the candidates were made for: a build with other features starts afresh."""
        return self.online.features

    @property
    def labels(self) -> int:
        return self.online.labels

    def learn(self, x: np.ndarray, y: int, day: int, customer: str) -> tuple[Adaptation, list[Verdict]]:
        """Score `x` with every candidate, then let each learn (`x`, `y`)."""
        change = self.online.learn(x, y)
        if not self.policy.challenger:
            return change, []
        who = zlib.crc32(customer.encode())
        self._pending.append((x, y, self.online.last_score, who))
        self.store.add(x, y, day, who)
        verdicts = []
        if self._refit_due():
            self._flush()
            verdicts += self._refit()
        self.since_round += 1
        if self.since_round >= self.policy.round_labels:
            self.since_round = 0
            self._flush()
            verdicts += self._judge()
        return change, verdicts

    def _flush(self) -> None:
        """Score the labels learned since the trees last scored, with the trees that had not seen them."""
        if not self._pending:
            return
        x = np.stack([row[0] for row in self._pending])
        online_p = np.array([row[2] for row in self._pending])
        tree_p = self._trees.score(x) if self._trees is not None else np.full(len(x), np.nan)
        who = np.array([row[3] for row in self._pending], np.int64)
        scored = np.column_stack([online_p, tree_p, blend(online_p, tree_p)])
        self.scores.add(np.array([row[1] for row in self._pending]), scored, who, ~np.isin(who, self._churners))
        self._pending = []

    def _candidates(self, p: np.ndarray) -> np.ndarray:
        """The two candidates' columns of scores `p` (online, trees, blended): the boosted one's blended
        or alone, as `self.blended` says."""
        return p[:, [0, 2 if self.blended else 1]]

    def _choose_blend(self, y: np.ndarray, p: np.ndarray, who: np.ndarray) -> None:
        """Whether the boosted candidate blends the trees with the online model (`scoring.blend`): when
        the blend ranks the labels `y` better (AUC) than the trees alone; only beside a linear model,
        and only on enough evidence, else as before."""
        if self.online.kind == "logistic" and _enough(y, who):
            self.blended = auc(y, p[:, 2]) > auc(y, p[:, 1])

    def _refit_due(self) -> bool:
        new = self.store.seen - self.fitted
        if not self.fitted:
            return new >= FIRST_FIT_LABELS and self.store.y[:len(self.store)].sum() >= FIRST_FIT_POSITIVES
        return new >= min(self.policy.refit_labels, max(FIRST_FIT_LABELS, self.fitted // 4))

    def _refit(self) -> list[Verdict]:
        started = time.perf_counter()
        x, y, who = self.store.recent()
        self.fitted = self.store.seen
        if len(np.unique(y)) < 2:
            return []  # the recent labels have one outcome only (the age limit dropped the others)
        self._choose_blend(*self.scores.judged())  # by the trees about to be replaced, on labels they had not seen
        self.trees = fit_trees(x, y)
        self._churners = np.unique(who[y == 1])
        self._trees = TreeScorer(self.trees, len(self.features))
        self.refits += 1
        how = "blended with the online model" if self.blended else "alone"
        verdicts = [Verdict("refit", f"boosted trees refitted on {len(y):,} labels of up to "
                                     f"{self.policy.store_days} days ({int(y.sum()):,} churned) "
                                     f"in {time.perf_counter() - started:.1f} s; scored {how}")]
        return verdicts + (self._judge_on_store(x, y, who) if self._store_judges(len(y)) else [])

    def _judge(self) -> list[Verdict]:
        y, p, who = self.scores.judged()
        if not _enough(y, who):
            return []  # not enough evidence: the round does not count either way
        self.rounds_counted += 1
        self.streak = self.streak + 1 if self._challenger_wins(y, self._candidates(p), who, confident=True) else 0
        if self.streak < self.policy.rounds:
            return []
        return [self._promote(f"on the last {len(y):,} labels, {self.policy.rounds} rounds in a row")]

    def _store_judges(self, fitted_on: int) -> bool:
        """Whether the store judges the candidates (see the module's docstring): before any round has
        counted, while the trees were fitted on every label the online model learned (not after a
        restart from a model older than the store, nor once the store has dropped labels), and while
        cross-validating stays cheap (a window's labels, the linear model)."""
        return (not self.rounds_counted and fitted_on == self.online.labels <= self.policy.window
                and self.online.kind == "logistic")

    def _judge_on_store(self, x: np.ndarray, y: np.ndarray, who: np.ndarray) -> list[Verdict]:
        """The candidates' out-of-fold scores on the store judge (store_folds.py). The first time, the
        better by the margin is the champion, without the rounds' confidence and streak, since the
        online model holds the title only by coming first; a later change needs the confidence."""
        p = out_of_fold(self.online, x, y, who) if _enough(y, who) else None
        if p is not None:
            p = np.column_stack([p, blend(p[:, 0], p[:, 1])])
            self._choose_blend(y, p, who)
            p = self._candidates(p)
        if p is None or not self._challenger_wins(y, p, who, confident=self.promotions > 0):
            return []
        return [self._promote(f"by {FOLDS}-fold cross-validation on the store's {len(y):,} labels, before any round")]

    def _challenger_wins(self, y: np.ndarray, p: np.ndarray, who: np.ndarray, confident: bool) -> bool:
        """Whether the challenger's scores `p[:, its column]` beat the champion's (see the module's
        docstring; `confident`: the AUC margin needs 97.5% confidence); keeps the figures."""
        self.figures = {name: figures(y, p[:, i], self.policy.budget_share) for i, name in enumerate(CANDIDATES)}
        challenger = next(name for name in CANDIDATES if name != self.champion)
        mine, theirs = self.figures[self.champion], self.figures[challenger]
        at = {name: i for i, name in enumerate(CANDIDATES)}
        if theirs["precision_at_budget"] < mine["precision_at_budget"]:
            return False
        ranks_better = (theirs["auc"] >= mine["auc"] + self.policy.margin
                        and (not confident or auc_gain_low(y, p[:, at[self.champion]], p[:, at[challenger]], who,
                                                           seed=self.scores.seen) > 0))
        # Or it calls more churners at the budget, the service's own measure, while ranking all no worse:
        # two more at least, since one in a window's few calls comes and goes from a round to the next.
        calls = budget_calls(len(y), self.policy.budget_share)
        more = (theirs["precision_at_budget"] - mine["precision_at_budget"]) * calls
        return ranks_better or (more > 1.5 and theirs["auc"] >= mine["auc"])

    def _promote(self, how: str) -> Verdict:
        before = self.champion
        self.champion = next(name for name in CANDIDATES if name != before)
        self.streak = 0
        self.promotions += 1
        mine, theirs = self.figures[before], self.figures[self.champion]
        return Verdict("promoted", f"{self.champion} is the champion: AUC {theirs['auc']:.3f} against {before}'s "
                                   f"{mine['auc']:.3f}, precision at the call budget "
                                   f"{theirs['precision_at_budget']:.2f} against {mine['precision_at_budget']:.2f}, "
                                   f"{how}", self.champion)

    def snapshot(self, version: int, signer: Signer | None = None) -> ModelSnapshot:
        """The champion as published, with every candidate's figures at the last judgement."""
        base = self.online.snapshot(version, signer)
        shown = {name: {k: v for k, v in f.items() if math.isfinite(v)} for name, f in self.figures.items()}
        base = msgspec.structs.replace(base, candidates=shown, promotions=self.promotions)
        if self.champion != "boosted" or self.trees is None or not self.policy.challenger:
            return base
        y, p, who = self.scores.judged()
        # Trees the store made champion may not have scored a label since: their out-of-fold figures.
        judged = (figures(y, self._candidates(p)[:, 1], self.policy.budget_share) if _enough(y, who)
                  else self.figures["boosted"])
        own = {k: v for k, v in judged.items() if math.isfinite(v)}
        snap = msgspec.structs.replace(base, kind="blended", pickled=None, trees=self.trees, figures=own)
        # Blended, the online model's weights travel with the trees (a kind of its own, which a build
        # that cannot blend refuses, keeping its model); alone, the trees are the model.
        return snap if self.blended else msgspec.structs.replace(snap, kind="boosted", weights=[], intercept=0.0)

