"""What the managers' reports count, taken from the state changes of each batch.

A batch turns a customer's changes into counter increments: a first CRM profile adds the
customer to the base in their activation month; an exit counts once, by voluntariness,
reason code, region, value segment and the revenue it takes away; a month that closes (the
customer's usage has moved the late grace past its end and a later billing event has been
read, `closing_days`) adds its spend and mid/high-end membership, and may photograph the customer into that month's snapshot cohort.
The store adds the increments to the report counters in the same script that writes the
customer's state, so they count exactly once however often a batch is replayed
(`store.RedisWindowStore.save`).

Counter names are `<YYYY-MM>|<what>[|<detail>]`, and `cohort|<YYYY-MM>|members` and
`cohort|<YYYY-MM>|lost|<YYYY-MM>` for the snapshot cohorts; `reports.py` reads them back.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from stream_app.contracts import segments
from stream_app.contracts.calendar import first_day, local_clock, month_index, month_label, month_of_day, months_of_days
from stream_app.contracts.events import ChurnEvent
from stream_app.contracts.inputs import Input
from stream_app.metrics import region_label
from stream_app.settings import CohortRule
from stream_app.windows.lifecycle import Moves
from stream_app.windows.state import N_MONTHS, SCALE, C, StateTail, Windows

__all__ = ["Before", "REGION", "UNKNOWN", "report_increments"]

_UNSAFE = re.compile(r"[|\t\n]")
REGION = "region|"  # the prefix of a region's own counters
UNKNOWN = "unknown"  # the region of facts counted before the customer's first profile


@dataclass(frozen=True)
class Before:
    """What the report facts compare a batch's result with, copied before the batch is applied."""

    day0: np.ndarray
    exit_ts: np.ndarray
    profile_ts: np.ndarray
    closing_day: np.ndarray
    month0: np.ndarray
    usage_decided: dict[int, collections.Counter[str]]  # row -> `_usage_decided`, for customers who had left

    @classmethod
    def of(cls, w: Windows, zone: ZoneInfo, grace_days: int) -> "Before":
        left = np.nonzero(w.rec["exit_ts"])[0].tolist()
        decided = {i: _usage_decided(w, i, _local_month(int(w.rec["exit_ts"][i]), zone), 0) for i in left}
        return cls(w.day0.copy(), w.rec["exit_ts"].copy(), w.rec["profile_ts"].copy(), closing_days(w, grace_days),
                   w.month0.copy(), decided)


def closing_days(w: Windows, grace_days: int) -> np.ndarray:
    """Per customer, the newest usage day, held back to the newest billing day plus the grace
    (0: no usage or no billing read yet); a month closes once this is the grace past its end.

    Usage and billing are read by separate agents, whose progress relative to each other
    changes from run to run; a month counted once only usage had moved past it could lack its
    bill. Usage may come late, within the grace (mediation delays); billing comes in order
    per customer from the billing system, so a month's billing is complete once a later
    billing event (such as the bill for that month, on the 1st) has been read."""
    billing = w.rec["newest"][:, Input.BILLING].astype(np.int64)
    return np.minimum(w.day0.astype(np.int64), np.where(billing > 0, billing + grace_days, 0))


