"""The saving ceiling: a call's expected worth is what the simulated call centre does on average,
and each ranking is planned again on the same alerts and valued by the truth."""

from __future__ import annotations

import collections
from datetime import date, timedelta

import msgspec
import pytest

from stream_app.contracts.events import Alert
from stream_app.offline.call_centre import (
    EFFECTS,
    OFFER_TAKEN_BY_STAYERS,
    PROMPTED_TO_LEAVE,
    CallCentreConfig,
    SimCallCentre,
)
from stream_app.offline.saving_ceiling import call_worth, saving_ceiling, saving_ceilings
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.settings import Settings
from tests.unit.test_call_centre import alerts_for
from tests.unit.test_campaign import alert


def test_a_calls_expected_worth_is_what_the_call_centre_does_on_average() -> None:
    sim = Simulator(SimConfig(customers=6000, days=150, monthly_churn=0.06, seed=3))
    start, d = sim.cfg.start, 100
    later = [i for i, t in enumerate(sim.truth) if t.churn_date and t.churn_date > str(start + timedelta(days=110))]
    price = [i for i in later if sim.truth[i].pattern == "decliner" and sim.truth[i].reason_code == 101]
    stayers = [i for i, t in enumerate(sim.truth) if t.churn_date is None][:600]
    gone = [i for i in range(len(sim.ids)) if sim.exit_day[i] < d < sim.back_day[i]][:50]
    assert len(price) > 60 and len(gone) == 50
    cfg = CallCentreConfig(budget=10_000)
    worth = [call_worth(sim, i, d, "plan_offer", cfg) for i in price + stayers + gone]
    centre = SimCallCentre(sim, Settings(), cfg)
    centre.observe(alerts_for(sim, price + stayers + gone, "plan_offer", start + timedelta(days=d - 1)))
    centre.work(d)
    kept = sum(w.gain for w in worth[:len(price)])
    assert kept == pytest.approx(len(price) * cfg.reach_rate * EFFECTS[(101, "plan_offer")])
    assert abs(centre.kept - kept) < 4 * kept ** 0.5  # a count of rare successes: about Poisson
    offers = sum((w.cost - cfg.costs.call) / cfg.costs.offer for w in worth)
    assert offers > len(stayers) * cfg.reach_rate * OFFER_TAKEN_BY_STAYERS["plan_offer"]
    assert abs(centre.accepted - offers) < 4 * offers ** 0.5
    assert all(w.gain == 0 and w.cost == cfg.costs.call for w in worth[-len(gone):])  # never reached


def raised(sim: Simulator, i: int, arpu: float, score: float, reason: int | None, on: date) -> Alert:
    """An alert of customer `i` raised on day `on`, open that day only."""
    one_day = alert(sim.ids[i], on, arpu=arpu)
    return msgspec.structs.replace(one_day, alert_id=f"{i}-{on}", value_at_risk=arpu * 12, score=score,
                                   reason_code=reason, treatment="plan_offer",
                                   expires_at=one_day.created_at + timedelta(days=1))


def leaving(sim: Simulator, i: int, pattern: str, reason: int | None, exit_day: int) -> None:
    t = sim.truth[i]
    t.pattern, t.reason_code = pattern, reason
    t.churn_date = None if reason is None else str(sim.cfg.start + timedelta(days=exit_day))
    sim.exit_day[i], sim.back_day[i] = (exit_day if reason else sim.cfg.days + 1), sim.cfg.days + 1


