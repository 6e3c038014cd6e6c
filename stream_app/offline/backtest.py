"""What a change of alert rules would have done: the same events replayed through the worker's
pipeline (`offline/replay.py`) once with the rules in force and once with the proposed ones, and
the two runs compared week by week (`churnwatch rules backtest`).

The churn that followed comes from the replay itself: the exits (disconnect, port-out) the pipeline
reports from the billing records, so any recording can be backtested, not only simulated traffic
with a truth file. The definitions are those of `offline/evaluate.py`, with `horizon` days
(`CHURNWATCH_HORIZON_DAYS`):
- an alert is right if its customer churns within the horizon after the alert's day
  (`day < churn <= day + horizon`); a week's **precision** is the share of the customers alerted
  that week (medium or high) with a right alert that week;
- a week's **recall** is the share of the customers who churned that week who were warned within
  the horizon before they left, and their **lead time** the days from the first of those warnings
  to the churn (the call queue takes medium and high alerts, so both count as a warning here);
- a week is **judged** once its last day is a whole horizon before the end of the data: before
  that, churn still to come is unseen and its precision can only rise;
- **calls** are the daily call list's (`alerts/call_plan.py`): within the daily budget, highest
  value at risk first, never a control-group customer; counted on the day they are made.

The model: `replay` learns it online from the same events, as the trainer would, and its alerts
(a score alone reaching a level) are in the call volume as they are live, so it stays on by
default. Learning is seeded and fed in a fixed order, so a replay is deterministic: a pack
backtested against itself shows no difference (tests/unit/test_backtest.py). The rules change
the model's inputs only through a segment the model sees (`mid_high_end`): a proposal that
leaves that definition alone gets the same model in both runs, and every difference is the
rules'. `learn=False` leaves the model out (rules alone) and saves about a tenth of the time (a replay of
200 customers over 120 days: 12.7 s with it, 11.3 s without).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Callable, Iterable
from zoneinfo import ZoneInfo

from stream_app.alerts.build import QUEUED_LEVELS
from stream_app.alerts.call_plan import alert_day, plan_days
from stream_app.contracts.events import Alert
from stream_app.errors import ConfigError, RuleFileError
from stream_app.offline.replay import ReplayResult, replay
from stream_app.rules.pack import REGIONS, Ruleset, load_rules, rule_files
from stream_app.settings import Settings
from stream_app.windows.state import EXIT_KINDS

__all__ = ["Backtest", "Change", "Figures", "Warned", "Week", "backtest", "compare", "load_pack", "proposed_files"]

EXITS = EXIT_KINDS[1:]  # churn as evaluate.py counts it; revenue churn is a warning sign, not an exit
Records = Iterable[tuple[str, bytes, bytes]]


@dataclass(frozen=True)
class Figures:
    """One rule set's figures over a span of days: a week, or the whole replay."""

    medium: int = 0  # alerts by level, on their days
    high: int = 0
    holdout: int = 0  # of them, control-group alerts: never called
    calls: int = 0  # calls the daily list made in the span
    alerted: int = 0  # customers with a medium or high alert in the span
    precision_customers: int = 0  # those of them judged (all, in a week; of the judged weeks, in the totals)
    precision_churned: int = 0  # of those, churned within the horizon after one of their alerts in the span
    churners: int = 0  # customers who left (disconnect, port-out) in the span
    warned_churners: int = 0  # of them, warned within the horizon before
    lead_days: tuple[int, ...] = ()  # per warned churner: days from the first warning in the horizon to the churn

    @property
    def precision(self) -> float | None:
        return self.precision_churned / self.precision_customers if self.precision_customers else None

    @property
    def recall(self) -> float | None:
        return self.warned_churners / self.churners if self.churners else None

    @property
    def lead_days_median(self) -> float | None:
        return float(statistics.median(self.lead_days)) if self.lead_days else None

    def to_json(self) -> dict:
        return {"alerts": {"medium": self.medium, "high": self.high}, "holdout_alerts": self.holdout,
                "calls": self.calls, "alerted_customers": self.alerted,
                "precision": _rounded(self.precision), "precision_customers": self.precision_customers,
                "precision_churned": self.precision_churned, "churners": self.churners,
                "warned_churners": self.warned_churners, "recall": _rounded(self.recall),
                "lead_days_median": self.lead_days_median}


