"""The reports retention managers read (DOMAIN.md, "Reports managers expect"), from the report
counters the workers keep in Redis (`reports/facts.py`).

Figures for a month are complete once every customer has been seen in a later month (their
monthly bill does that): a month's revenue and mid/high-end membership are counted as each
customer's month closes, exits as they happen.
"""

from __future__ import annotations

import collections
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

from stream_app.contracts.calendar import month_label, month_of_label
from stream_app.contracts.events import REASON_CODES
from stream_app.errors import ChurnwatchError
from stream_app.reports.facts import REGION
from stream_app.settings import CohortRule
from stream_app.windows.state import SCALE

__all__ = ["ChurnMonth", "ChurnReport", "CohortReport", "NoData", "churn_report", "cohort_report", "counted_months",
           "counted_regions", "latest_month", "region_counts"]


class NoData(ChurnwatchError):
    """A report asked for a period or a cohort the workers have counted nothing in."""

YUAN = SCALE["spend"]
_OWN = ("cohort|", REGION)  # counters that are not a month's totals


@dataclass
class ChurnMonth:
    """One month of the churn totals."""

    month: str
    customers_start: int
    gross_adds: int
    voluntary_churn: int
    involuntary_churn: int
    churn: int
    net_adds: int
    customers_end: int
    churn_rate: float  # churn / (customers at start + gross adds): everyone who could leave that month
    revenue_churn: int  # customers who stayed but started spending far less (not in `churn`)
    revenue_lost: float  # last complete month's spend of the customers who left, yuan
    customers_billed: int  # customers whose month has closed (their usage moved the grace period past it)
    revenue: float | None  # their spend that month, yuan; None while the month is open for every customer
    mid_high_end: int | None  # None while the month is open for every customer
    mid_high_end_revenue_share: float | None
    # customers_billed / (customers_start + gross_adds - churn): how final the month's revenue and base
    # are (a leaver's month of exit is not billed).
    # A month closes for a customer once their usage is the grace past it and a later bill or
    # top-up has been read, so a prepaid customer's month closes at their next top-up.
    closed_share: float = 0.0
    mid_high_end_new: int | None = None  # mid/high-end that month, and customers all the month before who were not
    # Of the gross adds, customers who had left and came back: on their number, or as their profile says on a new line.
    won_back: int = 0


@dataclass
class ChurnReport:
    months: list[ChurnMonth]
    by_reason: dict[str, dict[str, int]]  # month -> reason code (or "unknown") -> exits
    by_region: dict[str, dict[str, int]]
    by_segment: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        return {"months": [asdict(m) for m in self.months], "by_reason": self.by_reason,
                "by_region": self.by_region, "by_segment": self.by_segment,
                "reason_names": {str(code): name for code, name in REASON_CODES.items()}}


@dataclass
class CohortReport:
    snapshot: str
    definition: str
    members: int
    # Month after the snapshot -> (lost that month, retained at its end, retention rate).
    months: list[str] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    retained: list[int] = field(default_factory=list)
    retention_rate: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def counted_months(counts: dict[str, int]) -> list[str]:
    """The months anything was counted in, oldest first, but activations (which may lie years
    before the stream, or in its future)."""
    return sorted({k.split("|", 1)[0] for k in counts if not k.startswith(_OWN) and not k.endswith("|adds")})


def region_counts(counts: dict[str, int], region: str) -> dict[str, int]:
    """The counters of one region (`facts.REGION`), named as the totals are: every report reads them
    alike. Empty for a region the settings did not name while the workers counted."""
    prefix = f"{REGION}{region}|"
    return {name[len(prefix):]: v for name, v in counts.items() if name.startswith(prefix)}


def counted_regions(counts: dict[str, int]) -> list[str]:
    """The regions with counters of their own."""
    return sorted({name.split("|", 2)[1] for name in counts if name.startswith(REGION)})


