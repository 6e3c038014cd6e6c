"""The simulated call centre: its effects follow the table and the customer's true reason only,
and in a closed-loop replay it calls within the budget, never the control group, and what it
does reaches the worker's state and the simulator's truth."""

from __future__ import annotations

import collections
import json
from datetime import timedelta
from pathlib import Path

import msgspec
import numpy as np
import pytest

from stream_app.offline.call_centre import EFFECTS, CallCentreConfig, SimCallCentre, closed_loop
from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings
from stream_app.windows.state import Windows
from tests.unit.test_campaign import alert


def alerts_for(sim: Simulator, who: list[int], treatment: str, day) -> list:
    return [msgspec.structs.replace(alert(sim.ids[i], day), treatment=treatment) for i in who]


def test_a_call_keeps_only_churners_whose_reason_its_treatment_answers_at_the_tables_rate() -> None:
    sim = Simulator(SimConfig(customers=6000, days=120, monthly_churn=0.06, seed=3))
    start = sim.cfg.start
    by_reason = collections.defaultdict(list)
    for i, t in enumerate(sim.truth):
        if t.churn_date and t.churn_date > str(start + timedelta(days=80)):
            by_reason[(t.pattern, t.reason_code)].append(i)
    stayers = [i for i, t in enumerate(sim.truth) if t.churn_date is None][:400]
    price, moving = by_reason[("decliner", 101)], by_reason[("silent_churner", 210)]
    assert len(price) > 60 and len(moving) > 20
    centre = SimCallCentre(sim, Settings(), CallCentreConfig(budget=10_000, reach_rate=1.0))
    centre.observe(alerts_for(sim, price + moving + stayers, "plan_offer", start + timedelta(days=69)))
    outcomes = centre.work(70)
    assert len(outcomes) == len(price) + len(moving) + len(stayers)
    kept = {i for i, t in enumerate(sim.truth) if t.planned_churn}
    share = len(kept & set(price)) / len(price)
    expected = EFFECTS[(101, "plan_offer")]
    assert abs(share - expected) < 3 * (expected * (1 - expected) / len(price)) ** 0.5 + 0.02
    assert not kept & set(moving)  # relocation: no call keeps them
    assert all(sim.exit_day[i] > sim.cfg.days for i in kept) and all(sim.truth[i].churn_date is None for i in kept)
    taken = [o for o in outcomes if msgspec.json.decode(o.value)["customer_id"] in {sim.ids[i] for i in stayers}
             and msgspec.json.decode(o.value)["result"] == "accepted"]
    assert 0.15 * len(stayers) < len(taken) < 0.35 * len(stayers)  # offers taken by those staying anyway


def test_a_kept_customers_usage_comes_back_within_two_weeks() -> None:
    sim = Simulator(SimConfig(customers=2000, days=120, monthly_churn=0.06, seed=4))
    start = sim.cfg.start
    i = next(i for i, t in enumerate(sim.truth) if t.pattern == "decliner" and t.churn_date > str(
        start + timedelta(days=100)) and t.decline_start < str(start + timedelta(days=60)))
    declining = sim.mult[i].copy()
    sim.keep(i, 80)
    assert sim.mult[i, 80] == pytest.approx(declining[80])  # the call changes nothing of the day before
    assert (sim.mult[i, 81:94] > declining[81:94]).all()  # and then their usage comes back
    holiday = sim.common  # what moves everyone that day stays
    assert sim.mult[i, 94:] == pytest.approx(holiday[94:]) and sim.exit_day[i] > sim.cfg.days
    assert sim.truth[i].planned_churn and sim.truth[i].churn_date is None


LOOSE_RULES = """
levels:
  default: {high: 5, medium: 3, low: 2}
groups:
  - name: loose_daily
    cadence: daily
    rules:
      - id: minutes_falling
        expr: mou_out_30d_mom <= -0.15
        importance: 5
        labels: {reason_code: 101}
        annotations:
          summary: "Outgoing minutes fell {mou_out_30d_mom:change}"
actions:
  - action: "plan offer: a cheaper or better-fitting plan"
    treatment: plan_offer
"""


