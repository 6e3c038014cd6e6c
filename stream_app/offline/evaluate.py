"""How well warnings work, measured against what customers really did.

The unit is a snapshot: a customer on a day, positive if the customer really churned within
the horizon after it. Every approach is judged on the same test period: the later part of the
days from the first whose horizon holds an exit, with a full horizon of truth after each day:
- online: the model's score at the time, learned only from labels that were due by then;
- rules: the rules' level (ties broken by the summed importance of the fired rules);
- combined: the service's alerts by risk: the customers with an alert that reaches the call queue
  (the rules' level or the level the score reaches alone, medium or more) before the others, each
  ranked by the churn probability its alert carries, the model's score (the level's fixed risk only
  without one). The queue multiplies it by the customer's value; precision at the budget is
  about risk, so value is left out here;
- batch reference: gradient-boosted trees (scikit-learn) on the same features, refitted offline
  every four weeks of the test period on the snapshots whose horizon had closed by then (the
  labels the online model had learned).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Callable, Protocol

import numpy as np

from stream_app.alerts.build import QUEUED_LEVELS, AlertPolicy, alert_risks, levels_with_score, queue_order
from stream_app.contracts.events import Alert, Snapshot
from stream_app.model.boosted import BOOSTING, one_thread
from stream_app.model.validation import auc, lift
from stream_app.offline.intervals import WeeklyCalls, median_interval, precision_interval
from stream_app.settings import Settings

__all__ = ["ReplayEvaluation", "evaluate_replay", "Truth"]

#: The scores from which the model alone raises medium and high, unless told otherwise.
SCORE_LEVELS = (Settings.model_fields["model_medium_score"].default, Settings.model_fields["model_high_score"].default)
#: Per snapshot (customer ids, ordinal days): features of what the traffic allows, by name, as the
#: sets of columns each is learned on.
Truth = Callable[[np.ndarray, np.ndarray], dict[str, list[np.ndarray]]]
#: How often the offline learners are refitted over the test period (`_refitted`).
REFIT_DAYS = 28


class Learner(Protocol):
    def fit(self, x: np.ndarray, y: np.ndarray) -> Learner: ...
    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...


@dataclass
class ReplayEvaluation:
    customers: int
    churners: int
    test_snapshots: int
    test_positives: int
    auc_online: float
    auc_rules: float
    auc_combined: float
    auc_batch_reference: float
    precision_at_budget: float
    recall_at_budget: float
    precision_at_budget_online: float  # the same calls chosen by the model's score alone
    # As the call queue makes them: a customer called is not called again within the alert
    # cooldown. The weekly figure above counts a decliner on the list week after week each time.
    precision_at_budget_cooldown: float
    top_decile_lift: float
    lead_time_days_median: float  # days from each churner's first high alert within the horizon before the exit
    churners_warned_high: int
    model_version: int
    labels_learned: int
    # Alerts that reach the call queue (medium, high) about customers who did not churn within the
    # horizon after them, per 1,000 customers and 30 days of the test period: by level, and by
    # each rule among the alert's reasons. What crying wolf costs the call centre.
    false_alerts_per_1000_customers_month: dict[str, float] = field(default_factory=dict)
    false_alerts_by_rule: dict[str, float] = field(default_factory=dict)
    # Of the churners with warning signs (the simulator's truth; all churners where it is not
    # known) who left late enough in the test period to be watched for a whole horizon before,
    # the share warned at medium or high within the horizon before they left: what a quieter
    # pack must not give up.
    alert_recall: float = math.nan
    # What the same traffic allows (`offline/ceiling.py`): the precision at the budget of an observer who
    # knew each customer's true usual rates, of one who saw the noise-free truth, and the service's share
    # of the first. NaN where the traffic's truth is not known (recorded or real data).
    precision_ceiling: float = math.nan
    precision_oracle: float = math.nan
    precision_to_ceiling: float = math.nan
    # Lead times on the test period, for the churners who left at least a horizon into it (so that a
    # whole horizon of test snapshots came before; `churners_watched_test`): the median days from the
    # first snapshot within the horizon before the exit that the service rated high (the rules' level
    # or the model's score), and from the first that the observer behind `precision_ceiling` scored at
    # the model's high score (`CHURNWATCH_MODEL_HIGH_SCORE`); with the churners each rated high. What
    # the traffic allows a warning's lead, beside what it allows its precision.
    churners_watched_test: int = 0
    lead_time_test_days_median: float = math.nan
    churners_warned_high_test: int = 0
    lead_time_ceiling_days_median: float = math.nan
    churners_high_ceiling: int = 0
    # The same watched churners' lead from the first high alert the service sent (`lead_time_days_median`'s
    # measure, on the test period's churners): what the call queue was told, cooldown and all, once the
    # model has learned from a season of exits. Over all churners, the first months' churners meet a
    # model that has seen no churner yet, which `lead_time_days_median` counts with the rest.
    lead_time_alerts_test_days_median: float = math.nan
    churners_alerted_high_test: int = 0
    # Of the test snapshots that the model's score alone rates medium and high, how many, their mean
    # score, and the share whose customer left within the horizon: a calibrated score has the last
    # two about equal; a share well above the mean score says the score is timid, and warns late.
    score_reliability: dict[str, dict[str, float | None]] = field(default_factory=dict)
    # How far chance alone moves the figures above (`offline/intervals.py`): 95% bootstrap intervals
    # of the precision at the budget and its ratio to the ceiling (over the test period's weeks), and
    # of the test period's median lead times (over the churners). None where too few to resample.
    precision_at_budget_interval: list[float] | None = None
    precision_to_ceiling_interval: list[float] | None = None
    lead_time_test_days_interval: list[float] | None = None
    lead_time_alerts_test_days_interval: list[float] | None = None


def _weekly_budget(days: np.ndarray, customers: np.ndarray, score: np.ndarray, y: np.ndarray,
                   churn_day: dict[str, int], per_week: int, cooldown: int = 0) -> tuple[float, float]:
    """Each week, call the `per_week` customers with the highest score that week (once each),
    skipping those called less than `cooldown` days before: precision over all calls, and
    recall over the churners who had a snapshot in the period."""
    weekly, caught = _weekly_calls(days, customers, score, y, per_week, cooldown)
    return weekly.precision, _recall(caught, customers, y, churn_day)


def _recall(caught: set[str], customers: np.ndarray, y: np.ndarray, churn_day: dict[str, int]) -> float:
    """The share of the churners with a snapshot in the period who were called."""
    churners = {c for c, yy in zip(customers, y) if yy and c in churn_day}
    return len(caught) / len(churners) if churners else math.nan


def _weekly_calls(days: np.ndarray, customers: np.ndarray, score: np.ndarray, y: np.ndarray, per_week: int,
                  cooldown: int = 0) -> tuple[WeeklyCalls, set[str]]:
    """`_weekly_budget`'s calls and hits week by week, and the churners called."""
    hits, calls, caught = [], [], set()
    called: dict[str, int] = {}  # customer -> day of the last call
    weeks = (days - days.min()) // 7
    for w in np.unique(weeks):
        idx = np.nonzero(weeks == w)[0]
        best: dict[str, int] = {}
        for i in idx:
            if days[i] - called.get(customers[i], -cooldown) < cooldown:
                continue
            if customers[i] not in best or score[i] > score[best[customers[i]]]:
                best[customers[i]] = i
        top = sorted(best.values(), key=lambda i: -score[i])[:per_week]
        calls.append(len(top))
        hits.append(0)
        for i in top:
            called[customers[i]] = int(days[i])
            if y[i]:
                hits[-1] += 1
                caught.add(customers[i])
    return WeeklyCalls(hits, calls), caught


