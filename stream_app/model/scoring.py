"""The churn model: what it sees, how it learns (river), and how scorers use a published version.

A trainer owns a `Learner` and publishes `ModelSnapshot`s; workers hold a `Scorer` built
from the latest one. The default model is linear (standardise, then logistic regression),
so a snapshot is a handful of arrays and a batch is scored with one matrix product, and
each score is explained by its largest terms (weight x standardised value).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
import pickle
import time
import zlib
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import msgspec
import numpy as np
from river import compose, drift, forest, linear_model, optim, preprocessing

from stream_app.contracts.attributes import columns as attribute_columns
from stream_app.errors import ChurnwatchError
from stream_app.features.baselines import MONTHLY, column_name, comparable
from stream_app.features.derive import ACTIVITY_PERIODS, shortfall_z
from stream_app.model.boosted import Trees, TreeScorer, TreesRefused
from stream_app.model.saving import SavingModel
from stream_app.model.signing import Signer, Unsigned
from stream_app.model.validation import ProgressiveValidation, auc
from stream_app.settings import Attribute

__all__ = [
    "MODEL_FEATURES", "FORMAT", "ModelRefused", "ModelSnapshot", "Scorer", "Adaptation", "Learner", "Driver",
    "feature_digest", "model_features", "model_inputs", "monthly_pending", "encode_snapshot", "decode_model", "blend",
]

#: Features the model learns from, and how each is squashed first: heavy-tailed volumes
#: by log1p, ratios clipped to [-1, 3] so that one customer's jump from 1 to 500 minutes
#: does not dominate a gradient step. Last month's spend and its changes are the postpaid
#: lines' only: a prepaid customer's top-ups come in lumps, and with them a linear model
#: took a month without a top-up for a collapse (on the simulator, half the weekly call list
#: was such customers; without them precision at the budget went 0.21 -> 0.40). The activity
#: (calls, SMS, data sessions) of each recent period against the customer's usual (`activity_z_d*`,
#: standard deviations, clipped to +-SD_LIMIT) tell a months-long decline from a dip of a few
#: weeks: 0.40 -> 0.57 with calls alone, then 0.66 -> 0.69 with all three (simulator, seed 7).
MODEL_FEATURES: dict[str, Literal["log", "ratio", "sd", "as_is"]] = {
    "tenure_days": "log", "vip": "as_is", "prepaid": "as_is", "postpaid_arpu_m1": "log", "arpu_3m": "log",
    "postpaid_arpu_mom": "ratio", "postpaid_arpu_cv_6m": "ratio", "mou_out_m1": "log", "mou_out_mom": "ratio", "mou_out_30d": "log",
    "mou_out_30d_mom": "ratio", "mou_out_14d_trend": "ratio", "calls_out_30d": "log",
    "cs_calls_30d": "log", "dropped_rate_30d": "as_is", "offnet_share_30d": "as_is", "data_mom": "ratio",
    "contacts_m1": "log", "contacts_mom": "ratio", "days_since_active": "log", "mid_high_end": "as_is",
    "activity_usual": "log", **{f"activity_z_d{a}_{b}": "sd" for a, b in ACTIVITY_PERIODS},
}
NAMES = tuple(MODEL_FEATURES)
SD_LIMIT = 10.0  # "sd" features: a heavy caller who stops is -40 sd; past 10 the evidence is already plain
#: Standardised values are clipped to this many standard deviations: early on, a feature
#: that has barely varied yet has a tiny deviation, and one customer would be "50 sd" off.
Z_LIMIT = 5.0
LEARNING_RATE = 0.05  # AdaGrad's base step (see `_river_model`)
FORMAT = 2  # bump when a snapshot's meaning changes; older scorers then refuse it


def model_features(attributes: Mapping[str, Attribute]) -> tuple[str, ...]:
    """What the model sees: the built-in features, then the declared attributes' columns."""
    return NAMES + attribute_columns(attributes)


@functools.lru_cache(maxsize=8)  # the trainer asks once per label
def feature_digest(features: tuple[str, ...]) -> int:
    """A number that tells feature lists apart (never 0), carried by snapshots and labels: two lists
    of the same length but other attributes would otherwise pass for each other."""
    return zlib.crc32("\n".join(features).encode()) or 1