@dataclass(frozen=True)
class Week:
    """An ISO week of alert days, the baseline's figures beside the proposed ones."""

    start: date  # its Monday
    judged: bool  # its whole horizon is in the data
    baseline: Figures
    proposed: Figures

    @property
    def label(self) -> str:
        """>>> Week(date(2026, 8, 31), True, Figures(), Figures()).label
        '2026-W36'"""
        year, week, _ = self.start.isocalendar()
        return f"{year}-W{week:02d}"

    def to_json(self) -> dict:
        return {"week": self.label, "start": self.start.isoformat(), "judged": self.judged,
                "baseline": self.baseline.to_json(), "proposed": self.proposed.to_json()}


@dataclass(frozen=True)
class Warned:
    """A customer warned by one rule set and not by the other."""

    customer_id: str
    first_alert_day: date
    level: str  # the highest level they were warned at
    reasons: tuple[str, ...]  # the reason texts of their first alert
    churn_day: date | None  # their exit, if the data has one
    churned_within_horizon: bool | None  # after one of their alerts; None: no exit yet and not yet judged

    def to_json(self) -> dict:
        return {"customer_id": self.customer_id, "first_alert_day": self.first_alert_day.isoformat(),
                "level": self.level, "reasons": list(self.reasons),
                "churn_day": self.churn_day.isoformat() if self.churn_day else None,
                "churned_within_horizon": self.churned_within_horizon}


@dataclass(frozen=True)
class Change:
    """The customers newly warned, or no longer warned: how many, how many of them churned, examples."""

    count: int
    churned: int  # within the horizon after one of their alerts
    examples: tuple[Warned, ...]

    def to_json(self) -> dict:
        return {"count": self.count, "churned_within_horizon": self.churned,
                "examples": [w.to_json() for w in self.examples]}


@dataclass(frozen=True)
class Backtest:
    """Both runs compared: per week, in total, and who is warned differently."""

    first_day: date
    last_day: date  # the newest day of usage in the events
    judged_until: date | None  # the last day of the last judged week
    horizon_days: int
    daily_call_budget: int
    weeks: tuple[Week, ...]
    baseline: Figures  # totals; precision over the judged weeks
    proposed: Figures
    newly_warned: Change
    no_longer_warned: Change
    events: int
    seconds: tuple[float, float]  # of each replay
    model_labels: tuple[int, int]  # labels each run's model learned (0: no model)

    def to_json(self) -> dict:
        return {"first_day": self.first_day.isoformat(), "last_day": self.last_day.isoformat(),
                "judged_until": self.judged_until.isoformat() if self.judged_until else None,
                "horizon_days": self.horizon_days, "daily_call_budget": self.daily_call_budget,
                "events": self.events, "seconds": {"baseline": round(self.seconds[0], 1),
                                                   "proposed": round(self.seconds[1], 1)},
                "model_labels": {"baseline": self.model_labels[0], "proposed": self.model_labels[1]},
                "weeks": [w.to_json() for w in self.weeks],
                "totals": {"baseline": self.baseline.to_json(), "proposed": self.proposed.to_json()},
                "newly_warned": self.newly_warned.to_json(), "no_longer_warned": self.no_longer_warned.to_json()}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def proposed_files(new: Path, baseline_dir: Path) -> tuple[list[Path], str]:
    """The rule files of the proposal, and what it is in words. A folder is a whole pack; a single
    file is the baseline's pack with the file of the same name replaced by it (or added)."""
    if not new.exists():
        raise ConfigError(f"{new}: no such rule file or folder")
    if new.is_dir():
        return [new], str(new)
    if ".test." in new.name:
        raise ConfigError(f"{new} is a rule test file: backtest takes a rule file or a folder of them")
    files = rule_files([baseline_dir])
    kept = [f for f in files if f.name != new.name]
    said = f"in place of its {new.name}" if len(kept) < len(files) else "added"
    regions = [baseline_dir / REGIONS] if (baseline_dir / REGIONS).is_dir() else []  # the baseline's stay in force
    return sorted([*kept, new], key=lambda f: f.name) + regions, f"{baseline_dir}, with {new} {said}"