def report_increments(w: Windows, rows: list[int], before: Before, churned: list[ChurnEvent], moves: Moves,
                      zone: ZoneInfo, cohort: CohortRule, grace_days: int,
                      regions: frozenset[str] = frozenset()) -> tuple[dict[str, dict[str, int]], dict[int, StateTail]]:
    """Customer -> counter increments for the changed `rows` (customers with none are left out),
    and the state tails whose cohort memberships changed (for `Windows.keep_tails`).

    A month closes for a customer once their usage has moved `grace_days` past its end and a
    later billing event has been read (`closing_days`): no late event can change it after that, so what
    is counted depends neither on where batches end nor on how the topics interleave. An exit
    closes every month before it (no more events will come to move it on); its bills are final
    then (exits come in order on the billing topic), and what its usage decides is corrected as
    late usage arrives (`_usage_decided`). A customer back (`moves.returns`) is a gross add again,
    and counted from the month they came back in (windows/lifecycle.py: the months before are
    forgotten; they were counted when the exit closed them).

    With `regions` (those settings name), each counter is counted again under
    `region|<region>|`: the region of the customer's profile when their first fact was counted
    (`other` for a region not named, `unknown` without a profile yet), kept in their state, so
    that every fact of a customer, corrections included, lands in the same region and the
    regions' figures add up to the totals."""
    exits = {c.customer_id: c for c in churned if c.kind != "revenue"}
    revenue_churned = {c.customer_id: c for c in churned if c.kind == "revenue"}
    out: dict[str, dict[str, int]] = {}
    tails: dict[int, StateTail] = {}
    closing = closing_days(w, grace_days)
    for i in _with_news(w, rows, before, closing, grace_days, set(exits) | set(revenue_churned), moves):
        customer = w.customers[i]
        counts: collections.Counter[str] = collections.Counter()
        tail = w.text[i] or StateTail()
        if before.profile_ts[i] == 0 and w.rec["profile_ts"][i] > 0:
            counts[f"{_month_of(tail.joined or int(w.rec['activation'][i]))}|adds"] += 1
        back = moves.returns.get(i)
        on_number = back is not None and back.left_ts > 0  # back on their number, not on a new line
        if on_number:  # a gross add again
            month = _month_of(local_clock(zone)(back.ts)[0])
            counts.update({f"{month}|won_back": 1, f"{month}|adds": 1})
        elif back is not None:  # on a new line: added by their first profile, above
            counts[f"{_month_of(tail.joined or int(w.rec['activation'][i]))}|won_back"] += 1
        members, lost = set(tail.cohorts), set(tail.cohort_lost)
        # An exit is counted with the months it closes: before a return of this batch, on the buckets
        # as they were (`as_at_exit`); after one, from the month the customer came back in.
        after_back = on_number and i in moves.exits and moves.exits[i].ts > back.ts  # type: ignore[union-attr]
        if before.exit_ts[i] == 0:  # nothing new is counted for a customer after their exit, until they come back
            exit_month = month_of_day(exits[customer].day) if customer in exits and not after_back else None
            at, k = moves.as_at_exit(w, i) if exit_month is not None else (w, i)
            upto = 0 if on_number else int(closing[i])  # back within the batch: up to the exit only
            _close(at, k, int(before.closing_day[i]), upto, grace_days, exit_month, cohort, counts, members, lost)
            if exit_month is not None:
                _exit(at, k, exits[customer], exit_month, counts, members, lost)
        elif i in before.usage_decided:  # late usage of a leaver's last months, read before any return
            _correct(*moves.as_before_return(w, i), before, i, zone, counts)
        if on_number:
            exit_month = month_of_day(exits[customer].day) if after_back else None
            _close(w, i, 0, int(closing[i]), grace_days, exit_month, cohort, counts, members, lost)
            if exit_month is not None:
                _exit(w, i, exits[customer], exit_month, counts, members, lost)
        if customer in revenue_churned:
            started = date.fromordinal(revenue_churned[customer].day)
            counts[f"{month_label(month_index(started.year, started.month))}|revenue_churn"] += 1
        oldest = int(w.month0[i]) - cohort.follow_months
        kept = (tuple(sorted(m for m in members if m >= oldest)), tuple(sorted(m for m in lost if m >= oldest)))
        if kept != (tail.cohorts, tail.cohort_lost):
            tails[i] = msgspec.structs.replace(tail, cohorts=kept[0], cohort_lost=kept[1])
        if counts and regions:
            branch = tail.report_region or (region_label(tail.region, regions) if tail.region else UNKNOWN)
            if not tail.report_region:  # the customer's facts stay in one region, corrections included
                tails[i] = msgspec.structs.replace(tails.get(i, tail), report_region=branch)
            counts.update({f"{REGION}{branch}|{name}": v for name, v in list(counts.items())})
        if counts:
            out[customer] = dict(counts)
    return out, tails


def _with_news(w: Windows, rows: list[int], before: Before, closing: np.ndarray, grace_days: int,
               churned: set[str], moves: Moves) -> list[int]:
    """The rows with anything to count: a first profile, a churn, a return, or a month newly
    closed. Most batches have few, so the rest are ruled out with a few array operations."""
    idx = np.asarray(rows, np.int64)
    if not len(idx):
        return []
    after_open, before_open = (_open_months(day[idx], grace_days) for day in (closing, before.closing_day))
    news = (before.profile_ts[idx] == 0) & (w.rec["profile_ts"][idx] > 0)
    news |= (after_open != before_open) & (before.exit_ts[idx] == 0)
    return [i for i, new in zip(rows, news)
            if new or w.customers[i] in churned or i in before.usage_decided or i in moves.returns]


def _open_months(day0: np.ndarray, grace_days: int) -> np.ndarray:
    """Which month is open, for many closing days at once (0: none yet)."""
    return np.where(day0 > 0, months_of_days(day0.astype(np.int64) - grace_days), 0)