def latest_month(counts: dict[str, int]) -> str | None:
    """The newest month anything was counted in, but activations."""
    months = counted_months(counts)
    return months[-1] if months else None


def churn_report(counts: dict[str, int], last: str, months: int, base: dict[str, int] | None = None) -> ChurnReport:
    """The churn totals and breakdowns of the `months` months ending with `last` (YYYY-MM), which
    must be a month the workers have counted in (`NoData`): a month after the stream would show
    the whole base staying, which no one measured. For a region's `counts`, `base` is the whole
    base's: a month it was counted in was counted for the region too, exits or none."""
    counted = counted_months(counts if base is None else base)
    if not counted or not counted[0] <= last <= counted[-1]:
        span = f"{counted[0]} to {counted[-1]}" if counted else "nothing yet"
        raise NoData(f"no report counters for {last}: the workers have counted {span}")
    end = month_of_label(last)
    wanted = [month_label(m) for m in range(end - months + 1, end + 1)]
    by_month: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for name, value in counts.items():
        if not name.startswith(_OWN):
            month, what = name.split("|", 1)
            by_month[month][what] += value
    base = sum(c["adds"] - _exits(c) for m, c in by_month.items() if m < wanted[0])
    rows = []
    for month in wanted:
        c = by_month.get(month, collections.Counter())
        churn = _exits(c)
        rows.append(ChurnMonth(
            month, base, c["adds"], c["exits|voluntary"], c["exits|involuntary"], churn, c["adds"] - churn,
            base + c["adds"] - churn, round(churn / max(base + c["adds"], 1), 5), c["revenue_churn"],
            c["revenue_lost_fen"] / YUAN, c["billed"], c["revenue_fen"] / YUAN if c["billed"] else None,
            c["mid_high"] if c["billed"] else None,
            round(c["mid_high_revenue_fen"] / c["revenue_fen"], 4) if c["revenue_fen"] else None,
            round(min(c["billed"] / max(base + c["adds"] - churn, 1), 1.0), 4),
            c["mid_high_new"] if c["billed"] else None, c["won_back"]))
        base += c["adds"] - churn
    return ChurnReport(rows, *(_breakdown(by_month, wanted, kind) for kind in ("reason", "region", "segment")))


def cohort_report(counts: dict[str, int], snapshot: str, rule: CohortRule, through: str | None = None) -> CohortReport:
    """The snapshot cohort of `snapshot` (YYYY-MM) and its retention, month by month after it,
    up to `through` (default: the newest month counted)."""
    definition = (f"spend over the {rule.months} months to {snapshot} >= {rule.min_spend:g}; lost at exit, or "
                  f"after {rule.churn_months} months in a row each under {rule.churn_spend:g} (revenue churn)")
    members = counts.get(f"cohort|{snapshot}|members", 0)
    if not members:
        raise NoData(f"the {snapshot} cohort has no members: no customer counted spent {rule.min_spend:g} or more "
                     f"over the {rule.months} months to {snapshot}")
    report = CohortReport(snapshot, definition, members)
    last = month_of_label(through or latest_month(counts) or snapshot)
    retained = members
    for m in range(month_of_label(snapshot) + 1, min(last, month_of_label(snapshot) + rule.follow_months) + 1):
        label = month_label(m)
        lost = counts.get(f"cohort|{snapshot}|lost|{label}", 0)
        retained -= lost
        report.months.append(label)
        report.lost.append(lost)
        report.retained.append(retained)
        report.retention_rate.append(round(retained / members, 4))
    return report


def _exits(c: collections.Counter[str]) -> int:
    return c["exits|voluntary"] + c["exits|involuntary"]


def _breakdown(by_month: dict[str, collections.Counter[str]], months: Iterable[str], kind: str) -> dict[str, dict[str, int]]:
    prefix = kind + "|"
    return {m: {k[len(prefix):]: v for k, v in sorted(by_month.get(m, {}).items()) if k.startswith(prefix) and v}
            for m in months}
