"""How warnings do on real operators' data (`churnwatch evaluate --replay`).

The table's months are replayed through the pipeline (without the exits, which are the label);
each customer is then judged once, as of the first day after the last month, on the features
the service would have then. Side by side, on the same customers and features:
- rules: the level the rules give (ties broken by the summed importance of the fired rules);
- online: the service's online model (river, the same pipeline and settings) in predict-then-learn
  order over the customers, as the data set's own reference figures are measured;
- champion: what the trainer would publish (`model/champion.py`: the online model and boosted trees
  refitted on recent labels, the better on labels neither learned yet), learned from four fifths of
  the customers and scoring the fifth it never saw, over the reference's folds;
- combined: the service's alerts by risk: the customers with an alert that reaches the call queue
  (the rules' level, or the level the champion's score reaches alone once it has learned
  `CHURNWATCH_MODEL_MIN_LABELS` labels, medium or more) before the others, each ranked by the churn
  probability its alert carries, the champion's score (`alerts/build.queue_order`);
- batch reference: gradient-boosted trees (scikit-learn), 5-fold cross-validated;
- call list: the call queue's own order: the same alerts first, by value at risk (`alerts/build.py`:
  that probability x the monthly value the alert would carry x the segment's expected lifetime).
Value captured is the share of the churners' revenue (spend in the last month) among the
customers a budget lets the call centre reach.

Customers are met in a shuffled order (fixed seed), never the file's: public sets are often
sorted by the label (IBM's telco sample lists its leavers first), and in file order a learner
that predicts before it learns, or a tie broken by position, would read the label off the order.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Callable

import numpy as np

from stream_app.alerts.build import AlertPolicy, levels_with_score, monthly_value, queue_order
from stream_app.contracts.attributes import columns as attribute_columns
from stream_app.errors import ConfigError
from stream_app.features.derive import derive
from stream_app.model.boosted import BOOSTING, one_thread
from stream_app.model.champion import Contest
from stream_app.model.observations import value_segment
from stream_app.model.scoring import Learner, Scorer, model_features, model_inputs
from stream_app.model.signing import Signer
from stream_app.model.validation import auc, auc_gain_low, budget_calls, budget_figures, lift
from stream_app.offline.intervals import outwards
from stream_app.offline.monthly_data import Mapping, MonthlyRow, monthly_events, next_month
from stream_app.offline.replay import replay
from stream_app.rules.in_state import evaluate_rules
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings, checked_attributes
from stream_app.windows.state import Windows

__all__ = ["MonthlyEvaluation", "BUDGETS", "evaluate_monthly"]

BUDGETS = (0.01, 0.05, 0.1, 0.2)  # shares of customers the call centre can reach
HEADLINE_BUDGET = 0.1  # the budget behind precision_at_budget, recall_at_budget and value_captured
ORDER_SEED = 0  # the customers' shuffled order (see the docstring)
GAP_RESAMPLES = 1000  # draws of the customers behind `auc_gap_batch_reference_interval`


@dataclass
class MonthlyEvaluation:
    data: str
    customers: int
    churners: int
    events: int
    seconds: float
    auc_online: float
    auc_champion: float
    auc_rules: float
    auc_combined: float
    auc_batch_reference: float
    auc_call_list: float
    precision_at_budget: float
    recall_at_budget: float
    top_decile_lift: float
    value_captured: float
    budget_share: float = HEADLINE_BUDGET
    # approach -> budget share -> (precision, recall, value captured)
    by_budget: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    refused: int = 0  # records the service sent to dead letter
    champions: list[str] = field(default_factory=list)  # the champion learned in each fold
    # The whole evaluation (reading, replay, judging): its time and how far it raised the process's
    # peak memory, per customer (set by the command, which reads the table).
    total_seconds: float = 0.0
    peak_kb_per_customer: float = 0.0
    # How far the batch reference ranks above the champion (`auc_gap_batch_reference`, the figure
    # the champion is held to: within 0.02), and its 95% interval over resamples of the customers,
    # both scores judged on each draw (`validation.auc_gain_low`): what chance alone allows.
    auc_gap_batch_reference_interval: list[float] | None = None

    @property
    def auc_gap_batch_reference(self) -> float:
        return self.auc_batch_reference - self.auc_champion

    def to_json(self) -> dict:
        figures = asdict(self) | {"auc_gap_batch_reference": self.auc_gap_batch_reference}
        return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in figures.items()}


def evaluate_monthly(name: str, rows: list[MonthlyRow], mapping: Mapping, settings: Settings,
                     rules: Callable[[], Ruleset],
                     month_done: Callable[[str], None] | None = None) -> MonthlyEvaluation:
    rows = [rows[i] for i in np.random.default_rng(ORDER_SEED).permutation(len(rows))]
    # Streamed, and judged from the final states: neither the records nor the daily snapshots are kept.
    # The mapping's attributes are declared for this replay, beside any the settings declare.
    # (model_copy does not validate: the merge is put in the settings' own order, and checked, here.)
    settings = settings.model_copy(update={"attributes": checked_attributes(settings.attributes | mapping.declared)})
    records = monthly_events(rows, mapping.label, settings.zone, exits=False, month_done=month_done)
    result = replay(records, settings, rules, learn=False, keep_snapshots=False)
    if result.refused == result.events:
        raise ConfigError(f"{name}: the service refused every one of the {result.events:,} records replayed, "
                          f"the first for {result.refusal}")
    ids = [r.customer_id for r in rows]
    w = Windows.load(ids, [result.states.get(c) for c in ids])
    last = max(m for r in rows for m in r.months)
    as_of = _first_day_after(last)
    features = derive(w, np.full(len(ids), as_of, np.int64), settings.zone, settings.attributes)
    x = model_inputs(features, attributes=attribute_columns(settings.attributes))
    features["churn_score"] = np.full(len(ids), np.nan)  # rules judged on their own here
    ev = evaluate_rules(w, rules(), features, np.full(len(ids), as_of, np.int64))
    y = np.array([r.churned for r in rows], np.int64)
    revenue = np.array([r.months[last].get("spend", 0.0) if last in r.months else 0.0 for r in rows])
    scores = {
        "rules": ev.level + ev.score / (1 + ev.score.max(initial=0)),  # level first, importance breaks ties
        "online": _online(x, y, settings),
    }
    scores["champion"], learned, champions = _champion_cross_validated(x, y, as_of, settings)
    # As in the worker, a score raises levels only from a model of CHURNWATCH_MODEL_MIN_LABELS labels.
    level = np.where(learned >= settings.model_min_labels, levels_with_score(
        ev.level, scores["champion"], settings.model_medium_score, settings.model_high_score), ev.level)
    scores["combined"] = queue_order(level, scores["champion"])
    scores["batch_reference"] = _cross_validated(x, y)
    scores["call_list"] = queue_order(level, _value_at_risk(scores["champion"], features, settings))
    by_budget = {approach: {f"{share:g}": list(_at_budget(y, s, revenue, share)) for share in BUDGETS}
                 for approach, s in scores.items()}
    precision, recall, captured = _at_budget(y, scores["combined"], revenue, HEADLINE_BUDGET)
    return MonthlyEvaluation(
        name, len(rows), int(y.sum()), result.events, round(result.seconds, 1),
        auc(y, scores["online"]), auc(y, scores["champion"]), auc(y, scores["rules"]), auc(y, scores["combined"]),
        auc(y, scores["batch_reference"]), auc(y, scores["call_list"]), precision, recall,
        lift(y, scores["combined"], 0.1), captured,
        by_budget=by_budget, refused=result.refused, champions=champions,
        auc_gap_batch_reference_interval=_gap_interval(y, scores["champion"], scores["batch_reference"]))


def _gap_interval(y: np.ndarray, champion: np.ndarray, reference: np.ndarray) -> list[float] | None:
    """The 95% interval of AUC(reference) - AUC(champion): the same draws of customers both ways."""
    who = np.arange(len(y))
    low = auc_gain_low(y, champion, reference, who, resamples=GAP_RESAMPLES)
    high = -auc_gain_low(y, reference, champion, who, resamples=GAP_RESAMPLES)
    return outwards(low, high) if math.isfinite(low) and math.isfinite(high) else None


def _value_at_risk(risk: np.ndarray, features: dict[str, np.ndarray], settings: Settings) -> np.ndarray:
    policy = AlertPolicy.of(settings)
    names = ("prepaid", "arpu_m1", "arpu_m2", "arpu_3m")
    return np.array([policy.value_at_risk(float(p), monthly_value({n: float(features[n][i]) for n in names}),
                                          value_segment(features, i)) for i, p in enumerate(risk)])


def _first_day_after(month: str) -> int:
    return next_month(datetime.strptime(month, "%Y-%m").date()).toordinal()


def _online(x: np.ndarray, y: np.ndarray, settings: Settings) -> np.ndarray:
    """Predict each customer, then learn their label, in the data's order."""
    learner = Learner(settings.model_kind, settings.validation_window, settings.call_budget_share,
                      model_features(settings.attributes))
    out = np.empty(len(y))
    for i in range(len(y)):
        out[i] = learner.predict(x[i])
        learner.learn(x[i], int(y[i]))
    return out