def test_in_a_closed_loop_replay_the_calls_keep_to_the_budget_and_reach_the_workers_state(tmp_path: Path) -> None:
    # Rules that fire far more often than the real ones: many calls from a small, quick simulation.
    (tmp_path / "loose.yaml").write_text(LOOSE_RULES)
    settings = Settings(rules_dir=tmp_path, holdout_share=0.5)  # half the alerts are the control's
    sim = Simulator(SimConfig(customers=80, days=80, warmup_days=40, monthly_churn=0.15, seed=5))
    centre = SimCallCentre(sim, settings, CallCentreConfig(budget=2, reach_rate=0.8))
    rules = load_rules([settings.rules_dir])
    result = replay(closed_loop(sim, centre, settings), settings, lambda: rules, learn=False,
                    keep_snapshots=False, on_alerts=centre.observe)
    called = {t.customer_id for t in sim.truth if t.called}
    assert 20 < centre.calls <= 2 * (sim.cfg.days - 1) and 0 < len(called) <= centre.reached  # a newer alert: again
    control = {a.customer_id for a in result.alerts if a.holdout}
    assert control and not called & control  # the control group is never called
    assert called <= {a.customer_id for a in result.alerts if not a.holdout}
    customer = sorted(called)[0]
    kept = Windows.load([customer], [result.states[customer]])
    latest = [o.result for o in centre.outcomes if o.customer_id == customer][-1]
    assert kept.text[0].outcome == latest  # the worker read the customer's latest outcome
    for t in sim.truth:
        if t.planned_churn:  # kept: no exit reached the pipeline
            assert t.customer_id not in {c.customer_id for c in result.churn}


def test_thetrue_uplift_counts_each_called_customer_once_kept_within_the_window_or_prompted() -> None:
    from stream_app.contracts.events import Outcome
    from stream_app.offline.closed_loop import true_uplift

    settings = Settings()
    sim = Simulator(SimConfig(customers=4, days=120, seed=1))
    start = sim.cfg.start
    kept, prompted, late, stayer = sim.truth
    kept.planned_churn = str(start + timedelta(days=40))  # kept from a churn 10 days after the alert
    late.planned_churn = str(start + timedelta(days=119 + 200))  # would have left long after the window
    prompted.pattern, prompted.churn_date = "prompted", str(start + timedelta(days=50))
    centre = SimCallCentre(sim, settings, CallCentreConfig(budget=10))
    alerts = [msgspec.structs.replace(alert(t.customer_id, start + timedelta(days=30)), alert_id=f"a{k}{w}")
              for k, t in enumerate(sim.truth) for w in range(2)]  # two calls each: still one customer each
    centre.observe(alerts)
    centre.outcomes = [Outcome(f"o{a.alert_id}", a.customer_id, a.event_time, a.alert_id, "contacted")
                       for a in alerts]
    assert true_uplift(sim, centre, settings, start + timedelta(days=119), 90) == pytest.approx((1 - 1) / 4)
    kept.pattern = stayer.pattern = "stable"
    prompted.pattern = "stable"
    assert true_uplift(sim, centre, settings, start + timedelta(days=119), 90) == pytest.approx(1 / 4)