def _close(w: Windows, i: int, opened: int, closing: int, grace_days: int, exit_month: int | None,
           cohort: CohortRule, counts: collections.Counter[str], members: set[int], lost: set[int]) -> None:
    """Count the months this batch closed for the customer: from the first still open before it
    (by the closing day before it, `opened`; 0: from their first month of usage) to the first
    still open after it, or to their exit."""
    first = _oldest_month(w, i)
    if first is None:
        return
    if opened > 0:
        first = max(first, _open_month(opened, grace_days))
    end = _open_month(closing, grace_days) if closing > 0 else first
    if exit_month is not None:
        end = max(end, exit_month)
    _closed_months(w, i, first, end, cohort, counts, members, lost)


def _month_of(day: int) -> str:
    return month_label(month_of_day(day))


def _local_month(ts: int, zone: ZoneInfo) -> int:
    return local_clock(zone)(ts)[1]


def _open_month(day0: int, grace_days: int) -> int:
    """The oldest month a customer's late events can still change, given their closing day."""
    return month_of_day(day0 - grace_days)


def _oldest_month(w: Windows, i: int) -> int | None:
    """The first month the customer has usage or bills in, within the window (None: none yet): no
    month before a customer's first usage counts (the profile can come first)."""
    used = np.nonzero(w.monthly[i].any(axis=1))[0]
    return int(w.month0[i]) - int(used.max()) if len(used) else None


def _closed_months(w: Windows, i: int, first: int, end: int, cohort: CohortRule, counts: collections.Counter[str],
                   members: set[int], lost: set[int]) -> None:
    """Months `first` to `end` (excluded) have closed; those still in the window are counted."""
    # An exit can close months past the newest one with events (the exit itself moves no
    # bucket): they had none, so they count as empty rather than being left out.
    ahead = max(0, end - 1 - int(w.month0[i]))
    now = int(w.month0[i]) + ahead
    revenue = np.concatenate([np.zeros(ahead, np.int64), _revenue_fen(w, i)])  # index k = month (now - k)
    spend = revenue / SCALE["spend"]
    months = len(revenue)
    counts.update(_mid_high_months(w, i, first, end))
    for m in range(max(first, int(w.month0[i]) - N_MONTHS + 1), min(end, now + 1)):
        k, label = now - m, month_label(m)
        counts[f"{label}|billed"] += 1
        counts[f"{label}|revenue_fen"] += int(revenue[k])
        if k + cohort.months <= months and spend[k:k + cohort.months].sum() >= cohort.min_spend:
            members.add(m)
            counts[f"cohort|{label}|members"] += 1
        run = k + cohort.churn_months
        if run <= months and (spend[k:run] < cohort.churn_spend).all():
            for s in sorted(members - lost):
                if s <= m - cohort.churn_months:  # the whole run lies after the snapshot
                    lost.add(s)
                    counts[f"cohort|{month_label(s)}|lost|{label}"] += 1


def _revenue_fen(w: Windows, i: int) -> np.ndarray:
    """A customer's spend per month, bills and top-ups, as the features count it (a prepaid
    customer has no bills)."""
    return w.monthly[i, :, C["spend"]] + w.monthly[i, :, C["topup"]]


def _exit(w: Windows, i: int, event: ChurnEvent, m: int, counts: collections.Counter[str], members: set[int],
          lost: set[int]) -> None:
    """An exit, in the month `m` it happened in; the revenue lost is the spend of the month before."""
    k = int(w.month0[i]) - (m - 1)
    label = month_label(m)
    counts[f"{label}|exits|{'voluntary' if event.by_choice else 'involuntary'}"] += 1
    counts[f"{label}|reason|{event.reason_code if event.reason_code is not None else 'unknown'}"] += 1
    counts.update(_exit_profile(w, i, m))
    fen = int(_revenue_fen(w, i)[k]) if 0 <= k < N_MONTHS else 0  # k < 0: no events in that month
    if fen:
        counts[f"{label}|revenue_lost_fen"] += fen
    for s in sorted(members - lost):
        if s < m:
            lost.add(s)
            counts[f"cohort|{month_label(s)}|lost|{label}"] += 1


