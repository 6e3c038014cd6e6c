"""The lifecycle lists measured on the simulator (`churnwatch evaluate --lists`): the traffic is
replayed through the pipeline, the lists are built from what it kept and wrote (the customers'
states for the growth list, the churn events and alerts for the win-back list), and each is
compared with the simulator's truth of who it made grow and who it made leave."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Callable

import numpy as np

from stream_app.alerts.growth import growth_candidates, ranked, rising
from stream_app.alerts.winback import winback_list
from stream_app.contracts.calendar import first_day, month_of_day
from stream_app.features.derive import derive
from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings
from stream_app.windows.state import Windows

__all__ = ["ListsEvaluation", "evaluate_lists", "TOP"]

TOP = 50  # the head of a list the call centre works first, where its precision is measured
WINBACK_WINDOW = 60  # days, the win-back list's default


@dataclass
class ListsEvaluation:
    customers: int
    day: str
    growers: int  # customers the simulator made grow
    rising: int  # customers the state shows rising (spend and usage, rules as the list's)
    rising_precision: float | None  # share of them the simulator made grow
    rising_recall: float | None  # of the postpaid growers whose growth spans the three months judged
    growth_listed: int
    growth_precision_top: float | None  # of the first `TOP`, the share the simulator made grow
    winback_listed: int
    winback_truth: int  # voluntary leavers of the window, by the simulator's truth
    # Of the first `TOP`, the share that truly left by choice in the window, or were declining to leave so
    # (the list holds revenue churners, who may exit after the list's day).
    winback_precision_top: float | None
    winback_recall: float | None

    def to_json(self) -> dict:
        return asdict(self)


def evaluate_lists(settings: Settings, rules: Callable[[], Ruleset], cfg: SimConfig) -> ListsEvaluation:
    sim = Simulator(cfg)
    result = replay(((r.topic, r.key, r.value) for r in sim.records()), settings, rules, learn=False,
                    keep_snapshots=False)
    day = cfg.start + timedelta(days=cfg.days - 1)
    names = sorted(result.states)
    raws = [result.states[n] for n in names]
    truth = {t.customer_id: t for t in sim.truth}
    table = rules().growth
    up = rising(derive(Windows.load(names, raws), np.full(len(names), day.toordinal()), settings.zone),
                table.min_monthly_growth)
    grower = np.array([truth[n].pattern == "grower" for n in names])
    judged = _judged_months(day)
    prepaid = dict(zip(sim.ids, sim.prepaid))
    through = grower & np.array([bool(truth[n].grows) and truth[n].grows[0] <= judged[0]
                                 and truth[n].grows[1] >= judged[1] and not prepaid[n] for n in names])
    entries, _, _ = growth_candidates(names, raws, day, settings.zone, table)
    growth = ranked(entries)[:TOP]
    first = day.toordinal() - WINBACK_WINDOW + 1
    by_choice = {t.customer_id: date.fromisoformat(t.churn_date).toordinal() for t in sim.truth
                 if t.churn_date and (t.reason_code or 0) < 300}
    left = {c for c, d in by_choice.items() if first <= d <= day.toordinal()}
    winback = winback_list(result.churn, result.alerts, [], day, WINBACK_WINDOW, settings.zone)
    # Right: a voluntary leaver of the window, or a decliner the list took for a revenue churner before their exit.
    right = {e.customer_id for e in winback if by_choice.get(e.customer_id, 0) >= first}
    return ListsEvaluation(
        cfg.customers, day.isoformat(), int(grower.sum()), int(up.sum()), _share(grower[up]), _share(up[through]),
        len(entries), _share(np.array([truth[e.customer_id].pattern == "grower" for e in growth])),
        len(winback), len(left), _share(np.array([e.customer_id in right for e in winback[:TOP]])),
        _share(np.array([c in {e.customer_id for e in winback} for c in left])))


def _judged_months(day: date) -> tuple[str, str]:
    """The first day of the three complete months before `day`'s, and the first of the last of them:
    a grower shows rising when their growth spans them."""
    month = month_of_day(day.toordinal())
    return str(date.fromordinal(first_day(month - 3))), str(date.fromordinal(first_day(month - 1)))


def _share(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 3) if len(hits) else None