def test_the_closed_loop_evaluation_runs_three_rankings_on_one_base_and_counts_their_net_revenue(
        tmp_path: Path) -> None:
    from stream_app.offline.closed_loop import _arm, _ArmInputs, evaluate_closed_loop

    (tmp_path / "loose.yaml").write_text(LOOSE_RULES)
    settings = Settings(rules_dir=tmp_path, holdout_share=0.5)
    rules = load_rules([settings.rules_dir])
    cfg = SimConfig(customers=80, days=80, warmup_days=40, monthly_churn=0.15, seed=5)
    # Trees fitted here first on OpenMP's threads: a forked loop would inherit its pool and hang.
    from sklearn.ensemble import HistGradientBoostingClassifier
    HistGradientBoostingClassifier(max_iter=5).fit(np.arange(40.0).reshape(-1, 1), np.arange(40) % 2)
    report = evaluate_closed_loop(settings, rules, cfg, budget=1, jobs=3)  # each loop in a process of its own
    arms = report.rankings
    # A loop run in this process does exactly what the other process's did.
    assert _arm(_ArmInputs(settings, rules, cfg, 1), "risk_value").figures == arms["risk_value"]
    assert set(arms) == {"risk", "risk_value", "saving"}
    for arm in arms.values():
        assert 0 < arm["calls"] <= cfg.days - 1 and arm["reached"] <= arm["calls"]
        costs = arm["calls"] * settings.call_cost + arm["offers_accepted"] * settings.offer_cost
        assert arm["net_revenue_kept"] == pytest.approx(arm["revenue_kept"] - costs, abs=0.02)
    assert arms["risk_value"]["calls"] == report.calls and arms["risk_value"]["kept"] == report.kept
    if not arms["saving"]["saving_model"]["ready"]:  # no evidence: the saving ranking is the product's
        assert {k: v for k, v in arms["saving"].items() if k != "saving_model"} == \
            {k: v for k, v in arms["risk_value"].items() if k != "saving_model"}
    else:  # it ranked by what it learned: a different list, whatever it kept
        assert arms["saving"] != arms["risk_value"]


