import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from stream_app.alerts.build import alert_risks, levels_with_score, queue_order
from stream_app.cli.main import main
from stream_app.offline.evaluate import (
    REFIT_DAYS,
    _alert_recall,
    _false_alerts,
    _refitted,
    _weekly_budget,
    _weekly_calls,
)

REPO = Path(__file__).resolve().parents[2]
KEYS = {"auc_online", "auc_rules", "auc_combined", "auc_batch_reference", "precision_at_budget", "recall_at_budget",
        "top_decile_lift", "lead_time_days_median", "customers", "churners", "precision_at_budget_cooldown",
        "false_alerts_per_1000_customers_month", "false_alerts_by_rule", "alert_recall", "precision_ceiling",
        "precision_oracle", "precision_to_ceiling", "lead_time_test_days_median", "lead_time_ceiling_days_median",
        "churners_watched_test", "churners_warned_high_test", "churners_high_ceiling", "score_reliability",
        "lead_time_alerts_test_days_median", "churners_alerted_high_test", "precision_at_budget_interval",
        "precision_to_ceiling_interval", "lead_time_test_days_interval", "lead_time_alerts_test_days_interval"}


def test_evaluate_replays_the_simulator_and_ends_with_one_json_object(monkeypatch) -> None:
    monkeypatch.setenv("CHURNWATCH_RULES_DIR", str(REPO / "alert_rules"))
    monkeypatch.setenv("CHURNWATCH_MODEL_PUBLISH_LABELS", "200")
    result = CliRunner().invoke(main, ["evaluate", "--customers", "120", "--days", "110", "--warmup-days", "20",
                                       "--monthly-churn", "0.08", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert KEYS <= set(report)
    assert report["customers"] == 120 and 0 < report["churners"] < 120
    assert report["model_version"] > 0 and report["labels_learned"] > 0  # the online model learned as it went
    for name in ("auc_online", "auc_rules", "auc_combined", "auc_batch_reference"):
        assert 0.0 <= report[name] <= 1.0, name
    assert 0.0 <= report["precision_at_budget"] <= 1.0 and 0.0 <= report["recall_at_budget"] <= 1.0
    # What the same traffic allows, and the service's share of it.
    assert 0.0 < report["precision_ceiling"] <= 1.0 and 0.0 < report["precision_oracle"] <= 1.0
    assert math.isclose(report["precision_to_ceiling"], report["precision_at_budget"] / report["precision_ceiling"])
    assert report["champion"] in ("online", "boosted") and report["refits"] >= 0


def test_evaluate_lists_measures_the_lifecycle_lists_against_the_simulators_truth(monkeypatch) -> None:
    monkeypatch.setenv("CHURNWATCH_RULES_DIR", str(REPO / "alert_rules"))
    result = CliRunner().invoke(main, ["evaluate", "--lists", "--customers", "120", "--days", "100", "--seed", "5",
                                       "--warmup-days", "40", "--monthly-churn", "0.08", "--grow-share", "0.5",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert (report["customers"], report["day"]) == (120, "2026-11-08")
    assert report["growers"] > 20 and 0 < report["rising"] and report["rising_precision"] >= 0.8
    # Every voluntary leaver of the 60 days is on the win-back list, which holds revenue churners too.
    assert report["winback_truth"] > 0 and report["winback_recall"] == 1.0
    assert report["winback_listed"] >= report["winback_truth"]
    # Customers of ours still call most leavers who ported out: their number is in the off-net book.
    assert report["winback_port_outs"] > 0 and report["winback_with_contacts"] >= 0.5
    # The competitors' numbers our base knows most widely are mid/high-end more often than chance.
    assert report["competitor_listed"] > 0 and report["competitor_precision_top"] > report["competitor_base_rate"] > 0


def test_the_call_list_skips_customers_called_within_the_cooldown() -> None:
    # One call a week among two customers over three weeks; "a" always scores highest, and
    # churns within the horizon, "b" never does.
    days = np.array([0, 0, 7, 7, 14, 14]) + 740_000
    customers = np.array(["a", "b"] * 3)
    score = np.array([0.9, 0.5] * 3)
    y = np.array([1, 0] * 3)
    churn = {"a": 740_030}
    # Without a cooldown "a" is called every week: three calls, three hits.
    assert _weekly_budget(days, customers, score, y, churn, 1) == (1.0, 1.0)
    # With 14 days "a" waits out week 2 ("b" is called instead) and is called again on day 14.
    precision, recall = _weekly_budget(days, customers, score, y, churn, 1, cooldown=14)
    assert precision == pytest.approx(2 / 3) and recall == 1.0
    # A cooldown longer than the period: "a" once, "b" once, and in week 3 both are still waiting.
    assert _weekly_budget(days, customers, score, y, churn, 1, cooldown=30)[0] == pytest.approx(1 / 2)
    # Week by week, as the intervals resample them: the weeks' calls and hits.
    weekly, caught = _weekly_calls(days, customers, score, y, 1, cooldown=14)
    assert (weekly.hits.tolist(), weekly.calls.tolist(), caught) == ([1, 0, 1], [1, 1, 1], {"a"})


def test_the_service_calls_its_alerts_in_the_order_of_the_models_score() -> None:
    # "a": the rules say high, the model 0.1, stays. "b": no rule fires, the model's 0.5 reaches
    # medium alone, churns. "c": no rule, 0.3, no alert, churns.
    days, customers = np.full(3, 740_000), np.array(["a", "b", "c"])
    score, y, churn = np.array([0.1, 0.5, 0.3]), np.array([0, 1, 1]), {"b": 740_010, "c": 740_010}
    level = levels_with_score(np.array([3, 0, 0]), score, 0.35, 0.6)
    assert level.tolist() == [3, 2, 0]
    key = queue_order(level, alert_risks(level, score))
    # The queue ranks alerts by the score (the rule's high level is no risk of 0.6): "b" first.
    assert _weekly_budget(days, customers, key, y, churn, 1)[0] == 1.0
    # "c" has no alert, so it is never called before one, however its score compares.
    assert np.argsort(-key).tolist() == [1, 0, 2]
    # Without a model the levels' risks rank the alerts.
    none = np.full(3, np.nan)
    level = levels_with_score(np.array([2, 3, 0]), none, 0.35, 0.6)
    assert np.argsort(-queue_order(level, alert_risks(level, none))).tolist() == [1, 0, 2]


def test_evaluate_replay_judges_the_alerts_by_the_risk_they_carry_not_a_rules_fixed_risk() -> None:
    from datetime import date

    from stream_app.contracts.events import Snapshot
    from stream_app.offline.evaluate import evaluate_replay

    # Twenty customers the rules call high and the model gives 0.1, who stay; twenty no rule
    # fires on, whose score climbs from 0.36 (medium alone) to 0.56 as their churn nears. A call a
    # week (1% of 40 rounds up).
    first = date(2026, 1, 1).toordinal()
    churn = {f"s{i}": first + 45 + 2 * i for i in range(20)}
    snapshots = [Snapshot(f"r{i}", first + d, [0.1], 0.1, 1, rules_level=3, rules_score=1.0)
                 for i in range(20) for d in range(100)]
    snapshots += [Snapshot(c, first + d, [0.0], 0.36 + 0.2 * max(0.0, 1 - (day - first - d) / 60), 1)
                  for c, day in churn.items() for d in range(100) if first + d < day]
    truth = {c: date.fromordinal(d) for c, d in churn.items()} | {f"r{i}": None for i in range(20)}
    ev = evaluate_replay(snapshots, [], truth, horizon=30, budget_share=0.01, model_version=1, labels_learned=10_000)
    # The queue calls the customers whose alerts carry the highest scores; taking the rules' high as
    # a risk of 0.6 would call the stayers every week (precision 0).
    assert ev.precision_at_budget > 0.5 and ev.precision_at_budget == ev.precision_at_budget_online


def test_the_lead_time_of_high_warnings_is_measured_beside_the_ceilings_on_the_same_churners() -> None:
    from datetime import date

    from stream_app.contracts.events import Snapshot
    from stream_app.offline.evaluate import evaluate_replay

    # The service's score reaches high (0.6) 8 days before a churner leaves, and once 35 days before,
    # outside the horizon; the ceiling's observer sees a sign 20 days before, which means churn
    # within the horizon every time it shows.
    first = date(2026, 1, 1).toordinal()
    exits = [30 + 2 * i for i in range(70)] + [130, 131, 169, 170, 171]
    churn = {f"c{i}": first + day for i, day in enumerate(exits)}
    leaves = churn | {f"s{i}": first + 10_000 for i in range(100)}
    snapshots = [Snapshot(c, first + d, [float(i % 7)], 0.7 if day - first - d in (*range(1, 9), 35) else 0.1, 1)
                 for i, (c, day) in enumerate(leaves.items()) for d in range(200) if first + d < day]

    def sign(who: np.ndarray, when: np.ndarray) -> dict[str, list[np.ndarray]]:
        seen = np.array([0 < leaves[c] - d <= 20 for c, d in zip(who, when)], float)[:, None]
        noise = np.random.default_rng(3).normal(size=(len(who), 1))
        return {"ceiling": [noise, np.hstack([seen, noise])], "oracle": [seen]}

    truth = {c: date.fromordinal(d) for c, d in churn.items()} | {f"s{i}": None for i in range(100)}
    # High alerts: c0 35 and 8 days before it left, c1 only 60 days before, c2 12 days before; c60
    # (watched in the test period) 40 and 9 days before, and c61 4 days before.
    alerts = [_alert("c0", "high", churn["c0"] - 35), _alert("c0", "high", churn["c0"] - 8),
              _alert("c1", "high", churn["c1"] - 60), _alert("c2", "high", churn["c2"] - 12),
              _alert("c60", "high", churn["c60"] - 40), _alert("c60", "high", churn["c60"] - 9),
              _alert("c61", "high", churn["c61"] - 4)]
    ev = evaluate_replay(snapshots, alerts, truth, horizon=30, budget_share=0.01, model_version=1,
                         labels_learned=10_000, truth=sign)
    # An alert outside the horizon before the exit warned of nothing.
    assert ev.churners_warned_high == 4 and ev.lead_time_days_median == 8.5
    # Days 0-199: the test period runs from day 101 to 169, so the churners who leave from day 131
    # to 170 are watched: 19 on the even days 132-168, and those of days 131, 169 and 170.
    assert ev.churners_watched_test == ev.churners_warned_high_test == ev.churners_high_ceiling == 22
    assert ev.lead_time_test_days_median == 8 and ev.lead_time_ceiling_days_median == 20
    # Of the alerts, only c60's and c61's are about churners the test period watched.
    assert ev.churners_alerted_high_test == 2 and ev.lead_time_alerts_test_days_median == 6.5
    # What chance alone allows: every watched churner was rated high 8 days before, so no resample
    # of them moves the median; two alerted churners are too few to resample.
    assert ev.lead_time_test_days_interval == [8.0, 8.0] and ev.lead_time_alerts_test_days_interval is None
    low, high = ev.precision_at_budget_interval
    assert low <= ev.precision_at_budget <= high
    low, high = ev.precision_to_ceiling_interval
    assert low <= ev.precision_to_ceiling <= high


def test_each_level_the_score_raises_is_set_beside_how_many_it_named_left() -> None:
    from datetime import date

    from stream_app.contracts.events import Snapshot
    from stream_app.offline.evaluate import evaluate_replay

    # Stayers scored medium (0.4) every day; churners too, but high (0.7) in the 10 days before they leave.
    first = date(2026, 1, 1).toordinal()
    churn = {f"c{i}": first + 150 + i for i in range(20)}
    snapshots = [Snapshot(f"s{i}", first + d, [0.0], 0.4, 1) for i in range(80) for d in range(200)]
    snapshots += [Snapshot(c, first + d, [0.0], 0.7 if day - first - d <= 10 else 0.4, 1)
                  for c, day in churn.items() for d in range(200) if first + d < day]
    truth = {c: date.fromordinal(d) for c, d in churn.items()} | {f"s{i}": None for i in range(80)}
    ev = evaluate_replay(snapshots, [], truth, horizon=30, budget_share=0.01, model_version=1, labels_learned=10)
    medium, high = ev.score_reliability["medium"], ev.score_reliability["high"]
    assert medium["snapshots"] + high["snapshots"] == ev.test_snapshots
    # Every customer rated high left within the horizon: a score of 0.7 was timid.
    assert high["mean_score"] == pytest.approx(0.7) and high["churned"] == 1.0
    assert medium["mean_score"] == pytest.approx(0.4) and 0 < medium["churned"] < 0.1


def test_a_warm_base_is_split_from_the_first_exit_so_both_periods_hold_churners() -> None:
    from datetime import date

    from stream_app.contracts.events import Snapshot
    from stream_app.offline.evaluate import evaluate_replay

    # 200 days of history in which nobody leaves, then an exit every other day: split from day 0,
    # the training period would end before the first churner's horizon.
    first = date(2026, 1, 1).toordinal()
    churn = {f"c{i}": first + 200 + 2 * i for i in range(50)}
    leaves = churn | {f"s{i}": first + 10_000 for i in range(100)}
    snapshots = [Snapshot(c, first + d, [0.0], 0.7 if 0 < day - first - d <= 10 else 0.1, 1)
                 for c, day in leaves.items() for d in range(330) if first + d < day]

    def sign(who: np.ndarray, when: np.ndarray) -> dict[str, list[np.ndarray]]:
        return {"ceiling": [np.array([0 < leaves[c] - d <= 10 for c, d in zip(who, when)], float)[:, None]]}

    truth = {c: date.fromordinal(d) for c, d in churn.items()} | {f"s{i}": None for i in range(100)}
    ev = evaluate_replay(snapshots, [], truth, horizon=30, budget_share=0.01, model_version=1, labels_learned=10_000,
                         truth=sign)
    # From day 170 (the first exit's horizon) to 299: the test period runs from day 247, and the
    # churners who leave from day 278 to 299 are watched.
    assert ev.churners_watched_test == 11
    assert ev.precision_ceiling > 0.5 and not math.isnan(ev.auc_batch_reference)


def test_false_alerts_count_the_queued_alerts_of_customers_who_stayed_per_1000_customers_a_month() -> None:
    from datetime import datetime, timedelta, timezone

    from stream_app.contracts.events import Alert, AlertReason

    start = datetime(2026, 5, 1, tzinfo=timezone.utc)

    def alert(customer: str, level: str, day: int, *rules: str) -> Alert:
        at = start + timedelta(days=day)
        return Alert(f"{customer}-{day}", customer, level, "2026-05", at, at, at,
                     [AlertReason(r, 205, 1.0, {}, {}, f"{r} fired") for r in rules], 205, "mass", "none", 50.0, 10.0, "call")

    first = start.date().toordinal()
    churn_day = {"leaver": first + 20}
    alerts = [alert("leaver", "high", 5, "mou_out_drop_mom"),  # churned 15 days later: not false
              alert("stayer", "high", 5, "mou_out_drop_mom", "spend_drop_mom"),
              alert("stayer", "medium", 25, "spend_drop_mom"),
              alert("stayer", "low", 26, "spend_drop_mom"),  # not queued
              alert("stayer", "high", 45, "spend_drop_mom"),  # after the period
              alert("other", "medium", 9, "model")]  # the score alone raised it
    by_level, by_rule = _false_alerts(alerts, churn_day, 30, first, first + 29, customers=500)
    # Two per 1,000 customers for each false alert (500 customers), over exactly 30 days.
    assert by_level == {"medium": 4.0, "high": 2.0}
    assert by_rule == {"spend_drop_mom": 4.0, "mou_out_drop_mom": 2.0, "model score": 2.0}


def _alert(customer: str, level: str, day: int):
    from datetime import datetime, timezone

    from stream_app.contracts.events import Alert

    at = datetime.fromordinal(day).replace(tzinfo=timezone.utc)
    return Alert(f"{customer}-{day}", customer, level, "2026-05", at, at, at, [], 205, "mass", "none", 50.0, 10.0, "x")


def test_alert_recall_counts_churners_with_signs_warned_within_the_horizon_before_they_left() -> None:
    first, last, horizon = 740_000, 740_060, 30
    churn_day = {"warned": first + 40, "late": first + 50, "low": first + 45, "early": first + 20,
                 "silent": first + 40, "after": first + 85}
    alerts = [_alert("warned", "high", first + 15),
              _alert("late", "medium", first + 5),  # 45 days before: outside the horizon
              _alert("low", "low", first + 40),  # not in the call queue
              _alert("early", "high", first + 10),  # left before a whole horizon was watched: not counted
              _alert("after", "medium", last + 1)]  # an alert after the test period
    # Watched: warned, late, low, after (silent has no signs, early left too soon); warned: one.
    assert _alert_recall(alerts, churn_day, horizon, first, last, {"silent"}) == 0.25
    assert math.isnan(_alert_recall(alerts, {}, horizon, first, last, set()))


def test_a_replay_that_keeps_no_snapshots_ends_in_the_same_state() -> None:
    from stream_app.offline.replay import replay
    from stream_app.offline.simulator import SimConfig, Simulator
    from stream_app.rules.pack import load_rules
    from stream_app.settings import Settings

    rules = load_rules([Path(__file__).resolve().parents[2] / "alert_rules"])
    sim = Simulator(SimConfig(customers=40, days=75, seed=5, warmup_days=20, monthly_churn=0.1))
    records = [(r.topic, r.key, r.value) for r in sim.records()]
    kept = replay(records, Settings(_env_file=None), lambda: rules, learn=False)
    lean = replay(iter(records), Settings(_env_file=None), lambda: rules, learn=False, keep_snapshots=False)
    assert kept.snapshots and not lean.snapshots
    assert lean.states == kept.states and lean.report == kept.report and lean.events == kept.events == len(records)
    assert [a.alert_id for a in lean.alerts] == [a.alert_id for a in kept.alerts]


def test_a_replay_batches_by_its_own_grain_whatever_the_worker_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay's batch is its grain of time (the model and baselines move on between batches),
    so the evaluations' figures must not follow the worker's `batch_size`."""
    from stream_app.offline import replay as replay_module
    from stream_app.offline.simulator import SimConfig, Simulator
    from stream_app.rules.pack import load_rules
    from stream_app.settings import Settings
    from stream_app.worker.pipeline import BatchOutput, BatchProcessor, Sender

    sizes: list[int] = []
    run = BatchProcessor.run

    async def counted(self: BatchProcessor, records: list, send: Sender, silent: bool = False) -> BatchOutput:
        sizes.append(len(records))
        return await run(self, records, send, silent)

    monkeypatch.setattr(BatchProcessor, "run", counted)
    rules = load_rules([Path(__file__).resolve().parents[2] / "alert_rules"])
    records = [(r.topic, r.key, r.value) for r in Simulator(SimConfig(customers=40, days=30, seed=5)).records()]
    assert len(records) > 2 * replay_module.BATCH
    replay_module.replay(records, Settings(_env_file=None, batch_size=50), lambda: rules, learn=False)
    assert max(sizes) == replay_module.BATCH and sum(sizes) == len(records)


def test_the_offline_learners_are_refitted_on_the_labels_due_by_each_month_of_the_test_period() -> None:
    fits: list[tuple[float, float]] = []  # (the last day learned, the first day scored)

    class Recorder:
        def fit(self, x: np.ndarray, y: np.ndarray) -> "Recorder":
            self.learned = float(x.max())
            return self

        def predict_proba(self, x: np.ndarray) -> np.ndarray:
            fits.append((self.learned, float(x.min())))
            return np.column_stack([1 - x[:, 0] / 1000, x[:, 0] / 1000])

    days = np.repeat(np.arange(200), 3)
    y = (np.arange(len(days)) % 3 == 0).astype(int)
    test = days >= 120
    scored = _refitted(Recorder, days[:, None].astype(float), y, days, test, horizon=30)
    # Days 120-199 in blocks of four weeks, each learned from the days whose horizon had closed.
    assert [first for _, first in fits] == [120, 120 + REFIT_DAYS, 120 + 2 * REFIT_DAYS]
    assert all(learned == first - 31 for learned, first in fits)
    assert np.allclose(scored, days[test] / 1000)
    assert _refitted(Recorder, days[:, None].astype(float), np.zeros_like(y), days, test, horizon=30) is None
