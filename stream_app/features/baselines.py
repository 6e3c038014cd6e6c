"""Live segment baselines: what month-over-month change is normal for a segment right now, so a
rule can say `mou_out_mom < segment_p10(mou_out_mom)` and a holiday that moves the whole base
warns no one. The model measures its changes from the medians (model.py) for the same reason.

Every daily snapshot (one per customer and active day, observations.py) adds the customer's
month-over-month changes to that day's histogram for their segment. The histogram is kept as
report counters, so it is added in the same Redis script as the state and counts exactly once
(`baseline|<day>|<segment>|<feature>|<bin>`). A baseline is a quantile over the snapshots
that judge the same month, or for a rolling change over the days just before (see
`Baselines`). Two guard rails apply:
- a segment with fewer than `min_samples` samples (customer-days) in a month has NaN
  quantiles: every comparison with them is false, and a rule written
  `... and not mou_out_mom > segment_p10(mou_out_mom)` falls back to its fixed part (a month
  only starting, in a segment that had enough the month before, is pending instead: see
  `Baselines.columns`);
- from one day to the next a quantile moves at most `max_step`, so one odd day cannot swing
  every threshold.

Segments: mass, potential mid/high-end and mid/high-end (DOMAIN.md), as the rule files define
them, plus every other segment the rule files name, e.g. `prepaid_youth: tenure_days < 365 and
vip == 0`. A customer counts in, and is judged against, one segment: the last of that list they
belong to, so a segment a manager adds takes its customers out of the built-in ones. A segment
added later has NaN baselines (its fixed thresholds decide) until its first month has enough.
"""

from __future__ import annotations

import bisect
import collections
import math
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Iterable

import numpy as np

from stream_app.contracts import keys
from stream_app.contracts.calendar import month_index, months_of_days
from stream_app.contracts.segments import SEGMENTS
from stream_app.errors import ConfigError
from stream_app.features.derive import ACTIVITY_PERIODS
from stream_app.settings import Settings

__all__ = ["BASELINED", "SEGMENTS", "QUANTILES", "COLUMNS", "BaselineRule", "Baselines", "increments",
           "column_name", "comparable", "parse_call", "segment_of", "segment_order"]

MONTHLY = ("mou_out_mom", "arpu_mom", "postpaid_arpu_mom", "data_mom", "contacts_mom")  # baseline per data month
ACTIVITY_CHANGES = tuple(f"activity_vs_usual_d{a}_{b}" for a, b in ACTIVITY_PERIODS)
DAILY = ("mou_out_30d_mom", "mou_out_14d_trend", *ACTIVITY_CHANGES)  # baseline per day, from the days just before
BASELINED = MONTHLY + DAILY
POOL_DAYS = 3  # snapshot days pooled for a daily baseline
QUANTILES = (5, 10, 25, 50, 75, 90, 95)
PREFIX = keys.BASELINE_FIELD
# Bins of 2.5 points from -100% to +200%; the last one holds everything above.
_STEP = 0.025
_EDGES = np.round(np.arange(-1.0, 2.0 + _STEP / 2, _STEP), 4)
_CALL = re.compile(r"^segment_p(\d+)$")


@dataclass(frozen=True)
class BaselineRule:
    """The guard rails, from the settings."""

    min_samples: int = 200  # samples (customer-days) of a data month before its quantiles are used
    max_step: float = 0.05  # the most a quantile may move from one day to the next

    @classmethod
    def of(cls, settings: Settings) -> "BaselineRule":
        return cls(settings.baseline_min_samples, settings.baseline_max_step)


def segment_order(defined: Iterable[str] = ()) -> tuple[str, ...]:
    """The segment flags in the order they claim customers, the last claim winning: the built-in
    ones, then those the rule files add (`defined`, in the order written)."""
    return ("potential_mid_high_end", "mid_high_end", *(s for s in defined if s not in SEGMENTS))


