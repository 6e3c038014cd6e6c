"""Boosted trees as workers score them, and the contest that makes them (or the online model) champion."""

from __future__ import annotations

import copy
import math

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.ensemble import HistGradientBoostingClassifier

from stream_app.contracts.events import Label
from stream_app.metrics import TrainerMetrics
from stream_app.model.boosted import BOOSTING, Trees, TreeScorer, TreesRefused, fit_trees
from stream_app.model.champion import Contest
from stream_app.model.scoring import NAMES, ModelRefused, Scorer, decode_model, encode_snapshot
from stream_app.model.signing import Signer
from stream_app.model.trainer import TrainerCore, _contested
from stream_app.model.validation import auc, auc_gain_low
from stream_app.settings import Settings

F = len(NAMES)
SIGNER = Signer(b"a-key-for-these-tests")
QUICK = {"model_round_labels": 500, "validation_window": 2000}


def bands(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Churn where a feature is far from usual in either direction: no straight line ranks it."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, F))
    away = np.abs(x[:, NAMES.index("mou_out_30d_mom")]) > 1.3
    y = (rng.random(n) < np.where(away, 0.6, 0.03)).astype(int)
    return x, y


def test_the_trees_score_as_scikit_learn_does_with_missing_values_and_explain_their_log_odds() -> None:
    x, y = bands(4000)
    x[np.random.default_rng(0).random(x.shape) < 0.05] = np.nan
    trees = TreeScorer(fit_trees(x, y), F)
    reference = HistGradientBoostingClassifier(**BOOSTING, random_state=7).fit(x, y)
    probe, _ = bands(500, seed=9)
    probe[::7, 0] = np.nan
    for walk in (trees.score, trees.walked):  # scikit-learn's compiled walk, and the numpy one
        assert np.allclose(walk(probe), reference.predict_proba(probe)[:, 1], rtol=0, atol=1e-12)
    p = trees.score(probe[:1])[0]
    expected = trees.baseline + trees.value[trees.roots].sum()
    assert math.isclose(expected + trees.contributions(probe[0]).sum(), math.log(p / (1 - p)), abs_tol=1e-9)


def damaged(trees: Trees, field: str, array: np.ndarray) -> Trees:
    return msgspec.structs.replace(trees, **{field: array.tobytes()})


@pytest.mark.parametrize("damage, why", [
    (lambda t: damaged(t, "left", np.full(len(t.left) // 4, 10**6, np.int32)), "outside"),
    (lambda t: damaged(t, "feature", np.where(np.frombuffer(t.feature, np.int32) < 0, -1, F + 3).astype(np.int32)),
     "unknown feature"),
    (lambda t: damaged(t, "right", np.zeros(len(t.right) // 4, np.int32)), "outside"),  # a loop back to the root
    (lambda t: damaged(t, "value", np.full(len(t.value) // 8, np.inf)), "non-finite"),
    (lambda t: damaged(t, "threshold", np.zeros(3)), "different lengths"),
    (lambda t: msgspec.structs.replace(t, width=F - 1), "features"),
])
def test_trees_that_are_not_trees_over_these_features_are_refused(damage, why) -> None:
    trees = fit_trees(*bands(2000))
    with pytest.raises(TreesRefused, match=why):
        TreeScorer(damage(trees), F)


def test_arrays_read_from_redis_that_would_crash_or_stall_a_worker_are_refused(promoted) -> None:
    snapshot = promoted[0].snapshot(3)
    trees = fit_trees(*bands(2000))
    n = len(trees.feature) // 4
    # Roots whose int32 differences wrap round look increasing, and point far outside the nodes.
    wrapped = damaged(trees, "roots", np.array([0, 2**31 - 1, -10], np.int32))
    nan_baseline = msgspec.structs.replace(trees, baseline=float("nan"))
    many = msgspec.structs.replace(trees, roots=np.arange(min(n, 2_001), dtype=np.int32).tobytes())
    for bad in (wrapped, nan_baseline, many):
        with pytest.raises(ModelRefused):
            decode_model(encode_snapshot(msgspec.structs.replace(snapshot, trees=bad)))
    with pytest.raises(ValueError, match="features"):
        TreeScorer(trees, F).score(np.zeros((2, F - 3)))  # the compiled walk would read past each row


def promoted_contest(n: int = 6000, **settings) -> tuple[Contest, list]:
    contest = Contest(Settings(_env_file=None, **QUICK, **settings))
    x, y = bands(n)
    verdicts = []
    for day, (xi, yi) in enumerate(zip(x, y)):
        verdicts += contest.learn(xi, int(yi), 1000 + day // 100, f"c{day:05d}")[1]
    return contest, verdicts


@pytest.fixture(scope="module")
def promoted() -> tuple[Contest, list]:
    """A contest the trees won (the tests read it, none changes it)."""
    return promoted_contest()


def test_trees_that_rank_better_on_labels_they_had_not_learned_become_the_champion(promoted) -> None:
    contest, verdicts = promoted
    kinds = [v.kind for v in verdicts]
    assert kinds.count("refit") >= 3 and "promoted" in kinds and contest.champion == "boosted"
    assert kinds.index("promoted") > kinds.index("refit")  # judged only once they had scored unseen labels
    figures = contest.figures
    assert figures["boosted"]["auc"] > figures["online"]["auc"] + 0.05
    snap = decode_model(encode_snapshot(contest.snapshot(4)))
    assert snap.kind == "boosted" and snap.pickled is None and snap.promotions == 1
    assert set(snap.candidates) == {"online", "boosted"}
    scorer = Scorer(snap)  # no signing key: the trees are arrays, not a pickle
    probe, truth = bands(2000, seed=11)
    from stream_app.model.validation import auc
    assert auc(truth, scorer.score(probe)) > 0.8
    away = probe[np.abs(probe[:, NAMES.index("mou_out_30d_mom")]) > 2][0]
    assert scorer.drivers(away)[0].feature == "mou_out_30d_mom"  # the feature the trees split on says why


def test_without_the_challenger_the_online_model_is_the_only_one() -> None:
    contest, verdicts = promoted_contest(3000, model_challenger=False)
    assert verdicts == [] and contest.champion == "online" and contest.trees is None
    assert contest.snapshot(1).kind == "logistic"


def test_a_challenger_must_win_by_the_margin_rounds_in_a_row() -> None:
    # A window of one round's labels, so that each round is judged on its own scores.
    contest = Contest(Settings(_env_file=None, model_promote_rounds=2, model_promote_margin=0.01,
                               validation_window=1000))
    rng = np.random.default_rng(5)
    y = (rng.random(1000) < 0.2).astype(int)
    signal = y + rng.normal(0, 1.2, 1000)

    noise = rng.normal(0, 1, 1000)

    def round_(edge: float, customers: int = 1000, noisy: float = 0.0) -> list:
        """A round over the labels of `customers` customers, each with the same label every day;
        the challenger's scores are the champion's, `edge` higher for churners, plus `noisy` noise."""
        days = 1000 // customers
        yy, ss, nn = (np.repeat(a[:customers], days) for a in (y, signal, noise))
        challenger = ss + edge * yy + noisy * nn  # as the trees alone, and blended
        contest.scores.add(yy, np.column_stack([ss, challenger, challenger]),
                           np.repeat(np.arange(customers), days), np.ones(1000, bool))
        return contest._judge()

    assert round_(0.0) == [] and round_(0.005) == []  # ranks alike: no round won
    assert round_(1.0) == [] and round_(0.0) == []  # one round won, then lost: the streak starts again
    assert round_(1.0) == []
    (verdict,) = round_(1.0)
    assert verdict.kind == "promoted" and contest.champion == "boosted" and contest.promotions == 1
    # The trees now rank worse, by 0.15 of AUC over the labels of 40 customers (8 churners), each seen
    # many times: that may be luck. Over 1,000 customers, by 0.08: the online model wins two rounds.
    assert round_(-0.2, 40, 0.8) == [] and round_(-0.2, 40, 0.8) == [] and contest.champion == "boosted"
    assert round_(-0.2, noisy=0.8) == [] and round_(-0.2, noisy=0.8) != [] and contest.champion == "online"


@pytest.fixture(scope="module")
def trained_core() -> TrainerCore:
    """A trainer whose trees won, after 5,000 labels (the tests restore its checkpoint)."""
    core = TrainerCore.fresh(Settings(_env_file=None, **QUICK))
    x, y = bands(5000)
    for k, (xi, yi) in enumerate(zip(x, y)):
        core.learn(Label(f"c{k:05d}", 1000 + k // 100, xi.tolist(), int(yi), 0, k), k)
    return core


def test_the_contest_survives_a_restart_with_its_store_trees_and_champion(trained_core) -> None:
    settings, core = Settings(_env_file=None, **QUICK), trained_core
    x, _ = bands(50)
    restored = TrainerCore.restore(core.checkpoint(SIGNER), settings, SIGNER)
    assert restored.contest.champion == core.contest.champion == "boosted"
    assert len(restored.contest.store) == len(core.contest.store) == 5000
    before, after = Scorer(core.next_model(SIGNER)), Scorer(restored.next_model(SIGNER))
    assert np.array_equal(after.score(x[:50]), before.score(x[:50]))


def test_a_boosted_snapshot_without_its_trees_is_refused(promoted) -> None:
    contest, _ = promoted
    snap = msgspec.structs.replace(contest.snapshot(2), trees=None)
    with pytest.raises(ModelRefused, match="without its trees"):
        decode_model(encode_snapshot(snap))


def test_two_scores_of_the_same_labels_are_compared_pair_by_pair_and_customer_by_customer() -> None:
    rng = np.random.default_rng(11)
    y = rng.random(600) < 0.2
    mine = y + rng.normal(0, 1.2, 600)
    theirs = mine + 0.3 * y  # better by about 0.05 of AUC, on the very same labels
    assert 0.03 < auc(y, theirs) - auc(y, mine) < 0.08
    # Each AUC's own error (about 0.03 with 120 churners) would call that luck; judged in pairs, it is not.
    assert auc_gain_low(y, mine, theirs, np.arange(600)) > 0
    assert auc_gain_low(y, theirs, mine, np.arange(600)) < 0
    # The first 20 customers' labels, each customer's the same 30 days running: the same AUCs from
    # far less evidence, and no longer sure.
    days = np.repeat(np.arange(20), 30)
    assert auc_gain_low(y[days], mine[days], theirs[days], days) <= 0
    assert np.isnan(auc_gain_low(np.zeros(5), np.arange(5.0), np.arange(5.0), np.arange(5)))
    # Thirty days of one churner among stayers: a score that puts that one customer first is not
    # thereby better; the draws without the churner count against it, not for it.
    one = np.r_[np.ones(30, bool), np.zeros(300, bool)]
    who = np.r_[np.zeros(30, int), np.arange(1, 301)]
    assert auc_gain_low(one, rng.normal(0, 1, 330), one + rng.normal(0, 0.1, 330), who) <= 0


def test_a_store_of_one_outcome_is_not_refitted() -> None:
    contest = Contest(Settings(_env_file=None, **QUICK))
    x, _ = bands(600)
    for k in range(600):  # churners only: scikit-learn would learn "class 0" and score everyone zero
        contest.learn(x[k], 1, 1000, f"c{k:04d}")
    assert contest._refit_due() is False and contest.refits == 0 and contest.trees is None


def test_a_restart_takes_the_settings_in_force(trained_core) -> None:
    core = trained_core
    assert core.contest.champion == "boosted"
    smaller = Settings(_env_file=None, **QUICK, model_store_labels=1000, model_challenger=False)
    restored = TrainerCore.restore(core.checkpoint(SIGNER), smaller, SIGNER)
    store = restored.contest.store
    assert (store.capacity, len(store)) == (1000, 1000)
    assert np.array_equal(store.recent()[0], core.contest.store.recent()[0][-1000:])  # the newest are kept
    assert restored.contest.champion == "online" and restored.next_model(SIGNER).kind == "logistic"


def test_labels_of_customers_the_trees_learned_as_churners_are_not_judged() -> None:
    """A churner has a positive label a day for a horizon: trees that learned its first would know
    it again in the next, which live scoring, where positives come after the churn, never sees."""
    contest = Contest(Settings(_env_file=None, **QUICK))
    x, y = bands(3000)
    y = np.tile(y[:300], 10)  # ten days of 300 customers, each with the same outcome every day
    for k in range(3000):
        contest.learn(x[k], int(y[k]), 1000 + k // 300, f"c{k % 300:03d}")
    contest._flush()
    scored = np.isfinite(contest.scores.p[:, 1]) & (np.arange(len(contest.scores.y)) < contest.scores.seen)
    judged, _, _ = contest.scores.judged()
    assert contest.refits >= 2 and 0 < len(judged) < scored.sum()
    assert judged.sum() == 0 < len(contest._churners)  # every churner was learned by the first trees


def test_refits_and_promotions_are_counted_and_announced(promoted) -> None:
    metrics = TrainerMetrics(CollectorRegistry())
    events: list[tuple[str, str]] = []
    _, verdicts = promoted
    for verdict in verdicts:
        _contested(verdict, metrics, lambda kind, detail: events.append((kind, detail)))
    value = metrics.registry.get_sample_value
    assert value("churnwatch_model_refits_total") == sum(v.kind == "refit" for v in verdicts) >= 3
    assert value("churnwatch_model_promotions_total", {"candidate": "boosted"}) == 1
    assert value("churnwatch_model_promotions_total", {"candidate": "online"}) == 0
    assert any(kind == "promoted" and "boosted is the champion" in detail for kind, detail in events)


def young_contest(x: np.ndarray, y: np.ndarray, **settings) -> tuple[Contest, list]:
    """A contest over fewer labels than a round (1,000 by default), one customer each."""
    contest = Contest(Settings(_env_file=None, **settings))
    verdicts = []
    for k, (xi, yi) in enumerate(zip(x, y)):
        verdicts += contest.learn(xi, int(yi), 1000, f"c{k:04d}")[1]
    return contest, verdicts


def test_before_any_round_the_candidates_are_judged_by_cross_validation_on_the_store() -> None:
    # 800 labels: no round yet; trees that rank them better than a straight line are the champion.
    contest, verdicts = young_contest(*bands(800))
    promoted = [v for v in verdicts if v.kind == "promoted"]
    assert len(promoted) == 1 and "cross-validation" in promoted[0].detail
    assert contest.champion == "boosted" and contest.rounds_counted == 0
    assert contest.figures["boosted"]["auc"] > contest.figures["online"]["auc"] + 0.05
    # Churn spread evenly over every feature, which a straight line sees at once and trees piece
    # together split by split: the online model keeps the title.
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (800, F))
    y = (rng.random(800) < 1 / (1 + np.exp(-(0.5 * x.sum(axis=1) - 2)))).astype(int)
    contest, verdicts = young_contest(x, y)
    assert contest.refits >= 1 and contest.champion == "online"
    # (the boosted candidate is the trees blended with the online model: it shares half its ranks)
    assert contest.figures["online"]["auc"] > contest.figures["boosted"]["auc"] + 0.02
    assert not [v for v in verdicts if v.kind == "promoted"]


def test_once_a_round_has_counted_only_rounds_judge() -> None:
    contest = Contest(Settings(_env_file=None))
    contest.rounds_counted = 1  # the trees of `bands` would win on the store (the test above)
    x, y = bands(800)
    verdicts = [v for k in range(800) for v in contest.learn(x[k], int(y[k]), 1000, f"c{k:04d}")[1]]
    assert [v.kind for v in verdicts] == ["refit"] and contest.champion == "online" and not contest.figures


def test_a_checkpoint_from_before_the_store_judged_keeps_whether_a_round_had_counted() -> None:
    settings = Settings(_env_file=None)
    for figures, counted in (({}, 0), ({"online": {"auc": 0.8}}, 1)):
        contest = Contest(settings)
        del contest.__dict__["rounds_counted"]
        contest.figures = figures
        contest.reconfigure(settings)
        assert contest.rounds_counted == counted


def test_the_store_is_cross_validated_by_customer() -> None:
    """Three labels a customer, their features naming the customer and their outcome drawn by
    customer: folds by label would let trees recognise the customer; by customer, nothing ranks."""
    from stream_app.model.store_folds import out_of_fold

    rng = np.random.default_rng(2)
    who = np.repeat(np.arange(300), 3)
    x = rng.normal(0, 1, (300, F))[who] + rng.normal(0, 0.01, (900, F))
    y = (rng.random(300) < 0.3).astype(int)[who]
    p = out_of_fold(Contest(Settings(_env_file=None)).online, x, y, who)
    assert p is not None and p.shape == (900, 2)
    # Folds by label give the trees an AUC of 1.00 here; cross-validation of noise reads a little low.
    assert auc(y, p[:, 1]) < 0.6 and auc(y, p[:, 0]) < 0.6


def test_an_online_model_that_learned_more_than_the_store_holds_is_not_judged_on_it() -> None:
    contest = Contest(Settings(_env_file=None))
    x, y = bands(1100)
    for k in range(300):  # learned before the store kept labels (a checkpoint from before the contest)
        contest.online.learn(x[k], int(y[k]))
    verdicts = [v for k in range(300, 1100) for v in contest.learn(x[k], int(y[k]), 1000, f"c{k:04d}")[1]]
    assert [v.kind for v in verdicts] == ["refit"] and contest.champion == "online"


def test_trees_the_store_made_champion_are_published_with_their_out_of_fold_figures() -> None:
    contest, _ = young_contest(*bands(800))
    assert contest.champion == "boosted"
    snap = contest.snapshot(2)
    assert snap.kind == "boosted" and snap.figures["auc"] == contest.figures["boosted"]["auc"] > 0.7


def test_after_its_first_promotion_the_store_needs_confidence_to_change_the_champion(monkeypatch) -> None:
    contest = Contest(Settings(_env_file=None))
    y, who = np.tile([1, 0, 0, 0, 0], 60), np.arange(300)  # 300 customers, 60 churners
    rng = np.random.default_rng(2)
    sharp = y + rng.normal(0, 1.2, 300)
    blurred = sharp + 0.5 * rng.normal(0, 1, 300)  # ranks them worse by 0.011 of AUC: by the margin, not surely
    scores = {"online": blurred, "boosted": sharp}
    monkeypatch.setattr("stream_app.model.champion.out_of_fold",
                        lambda like, x, y, who: np.column_stack([scores["online"], scores["boosted"]]))
    (verdict,) = contest._judge_on_store(np.zeros((300, F)), y, who)
    assert contest.champion == "boosted" and "cross-validation" in verdict.detail
    scores["online"], scores["boosted"] = sharp, blurred  # now the online model is as little better
    assert contest._judge_on_store(np.zeros((300, F)), y, who) == [] and contest.champion == "boosted"
    scores["online"] = sharp + 3.0 * y  # far better: sure
    assert contest._judge_on_store(np.zeros((300, F)), y, who) and contest.champion == "online"


def test_trees_are_fitted_with_an_infinite_value_read_as_missing() -> None:
    x, y = bands(2000)
    held = x.copy()
    held[::9, 0] = np.inf  # scikit-learn would refuse it
    x[::9, 0] = np.nan
    probe, _ = bands(200, seed=9)
    assert np.array_equal(TreeScorer(fit_trees(held, y), F).score(probe), TreeScorer(fit_trees(x, y), F).score(probe))


def test_trees_are_fitted_on_one_thread_and_the_limit_is_lifted_after(monkeypatch) -> None:
    from threadpoolctl import threadpool_info, threadpool_limits

    def threads() -> set[tuple[str, int]]:
        return {(lib["user_api"], lib["num_threads"]) for lib in threadpool_info()}

    seen: list[set[tuple[str, int]]] = []
    fit = HistGradientBoostingClassifier.fit
    monkeypatch.setattr(HistGradientBoostingClassifier, "fit",
                        lambda self, *a, **k: seen.append(threads()) or fit(self, *a, **k))
    with threadpool_limits(limits=2):  # whatever the machine's cores, two before
        before = threads()
        fit_trees(*bands(500))
        assert {n for _, n in before} == {2} and seen == [{(api, 1) for api, _ in before}]
        assert threads() == before


@pytest.fixture(scope="module")
def mixed() -> Contest:
    """A contest over churn that is partly a straight line over many features, partly a band."""
    rng = np.random.default_rng(4)
    x = rng.normal(0, 1, (6000, F))
    away = np.abs(x[:, NAMES.index("mou_out_30d_mom")]) > 1.3
    y = (rng.random(6000) < 1 / (1 + np.exp(-(0.5 * x[:, :8].sum(axis=1) + 1.5 * away - 3)))).astype(int)
    contest = Contest(Settings(_env_file=None, **QUICK))
    for day, (xi, yi) in enumerate(zip(x, y)):
        contest.learn(xi, int(yi), 1000 + day // 100, f"c{day:05d}")
    return contest


def test_the_trees_are_blended_with_the_online_model_where_that_ranks_better(promoted, mixed) -> None:
    y, p, who = mixed.scores.judged()  # online, trees alone, blended
    assert auc(y, p[:, 2]) > max(auc(y, p[:, 0]), auc(y, p[:, 1])) and mixed.blended
    assert mixed.champion == "boosted"
    y, p, _ = promoted[0].scores.judged()  # a band no straight line ranks: the trees alone
    assert auc(y, p[:, 1]) > auc(y, p[:, 2]) and not promoted[0].blended


def test_blended_trees_are_published_with_the_online_model_and_scored_so(promoted, mixed) -> None:
    snap = decode_model(encode_snapshot(mixed.snapshot(4)))
    assert snap.kind == "blended" and len(snap.weights) == F  # a kind a build that cannot blend refuses
    probe, _ = bands(300, seed=12)
    linear = Scorer(msgspec.structs.replace(snap, kind="logistic", trees=None)).score(probe)
    trees = TreeScorer(snap.trees, F).score(probe)
    assert np.allclose(Scorer(snap).score(probe), (linear + trees) / 2) and not np.allclose(linear, trees)
    assert snap.figures["auc"] == mixed.figures["boosted"]["auc"] > mixed.figures["online"]["auc"]
    with pytest.raises(ModelRefused, match="arrays"):
        decode_model(encode_snapshot(msgspec.structs.replace(snap, weights=snap.weights[:-1])))
    # Trees alone are published without the online model's weights (as an older trainer published them).
    alone = decode_model(encode_snapshot(promoted[0].snapshot(4)))
    assert alone.kind == "boosted" and alone.weights == []
    assert np.allclose(Scorer(alone).score(probe), TreeScorer(alone.trees, F).score(probe))


def test_a_challenger_that_calls_more_churners_at_the_budget_wins_without_the_margin() -> None:
    contest = Contest(Settings(_env_file=None, model_promote_rounds=1, model_promote_margin=0.01,
                               validation_window=2000, call_budget_share=0.01))
    rng = np.random.default_rng(8)
    y = (rng.random(2000) < 0.1).astype(int)
    champion = y + rng.normal(0, 1.0, 2000)
    near_top = champion >= np.quantile(champion, 0.9)
    better_calls = champion + 0.8 * y * near_top  # the churners near the top move up into the calls
    worse_rest = better_calls - 1.5 * y * ~near_top  # ... and the others down
    one_more = champion.copy()  # one churner more among the 20 calls, the rest as they were
    calls = np.argsort(-champion)[:20]
    missed = max((i for i in np.nonzero(y)[0] if i not in calls), key=lambda i: champion[i])
    dropped = next(i for i in calls[::-1] if not y[i])
    one_more[missed], one_more[dropped] = champion[calls[0]] + 1, champion[missed]
    judged = []
    for challenger in (worse_rest, one_more, better_calls):
        contest.scores = type(contest.scores)(2000)
        contest.scores.add(y, np.column_stack([champion, challenger, challenger]), np.arange(2000),
                           np.ones(2000, bool))
        judged.append(contest._judge())
        mine, theirs = contest.figures["online"], contest.figures["boosted"]
        assert theirs["precision_at_budget"] > mine["precision_at_budget"]
    assert theirs["auc"] < mine["auc"] + 0.01  # not by the margin
    assert judged[0] == [] and judged[1] == []
    assert contest.champion == "boosted" and judged[2][0].kind == "promoted"


def test_a_store_that_samples_is_refitted_as_often_as_labels_come() -> None:
    contest = Contest(Settings(_env_file=None, model_store_labels=500, model_store_days=30, model_refit_labels=1000))
    x, y = bands(6000)
    for k in range(6000):  # 200 customers a day for 30 days
        contest.learn(x[k], int(y[k]), 1000 + k // 200, f"c{k % 200:04d}")
    assert len(contest.store) == 500 and contest.store.keep_share() == 500 / (200 * 30)
    assert contest.refits >= 6  # after every 1,000 labels at most, kept or not


def test_a_blended_model_explains_a_score_by_both_models_terms(mixed) -> None:
    scorer = Scorer(decode_model(encode_snapshot(mixed.snapshot(4))))
    probe, _ = bands(50, seed=13)
    linear = scorer.standardise(probe[0]) * scorer._w
    trees = scorer._trees.contributions(probe[0])
    expected = sorted(range(F), key=lambda j: -(linear[j] + trees[j]))[:3]
    assert [d.feature for d in scorer.drivers(probe[0])] == [NAMES[j] for j in expected if linear[j] + trees[j] > 0]
    assert [d.contribution for d in scorer.drivers(probe[0])] == [(linear[j] + trees[j]) / 2 for j in expected
                                                                  if linear[j] + trees[j] > 0]


def test_a_checkpoint_of_the_build_before_blending_is_taken_up(mixed) -> None:
    old = copy.deepcopy(mixed)
    del old.blended, old.scores.mixed, old.store.kept, old.store.day_counts  # what that build pickled
    old.reconfigure(Settings(_env_file=None, **QUICK, model_store_days=old.policy.store_days))
    assert not old.blended and hasattr(old.scores, "mixed") and len(old.store) == old.store.seen
    x, y = bands(1200, seed=21)
    for k in range(1200):
        old.learn(x[k], int(y[k]), 1100, f"n{k:04d}")
    assert old.scores.judged()[1].shape[1] == 3 and old.refits > mixed.refits
