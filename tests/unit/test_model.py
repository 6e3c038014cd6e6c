import math
import pickle

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream_app.contracts.events import ChurnEvent, Label, Snapshot
from stream_app.features.baselines import BASELINED as BASELINE_FEATURES
from stream_app.features.derive import ACTIVITY_PERIODS, FEATURES
from stream_app.metrics import Metrics, TrainerMetrics
from stream_app.model.labels import Labeler
from stream_app.model.registry import ScorerSource
from stream_app.model.scoring import (
    NAMES,
    Adaptation,
    Learner,
    ModelRefused,
    Scorer,
    decode_model,
    encode_snapshot,
    model_inputs,
)
from stream_app.model.signing import Signer
from stream_app.model.trainer import TrainerCore, _adapted
from stream_app.model.validation import auc, budget_figures
from stream_app.settings import Settings

F = len(NAMES)
SIGNER = Signer(b"a-key-for-these-tests")


def examples(n: int, seed: int = 1, flip: bool = False, base: float = -2.5) -> tuple[np.ndarray, np.ndarray]:
    """Churn driven by two features (days since active up, minutes trend down), plus noise;
    `base`: the log-odds of churn of an average customer."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, F))
    signal = 1.5 * x[:, NAMES.index("days_since_active")] - 1.5 * x[:, NAMES.index("mou_out_30d_mom")]
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal * (-1 if flip else 1) + base)))).astype(int)
    return x, y


def trained(n: int = 3000, kind: str = "logistic") -> Learner:
    learner = Learner(kind, 1000, 0.05)  # type: ignore[arg-type]
    x, y = examples(n)
    for xi, yi in zip(x, y):
        learner.learn(xi, int(yi))
    return learner


def test_the_learner_finds_the_signal_and_validates_before_learning() -> None:
    learner = trained()
    figures = learner.validation.figures()
    assert figures["labels"] == 1000
    assert figures["auc"] > 0.8
    assert figures["top_decile_lift"] > 2.5
    # Scored before learning: the same labels scored after learning would fit better.
    x, y, p = learner.validation.window()
    after = np.array([learner.predict(xi) for xi in x])
    assert auc(y, after) >= figures["auc"] - 0.01


def test_vectorised_scores_equal_rivers_own() -> None:
    learner = trained(800)
    scorer = Scorer(decode_model(encode_snapshot(learner.snapshot(3))))
    x, _ = examples(50, seed=9)
    assert np.allclose(scorer.score(x), [learner.predict(xi) for xi in x], atol=1e-9)
    assert scorer.version == 3 and scorer.labels == 800


def test_a_forest_snapshot_scores_like_the_trainer_and_only_from_a_signed_pickle() -> None:
    learner = trained(600, kind="forest")
    snap = decode_model(encode_snapshot(learner.snapshot(1, SIGNER)))
    x, _ = examples(20, seed=4)
    assert np.allclose(Scorer(snap, SIGNER).score(x), [learner.predict(xi) for xi in x])
    for signer in (None, Signer(b"another-key-entirely")):
        with pytest.raises(ModelRefused, match="forest model refused"):
            Scorer(snap, signer)


def test_drivers_are_the_largest_terms_of_the_score() -> None:
    scorer = Scorer(trained().snapshot(1))
    x = np.zeros(F)
    x[NAMES.index("days_since_active")] = 4.0
    drivers = scorer.drivers(x)
    assert drivers[0].feature == "days_since_active"
    assert drivers[0].contribution > 0 and drivers == sorted(drivers, key=lambda d: -d.contribution)


@pytest.mark.parametrize("damage, why", [
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "checksum"),
    (lambda raw: raw[:40], "checksum"),
])
def test_a_corrupt_model_is_refused(damage, why) -> None:
    raw = encode_snapshot(trained(200).snapshot(1))
    with pytest.raises(ModelRefused, match=why):
        decode_model(damage(raw))


def test_a_model_for_other_features_or_format_is_refused() -> None:
    snap = trained(200).snapshot(1)
    for changed, why in ((msgspec.structs.replace(snap, features=list(NAMES[:-1])), "features"),
                         (msgspec.structs.replace(snap, format=99), "format"),
                         (msgspec.structs.replace(snap, intercept=math.inf), "non-finite")):
        with pytest.raises(ModelRefused, match=why):
            decode_model(encode_snapshot(changed))


def test_a_scorer_source_keeps_the_previous_model_when_a_new_one_is_refused() -> None:
    metrics = Metrics(CollectorRegistry())
    source = ScorerSource(metrics)
    assert source() is None  # rules alone
    good = encode_snapshot(trained(200).snapshot(4))
    source.offer(good)
    source.offer(good[:-3])
    assert source().version == 4
    assert metrics.registry.get_sample_value("churnwatch_model_refused_total") == 1
    assert metrics.registry.get_sample_value("churnwatch_model_version") == 4


def churn(customer: str, day: int) -> ChurnEvent:
    return ChurnEvent(customer, day, "port_out", 102, True, "north", "mass", 80.0)


def test_a_snapshot_is_positive_only_if_churn_follows_within_the_horizon() -> None:
    labeler = Labeler(horizon_days=30, grace_days=3)
    labeler.churn(churn("a", 1000))
    snap = lambda c, d: Snapshot(c, d, [0.0] * F)  # noqa: E731
    assert [labeler.label(snap("a", d), 0, 0).y for d in (969, 970, 999, 1000)] == [0, 1, 1, 0]
    assert labeler.label(snap("b", 990), 0, 0).y == 0
    assert not labeler.mature(1000, 1032) and labeler.mature(1000, 1033)
    labeler.forget_before(1001)
    assert labeler.label(snap("a", 990), 0, 0).y == 0


def test_revenue_churn_is_a_positive_unless_switched_off() -> None:
    revenue = msgspec.structs.replace(churn("a", 1000), kind="revenue")
    snap = Snapshot("a", 990, [0.0] * F)
    for counted in (True, False):
        labeler = Labeler(30, 3, revenue_churn=counted)
        labeler.churn(revenue)
        assert labeler.label(snap, 0, 0).y == int(counted)


def test_a_label_sent_twice_is_learned_once_and_a_checkpoint_resumes_exactly() -> None:
    core = TrainerCore.fresh(Settings())
    x, y = examples(400)
    labels = [Label(f"c{i}", 1000 + i, xi.tolist(), int(yi), i % 2, i // 2) for i, (xi, yi) in enumerate(zip(x, y))]
    for offset, label in enumerate(labels[:200]):
        core.learn(label, offset)
    restored = TrainerCore.restore(core.checkpoint(SIGNER), Settings(), SIGNER)
    resent = labels[150:200]  # a labeller that restarted makes these again
    assert all(restored.learn(label, 200 + k) is None for k, label in enumerate(resent))
    for offset, label in enumerate(labels[200:], start=250):
        assert core.learn(label, offset) is not None and restored.learn(label, offset) is not None
    assert core.learner.labels == restored.learner.labels == 400
    assert restored.labels_offset == core.labels_offset
    probe = x[0]
    assert core.learner.predict(probe) == restored.learner.predict(probe)


def test_a_snapshot_resent_at_a_new_offset_is_learned_once() -> None:
    """A worker killed after sending its snapshots sends them again; the labeller labels both."""
    core = TrainerCore.fresh(Settings())
    x, y = examples(3)
    first = Label("c1", 1000, x[0].tolist(), int(y[0]), 0, 10)
    assert core.learn(first, 0) is not None
    resent = Label("c1", 1000, x[0].tolist(), int(y[0]), 0, 57)  # the same customer and day, a later offset
    assert core.learn(resent, 1) is None and core.learner.labels == 1
    assert core.learn(Label("c1", 1001, x[1].tolist(), int(y[1]), 0, 58), 2) is not None
    restored = TrainerCore.restore(core.checkpoint(SIGNER), Settings(), SIGNER)
    assert restored.learn(Label("c1", 1001, x[1].tolist(), int(y[1]), 0, 90), 3) is None


def test_a_checkpoint_not_signed_under_the_key_is_never_unpickled() -> None:
    class Boom:
        def __reduce__(self):  # what a pickle written by an intruder would do when read
            return (exec, ("raise SystemExit('ran code from Redis')",))

    core = TrainerCore.fresh(Settings())
    core.learn(Label("c1", 1000, examples(1)[0][0].tolist(), 1, 0, 0), 0)
    forged = [pickle.dumps(Boom()), b"cwsig1" + bytes(32) + pickle.dumps(Boom()),
              core.checkpoint(Signer(b"another-key-entirely"))]
    for raw in forged:
        restored = TrainerCore.restore(raw, Settings(), SIGNER, version=7)
        assert restored.learner.labels == 0 and restored.version == 7 and restored.labels_offset == 0
    assert TrainerCore.restore(core.checkpoint(SIGNER), Settings(), SIGNER).learner.labels == 1


def follow(learner: Learner, parts: list[tuple[int, int, bool, float]]) -> list[Adaptation]:
    """Feed (labels, seed, flipped, base) parts in order; what each label changed."""
    changes = []
    for n, seed, flip, base in parts:
        x, y = examples(n, seed=seed, flip=flip, base=base)
        changes += [learner.learn(xi, int(yi)) for xi, yi in zip(x, y)]
    return changes


def test_after_a_lasting_concept_flip_a_challenger_replaces_the_model_and_scores_recover() -> None:
    learner = Learner("logistic", 1000, 0.05)
    changes = follow(learner, [(6000, 10, False, -2.5), (6000, 11, True, -2.5)])
    assert Adaptation.DRIFT in changes[6000:]
    assert changes.index(Adaptation.REPLACED) > changes.index(Adaptation.DRIFT, 6000)
    assert learner.drifts >= 1 and learner.replaced >= 1
    assert learner.validation.figures()["auc"] > 0.75


@pytest.mark.parametrize("seed", [20, 30, 40])
def test_a_passing_rise_in_churn_is_flagged_but_the_model_that_ranks_customers_well_is_kept(seed: int) -> None:
    # Churn rises for a while (a competitor's campaign), driven by the same signs as before.
    learner = Learner("logistic", 1000, 0.05)
    changes = follow(learner, [(6000, seed, False, -2.5), (2000, seed + 1, False, -1.0), (3000, seed + 2, False, -2.5)])
    assert Adaptation.DRIFT in changes[6000:] and Adaptation.KEPT in changes
    assert Adaptation.REPLACED not in changes and learner.replaced == 0


def test_each_step_of_the_drift_policy_is_counted_and_announced() -> None:
    metrics = TrainerMetrics(CollectorRegistry())
    events: list[tuple[str, str]] = []
    learner = Learner("logistic", 1000, 0.05)
    for change in (Adaptation.DRIFT, Adaptation.REPLACED, Adaptation.DRIFT, Adaptation.KEPT):
        _adapted(change, learner, metrics, lambda kind, detail: events.append((kind, detail)))
    value = metrics.registry.get_sample_value
    assert value("churnwatch_model_drift_total") == 2
    assert value("churnwatch_model_challenges_total", {"outcome": "replaced"}) == 1
    assert value("churnwatch_model_challenges_total", {"outcome": "kept"}) == 1
    assert [kind for kind, _ in events] == ["drift", "replaced", "drift", "kept"]
    assert "replaced the model" in events[1][1] and "is kept" in events[3][1]


def test_budget_figures_and_auc() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 1])
    p = np.linspace(1, 0, 10)
    assert budget_figures(y, p, 0.2) == (0.5, 1 / 3)
    assert auc(y, p) == pytest.approx((7 + 6 + 0) / 21)


def test_after_an_upgrade_that_changed_the_features_the_trainer_learns_afresh_and_skips_old_labels() -> None:
    core = TrainerCore.fresh(Settings())
    x, y = examples(300)
    for offset, (xi, yi) in enumerate(zip(x, y)):
        core.learn(Label(f"c{offset}", 1000 + offset, xi.tolist(), int(yi), 0, offset), offset)
    core.learner.features = ("an", "older", "feature", "list")  # as a checkpoint of an older build reads
    restored = TrainerCore.restore(core.checkpoint(SIGNER), Settings(), SIGNER)
    assert restored.learner.labels == 0 and restored.learner.features == NAMES
    assert restored.version == core.version and restored.learned == core.learned  # it goes on from the same place
    old = Label("c-old", 2000, [0.0] * (F - 1), 1, 0, 400)  # a snapshot made by the older build
    assert restored.learn(old, 400) is None and restored.learner.labels == 0
    assert restored.learn(Label("c-new", 2001, x[0].tolist(), 1, 0, 401), 401) is not None


def _segment_day(calls_share: list[float], mou_30d_mom: list[float], prepaid: list[int]) -> dict[str, np.ndarray]:
    """Features of customers with a usual of 10 calls a day who made `calls_share` of it in every
    period, and whose 30-day minutes changed by `mou_30d_mom` (postpaid spend likewise)."""
    n = len(calls_share)
    f = {name: np.zeros(n) for name in FEATURES}
    share = np.array(calls_share)
    f["activity_usual"] = np.full(n, 10.0)
    for a, b in ACTIVITY_PERIODS:
        expected = 10.0 * (b - a)
        f[f"activity_vs_usual_d{a}_{b}"] = share - 1
        f[f"activity_z_d{a}_{b}"] = (share - 1) * expected / np.sqrt(expected + 1)
    f["mou_out_30d_mom"], f["mou_out_prev_30d"] = np.array(mou_30d_mom), np.full(n, 300.0)
    f["prepaid"], f["arpu_m2"] = np.array(prepaid, np.float64), np.full(n, 100.0)
    f["postpaid_arpu_mom"] = np.where(f["prepaid"] == 0, f["mou_out_30d_mom"], 0.0)
    return f


def test_a_move_of_the_whole_segment_is_taken_out_of_the_inputs_and_a_decline_within_it_stays() -> None:
    normal = model_inputs(_segment_day([1.0, 0.4], [0.0, -0.6], [0, 0]))
    slump = _segment_day([0.6, 0.24, 0.6], [-0.4, -0.76, -0.4], [0, 0, 1])
    medians = {name: np.full(3, -0.4) for name in BASELINE_FEATURES}
    seen = model_inputs(slump, medians)
    changes = [NAMES.index(n) for n in ("mou_out_30d_mom", "postpaid_arpu_mom")]
    calls = [NAMES.index(f"activity_z_d{a}_{b}") for a, b in ACTIVITY_PERIODS]
    # A usual customer in a month when everyone is at 60% looks like one in a normal month.
    assert seen[0, changes] == pytest.approx([0.0, 0.0])
    assert seen[0, calls] == pytest.approx(np.zeros(len(calls)))
    # A decliner at 40% of the usual even then (24% of it) is still well below the segment.
    assert (seen[1, calls] < -3).all() and seen[1, changes] == pytest.approx([-0.36, -0.36])
    assert (normal[1, calls] < seen[1, calls]).all()  # the same decline stands out less in a slump's noise
    # A prepaid line has no postpaid spend change to move; without a median nothing moves.
    assert seen[2, NAMES.index("postpaid_arpu_mom")] == 0.0
    assert model_inputs(slump, {name: np.full(3, np.nan) for name in BASELINE_FEATURES}) == pytest.approx(
        model_inputs(slump))
    pending = {name: np.full(3, -np.inf) for name in BASELINE_FEATURES}
    assert model_inputs(slump, pending) == pytest.approx(model_inputs(slump))


def test_a_checkpoint_written_before_the_package_was_split_by_stage_is_restored() -> None:
    core = TrainerCore.fresh(Settings())
    x, y = examples(40)
    for i in range(40):
        core.learn(Label("c1", 1000 + i, x[i].tolist(), int(y[i]), 0, i), i)
    # Protocols below 4 name each class as text, so the old module paths can be written back in.
    old = pickle.dumps((core.learner, core.version, core.learned, core.labels_offset, core.days), protocol=3)
    for new, before in ((b"stream_app.model.scoring\n", b"stream_app.model\n"),
                        (b"stream_app.model.trainer\n", b"stream_app.trainer\n")):
        old = old.replace(new, before)
    assert b"stream_app.model\n" in old
    restored = TrainerCore.restore(SIGNER.sign(old), Settings(), SIGNER)
    assert restored.learner.labels == 40
    assert restored.learner.predict(x[0]) == core.learner.predict(x[0])