def segment_of(features: dict[str, np.ndarray], defined: Iterable[str] = ()) -> np.ndarray:
    """Each customer's segment name: the last flag of `segment_order(defined)` they have, else mass."""
    segment = np.full(len(features["mid_high_end"]), "mass", dtype=object)
    for name in segment_order(defined):
        segment[features[name] > 0] = name
    return segment


def increments(customers: list[str], features: dict[str, np.ndarray], days: np.ndarray,
               defined: Iterable[str] = ()) -> dict[str, dict[str, int]]:
    """Customer -> histogram counter increments for their snapshot rows (one row per customer
    and day). A change is counted only when the period before had some (`*_m2`, `*_prev_*` above 0)."""
    out: dict[str, dict[str, int]] = collections.defaultdict(dict)
    segment = segment_of(features, defined)
    for name, counted in comparable(features).items():
        bins = np.clip(np.searchsorted(_EDGES, features[name], side="right") - 1, 0, len(_EDGES) - 1)
        for i in np.nonzero(counted)[0]:
            key = f"{PREFIX}{date.fromordinal(int(days[i]))}|{segment[i]}|{name}|{int(bins[i])}"
            mine = out[customers[i]]
            mine[key] = mine.get(key, 0) + 1
    return dict(out)


def comparable(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per feature of `BASELINED`, the rows whose change has something to compare with: the
    period before had some. Only these count in a baseline, and only these are measured
    against it."""
    postpaid = features["prepaid"] == 0
    return {"mou_out_mom": features["mou_out_m2"] > 0, "arpu_mom": features["arpu_m2"] > 0,
            "postpaid_arpu_mom": postpaid & (features["arpu_m2"] > 0), "data_mom": features["data_mb_m2"] > 0,
            "contacts_mom": features["contacts_m2"] > 0,
            "mou_out_30d_mom": features["mou_out_prev_30d"] > 0, "mou_out_14d_trend": features["mou_out_prev_14d"] > 0,
            **{name: features["activity_usual"] > 0 for name in ACTIVITY_CHANGES}}


def column_name(quantile: int, feature: str) -> str:
    """The name a rule's `segment_pQ(feature)` is evaluated under."""
    return f"segment_p{quantile}({feature})"


COLUMNS = tuple(column_name(q, f) for f in BASELINED for q in QUANTILES)


def parse_call(function: str, args: list[str]) -> str:
    """The column of a `segment_pQ(feature)` call, or ValueError saying what is allowed."""
    match = _CALL.match(function)
    if match is None or int(match.group(1)) not in QUANTILES or len(args) != 1 or args[0] not in BASELINED:
        raise ConfigError(f"segment baselines are segment_pQ(feature) with Q one of {', '.join(map(str, QUANTILES))} "
                         f"and feature one of {', '.join(BASELINED)}; got {function}({', '.join(args)})")
    return column_name(int(match.group(1)), args[0])


@dataclass
class Baselines:
    """The quantiles in force per (period, segment, feature).

    A month-over-month change (`MONTHLY`) is a month's figure: in September every customer's
    `mou_out_mom` compares August with July, so September's snapshots make the baseline of data
    month August (period: its month index), growing day by day. A rolling change (`DAILY`, the
    last 30 or 14 days against the days before) moves a little every day: its baseline for a day
    (period: the day's ordinal) pools the snapshots of the `POOL_DAYS` days before it."""

    day: date | None = None  # the newest snapshot day counted
    values: dict[tuple[int, str, str], dict[int, float]] = field(default_factory=dict)  # NaN: too few
    samples: dict[tuple[int, str, str], int] = field(default_factory=dict)
    min_samples: int = 200
    _judged: dict[tuple[str, str], list[int]] = field(default_factory=dict)  # daily periods, in order

    @classmethod
    def from_counts(cls, counts: dict[str, int], rule: BaselineRule = BaselineRule()) -> "Baselines":
        """The baselines from the report counters (`reports.read_counts`). Workers reread them every
        minute and replays every day, so every (segment, feature) is followed at once, in arrays."""
        hist = _histograms(counts)
        days = sorted({d for d, _, _ in hist})
        out = cls(day=days[-1] if days else None, min_samples=rule.min_samples)
        if not days:
            return out
        pairs = [(s, f) for s in sorted({s for _, s, _ in hist}) for f in BASELINED]
        index, row = {pair: p for p, pair in enumerate(pairs)}, {d: i for i, d in enumerate(days)}
        dense = np.zeros((len(pairs), len(days), len(_EDGES)), np.int64)
        for (d, segment, feature), h in hist.items():
            if feature in BASELINED:
                dense[index[(segment, feature)], row[d]] = h
        daily = np.array([f in DAILY for _, f in pairs])
        month = np.array([_data_month(d) for d in days])
        held, n = _follow(*_running_totals(dense, days, month, daily), rule)
        for p, (segment, feature) in enumerate(pairs):
            for i, d in enumerate(days):
                key = (d.toordinal() + 1 if daily[p] else int(month[i]), segment, feature)
                out.values[key], out.samples[key] = dict(zip(QUANTILES, held[p, i].tolist())), int(n[p, i])
            if daily[p]:
                out._judged[(segment, feature)] = [d.toordinal() + 1 for d in days]
        return out

    def segments(self) -> list[str]:
        """The built-in segments, then every other segment with a histogram."""
        return [*SEGMENTS, *sorted({s for _, s, _ in self.values} - set(SEGMENTS))]

    def current(self, segment: str, feature: str) -> tuple[dict[int, float], int]:
        """The newest period's quantiles and samples of a segment (for display and metrics)."""
        periods = [p for p, s, f in self.values if (s, f) == (segment, feature)]
        if not periods:
            return {}, 0
        key = (max(periods), segment, feature)
        return self.values[key], self.samples[key]

    def columns(self, features: dict[str, np.ndarray], days: np.ndarray,
                defined: Iterable[str] = ()) -> dict[str, np.ndarray]:
        """Every `segment_pQ(feature)` as a per-customer array: the quantile of the customer's
        segment (`segment_of(features, defined)`) for the period their day judges."""
        segment = segment_of(features, defined)
        month = months_of_days(days) - 1  # the month m1 names
        out = {column_name(q, f): np.full(len(segment), math.nan) for f in BASELINED for q in QUANTILES}
        for s in np.unique(segment):
            mine = segment == s
            for m in np.unique(month[mine]):
                for f in MONTHLY:
                    _fill(out, mine & (month == m), f, self._monthly(int(m), s, f))
            for d in np.unique(days[mine]):
                for f in DAILY:
                    _fill(out, mine & (days == d), f, self._daily(int(d), s, f))
        return out

    def medians(self, features: dict[str, np.ndarray], days: np.ndarray, columns: dict[str, np.ndarray],
                defined: Iterable[str]) -> dict[str, np.ndarray]:
        """Per feature, its median in each customer's built-in segment (NaN where there is none,
        -inf while a month is pending): what the model measures changes from. Taken from
        `columns` (`columns(features, days, defined)`) unless the rule files add segments of
        their own, which take customers out of the built-in ones."""
        if segment_order(defined) != segment_order():
            columns = self.columns(features, days)
        return {f: columns[column_name(50, f)] for f in BASELINED}

    def _monthly(self, month: int, segment: str, feature: str) -> dict[int, float] | None:
        """A data month's quantiles of a feature. A month still short of samples, in a segment that
        had enough the month before, is pending: -inf, below every change, so that the first days
        of a month do not fall back to the fixed thresholds for everyone."""
        key = (month, segment, feature)
        if self.samples.get(key, 0) < self.min_samples and \
                self.samples.get((month - 1, segment, feature), 0) >= self.min_samples:
            return {q: -math.inf for q in QUANTILES}
        return self.values.get(key)

    def _daily(self, day: int, segment: str, feature: str) -> dict[int, float] | None:
        """The quantiles for judging `day`: its own, or the newest before it if no older than
        `POOL_DAYS` (workers reread the histograms once a minute; a day can start before)."""
        judged = self._judged.get((segment, feature), [])
        k = bisect.bisect_right(judged, day) - 1
        return self.values.get((judged[k], segment, feature)) if k >= 0 and day - judged[k] <= POOL_DAYS else None


def _fill(out: dict[str, np.ndarray], rows: np.ndarray, feature: str, values: dict[int, float] | None) -> None:
    for q in QUANTILES:
        out[column_name(q, feature)][rows] = (values or {}).get(q, math.nan)


def _data_month(day: date) -> int:
    """The month a day's month-over-month change is about (m1: the month before), as a month index."""
    return month_index(day.year, day.month) - 1


def _histograms(counts: dict[str, int]) -> dict[tuple[date, str, str], np.ndarray]:
    """(day, segment, feature) -> histogram, from the report counters."""
    by_head: dict[str, np.ndarray] = {}  # "<day>|<segment>|<feature>" -> histogram
    for key, n in counts.items():
        if key.startswith(PREFIX):
            head, b = key[len(PREFIX):].rsplit("|", 1)
            h = by_head.get(head)
            if h is None:
                h = by_head[head] = np.zeros(len(_EDGES), np.int64)
            h[int(b)] += n
    hist = {}
    for head, h in by_head.items():
        day, segment, feature = head.split("|")
        hist[(date.fromisoformat(day), segment, feature)] = h
    return hist


def _running_totals(dense: np.ndarray, days: list[date], month: np.ndarray,
                    daily: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each series' histogram at each day (series on axis 0, days on axis 1), and where a
    series starts afresh. Monthly: the data month's snapshots so far, afresh each month.
    Daily: the `POOL_DAYS` days up to that day (missing days add nothing)."""
    totals = np.empty_like(dense)
    for m in np.unique(month):
        totals[:, month == m] = np.cumsum(dense[:, month == m], axis=1)
    row = {d: i for i, d in enumerate(days)}
    pooled = dense.copy()
    for k in range(1, POOL_DAYS):
        before = np.array([row.get(d - timedelta(days=k), -1) for d in days])
        pooled[:, before >= 0] += dense[:, before[before >= 0]]
    totals[daily] = pooled[daily]
    restart = np.zeros(dense.shape[:2], bool)
    restart[:, 0] = True
    restart[~daily, 1:] = (month[1:] != month[:-1])[None, :]
    return totals, restart


def _follow(totals: np.ndarray, restart: np.ndarray, rule: BaselineRule) -> tuple[np.ndarray, np.ndarray]:
    """The quantiles in force after each step (axis 1) of each series (axis 0) of histograms,
    and their samples: from one step to the next a quantile moves at most `max_step`; the first
    step with enough samples, or one where `restart` is set, sets it."""
    n = totals.sum(axis=2)
    raw = np.where((n >= rule.min_samples)[..., None], _quantiles(totals), math.nan)
    held = np.full(raw.shape, math.nan)
    last = np.full((raw.shape[0], raw.shape[2]), math.nan)
    for i in range(raw.shape[1]):
        last = np.where(restart[:, i, None], math.nan, last)
        stepped = np.clip(raw[:, i], last - rule.max_step, last + rule.max_step)
        last = held[:, i] = np.where(np.isnan(last) | np.isnan(raw[:, i]), raw[:, i], stepped)
    return held, n


def _quantiles(hist: np.ndarray) -> np.ndarray:
    """Each of `QUANTILES` of histograms (bins on the last axis), at the upper edge of the bin
    where it falls."""
    cumulative = np.cumsum(hist, axis=-1)
    targets = cumulative[..., -1:] * (np.array(QUANTILES) / 100.0)
    b = (cumulative[..., None, :] < targets[..., None]).sum(axis=-1)
    return np.where(b + 1 < len(_EDGES), _EDGES[np.minimum(b, len(_EDGES) - 1)] + _STEP, _EDGES[-1])