def load_pack(paths: list[Path], what: str) -> Ruleset:
    """The rules of `paths`, or one line that says what is wrong (`what`: whose rules they are)."""
    try:
        return load_rules(paths)
    except RuleFileError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        shown = " ".join(map(str, paths))
        raise ConfigError(f"the {what} rules have mistakes: {exc.problems[0]}{more}; "
                          f"`churnwatch rules check {shown}` lists them") from None
    except OSError as exc:
        raise ConfigError(f"the {what} rules cannot be read: {exc}") from None


def backtest(records: Callable[[], Records], settings: Settings, baseline: Ruleset, proposed: Ruleset,
             learn: bool = True, say: Callable[[str], None] = lambda _: None) -> Backtest:
    """Replay the events of `records()` (called once per run: the same events each time) with each
    rule set, and compare the runs."""
    runs = []
    for what, rules in (("baseline", baseline), ("proposed", proposed)):
        say(f"replaying the events with the {what} rules ...")
        started = time.perf_counter()
        result = replay(records(), settings, lambda rules=rules: rules, learn=learn)
        if not result.snapshots:
            raise ConfigError("the events hold no day of usage: nothing to backtest")
        say(f"{what}: {result.events:,} events, {len(result.alerts):,} alerts in {time.perf_counter() - started:.0f} s")
        runs.append(result)
    return compare(runs[0], runs[1], settings.horizon_days, settings.daily_call_budget, settings.zone)


@dataclass
class _Run:
    alerts: list[tuple[int, Alert]]  # (day, alert) of the medium and high alerts, in day order
    days: dict[str, list[int]]  # customer -> their alert days, in order
    calls: list[int]  # the day of each call


def _prepare(result: ReplayResult, first: date, last: date, budget: int, zone: ZoneInfo) -> _Run:
    alerts = sorted(((alert_day(a, zone).toordinal(), a) for a in result.alerts if a.level in QUEUED_LEVELS),
                    key=lambda da: (da[0], da[1].event_time, da[1].alert_id))
    days: dict[str, list[int]] = {}
    for d, a in alerts:
        days.setdefault(a.customer_id, []).append(d)
    calls = [p.day.toordinal() for p in plan_days([a for _, a in alerts], first, last, budget, zone) for _ in p.calls]
    return _Run(alerts, days, calls)


def _right(day: int, churn: int | None, horizon: int) -> bool:
    """An alert of `day` is right if its customer churns within the horizon after it.

    >>> _right(100, 130, 30), _right(100, 131, 30), _right(100, 100, 30), _right(100, None, 30)
    (True, False, False, False)"""
    return churn is not None and day < churn <= day + horizon


def _figures(run: _Run, exits: dict[str, int], lo: int, hi: int, horizon: int, judged_until: int) -> Figures:
    """The figures of days `lo`..`hi`; precision over the alerts of days up to `judged_until`."""
    span = [(d, a) for d, a in run.alerts if lo <= d <= hi]
    right: dict[str, bool] = {}
    for d, a in span:
        if d <= judged_until:
            right[a.customer_id] = right.get(a.customer_id, False) or _right(d, exits.get(a.customer_id), horizon)
    leads = []
    churners = [(c, day) for c, day in exits.items() if lo <= day <= hi]
    for customer, day in churners:
        warned = [d for d in run.days.get(customer, []) if _right(d, day, horizon)]
        if warned:
            leads.append(day - warned[0])
    return Figures(
        medium=sum(a.level == "medium" for _, a in span), high=sum(a.level == "high" for _, a in span),
        holdout=sum(a.holdout for _, a in span), calls=sum(lo <= d <= hi for d in run.calls),
        alerted=len({a.customer_id for _, a in span}), precision_customers=len(right),
        precision_churned=sum(right.values()), churners=len(churners), warned_churners=len(leads),
        lead_days=tuple(sorted(leads)))