def _exit_profile(w: Windows, i: int, m: int) -> collections.Counter[str]:
    """The region and value segment of an exit in month `m`, from the months before it (as the
    features define the segments), whenever the usage behind them is read."""
    now = int(w.month0[i])
    spend, mou = _spend_and_mou(w, i)

    def month(back: int) -> tuple[float, float]:
        k = now - (m - back)
        return (float(spend[k]), float(mou[k])) if 0 <= k < N_MONTHS else (0.0, 0.0)

    if segments.mid_high(*month(1)) or segments.mid_high(*month(2)):
        segment = "mid_high_end"
    elif segments.potential(sum(month(b)[0] for b in (1, 2, 3)) / 3):
        segment = "potential_mid_high_end"
    else:
        segment = "mass"
    region = (w.text[i] or StateTail()).region
    label = month_label(m)
    return collections.Counter({f"{label}|segment|{segment}": 1,
                                f"{label}|region|{_UNSAFE.sub('_', region) or 'unknown'}": 1})


def _spend_and_mou(w: Windows, i: int) -> tuple[np.ndarray, np.ndarray]:
    return _revenue_fen(w, i) / SCALE["spend"], w.monthly[i, :, C["out_min"]] / SCALE["out_min"]


def _usage_decided(w: Windows, i: int, exit_month: int, oldest: int) -> collections.Counter[str]:
    """What a leaver's usage decides among the counters of their exit and of the months it
    closed (from `oldest` on): mid/high-end per month, the months they count as billed in, and
    the exit's segment and region.

    An exit is counted when it is read, and the leaver's usage of the months before it may
    still be on its way (another agent reads it). Months closed before the exit are final and
    the same whichever way they were counted, so when later usage changes these facts, the
    difference is counted (`_correct`), and the counters end as if all had been read first."""
    return (_exit_profile(w, i, exit_month) + _mid_high_months(w, i, oldest, exit_month)
            + _billed_months(w, i, oldest, exit_month))


def _billed_months(w: Windows, i: int, oldest: int, end: int) -> collections.Counter[str]:
    """The months up to a leaver's exit that `_closed_months` counts them billed in: from their
    first month of usage or bills, which usage read after the exit can move earlier."""
    first = _oldest_month(w, i)
    if first is None:
        return collections.Counter()
    now = int(w.month0[i]) + max(0, end - 1 - int(w.month0[i]))
    months = range(max(first, oldest, int(w.month0[i]) - N_MONTHS + 1), min(end, now + 1))
    return collections.Counter({f"{month_label(m)}|billed": 1 for m in months})


def _mid_high_months(w: Windows, i: int, first: int, end: int) -> collections.Counter[str]:
    """Mid/high-end membership and its revenue for months `first` to `end` (excluded) in the window,
    and whether the customer crossed the line that month (`mid_high_new`: mid/high-end, and a
    customer all the month before who was not; a newcomer's first month is pro rata), when the
    month before is in the window too."""
    counts: collections.Counter[str] = collections.Counter()
    now = int(w.month0[i])
    revenue = _revenue_fen(w, i)
    spend, mou = _spend_and_mou(w, i)
    oldest = _oldest_month(w, i)
    activated = int(w.rec["activation"][i])  # 0: the profile never said
    for m in range(max(first, now - N_MONTHS + 1), min(end, now + 1)):
        k = now - m
        if segments.mid_high(spend[k], mou[k]):
            counts[f"{month_label(m)}|mid_high"] += 1
            counts[f"{month_label(m)}|mid_high_revenue_fen"] += int(revenue[k])
            known = k + 1 < N_MONTHS and oldest is not None and oldest < m and activated <= first_day(m - 1)
            if known and not segments.mid_high(spend[k + 1], mou[k + 1]):
                counts[f"{month_label(m)}|mid_high_new"] += 1
    return counts


def _compared(key: str, first: str) -> bool:
    if "|mid_high_new" in key:
        return key[:7] > first
    return ("|mid_high" not in key and "|billed" not in key) or key[:7] >= first


def _correct(w: Windows, i: int, before: Before, b: int, zone: ZoneInfo, counts: collections.Counter[str]) -> None:
    """Count how a leaver's late usage changed `_usage_decided`, over the months in both windows
    (a month rolling out of the window is not a change); `b`: their row in `before`."""
    oldest = max(int(before.month0[b]), int(w.month0[i])) - N_MONTHS + 1
    first = month_label(oldest)
    exit_month = _local_month(int(before.exit_ts[b]), zone)
    # A crossing needs the month before it: at the window's first month only one of the windows has it.
    now = {k: v for k, v in _usage_decided(w, i, exit_month, oldest).items() if _compared(k, first)}
    then = {k: v for k, v in before.usage_decided[b].items() if _compared(k, first)}
    for key in now.keys() | then.keys():
        if now.get(key, 0) != then.get(key, 0):
            counts[key] += now.get(key, 0) - then.get(key, 0)