def model_inputs(features: dict[str, np.ndarray], medians: dict[str, np.ndarray] | None = None,
                 attributes: Sequence[str] = ()) -> np.ndarray:
    """The (customers, len(MODEL_FEATURES) + len(attributes)) matrix the model sees: `attributes`
    are the attribute columns of `model_features`, taken from `features` as they are.

    `medians`: per baseline feature (baselines.py), its median in each customer's segment
    that day (NaN where there is none yet). The changes the model sees are then measured
    from those medians, so that a holiday, an outage or a price change that moves the whole
    base moves no one's score: without this, a month at -40% for everyone raised score-only
    alerts from about 40 to about 700 over it and the month after (simulator, seed 7)."""
    shift = _shifts(features, medians or {})
    columns = []
    for name, how in MODEL_FEATURES.items():
        col = np.asarray(features[name], np.float64)
        if name in shift:
            col = col - shift[name]
        elif name in _ACTIVITY_Z:  # the expected activity moved as the segment's
            change = _ACTIVITY_Z[name]
            col = shortfall_z(features[change], features["activity_usual"] * _PERIOD_DAYS[name], shift.get(change, 0.0))
        columns.append(np.log1p(np.maximum(col, 0)) if how == "log" else np.clip(col, -1, 3) if how == "ratio"
                       else np.clip(col, -SD_LIMIT, SD_LIMIT) if how == "sd" else col)
    columns += [np.asarray(features[name], np.float64) for name in attributes]
    return np.stack(columns, axis=1)


def monthly_pending(features: dict[str, np.ndarray]) -> np.ndarray:
    """Rows whose segment's month-over-month baselines are pending (the first hours of a month,
    baselines.py): the model's monthly changes are not measured from the segment's then, and
    after a month when everyone fell its score would be everyone's."""
    return np.any([np.isneginf(features[column_name(50, name)]) for name in _MONTHLY_CHANGES], axis=0)


_MONTHLY_CHANGES = [name for name in MONTHLY if name in MODEL_FEATURES]
#: Each `activity_z_d*` input, the change it is recomputed from, and its period in days.
_ACTIVITY_Z = {f"activity_z_d{a}_{b}": f"activity_vs_usual_d{a}_{b}" for a, b in ACTIVITY_PERIODS}
_PERIOD_DAYS = {f"activity_z_d{a}_{b}": b - a for a, b in ACTIVITY_PERIODS}