def test_each_ranking_calls_what_it_knows_pays_and_is_valued_by_the_truth() -> None:
    sim = Simulator(SimConfig(customers=6, days=120, seed=1))
    start, settings = sim.cfg.start, Settings()
    keepable, moving, staying, other = 0, 1, 2, 3
    for i, (pattern, reason) in {keepable: ("decliner", 101), moving: ("silent_churner", 210),
                                 staying: ("stable", None), other: ("decliner", 101)}.items():
        leaving(sim, i, pattern, reason, 91)
    day = start + timedelta(days=30)
    # One call a day, each alert open one day. Day 30: the mover is worth most at risk but no call
    # keeps them; the keepable customer and the stayer share a cell (reason 101, band, action).
    alerts = [raised(sim, moving, 300.0, 0.7, 210, day), raised(sim, keepable, 40.0, 0.44, 101, day),
              raised(sim, staying, 45.0, 0.31, 101, day), raised(sim, other, 50.0, 0.5, 101, day + timedelta(days=1))]
    cfg = CallCentreConfig(budget=1)
    figures = saving_ceiling(alerts, sim, settings, cfg, last_day=100)
    value = {a.customer_id: a.arpu * cfg.costs.value_months for a in alerts}

    def worth(i: int, d: int = 31) -> float:
        return call_worth(sim, i, d, "plan_offer", cfg).net(value[sim.ids[i]])

    on_day_31 = worth(other, 32)
    assert figures["risk_value"]["net_revenue_kept"] == pytest.approx(worth(moving) + on_day_31, abs=0.01)
    assert figures["oracle"]["net_revenue_kept"] == pytest.approx(worth(keepable) + on_day_31, abs=0.01)
    # The cell's mean gain, per alert: the stayer's higher value wins; per unit of risk, the keepable's score.
    assert figures["cells"]["net_revenue_kept"] == pytest.approx(worth(staying) + on_day_31, abs=0.01)
    assert figures["cells_by_risk"]["net_revenue_kept"] == pytest.approx(worth(keepable) + on_day_31, abs=0.01)
    assert worth(moving) < 0 < worth(keepable) and worth(staying) < worth(keepable)
    ratio = figures["oracle"]["net_revenue_kept"] / figures["risk_value"]["net_revenue_kept"]
    assert figures["oracle"]["vs_risk_value"] == pytest.approx(ratio, abs=1e-3)
    assert collections.Counter(f["calls"] for f in figures.values()) == {2: 5}
    by_budget = saving_ceilings(alerts, sim, settings, CallCentreConfig(budget=5), last_day=100)
    assert list(by_budget) == ["5", "2", "1"] and by_budget["1"] == figures  # the budget's halves


def test_a_stayer_who_cannot_leave_within_the_simulation_is_not_counted_as_prompted(monkeypatch) -> None:
    from stream_app.offline import call_centre

    monkeypatch.setattr(call_centre, "PROMPTED_TO_LEAVE", 1.0)
    sim = Simulator(SimConfig(customers=300, days=120, seed=2))
    stayers = [i for i, t in enumerate(sim.truth) if t.churn_date is None][:2]
    centre = SimCallCentre(sim, Settings(), CallCentreConfig(budget=10, reach_rate=1.0))
    start = sim.cfg.start
    centre.observe(alerts_for(sim, stayers[:1], "relationship", start + timedelta(days=59)))
    centre.work(60)  # leaves 14 to 45 days later: within the 120
    centre.observe(alerts_for(sim, stayers[1:], "relationship", start + timedelta(days=106)))
    centre.work(107)  # would leave after the simulation ends: nothing happens, nothing is counted
    assert centre.prompted == 1 and sim.truth[stayers[0]].pattern == "prompted"
    assert sim.truth[stayers[1]].churn_date is None


def test_a_call_is_made_the_day_after_its_alert_and_a_second_call_counts_what_the_first_left() -> None:
    sim = Simulator(SimConfig(customers=4, days=120, seed=1))
    start, gone, twice = sim.cfg.start, 0, 1
    leaving(sim, gone, "decliner", 101, 31)  # leaves on the day after their alert: the call finds them gone
    leaving(sim, twice, "decliner", 101, 91)
    alerts = [raised(sim, gone, 50.0, 0.5, 101, start + timedelta(days=30)),
              *(raised(sim, twice, 50.0, 0.5, 101, start + timedelta(days=d)) for d in (40, 50))]
    cfg = CallCentreConfig(budget=1)
    figures = saving_ceiling(alerts, sim, Settings(), cfg, last_day=100)["risk_value"]
    costs, value, k = cfg.costs, 600.0, cfg.reach_rate * EFFECTS[(101, "plan_offer")]
    first = k * value - costs.call - k * costs.offer
    # Kept by the first call (k), they are a stayer the second time: prompted to leave, or taking the offer.
    stayer = cfg.reach_rate * (-PROMPTED_TO_LEAVE * value - OFFER_TAKEN_BY_STAYERS["plan_offer"] * costs.offer)
    second = (1 - k) * k * (value - costs.offer) + k * stayer - costs.call
    assert figures["calls"] == 3 and figures["customers"] == 2
    assert figures["net_revenue_kept"] == pytest.approx(-costs.call + first + second, abs=0.01)