def _warned(customers: set[str], run: _Run, exits: dict[str, int], horizon: int, last: int,
            examples: int) -> Change:
    """The customers of `customers`, as `run` warned them."""
    first_alert: dict[str, tuple[int, Alert]] = {}
    highest: dict[str, str] = {}
    for d, a in run.alerts:
        if a.customer_id in customers:
            first_alert.setdefault(a.customer_id, (d, a))
            highest[a.customer_id] = max(highest.get(a.customer_id, "medium"), a.level, key=QUEUED_LEVELS.index)
    rows = []
    for customer, (day, alert) in sorted(first_alert.items(), key=lambda kv: (kv[1][0], kv[0])):
        churn = exits.get(customer)
        right = any(_right(d, churn, horizon) for d in run.days[customer])
        known = right or churn is not None or day + horizon <= last
        rows.append(Warned(customer, date.fromordinal(day), highest[customer],
                           tuple(dict.fromkeys(r.text for r in alert.reasons)),
                           date.fromordinal(churn) if churn is not None else None, right if known else None))
    return Change(len(rows), sum(w.churned_within_horizon is True for w in rows), tuple(rows[:examples]))


def _model_labels(result: ReplayResult) -> int:
    return result.core.learner.labels if result.core is not None else 0


def compare(baseline: ReplayResult, proposed: ReplayResult, horizon: int, daily_call_budget: int, zone: ZoneInfo,
            examples: int = 5) -> Backtest:
    """The two replays of the same events side by side (see the module's docstring)."""
    exits: dict[str, int] = {}
    for c in (*baseline.churn, *proposed.churn):
        if c.kind in EXITS:
            exits[c.customer_id] = min(c.day, exits.get(c.customer_id, c.day))
    usage = [s.day for r in (baseline, proposed) for s in r.snapshots]
    if not usage:
        raise ConfigError("the events hold no day of usage: nothing to backtest")
    alerted = [alert_day(a, zone).toordinal() for r in (baseline, proposed) for a in r.alerts]
    # The data's days: of usage, and of the newest exits and alerts (an exit's day may follow the last snapshot).
    first, last = min(usage), max(usage + alerted + list(exits.values()))
    runs = [_prepare(r, date.fromordinal(first), date.fromordinal(last), daily_call_budget, zone)
            for r in (baseline, proposed)]
    shown = [d for run in runs for d, _ in run.alerts] + list(exits.values())
    monday = max(first, min(shown, default=last))
    monday -= date.fromordinal(monday).weekday()
    weeks, judged_until = [], None
    for start in range(monday, last + 1, 7):
        judged = start + 6 + horizon <= last
        judged_until = start + 6 if judged else judged_until
        weeks.append(Week(date.fromordinal(start), judged,
                          *(_figures(run, exits, start, start + 6, horizon, start + 6) for run in runs)))
    until = judged_until if judged_until is not None else first - 1
    totals = [_figures(run, exits, first, last, horizon, until) for run in runs]
    warned = [set(run.days) for run in runs]
    return Backtest(
        first_day=date.fromordinal(first), last_day=date.fromordinal(last),
        judged_until=date.fromordinal(judged_until) if judged_until is not None else None,
        horizon_days=horizon, daily_call_budget=daily_call_budget, weeks=tuple(weeks),
        baseline=totals[0], proposed=totals[1],
        newly_warned=_warned(warned[1] - warned[0], runs[1], exits, horizon, last, examples),
        no_longer_warned=_warned(warned[0] - warned[1], runs[0], exits, horizon, last, examples),
        events=baseline.events, seconds=(baseline.seconds, proposed.seconds),
        model_labels=(_model_labels(baseline), _model_labels(proposed)))