def test_a_closed_loop_of_some_rankings_always_runs_the_products_beside_them(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from stream_app.cli.main import main

    (tmp_path / "loose.yaml").write_text(LOOSE_RULES)
    args = ["evaluate", "--closed-loop", "--customers", "60", "--days", "60", "--warmup-days", "30", "--seed", "5",
            "--call-budget", "1", "--jobs", "1", "--json"]
    env = {"CHURNWATCH_RULES_DIR": str(tmp_path), "CHURNWATCH_HOLDOUT_SHARE": "0.5"}
    runs = {name: CliRunner().invoke(main, args + ["--ranking", name], env=env) for name in ("saving", "risk")}
    reports = {}
    for name, run in runs.items():
        assert run.exit_code == 0, run.output
        reports[name] = json.loads(run.stdout.strip().splitlines()[-1])
        assert set(reports[name]["rankings"]) == {"risk_value", name} and "qini_saving" in reports[name]
        ceiling = reports[name]["saving_ceiling"]  # the product's alerts, planned again on the truth
        assert list(ceiling) == ["1"]  # the budget's halves: one call a day has none
        assert list(ceiling["1"]) == ["risk", "risk_value", "cells", "cells_by_risk", "oracle"]
    assert reports["risk"]["saving_vs_risk_value"] is None  # the saving ranking did not run
    # The product's loop is the same whichever ran beside it.
    assert reports["saving"]["rankings"]["risk_value"] == reports["risk"]["rankings"]["risk_value"]


def test_the_closed_loop_compares_the_saving_rankings_net_revenue_with_the_products(monkeypatch) -> None:
    from stream_app.offline import closed_loop

    ran = []

    def arm(_inputs, ranking: str) -> closed_loop._ArmResult:  # what each loop did, made up
        ran.append(ranking)
        figures = {"net_revenue_kept": {"risk": 50.0, "risk_value": 80.0, "saving": 100.0}[ranking],
                   "qini_saving_uplift": {"qini": len(ranking)}}
        return closed_loop._ArmResult(figures, (9, 6, 2, 0, 1), 0.05, {}, True, None, {}, {"arm": ranking})

    monkeypatch.setattr(closed_loop, "_arm", arm)
    report = closed_loop.evaluate_closed_loop(Settings(), None, SimConfig(), 1, rankings=("saving",))  # type: ignore
    assert ran == ["risk_value", "saving"] and report.saving_vs_risk_value == 1.25
    assert report.qini_saving == {"qini": len("risk_value")} and report.calls == 9  # the product's
    assert report.saving_ceiling == {"arm": "risk_value"}
    every = closed_loop.evaluate_closed_loop(Settings(), None, SimConfig(), 1)  # type: ignore[arg-type]
    assert ran[2:] == ["risk", "risk_value", "saving"] and every.saving_vs_risk_value == 1.25


def test_ranked_by_saving_the_centre_calls_what_its_evidence_says_pays_and_same_day_calls_draw_alike() -> None:

    from tests.unit.test_saving import loop

    sim = Simulator(SimConfig(customers=200, days=40, seed=4))
    day = sim.cfg.start + timedelta(days=9)
    fix, offer = alerts_for(sim, list(range(0, 10)), "technical_fix", day), alerts_for(sim, list(range(10, 20)),
                                                                                       "plan_offer", day)
    by_value = SimCallCentre(sim, Settings(), CallCentreConfig(budget=10))
    by_saving = SimCallCentre(Simulator(sim.cfg), Settings(), CallCentreConfig(budget=10, ranking="saving"))
    loop(by_saving.saving, np.random.default_rng(1), 2000, {("technical_fix", 3): 0.0, ("plan_offer", 3): 0.5})
    for centre in (by_value, by_saving):
        centre.observe(fix + offer)
        centre.work(10)
    called = lambda c: {d.customer for d in c.decisions if d.called}  # noqa: E731
    # Equal value at risk: the table's order calls the first ten; the evidence, the ten a call keeps.
    assert called(by_saving) == {a.customer_id for a in offer} and called(by_value) == {a.customer_id for a in fix}
    # Another list that calls ten others first: the same customers called the same day draw the same.
    first = [msgspec.structs.replace(a, value_at_risk=900.0) for a in alerts_for(sim, list(range(20, 30)), "plan_offer",
                                                                               day)]
    again = SimCallCentre(Simulator(sim.cfg), Settings(), CallCentreConfig(budget=20))
    again.observe(first + fix)
    again.work(10)
    reached = lambda c: {d.customer: d.reached for d in c.decisions if d.customer in called(by_value)}  # noqa: E731
    assert reached(again) == reached(by_value) and len(called(again)) == 20


def test_the_saving_models_uplift_is_scored_before_it_learns_each_label_calls_reached_or_not() -> None:
    from stream_app.contracts.events import Label
    from stream_app.model.scoring import NAMES
    from stream_app.offline.call_centre import Decision
    from stream_app.offline.closed_loop import _Learning
    from tests.unit.test_saving import loop

    centre = SimCallCentre(Simulator(SimConfig(customers=50, days=10, seed=4)), Settings(), CallCentreConfig(budget=5))
    learning = _Learning(centre)
    centre.decisions += [Decision("c0001", 100, True, "plan_offer", 101, 0.4, 1.0),  # called, not reached
                         Decision("c0002", 100, False, "technical_fix", 301, 0.3, 1.0)]
    label = lambda who, y: Label(who, 101, [0.0] * len(NAMES), y, 0, 0)  # noqa: E731
    learning(label("c0001", 1))  # no evidence yet: learned, not scored
    assert learning.saving_scored == [] and centre.saving.calls.decisions == 1
    loop(centre.saving, np.random.default_rng(2), 2000, {("plan_offer", 101): 0.5, ("technical_fix", 301): 0.0})
    centre.decisions.append(Decision("c0003", 100, True, "plan_offer", 101, 0.4, 1.0))
    offer = centre.saving.uplift(0.4, "plan_offer", 101)
    learning(label("c0003", 0))
    fix = centre.saving.uplift(0.3, "technical_fix", 301)  # after the last label was learned
    learning(label("c0002", 1))
    assert learning.saving_scored == [(offer, True, 0), (fix, False, 1)]
    assert offer > 0.1 > abs(fix)  # the offer keeps price churners; the fix keeps nobody
    assert centre.saving.control.decisions == 2001
