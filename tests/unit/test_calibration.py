import numpy as np
import pytest

from stream_app.contracts.events import Label, Snapshot
from stream_app.model.calibration import MIN_EACH, WINDOW_DAYS, ScoreTally, calibrated
from stream_app.model.labels import Labeler
from stream_app.model.scoring import NAMES, Scorer
from stream_app.model.signing import Signer
from stream_app.model.trainer import TrainerCore
from stream_app.settings import Settings

SIGNER = Signer(b"a-key-for-these-tests")


def timid(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose customers leave more often than they say: 1.4 times the score, below 1."""
    rng = np.random.default_rng(seed)
    score = rng.beta(0.6, 8, n)
    return score, (rng.random(n) < np.minimum(1.4 * score, 1.0)).astype(int)


def tally_of(score: np.ndarray, y: np.ndarray, first_day: int = 1000, days: int = 30) -> ScoreTally:
    tally = ScoreTally()
    for k, (p, yy) in enumerate(zip(score, y)):
        tally.add(first_day + k * days // len(score), float(p), int(yy), 3)
    return tally


def test_timid_scores_are_mapped_to_how_often_their_customers_left() -> None:
    score, y = timid(60_000)
    curve = tally_of(score, y).fit()
    assert curve
    mapped = calibrated(np.array([0.1, 0.2, 0.3, 0.45]), curve)
    assert mapped == pytest.approx([0.14, 0.28, 0.42, 0.63], abs=0.04)
    # Every ranking is kept: strictly increasing, within and beyond the curve's points.
    grid = np.concatenate([[0.0, 1e-6], np.linspace(0.001, 0.999, 2000), [1.0 - 1e-6]])
    assert np.all(np.diff(calibrated(grid, curve)[:-1]) > 0)
    assert np.array_equal(np.argsort(calibrated(score, curve), kind="stable"), np.argsort(score, kind="stable"))
    assert calibrated(score, []) is score  # no curve: the model's own scores


def test_no_curve_until_the_window_holds_enough_churners_and_stayers() -> None:
    score = np.full(10_000, 0.01)
    y = np.zeros(10_000, int)
    y[:MIN_EACH - 1] = 1
    assert tally_of(score, y).fit() == []
    y[MIN_EACH - 1] = 1
    assert tally_of(score, y).fit() != []


def test_the_window_forgets_old_days_and_scores_of_an_earlier_kind_of_model() -> None:
    score, y = timid(20_000)
    tally = tally_of(score, 1 - y, first_day=1000)  # long ago, customers did the opposite
    tally.add(1000 + WINDOW_DAYS + 40, 0.2, 0, 3)  # a day far enough on that those days leave the window
    assert tally.fit() == []  # one label left: too few
    assert min(tally.days) > 1040
    fresh = tally_of(score, y)
    fresh.restart("boosted", version=9)
    for p, yy in zip(score, y):
        fresh.add(1100, float(p), int(yy), 8)  # scored by a version before the new kind: not counted
        fresh.add(1100, float(p), int(yy), None)  # or by no model
    assert fresh.days == {}


def test_the_trainer_publishes_the_curve_of_the_workers_scores_and_a_checkpoint_keeps_it() -> None:
    core = TrainerCore.fresh(Settings())
    core.next_model(SIGNER)  # version 1: the online model's scores are counted from here
    score, y = timid(20_000)
    x = np.random.default_rng(2).normal(0, 1, (len(y), len(NAMES)))
    for k, (xi, p, yy) in enumerate(zip(x, score, y)):
        label = Label(f"c{k}", 1000 + k // 700, xi.tolist(), int(yy), 0, k, raw_score=float(p), model_version=1)
        core.learn(label, k)
    model = core.next_model(SIGNER)
    assert model.calibration and model.calibration == core.tally.fit()
    scorer = Scorer(model, SIGNER)
    assert np.allclose(scorer.score(x[:50]), calibrated(scorer.raw(x[:50]), model.calibration))
    restored = TrainerCore.restore(core.checkpoint(SIGNER), Settings(), SIGNER)
    assert restored.tally.fit() == model.calibration


def test_a_label_carries_the_score_its_snapshot_had_before_the_curve() -> None:
    labeler = Labeler(30, 3)
    snap = Snapshot("c1", 1000, [0.0], 0.63, 4, raw_score=0.45)
    label = labeler.label(snap, 0, 1)
    assert (label.raw_score, label.model_version) == (0.45, 4)
    # A snapshot from before calibration: its score was the model's own.
    assert labeler.label(Snapshot("c1", 1001, [0.0], 0.3, 2), 0, 2).raw_score == 0.3