def _refitted(learner: Callable[[], Learner], x: np.ndarray, y: np.ndarray, days: np.ndarray, test: np.ndarray,
              horizon: int) -> np.ndarray | None:
    """The churn probability of each test snapshot from `learner` refitted every `REFIT_DAYS` days
    of the test period on the snapshots whose horizon had closed by then: the labels the online
    model had learned by that day, as a data team refitting each month would have them. None where
    the first fit's snapshots hold one outcome only."""
    if not test.any():
        return None
    out, blocks = np.full(len(days), np.nan), days[test]
    for begin in range(int(blocks.min()), int(blocks.max()) + 1, REFIT_DAYS):
        train = days + horizon < begin
        if len(np.unique(y[train])) < 2:
            return None
        rows = test & (days >= begin) & (days < begin + REFIT_DAYS)
        with one_thread():
            out[rows] = learner().fit(x[train], y[train]).predict_proba(x[rows])[:, 1]
    return out[test]


def _best_precision(xs: list[np.ndarray], y: np.ndarray, test: np.ndarray, horizon: int, days: np.ndarray,
                    customers: np.ndarray, churn_day: dict[str, int], per_week: int) -> tuple[float, np.ndarray]:
    """The weekly precision at the budget of the best of boosted trees and logistic regression, each
    learned (`_refitted`) from each of the feature sets `xs`, and that learner's churn probability
    of each test snapshot (NaN where the first fit's snapshots hold one outcome only)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    learners = (lambda: HistGradientBoostingClassifier(**BOOSTING, random_state=7),
                lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)))
    scored = [p for x in xs for m in learners if (p := _refitted(m, x, y, days, test, horizon)) is not None]
    if not scored:
        return math.nan, np.full(int(test.sum()), np.nan)
    precisions = [_weekly_budget(days[test], customers[test], p, y[test], churn_day, per_week)[0] for p in scored]
    best = int(np.argmax(np.nan_to_num(precisions, nan=-1.0)))
    return precisions[best], scored[best]


def _batch_reference(x: np.ndarray, y: np.ndarray, days: np.ndarray, test: np.ndarray, horizon: int) -> float:
    from sklearn.ensemble import HistGradientBoostingClassifier

    scored = _refitted(lambda: HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, random_state=7),
                       x, y, days, test, horizon)
    return math.nan if scored is None else auc(y[test], scored)


def _false_alerts(alerts: list[Alert], churn_day: dict[str, int], horizon: int, first: int, last: int,
                  customers: int) -> tuple[dict[str, float], dict[str, float]]:
    """Alerts of days `first`..`last` whose customer did not churn within `horizon` days after:
    per 1,000 customers and 30 days, by level and by rule."""
    per = 1000 / max(customers, 1) * 30 / max(last - first + 1, 1)
    by_level: collections.Counter[str] = collections.Counter(dict.fromkeys(QUEUED_LEVELS, 0))
    by_rule: collections.Counter[str] = collections.Counter()
    for a in alerts:
        day = a.event_time.date().toordinal()
        churned = a.customer_id in churn_day and day < churn_day[a.customer_id] <= day + horizon
        if a.level in by_level and first <= day <= last and not churned:
            by_level[a.level] += 1
            # The model is among the reasons of nearly every alert; it is named only where no rule fired.
            by_rule.update({r.rule_id for r in a.reasons if r.rule_id and r.rule_id != "model"} or {"model score"})
    return ({k: round(v * per, 2) for k, v in by_level.items()},
            {k: round(v * per, 2) for k, v in sorted(by_rule.items(), key=lambda kv: -kv[1])})


def _alert_recall(alerts: list[Alert], churn_day: dict[str, int], horizon: int, first: int, last: int,
                  silent: set[str]) -> float:
    """Of the churners with signs who left in (first + horizon, last + horizon], the share with a
    medium or high alert of days first..last within the horizon before they left."""
    watched = {c for c, d in churn_day.items() if first + horizon < d <= last + horizon and c not in silent}
    warned = {a.customer_id for a in alerts if a.customer_id in watched and a.level in QUEUED_LEVELS
              and first <= (day := a.event_time.date().toordinal()) <= last
              and day < churn_day[a.customer_id] <= day + horizon}
    return round(len(warned) / len(watched), 4) if watched else math.nan


def _leads(flags: Iterable[tuple[str, int]], churn_day: dict[str, int], watched: Collection[str],
           horizon: float) -> list[int]:
    """For each churner of `watched` flagged (customer, ordinal day) within `horizon` days before
    they left: the days from the first such flag to their exit."""
    first: dict[str, int] = {}
    for c, d in flags:
        if c in watched and churn_day[c] - horizon <= d < churn_day[c]:
            first[c] = min(first.get(c, d), d)
    return [churn_day[c] - d for c, d in first.items()]


def _reliability(score: np.ndarray, y: np.ndarray,
                 levels: tuple[float, float]) -> dict[str, dict[str, float | None]]:
    """`ReplayEvaluation.score_reliability`; None for a level the score never raised."""
    bands = {"medium": (score >= levels[0]) & (score < levels[1]), "high": score >= levels[1]}
    return {name: {"snapshots": int(band.sum()), "mean_score": float(score[band].mean()) if band.any() else None,
                   "churned": float(y[band].mean()) if band.any() else None} for name, band in bands.items()}


def _first_day(days: np.ndarray, churn_day: dict[str, int], horizon: int, last: int) -> int:
    """The first day whose horizon holds an exit: the snapshots before it are all negative, and a
    history kept before the first exit (a warm base) would otherwise leave the training period with
    no churner to learn from."""
    first = int(days.min())
    if churn_day:
        first = max(first, min(churn_day.values()) - horizon)
    return first if first < last else int(days.min())


def _median(values: list[int]) -> float:
    return float(np.median(values)) if values else math.nan


def evaluate_replay(snapshots: list[Snapshot], alerts: list[Alert], churn_dates: dict[str, date | None],
                    horizon: int, budget_share: float, model_version: int, labels_learned: int,
                    test_share: float = 0.4, cooldown: int = AlertPolicy.cooldown_days,
                    silent: Collection[str] = (), truth: Truth | None = None,
                    score_levels: tuple[float, float] = SCORE_LEVELS) -> ReplayEvaluation:
    """Score every approach on the snapshots of the test period (see the module's docstring);
    `silent`: churners known to have shown no warning sign; `truth`: per snapshot (customers,
    days), features of what the traffic allows, by name (`offline/ceiling.py`); `score_levels`: the
    scores from which the model alone raises medium and high (`CHURNWATCH_MODEL_*_SCORE`)."""
    churn_day = {c: d.toordinal() for c, d in churn_dates.items() if d is not None}
    days = np.array([s.day for s in snapshots])
    customers = np.array([s.customer_id for s in snapshots])
    x = np.array([s.x for s in snapshots])
    y = np.array([int(s.customer_id in churn_day and s.day < churn_day[s.customer_id] <= s.day + horizon)
                  for s in snapshots])
    score = np.array([s.score if s.score is not None else np.nan for s in snapshots])
    online = np.nan_to_num(score, nan=0.0)
    level = np.array([s.rules_level for s in snapshots])
    rules = level * 1000.0 + np.array([s.rules_score for s in snapshots])
    service_level = levels_with_score(level, score, *score_levels)
    combined = queue_order(service_level, alert_risks(service_level, score))
    last = days.max() - horizon  # later snapshots do not have a full horizon of truth yet
    first = _first_day(days, churn_day, horizon, last)
    start = int(first + (last - first) * (1 - test_share))
    test = (days >= start) & (days <= last)
    per_week = max(1, math.ceil(budget_share * len(churn_dates)))
    weekly, caught = _weekly_calls(days[test], customers[test], combined[test], y[test], per_week)
    precision, recall = weekly.precision, _recall(caught, customers[test], y[test], churn_day)
    precision_online, _ = _weekly_budget(days[test], customers[test], online[test], y[test], churn_day, per_week)
    precision_cooldown, _ = _weekly_budget(days[test], customers[test], combined[test], y[test], churn_day, per_week,
                                           cooldown)
    allowed = {name: _best_precision(f, y, test, horizon, days, customers, churn_day, per_week)
               for name, f in (truth(customers, days) if truth else {}).items()}
    # Every churner's first high alert within the horizon before the exit (`lead_time_days_median`: one
    # months before warned of nothing that happened then); then, on the test period, the service's and
    # the ceiling's first high flags within the horizon before the exit.
    high_alerts = [(a.customer_id, a.event_time.date().toordinal()) for a in alerts if a.level == "high"]
    leads = _leads(high_alerts, churn_day, churn_day, horizon)
    watched = {c for c, d in churn_day.items() if start + horizon <= d <= last + 1}
    leads_alerts_test = _leads(high_alerts, churn_day, watched, horizon)

    def test_leads(high: np.ndarray) -> list[int]:
        return _leads(zip(customers[test][high], days[test][high].tolist()), churn_day, watched, horizon)

    ceiling, ceiling_scores = allowed.get("ceiling", (math.nan, None))
    leads_test = test_leads(service_level[test] >= 3)
    leads_ceiling = test_leads(ceiling_scores >= score_levels[1]) if ceiling_scores is not None else []
    ceiling_weekly = (_weekly_calls(days[test], customers[test], ceiling_scores, y[test], per_week)[0]
                      if ceiling_scores is not None and math.isfinite(ceiling) else None)
    false_by_level, false_by_rule = _false_alerts(alerts, churn_day, horizon, start, last, len(churn_dates))
    return ReplayEvaluation(
        customers=len(churn_dates), churners=len(churn_day), test_snapshots=int(test.sum()),
        test_positives=int(y[test].sum()),
        auc_online=auc(y[test], online[test]), auc_rules=auc(y[test], rules[test]),
        auc_combined=auc(y[test], combined[test]), auc_batch_reference=_batch_reference(x, y, days, test, horizon),
        precision_at_budget=precision, recall_at_budget=recall, precision_at_budget_online=precision_online,
        precision_at_budget_cooldown=precision_cooldown,
        top_decile_lift=lift(y[test], combined[test], 0.1),
        lead_time_days_median=_median(leads), churners_warned_high=len(leads),
        model_version=model_version, labels_learned=labels_learned,
        false_alerts_per_1000_customers_month=false_by_level, false_alerts_by_rule=false_by_rule,
        alert_recall=_alert_recall(alerts, churn_day, horizon, start, last, set(silent)),
        precision_ceiling=ceiling, precision_oracle=allowed.get("oracle", (math.nan, None))[0],
        precision_to_ceiling=precision / ceiling if ceiling else math.nan,
        churners_watched_test=len(watched),
        lead_time_test_days_median=_median(leads_test), churners_warned_high_test=len(leads_test),
        lead_time_ceiling_days_median=_median(leads_ceiling), churners_high_ceiling=len(leads_ceiling),
        lead_time_alerts_test_days_median=_median(leads_alerts_test), churners_alerted_high_test=len(leads_alerts_test),
        score_reliability=_reliability(score[test], y[test], score_levels),
        precision_at_budget_interval=precision_interval(weekly),
        precision_to_ceiling_interval=precision_interval(weekly, ceiling_weekly) if ceiling_weekly is not None else None,
        lead_time_test_days_interval=median_interval(leads_test),
        lead_time_alerts_test_days_interval=median_interval(leads_alerts_test),
    )