def _folds(y: np.ndarray, folds: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(folds, shuffle=True, random_state=0).split(np.zeros(len(y)), y))


def _champion_cross_validated(x: np.ndarray, y: np.ndarray, day: int,
                              settings: Settings) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Out-of-fold scores of the champion a trainer learns from the other folds, in the data's order,
    with the labels that champion had learned and which candidate it was in each fold."""
    out, learned = np.zeros(len(y)), np.zeros(len(y), np.int64)
    champions = []
    for train, test in _folds(y):
        learned[test] = len(train)
        contest = Contest(settings)
        for i in train:  # in the data's order, as the trainer would meet them
            contest.learn(x[i], int(y[i]), day, str(i))
        signer = Signer.ephemeral()  # a forest's pickle, signed and opened within this process
        out[test] = Scorer(contest.snapshot(1, signer), signer).score(x[test])
        champions.append(contest.champion)
    return out, learned, champions


def _cross_validated(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Out-of-fold scores of gradient-boosted trees."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    out = np.zeros(len(y))
    with one_thread():
        for train, test in _folds(y):
            model = HistGradientBoostingClassifier(**BOOSTING, random_state=7)
            out[test] = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    return out


def _at_budget(y: np.ndarray, score: np.ndarray, revenue: np.ndarray, share: float) -> tuple[float, float, float]:
    """(precision, recall, value captured) when the top `share` of customers by score are called."""
    precision, recall = budget_figures(y, score, share)
    k = budget_calls(len(y), share)
    top = np.argsort(-score, kind="mergesort")[:k]
    lost = float(revenue[y == 1].sum())
    captured = float(revenue[top][y[top] == 1].sum()) / lost if lost else math.nan
    return precision, recall, captured


APPROACHES = {"rules": "rules only", "online": "model only (online)", "champion": "champion (5-fold)",
              "combined": "rules + champion",
              "batch_reference": "batch reference (boosted trees, 5-fold)",
              "call_list": "call list (value at risk)"}


def markdown(e: MonthlyEvaluation, command: str) -> str:
    """The evaluation as a section of `docs/evaluation.md`."""
    auc_of = {"rules": e.auc_rules, "online": e.auc_online, "champion": e.auc_champion, "combined": e.auc_combined,
              "batch_reference": e.auc_batch_reference, "call_list": e.auc_call_list}
    lines = [f"## {e.data}", "", f"{e.customers:,} customers, {e.churners:,} churners "
             f"({e.churners / e.customers:.1%}); {e.events:,} events replayed in {e.seconds} s"
             + (f", {e.refused:,} of them refused" if e.refused else "")
             + f"; {e.total_seconds} s in all, raising the peak memory by {e.peak_kb_per_customer:.1f} KB a customer. "
             f"Made by `{command}`.",
             "", "| approach | AUC | " + " | ".join(f"top {s:.0%}: precision / recall / value" for s in BUDGETS) + " |",
             "|---|---|" + "---|" * len(BUDGETS)]
    for key, name in APPROACHES.items():
        cells = [" / ".join(f"{v:.2f}" for v in e.by_budget[key][f"{s:g}"]) for s in BUDGETS]
        lines.append(f"| {name} | {auc_of[key]:.3f} | " + " | ".join(cells) + " |")
    gap = e.auc_gap_batch_reference_interval
    lines += ["", f"Champion in each fold: {', '.join(e.champions)}. The batch reference's AUC over the champion's: "
              f"{e.auc_gap_batch_reference:+.3f}" + (f" (95% interval {gap[0]:+.3f} to {gap[1]:+.3f})." if gap else "."),
              "",
              f"Rules + champion, calling the top {HEADLINE_BUDGET:.0%}: {e.precision_at_budget:.0%} of the calls "
              f"reach a customer about to leave, {e.recall_at_budget:.0%} of the leavers are reached, "
              f"{e.value_captured:.0%} of the revenue they take away is in the list; the top decile holds "
              f"{e.top_decile_lift:.1f} times the base rate of churners.", ""]
    return "\n".join(lines)


def refresh_doc(path, section: str, name: str) -> None:
    """Replace this data set's section of the evaluation document (or add it), leaving the others."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    text = path.read_text() if path.exists() else "# Evaluation on real data\n\n"
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
