"""The lifecycle lists measured on the simulator (`churnwatch evaluate --lists`): the traffic is
replayed through the pipeline, the lists are built from what it kept and wrote (the customers'
states for the growth list, the churn events and alerts for the win-back list, the off-net book
for the competitor list and the leavers' contacts), and each is compared with the simulator's
truth of who it made grow, who it made leave and what the competitors' customers spend."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Callable

import numpy as np

from stream_app.alerts.competitor import OurBase, competitor_list, contacts_of, months_read
from stream_app.alerts.growth import growth_candidates, ranked, rising
from stream_app.alerts.winback import winback_list, with_contacts
from stream_app.contracts.calendar import first_day, month_of_day
from stream_app.contracts.segments import MID_HIGH_SPEND
from stream_app.features.derive import derive
from stream_app.offline.replay import replay
from stream_app.offline.simulator import SimConfig, Simulator
from stream_app.rules.pack import Ruleset
from stream_app.settings import Settings
from stream_app.windows.book import in_months
from stream_app.windows.state import Windows

__all__ = ["ListsEvaluation", "evaluate_lists", "TOP"]

TOP = 50  # the head of a list the call centre works first, where its precision is measured
WINBACK_WINDOW = 60  # days, the win-back list's default
COMPETITOR_MONTHS = 2  # the competitor list's default: the list's month and the one before


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
    winback_port_outs: int  # port-outs on the win-back list
    winback_with_contacts: float | None  # of them, the share with customers of ours still calling them
    competitor_listed: int  # `TOP` per competitor at most
    competitor_precision_top: float | None  # share of them mid/high-end at their operator, by the simulator's truth
    competitor_base_rate: float | None  # the same share over every off-net number in the book: what chance gives
    won_back_truth: int  # customers the simulator brought back by the last day (`comeback_share`)
    won_back_recorded: float | None  # of them, the share the workers recorded, on the right day
    winback_listed_back: int  # customers on the win-back list who had come back by its day: 0 is right

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
    came_back = {t.customer_id: date.fromisoformat(t.back_date).toordinal() for t in sim.truth if t.back_date}
    left = {c for c, d in by_choice.items() if first <= d <= day.toordinal() and c not in came_back}
    winback = winback_list(result.churn, result.alerts, [], day, WINBACK_WINDOW, settings.zone, result.won_back)
    recorded = {(b.customer_id, b.day) for b in result.won_back}
    ours = OurBase(day)
    ours.add(names, raws)
    book = in_months(result.book, months_read(day, COMPETITOR_MONTHS))
    port_outs = [e for e in with_contacts(winback, contacts_of(book, [e.customer_id for e in winback]), ours.base.ours)
                 if e.kind == "port_out"]
    competitors = competitor_list(book, ours.base, day, COMPETITOR_MONTHS, settings.competitor_share, TOP)
    spend = sim.competitor_truth()
    valuable = np.array([spend[name.split("|", 1)[1]][1] >= MID_HIGH_SPEND for name in book
                         if name.split("|", 1)[1] in spend])
    # Right: a voluntary leaver of the window, or a decliner the list took for a revenue churner before their exit.
    right = {e.customer_id for e in winback if by_choice.get(e.customer_id, 0) >= first}
    return ListsEvaluation(
        cfg.customers, day.isoformat(), int(grower.sum()), int(up.sum()), _share(grower[up]), _share(up[through]),
        len(entries), _share(np.array([truth[e.customer_id].pattern == "grower" for e in growth])),
        len(winback), len(left), _share(np.array([e.customer_id in right for e in winback[:TOP]])),
        _share(np.array([c in {e.customer_id for e in winback} for c in left])), len(port_outs),
        _share(np.array([bool(e.known_by) for e in port_outs])), len(competitors),
        _share(np.array([spend[e.number][1] >= MID_HIGH_SPEND for e in competitors])), _share(valuable),
        len(came_back), _share(np.array([item in recorded for item in came_back.items()])),
        sum(e.customer_id in came_back for e in winback))


def _judged_months(day: date) -> tuple[str, str]:
    """The first day of the three complete months before `day`'s, and the first of the last of them:
    a grower shows rising when their growth spans them."""
    month = month_of_day(day.toordinal())
    return str(date.fromordinal(first_day(month - 3))), str(date.fromordinal(first_day(month - 1)))


def _share(hits: np.ndarray) -> float | None:
    return round(float(hits.mean()), 3) if len(hits) else None