def _shifts(features: dict[str, np.ndarray], medians: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per feature with a median: how far each customer's segment moved that day; 0 where
    there is no median, and for a customer whose change is not comparable (nothing before)."""
    counted = comparable(features) if medians else {}
    return {name: np.where(counted[name] & np.isfinite(m), m, 0.0) for name, m in medians.items() if name in counted}


class ModelRefused(ChurnwatchError, ValueError):
    """A snapshot this scorer must not use: corrupt, or made for other features or format."""


def _unpickle(blob: bytes | None, signer: Signer | None) -> Any:
    try:
        return (signer or Signer(None)).unpickle(blob or b"")
    except Unsigned as exc:
        raise ModelRefused(f"forest model refused: {exc}") from None


class ModelSnapshot(msgspec.Struct, frozen=True):
    """A published model. Fields added since format 2 have defaults: a build of format 2 reads a
    linear snapshot of this one, and refuses a boosted one (its kind), keeping the model it has."""

    version: int
    kind: Literal["logistic", "forest", "boosted", "blended"]  # blended: boosted trees averaged with the linear
    features: list[str]
    labels: int  # labels learned
    created_at: float
    mean: list[float]
    scale: list[float]  # standard deviation; 0 where a feature never varied
    weights: list[float]  # logistic and blended only
    intercept: float
    figures: dict[str, float]  # progressive validation at publication
    pickled: bytes | None = None  # forest only: the river model itself
    format: int = FORMAT
    trees: Trees | None = None  # boosted only: the trees as arrays (boosted.py), no pickle
    candidates: dict[str, dict[str, float]] = {}  # every candidate's figures at the last judgement (champion.py)
    promotions: int = 0  # champions replaced so far
    saving: SavingModel | None = None  # the evidence of what calls keep (saving.py), learned beside the model


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(ModelSnapshot)


def encode_snapshot(snapshot: ModelSnapshot) -> bytes:
    """The snapshot behind a SHA-256 of itself, so that a torn or tampered write is noticed."""
    body = _encoder.encode(snapshot)
    return hashlib.sha256(body).digest() + body


def decode_model(raw: bytes, features: tuple[str, ...] = NAMES) -> ModelSnapshot:
    """The snapshot in `raw`, or `ModelRefused` saying why it cannot be used by a scorer that
    computes `features` (`model_features`)."""
    digest, body = raw[:32], raw[32:]
    if hashlib.sha256(body).digest() != digest:
        raise ModelRefused("checksum mismatch: the stored model is corrupt")
    try:
        snap = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise ModelRefused(f"undecodable model: {exc}") from None
    if snap.format != FORMAT:
        raise ModelRefused(f"model format {snap.format}; this build reads format {FORMAT}")
    if snap.features != list(features):
        missing, extra = sorted(set(features) - set(snap.features)), sorted(set(snap.features) - set(features))
        raise ModelRefused(f"model made for other features (missing {missing}, extra {extra}, or another order); "
                           "do workers and trainer declare the same CHURNWATCH_ATTRIBUTES?")
    arrays = [snap.mean, snap.scale] + ([snap.weights] if snap.kind in ("logistic", "blended") else [])
    if any(len(a) != len(features) for a in arrays):
        raise ModelRefused("model arrays do not match its feature list")
    if not all(math.isfinite(v) for a in arrays for v in a) or not math.isfinite(snap.intercept):
        raise ModelRefused("model has non-finite parameters")
    if snap.kind == "forest" and not snap.pickled:
        raise ModelRefused("forest model without its trees")
    if snap.kind in ("boosted", "blended"):
        _tree_scorer(snap)
    return snap


def _tree_scorer(snap: ModelSnapshot) -> TreeScorer:
    if snap.trees is None:
        raise ModelRefused("boosted model without its trees")
    try:
        return TreeScorer(snap.trees, len(snap.features))
    except TreesRefused as exc:
        raise ModelRefused(f"boosted model refused: {exc}") from None
    except (ValueError, MemoryError) as exc:  # whatever else arrays read from Redis make numpy raise
        raise ModelRefused(f"boosted model refused: unusable arrays ({type(exc).__name__}: {exc})") from None


@dataclass(frozen=True)
class Driver:
    """One term behind a score: a feature, its value and how much it pushed the score up."""

    feature: str
    value: float
    z: float
    contribution: float


class Scorer:
    """Scores a batch with one published model version. A forest is a signed pickle, opened only
    under the signing key (`signing.py`); boosted trees are plain arrays (`boosted.py`)."""

    def __init__(self, snapshot: ModelSnapshot, signer: Signer | None = None) -> None:
        self.snapshot = snapshot
        self.version = snapshot.version
        self.labels = snapshot.labels
        self.names = tuple(snapshot.features)
        self._mean = np.array(snapshot.mean)
        scale = np.array(snapshot.scale)
        self._inv_scale = np.divide(1.0, scale, out=np.zeros_like(scale), where=scale > 0)
        self._w = np.array(snapshot.weights) if snapshot.kind in ("logistic", "blended") else None
        self._forest = _unpickle(snapshot.pickled, signer) if snapshot.kind == "forest" else None
        self._trees = _tree_scorer(snapshot) if snapshot.kind in ("boosted", "blended") else None

    def standardise(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self._mean) * self._inv_scale, -Z_LIMIT, Z_LIMIT)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Churn probability within the horizon for each row of `x` (from `model_inputs`)."""
        if self._w is not None:
            logit = self.standardise(x) @ self._w + self.snapshot.intercept
            linear = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
            return blend(linear, self._trees.score(x)) if self._trees is not None else linear
        if self._trees is not None:
            return self._trees.score(x)
        return np.array([self._forest.predict_proba_one(dict(zip(self.names, row))).get(True, 0.0) for row in x])

    def drivers(self, x_row: np.ndarray, top: int = 3) -> list[Driver]:
        """The terms that raised this score most: weight x standardised value for the linear
        model; for boosted trees, what the splits on each feature added to the log-odds (blended, the
        two averaged); for a forest, the features furthest above or below the base."""
        z = self.standardise(x_row)
        if self._w is not None and self._trees is not None:  # blended: log-odds terms, both
            terms = blend(z * self._w, self._trees.contributions(x_row))
        else:  # one model's log-odds terms, or a forest's distance from the base
            terms = z * self._w if self._w is not None else (
                self._trees.contributions(x_row) if self._trees is not None else np.abs(z))
        order = np.argsort(-terms, kind="mergesort")[:top]
        return [Driver(self.names[j], float(x_row[j]), float(z[j]), float(terms[j])) for j in order if terms[j] > 0]


def blend(online: np.ndarray, trees: np.ndarray) -> np.ndarray:
    """The boosted candidate's score: the trees' probability averaged with the online model's. On the
    simulator's snapshots (3,000 customers, seed 11; trees refitted offline each week on labels
    sampled over 90 days, judged on the test weeks' calls), trees alone called 0.68 churners a call
    and ranked all labels at an AUC of 0.768, the online model 0.63 and 0.788, the two averaged
    0.70 and 0.789: the trees know the top of the list better, the linear model the rest."""
    return (online + trees) / 2.0


def clip_z(z: dict[str, float]) -> dict[str, float]:
    """Clip standardised values to +-Z_LIMIT (a module-level function, so the model pickles)."""
    return {k: Z_LIMIT if v > Z_LIMIT else -Z_LIMIT if v < -Z_LIMIT else v for k, v in z.items()}


def _river_model(kind: str) -> compose.Pipeline:
    scaled = preprocessing.StandardScaler() | compose.FuncTransformer(clip_z)
    if kind == "forest":
        return scaled | forest.ARFClassifier(n_models=10, seed=7)
    # AdaGrad: a step per feature that shrinks as that feature's gradients add up, so the first
    # few hundred labels teach fast and later ones fine-tune. Against plain SGD(0.02), measured
    # by `churnwatch evaluate` in one session: online AUC 0.813 -> 0.831 on the monthly sample,
    # 0.706 -> 0.718 on the simulator. The shrinking step does not stop the model following a
    # change: on drift it restarts (see `Learner`).
    return scaled | linear_model.LogisticRegression(optimizer=optim.AdaGrad(LEARNING_RATE))


def _predict_then_learn(model: compose.Pipeline, kind: str, x: dict[str, float], y: bool) -> float:
    """The model's score of `x` before it learns (`x`, `y`)."""
    if kind != "logistic":
        p = float(model.predict_proba_one(x).get(True, 0.0))
        model.learn_one(x, y)
        return p
    # The pipeline's steps by hand, so that `x` is standardised once for both the score
    # and the step (the pipeline would do it twice): half the cost of a label.
    scaler, clip, lr = model.steps.values()
    z = clip.transform_one(scaler.transform_one(x))
    p = float(lr.predict_proba_one(z).get(True, 0.0))
    scaler.learn_one(x)
    lr.learn_one(z, y)
    return p


def _log_loss(p: float, y: int) -> float:
    """Capped at 5, so that one confident miss does not swamp ADWIN's window."""
    q = min(max(p, 1e-7), 1 - 1e-7)
    return min(5.0, -math.log(q if y else 1 - q))


class Adaptation(enum.Enum):
    """What a label changed in how the learner follows drift (see `Learner`)."""

    NONE = "none"
    DRIFT = "drift"  # ADWIN flagged a change: a challenger starts from the recent labels
    REPLACED = "replaced"  # the challenger ranked the trial's labels better and took over
    KEPT = "kept"  # the model ranked them at least as well: the challenger is dropped


class Learner:
    """The trainer's model: predict, then learn, one label at a time; watches its own error.

    Drift policy: ADWIN watches the log loss of each prediction. When it flags a change, a
    challenger is trained on the labels in the validation window (the most recent ones),
    and for the next window of labels both predict, then learn, each label. The one that
    ranked them better (ROC AUC) is kept: the scores decide who is called first, and a fresh
    model, with its larger steps, always follows the latest base rate more closely, which
    log loss would reward. A lasting change (customers who behave otherwise now) makes the
    challenger win, and what was learned before stops weighing on the scores; a passing one
    leaves the model as it was. On the simulator, whose labels come a day of customers at a
    time, ADWIN flags about one change a month: restarting on each cost the weekly call list
    a sixth of its precision.
    """

    def __init__(self, kind: Literal["logistic", "forest"], window: int, budget_share: float,
                 features: tuple[str, ...] = NAMES) -> None:
        self.kind = kind
        self.model = _river_model(kind)
        self.validation = ProgressiveValidation(window, len(features), budget_share)
        self.detector = drift.ADWIN(delta=0.001)
        self.features = features  # what it was made for: other features (settings, build) start afresh
        self.labels = 0
        self.drifts = 0
        self.replaced = 0
        self._last_reset = 0
        self.last_score = math.nan  # the score of the label learned last, before learning it
        self.challenger: compose.Pipeline | None = None
        self._trial: list[tuple[float, float, int]] = []  # the model's and the challenger's score, the label

    def predict(self, x: np.ndarray) -> float:
        return float(self.model.predict_proba_one(dict(zip(self.features, x.tolist()))).get(True, 0.0))

    def learn(self, x: np.ndarray, y: int) -> Adaptation:
        """Score `x`, record the score against `y`, learn; and what that changed in following drift."""
        features = dict(zip(self.features, x.tolist()))
        p = _predict_then_learn(self.model, self.kind, features, bool(y))
        self.last_score = p
        self.validation.add(x, y, p)
        self.detector.update(_log_loss(p, y))
        self.labels += 1
        if self.challenger is not None:
            self._trial.append((p, _predict_then_learn(self.challenger, self.kind, features, bool(y)), y))
            return self._judge()
        if self.detector.drift_detected and self.labels - self._last_reset >= self.validation.size:
            self._challenge()
            return Adaptation.DRIFT
        return Adaptation.NONE

    def _challenge(self) -> None:
        self.drifts += 1
        self._last_reset = self.labels
        self.challenger = _river_model(self.kind)
        self._trial = []
        xs, ys, _ = self.validation.window()
        for x, y in zip(xs, ys):
            self.challenger.learn_one(dict(zip(self.features, x.tolist())), bool(y))

    def _judge(self) -> Adaptation:
        if len(self._trial) < self.validation.size:
            return Adaptation.NONE
        model, challenger, y = (np.array(v) for v in zip(*self._trial))
        won = bool(auc(y, challenger) > auc(y, model))  # NaN (one class only): no evidence, keep
        if won:
            self.model = self.challenger
            self.replaced += 1
        self.challenger, self._trial = None, []
        self._last_reset = self.labels
        return Adaptation.REPLACED if won else Adaptation.KEPT

    def snapshot(self, version: int, signer: Signer | None = None) -> ModelSnapshot:
        """The model as published; a forest is pickled, and so needs a `signer`."""
        scaler = self.model.steps["StandardScaler"]
        mean = [float(scaler.means.get(n, 0.0)) for n in self.features]
        scale = [float(math.sqrt(scaler.vars.get(n, 0.0))) for n in self.features]
        if self.kind == "logistic":
            lr = self.model.steps["LogisticRegression"]
            weights, intercept = [float(lr.weights.get(n, 0.0)) for n in self.features], float(lr.intercept)
            pickled = None
        else:
            if signer is None:
                raise Unsigned("a forest model is published as a pickle, which must be signed")
            weights, intercept, pickled = [], 0.0, signer.sign(pickle.dumps(self.model))
        figures = {k: v for k, v in self.validation.figures().items() if math.isfinite(v)}
        return ModelSnapshot(version, self.kind, list(self.features), self.labels, time.time(), mean, scale, weights,
                             intercept, figures, pickled)
