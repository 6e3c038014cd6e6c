"""Expected saved value: the share of would-be churners each action keeps, learned from calls
against the control group, and the saving it gives an alert net of what the call costs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from stream_app.contracts.events import Alert
from stream_app.model.control_rates import RISK_BANDS, ControlRates, band
from stream_app.model.saving import MIN_EXPECTED, SavingCosts, SavingModel, alert_risk
from tests.unit.test_rules import RULES

COSTS = SavingCosts(call=2.0, offer=30.0, value_months=12.0)


def alert(treatment: str, reason: int | None, score: float | None = 0.4, arpu: float = 100.0,
          level: str = "high") -> Alert:
    t = datetime(2026, 3, 1, tzinfo=timezone.utc)
    return Alert("a", "c1234", level, "2026-03", t, t + timedelta(days=7), t, [], reason, "mass", "none", arpu,
                 0.0, "call", treatment=treatment, score=score)  # type: ignore[arg-type]


def loop(model: SavingModel, rng: np.random.Generator, n: int, kept: dict[tuple[str, int], float],
         bias: float | dict[int, float] = 1.0) -> None:
    """n control alerts and n calls split across `kept`'s pairs; risks that understate churn by `bias`
    (or by a bias per reason code, the control's alerts split across the same reasons as the calls)."""
    pairs = list(kept)
    by_reason = bias if isinstance(bias, dict) else {r: bias for _, r in pairs}
    for k in range(n):
        reason, risk = pairs[k % len(pairs)][1], rng.uniform(0.1, 0.5)
        model.learn_control(risk, rng.random() < min(1.0, risk * by_reason[reason]), reason)
    for k in range(n):
        (action, reason), risk = pairs[k % len(pairs)], rng.uniform(0.1, 0.5)
        churned = rng.random() < min(1.0, risk * by_reason[reason]) * (1 - kept[(action, reason)])
        model.learn_call(action, reason, risk, churned, accepted=not churned and rng.random() < 0.2)


def test_no_saving_until_both_the_control_and_the_calls_have_the_evidence() -> None:
    model = SavingModel()
    model.learn_control(MIN_EXPECTED - 0.5, True)
    model.learn_call("plan_offer", 101, MIN_EXPECTED + 1, False, False)
    assert not model.ready and model.saving(alert("plan_offer", 101), COSTS) is None
    model.learn_control(1.0, False)
    assert model.ready and model.saving(alert("plan_offer", 101), COSTS) is not None


def test_before_any_control_alert_calls_are_judged_at_the_risks_their_scores_gave() -> None:
    model = SavingModel()
    for k in range(50):
        model.learn_call("plan_offer", 101, 0.4, k % 5 < 2, False)  # 40% churn at risk 0.4: as the scores say
    assert abs(model.kept("plan_offer", 101)) < 0.05
    shown = model.to_json()["actions"]["plan_offer"]  # the churners these calls would have had uncalled
    assert shown["churned"] == 20 and shown["expected"] == pytest.approx(20.0)


def test_each_pair_keeps_what_its_calls_kept_and_an_action_that_keeps_nobody_is_no_call() -> None:
    model, rng = SavingModel(), np.random.default_rng(3)
    truth = {("plan_offer", 101): 0.5, ("plan_offer", 210): 0.0, ("relationship", 101): 0.0}
    loop(model, rng, 6000, truth, bias=1.5)  # the model's risks understate the alerted customers' churn
    assert model.calibration() == pytest.approx(1.5, abs=0.1)  # the control group says by how much
    assert model.kept("plan_offer", 101) == pytest.approx(0.5, abs=0.08)
    assert abs(model.kept("plan_offer", 210)) < 0.08 and abs(model.kept("relationship", 101)) < 0.08
    price = model.saving(alert("plan_offer", 101), COSTS)
    # Its band (0.3-0.45) churns about 1.5 x 0.375 uncalled: 0.56 x 0.5 x 1,200 = 337 saved, less a
    # call and the offers taken.
    assert price == pytest.approx(model.rates().rate(101, band(0.4)) * model.kept("plan_offer", 101) * 1200
                                  - 2 - 30 * model.accepted("plan_offer"))
    assert 300 < price < 400
    assert model.saving(alert("relationship", 101, arpu=5.0), COSTS) <= 0  # keeps nobody: the call costs


def test_an_action_sent_to_the_reasons_that_churn_most_is_compared_with_control_alerts_of_those_reasons() -> None:
    model, rng = SavingModel(), np.random.default_rng(6)
    # Network churners (301) leave twice as often as price churners (101) for the same risk. The fix,
    # sent only to them, keeps nobody; the offer, sent only to price churners, keeps a third.
    loop(model, rng, 6000, {("technical_fix", 301): 0.0, ("plan_offer", 101): 1 / 3}, bias={301: 1.6, 101: 0.8})
    assert model.calibration() == pytest.approx(1.2, abs=0.06)  # the whole control: the mix of both
    for risk, mean in ((0.15, 0.15), (0.25, 0.25), (0.4, 0.375)):  # each band's mean risk, times the bias
        assert model.rates().rate(301, band(risk)) / mean == pytest.approx(1.6, abs=0.3)  # about three
        assert model.rates().rate(101, band(risk)) / mean == pytest.approx(0.8, abs=0.2)  # standard errors
    assert model.rates().rate(301, band(0.25)) > 1.5 * model.rates().rate(101, band(0.25))
    # Against the whole control the fix would look harmful (1.6 / 1.2: a third more churners than
    # expected) and the offer would look to keep more than half (0.8 x 2/3 / 1.2 = 0.44 churning).
    assert abs(model.kept_by_action("technical_fix")) < 0.08 and abs(model.kept("technical_fix", 301)) < 0.08
    assert model.kept_by_action("plan_offer") == pytest.approx(1 / 3, abs=0.08)
    assert model.expected(alert("x", 301), "technical_fix", COSTS) == pytest.approx(
        model.rates().rate(301, band(0.4)) * model.kept("technical_fix", 301) * 1200 - 2
        - 30 * model.accepted("technical_fix"))
    assert "301" in model.to_json()["reason_factors"]
    # What an alert is offered moves with every decision learned, calls and control alike.
    for learn in (lambda: model.learn_call("technical_fix", 301, 0.3, False, False),
                  lambda: model.learn_control(0.3, True, 301)):
        fix, by_action = model.kept("technical_fix", 301), model.kept_by_action("technical_fix")
        for _ in range(200):
            learn()
        assert model.kept("technical_fix", 301) > fix + 0.02
        assert model.kept_by_action("technical_fix") > by_action + 0.02


def test_calls_are_compared_with_control_alerts_of_their_own_risk_where_the_score_is_off_unevenly() -> None:
    model, rng = SavingModel(), np.random.default_rng(8)
    # Alerted customers churn 45% of the time whatever their score says. One ranking's calls go to
    # low scores, another's to high ones; neither keeps anybody. Against one factor for all (0.45
    # over the control's mean risk) the first looks harmful and the second looks to keep a third.
    for _ in range(4000):
        model.learn_control(rng.uniform(0.1, 0.6), rng.random() < 0.45, 101)
    for _ in range(2000):
        model.learn_call("relationship", 101, rng.uniform(0.1, 0.2), rng.random() < 0.45, False)
        model.learn_call("plan_offer", 101, rng.uniform(0.45, 0.6), rng.random() < 0.45, False)
    assert abs(model.kept("relationship", 101)) < 0.08 and abs(model.kept("plan_offer", 101)) < 0.08
    assert model.rates().rate(101, band(0.15)) == pytest.approx(0.45, rel=0.1)
    assert model.rates().rate(101, band(0.5)) == pytest.approx(0.45, rel=0.1)
    # Within a band too: alerts at its low end churn as those at its high end (a third of them at
    # 0.01-0.1). Counted in proportion to the score, calls at 0.01-0.03 would look to lose them.
    for _ in range(3000):
        model.learn_control(rng.uniform(0.01, 0.1), rng.random() < 0.3, 205)
        model.learn_call("technical_fix", 205, rng.uniform(0.01, 0.03), rng.random() < 0.3, False)
    assert abs(model.kept("technical_fix", 205)) < 0.1
    # The uplift of a customer is what their band's control churns at, times the share kept.
    assert model.uplift(0.5, "plan_offer", 101) == pytest.approx(
        model.rates().rate(101, band(0.5)) * model.kept("plan_offer", 101))


def test_control_rates_are_a_reasons_factor_times_a_bands_even_where_reasons_keep_to_their_own_risks() -> None:
    reasons, bands = {101: 0.6, 205: 1.4}, np.array([0.3, 0.3, 0.35, 0.4, 0.5, 0.6])
    # Price alerts come at low risks, network alerts at high ones: only bands 2 and 3 hold both,
    # so a fit that stops early, or moves one margin only, is off in the cells the control lacks.
    cells = {(r, b): (reasons[r] * bands[b] * 5000.0, 5000.0) for r, b in
             [(101, 0), (101, 1), (101, 2), (101, 3), (205, 2), (205, 3), (205, 4), (205, 5)]}
    rates = ControlRates.fit(cells, whole=0.4)
    ratio = reasons[205] / reasons[101]
    for r in reasons:
        for b in range(len(bands)):  # the control's cells and those it never saw
            truth = reasons[r] * bands[b]
            assert rates.rate(r, b) / rates.rate(101 if r == 205 else 205, b) == pytest.approx(
                ratio if r == 205 else 1 / ratio, rel=0.01)
            if (r, b) in cells:
                assert rates.rate(r, b) == pytest.approx(truth, rel=0.01)
    empty = ControlRates.fit({}, whole=0.3)
    assert all(empty.rate(r, b) == pytest.approx(0.3) for r in (0, 101) for b in range(len(bands)))
    assert rates.rate(999, 2) == pytest.approx(float(rates.bands[2])) != rates.rate(101, 2)  # never seen: 1
    assert band(0.05) == 0 and band(0.1) == 1 and band(0.59) == 4 and band(0.99) == len(RISK_BANDS)


def test_a_few_control_alerts_move_a_band_by_what_they_say_not_by_how_many_reasons_there_are() -> None:
    one, many = SavingModel(), SavingModel()
    for model, codes in ((one, [101]), (many, list(range(101, 113)))):
        for k in range(600):
            model.learn_control(0.3, k % 3 == 0, codes[k % len(codes)])
    for model in (one, many):
        before = model.rates().rate(None, band(0.35))
        model.learn_control(0.35, True, 101)
        assert 0 < model.rates().rate(None, band(0.35)) - before < 0.15


def test_a_pair_never_called_starts_at_its_action_and_a_level_stands_in_for_a_missing_score() -> None:
    model, rng = SavingModel(), np.random.default_rng(4)
    loop(model, rng, 3000, {("plan_offer", 101): 0.6, ("plan_offer", 102): 0.2})
    assert model.kept("plan_offer", 999) == pytest.approx(model.kept_by_action("plan_offer"), abs=1e-9)
    assert model.kept("plan_offer", 102) < model.kept_by_action("plan_offer") < model.kept("plan_offer", 101)
    # An action never tried: no offer cost where it makes no offer, all calls' share where it does.
    assert model.accepted("technical_fix") == 0 < model.accepted("promotion_match") == pytest.approx(
        (model.calls.accepted + 1) / (model.calls.decisions + 2))
    assert alert_risk(alert("plan_offer", 101, score=None, level="medium")) == 0.35


def test_the_next_best_action_is_the_matching_entry_in_the_same_queue_that_saves_most(tmp_path) -> None:
    from stream_app.alerts.build import AlertPolicy, _act
    from stream_app.rules.pack import load_rules

    entry = '    action: "plan offer: a cheaper or better-fitting plan"\n    treatment: plan_offer\n'
    text = (RULES / "churn.yaml").read_text()
    assert entry in text
    # Alternatives after the table's own entry for price churners, which it never picks.
    (tmp_path / "churn.yaml").write_text(text.replace(entry, entry + (
        '  - reason_codes: [101]\n    action: "match the competitor\'s price"\n    treatment: promotion_match\n'
        '  - reason_codes: [101]\n    queue: retention_specialist\n    action: "specialist"\n'
        '    treatment: billing_review\n'), 1))
    ruleset, policy = load_rules([tmp_path]), AlertPolicy(costs=COSTS)
    table = _act(alert("relationship", 101), ruleset, policy)
    assert (table.treatment, table.expected_saving) == ("plan_offer", None)  # no evidence: the table's choice
    model = SavingModel()
    loop(model, np.random.default_rng(5), 4000, {("plan_offer", 101): 0.1, ("promotion_match", 101): 0.5,
                                                ("billing_review", 101): 0.9, ("relationship", 101): 0.0})
    best = _act(alert("relationship", 101), ruleset, policy, model)
    # billing_review keeps most but is another queue's to call; of the general queue's three entries
    # that match (the plan offer, the match, the catch-all retention call) the match keeps most.
    assert (best.treatment, best.queue) == ("promotion_match", "general")
    assert best.expected_saving == pytest.approx(model.expected(alert("x", 101), "promotion_match", COSTS), abs=0.01)


def test_a_label_carries_the_decision_of_its_customers_alert_once_and_the_latest_outcome() -> None:
    from zoneinfo import ZoneInfo

    import msgspec

    from stream_app.contracts.events import CallDecision, Outcome
    from stream_app.model.decisions import Decisions

    zone = ZoneInfo("Asia/Shanghai")
    decisions = Decisions(zone)
    day = datetime(2026, 3, 1, 12, tzinfo=zone)
    ordinal = day.date().toordinal()

    def raised(customer: str, holdout: bool) -> Alert:
        return msgspec.structs.replace(alert("plan_offer", 101, score=0.3), alert_id=f"a-{customer}",
                                       customer_id=customer, event_time=day, holdout=holdout)

    for customer, holdout in (("ctrl1", True), ("call1", False), ("none1", False)):
        decisions.alert(raised(customer, holdout))
    for later, result, offer in ((1, "accepted", "PLAN03"), (0, "not_reached", None)):  # Tuesday's offer counts
        decisions.outcome(Outcome(f"o-{result}", "call1", day + timedelta(days=later), "a-call1", result,
                                  offer))  # type: ignore[arg-type]
    decisions.outcome(Outcome("o-x", "who12", day, "a-unknown", "contacted"))  # an alert never read
    assert decisions.for_label("ctrl1", ordinal, -1) == CallDecision("control", 101, 0.3)
    assert decisions.for_label("call1", ordinal + 2, ordinal - 1) == CallDecision("plan_offer", 101, 0.3, True)
    assert decisions.for_label("call1", ordinal + 2, ordinal) is None  # an earlier label carried it already
    assert decisions.for_label("call1", ordinal + 4, ordinal - 1) is None  # too long after the alert
    assert decisions.for_label("none1", ordinal, -1) is None  # never called: no decision
    decisions.outcome(Outcome("o-early", "late1", day, "a-late1", "contacted"))  # read before its alert
    decisions.alert(raised("late1", False))
    managed = msgspec.structs.replace(raised("mgr12", True), account_manager="anna")  # theirs to call, not ours
    decisions.alert(managed)
    assert decisions.for_label("late1", ordinal, -1) == CallDecision("plan_offer", 101, 0.3)
    assert decisions.for_label("mgr12", ordinal, -1) is None
    weekly = Decisions(zone, snapshot_every_days=7)  # a label a week apart still carries it
    weekly.alert(raised("ctrl1", True))
    assert weekly.for_label("ctrl1", ordinal + 6, ordinal - 1) is not None
    decisions.forget_before(ordinal + 10)
    # Gone: the control decision. Kept: the three alerts sent and their outcomes, which may still change.
    assert decisions.for_label("ctrl1", ordinal, -1) is None and len(decisions) == 3 + 3


def test_the_trainer_learns_each_labels_decision_once_and_publishes_the_evidence() -> None:
    from stream_app.contracts.events import CallDecision, Label
    from stream_app.model.signing import Signer
    from stream_app.model.trainer import TrainerCore
    from stream_app.settings import Settings

    signer, core = Signer(b"a-key-for-these-tests"), TrainerCore.fresh(Settings())
    x = [0.0] * len(core.contest.features)
    labels = [Label(f"c{i:04d}", 1000, x, i % 2, 0, i, 0, CallDecision("control" if i % 3 else "plan_offer", 101, 0.4))
              for i in range(30)]
    for offset, label in enumerate(labels[:20]):
        core.learn(label, offset)
    restored = TrainerCore.restore(core.checkpoint(signer), Settings(), signer)
    for offset, label in enumerate(labels[10:], start=20):  # the first ten again: learned before
        restored.learn(label, offset)
    assert restored.saving.control.decisions == 20 and restored.saving.calls.decisions == 10
    assert restored.saving.control.churned == sum(lb.y for lb in labels if lb.decision.arm == "control")
    from stream_app.model.scoring import decode_model, encode_snapshot

    published = decode_model(encode_snapshot(restored.next_model(signer)), restored.contest.features)
    assert published.saving is not None and published.saving.to_json() == restored.saving.to_json()
