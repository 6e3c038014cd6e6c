"""Features derived from the windows: pure, vectorised over the customers of a batch.

Every feature is in `FEATURES` with its unit and meaning; rules and the model use these
names, and `churnwatch features` lists them. Months are calendar months in the
operator's zone: `m1` is the last complete month, `m2` the one before, `m0` the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping
from zoneinfo import ZoneInfo

import numpy as np

from stream_app.contracts import segments
from stream_app.contracts.attributes import matrix
from stream_app.contracts.calendar import first_days, local_days, months_of_days
from stream_app.features.by_age import DaysByAge, RingByAge, aligned_months
from stream_app.settings import Attribute
from stream_app.windows.state import N_MONTHS, SCALE, C, Windows

__all__ = ["ACTIVITY", "ACTIVITY_PERIODS", "FEATURES", "Feature", "derive", "month_counter", "own_zscore",
           "ratio_change", "shortfall_z"]


@dataclass(frozen=True)
class Feature:
    unit: str
    description: str


#: Periods (first and last day aged + 1) in which the customer's activity is compared with their
#: usual: five weeks from the daily buckets, then two four-week spans from the months. A decline
#: that runs for months shows as a shortfall in every period; a dip of a week or three
#: shows in the recent ones only. Counted in standard deviations, so that one week of a
#: customer with two records a day weighs less than one of a customer with twenty.
ACTIVITY_PERIODS = ((0, 7), (7, 14), (14, 21), (21, 28), (28, 35), (35, 63), (63, 91))
#: What activity counts: calls made and received, SMS sent and received, data sessions. Each follows
#: how much the customer uses the line; counted together, a decline outgrows chance sooner than in
#: calls alone (simulator, 3,000 customers: precision at the call budget 0.664 -> 0.691 on seed 7,
#: 0.573 -> 0.609 on seed 11).
ACTIVITY = ("out_calls", "in_calls", "sms_out", "sms_in", "data_sessions")
CALLS = ("out_calls", "in_calls")
_OUT = ("out_min",)
#: The ages the periods summed start or end at (`RingByAge`).
_AGES = {0, 14, 28, 30, 60, *(age for period in ACTIVITY_PERIODS for age in period)}

FEATURES: dict[str, Feature] = {
    "tenure_days": Feature("days", "days since activation"),
    "vip": Feature("tier", "VIP tier: 0 none, 1 silver, 2 gold, 3 diamond"),
    "arpu_m1": Feature("yuan", "spend (bills and top-ups) in the last complete month"),
    "arpu_m2": Feature("yuan", "spend in the month before that"),
    "arpu_3m": Feature("yuan", "average monthly spend over the last 3 complete months"),
    "arpu_prev_3m": Feature("yuan", "average monthly spend over the 3 complete months before those: with arpu_3m, "
                                    "a prepaid line's top-up rhythm, which one month cannot show"),
    "arpu_mom": Feature("ratio", "month-over-month change of spend, m1 vs m2 (-0.4 = down 40%)"),
    "mou_out_m0": Feature("minutes", "outgoing minutes so far this month"),
    "mou_out_m1": Feature("minutes", "outgoing minutes in the last complete month"),
    "mou_out_m2": Feature("minutes", "outgoing minutes in the month before that"),
    "mou_out_mom": Feature("ratio", "month-over-month change of outgoing minutes, m1 vs m2"),
    "mou_out_mom_z": Feature("sd", "mou_out_mom against the customer's own changes of the months before "
                                   "(m2 vs m3 ... m5 vs m6): `zscore(mou_out_mom)`; NaN with fewer than 3"),
    "arpu_mom_z": Feature("sd", "arpu_mom against the customer's own changes of the months before: "
                                "`zscore(arpu_mom)`; NaN with fewer than 3"),
    "arpu_cv_6m": Feature("ratio", "spend fluctuation: standard deviation / mean over the last 6 complete months"),
    "prepaid": Feature("flag", "a prepaid line (pays by top-ups) rather than a postpaid one (monthly bills)"),
    "postpaid_arpu_m1": Feature("yuan", "arpu_m1 of a postpaid line; 0 for prepaid, whose top-ups come in lumps, "
                                        "so that a month without one is not read as a fall"),
    "postpaid_arpu_mom": Feature("ratio", "arpu_mom of a postpaid line; 0 for prepaid"),
    "postpaid_arpu_cv_6m": Feature("ratio", "arpu_cv_6m of a postpaid line; 0 for prepaid"),
    "mou_out_30d": Feature("minutes", "outgoing minutes in the last 30 days"),
    "mou_out_prev_30d": Feature("minutes", "outgoing minutes in the 30 days before that (days the daily buckets "
                                           "no longer hold: from their months)"),
    "mou_out_30d_mom": Feature("ratio", "change of outgoing minutes, last 30 days vs the 30 before"),
    "mou_out_30d_vs_m2": Feature("ratio", "change of outgoing minutes, last 30 days vs month m2"),
    "mou_out_14d": Feature("minutes", "outgoing minutes in the last 14 days"),
    "mou_out_prev_14d": Feature("minutes", "outgoing minutes in the 14 days before that"),
    "mou_out_14d_trend": Feature("ratio", "change of outgoing minutes, last 14 days vs the 14 before"),
    "calls_out_30d": Feature("calls", "outgoing calls in the last 30 days"),
    "activity_usual": Feature("records/day", "calls made and received, SMS sent and received and data sessions a "
                                             "day in months m3-m6 (those with any): the customer's usual, from before "
                                             "the last quarter; 0 without such months. Calls alone for 7 to 8 months "
                                             "after a state is upgraded from a layout before 5, which kept no SMS or "
                                             "data sessions by day"),
    **{f"activity_z_d{a}_{b}": Feature("sd", f"calls, SMS and data sessions in days aged {a}-{b - 1} against the "
                                             f"usual (expected = `activity_usual` x {b - a}), in Poisson standard "
                                             "deviations: (seen - expected) / sqrt(expected + 1); 0 without a usual")
       for a, b in ACTIVITY_PERIODS},
    **{f"activity_vs_usual_d{a}_{b}": Feature("ratio", "the same activity against the same expected, as a change: "
                                                       "seen / expected - 1 (-0.4 = 40% less); 0 without a usual")
       for a, b in ACTIVITY_PERIODS},
    "cs_calls_30d": Feature("calls", "calls to customer service in the last 30 days"),
    "cs_calls_prev": Feature("calls", "calls to customer service in the last complete month"),
    "dropped_rate_30d": Feature("share", "dropped calls / all calls, last 30 days"),
    "offnet_share_30d": Feature("share", "off-net outgoing minutes / outgoing minutes, last 30 days"),
    "offnet_share_m2": Feature("share", "off-net share of outgoing minutes in month m2"),
    "roam_share_m1": Feature("share", "roaming minutes / all minutes in m1"),
    "ld_share_m1": Feature("share", "long-distance minutes / all minutes in m1"),
    "fwd_share_m1": Feature("share", "forwarded calls / incoming calls in m1"),
    "out_share_m1": Feature("share", "outgoing minutes / all minutes in m1"),
    "data_mb_m1": Feature("MB", "data volume in m1"),
    "data_mb_m2": Feature("MB", "data volume in m2"),
    "data_mom": Feature("ratio", "month-over-month change of data volume, m1 vs m2"),
    "contacts_m1": Feature("people", "distinct numbers called or texted in m1 (linear counting, about 7% error)"),
    "contacts_m2": Feature("people", "distinct numbers called or texted in m2"),
    "contacts_mom": Feature("ratio", "change of distinct contacts, m1 vs m2 (a shrinking circle is negative)"),
    "days_since_active": Feature("days", "days since the last voice, SMS or data record"),
    "mid_high_end": Feature("flag", "spend >= 120 yuan and outgoing minutes >= 100 in m1 or in m2 (DOMAIN.md)"),
    "potential_mid_high_end": Feature("flag", "3-month average spend between 100 and 120 yuan"),
    "revenue_churn": Feature("flag", "spend under 50 yuan in each of the last 3 complete months, after a month at 50 or more"),
    "dormant": Feature("flag", "no usage for 30 days or more"),
    "exited": Feature("flag", "disconnected or ported out"),
    "churn_score": Feature("probability", "the model's churn probability within the horizon; NaN (never "
                                          "matches) until a model is published"),
    "lifecycle": Feature("stage", "1 A acquisition (< 90 days), 2 B build-up (< 1 year), 3 C mature, 4 D decline "
                                  "(minutes or spend down 30% or more), 5 E exit"),
}



def ratio_change(now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """`now / before - 1`, and 0 where there is nothing to compare with.

    >>> ratio_change(np.array([50.0, 10.0]), np.array([100.0, 0.0])).tolist()
    [-0.5, 0.0]
    """
    out = np.zeros(np.broadcast(now, before).shape)
    np.divide(now, before, out=out, where=before > 0)
    return np.where(before > 0, out - 1.0, 0.0)


def own_zscore(months: list[np.ndarray], floor: float = 0.05, min_past: int = 3) -> np.ndarray:
    """How unusual the last month-over-month change (m1 vs m2) is for each customer: its distance
    from the mean of their earlier changes (m2 vs m3 ... ), in their own standard deviations.
    `months[a]` holds the values of month age `a`. The spread is at least `floor`, so that a
    customer whose usage never moved is not infinitely surprised; NaN where fewer than
    `min_past` earlier changes are known (too little history to judge).

    >>> steady = [np.array([v]) for v in (0, 60, 100, 100, 100, 100, 100)]
    >>> swinging = [np.array([v]) for v in (0, 60, 100, 50, 100, 50, 100)]
    >>> round(float(own_zscore(steady)[0]), 1), round(float(own_zscore(swinging)[0]), 1)
    (-8.0, -0.9)
    """
    now = ratio_change(months[1], months[2])
    ages = range(2, len(months) - 1)
    past = np.stack([ratio_change(months[a], months[a + 1]) for a in ages], axis=1)
    known = np.stack([months[a + 1] > 0 for a in ages], axis=1)
    n = known.sum(axis=1)
    mean = (past * known).sum(axis=1) / np.maximum(n, 1)
    spread = np.sqrt((((past - mean[:, None]) ** 2) * known).sum(axis=1) / np.maximum(n, 1))
    return np.where(n >= min_past, (now - mean) / np.maximum(spread, floor), np.nan)


def _share(part: np.ndarray, whole: np.ndarray) -> np.ndarray:
    out = np.zeros_like(whole, dtype=np.float64)
    np.divide(part, whole, out=out, where=whole > 0)
    return out


def month_counter(w: Windows, now_day: np.ndarray, counter: str, age: int) -> np.ndarray:
    """A counter of the month `age` months before each customer's `now_day` (0: its month), in its unit."""
    return _month(w, months_of_days(now_day), counter, age)


def _month(w: Windows, now_month: np.ndarray, counter: str, age: int) -> np.ndarray:
    """A counter in the month `age` months before `now_month` (0 = this month), in its unit."""
    idx = age - (now_month - w.month0)
    ok = (idx >= 0) & (idx < N_MONTHS) & (w.month0 > 0)
    rows = np.arange(len(idx))
    return np.where(ok, w.monthly[rows, np.clip(idx, 0, N_MONTHS - 1), C[counter]], 0) / SCALE.get(counter, 1.0)


def _activity(w: Windows, now_month: np.ndarray, months: np.ndarray, days: DaysByAge) -> dict[str, np.ndarray]:
    """`activity_usual` and its periods (`_shortfalls`). A state converted from a layout that kept
    no SMS or data sessions by day (`messages_since`) counts calls alone, both in its usual and in
    its periods, until every month of its usual kept them: counted in only some, a steady
    customer would look like a decline, then like a rise."""
    since = w.rec["messages_since"].astype(np.int64)
    kept = (since == 0) | (months_of_days(np.maximum(since, 1)) < now_month - 6)
    full = _shortfalls(months, days, ACTIVITY)
    if kept.all():
        return full
    calls = _shortfalls(months, days, CALLS)
    return {name: np.where(kept, full[name], calls[name]) for name in full}


def _shortfalls(months: np.ndarray, days: DaysByAge, counters: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`activity_usual` (`counters` a day over months m3-m6, those with any; `months` from
    `aligned_months`) and, for every period of `ACTIVITY_PERIODS`, `activity_z_d<a>_<b>` and
    `activity_vs_usual_d<a>_<b>`."""
    usual_months = sum(months[:, C[c], 3:7] / SCALE.get(c, 1.0) for c in counters)
    usual = _share(usual_months.sum(axis=1), (usual_months > 0).sum(axis=1) * 30.44)
    out = {"activity_usual": usual}
    for a, b in ACTIVITY_PERIODS:
        expected = usual * (b - a)
        seen = days.total(counters, a, b)
        change = out[f"activity_vs_usual_d{a}_{b}"] = ratio_change(seen, expected)
        out[f"activity_z_d{a}_{b}"] = shortfall_z(change, expected)
    return out


def shortfall_z(change: np.ndarray, expected: np.ndarray, shift: np.ndarray | float = 0.0) -> np.ndarray:
    """Counts against the expected in Poisson standard deviations, from their change
    (seen / expected - 1), with the expected first moved by `shift` as a change (a segment's
    median, model.py): (seen - e') / sqrt(e' + 1) for e' = expected x (1 + shift); 0 without
    an expected."""
    moved = expected * (1 + shift)
    return np.where(expected > 0, (change - shift) * expected / np.sqrt(moved + 1.0), 0.0)


def _lifecycle(tenure: np.ndarray, exited: np.ndarray, declining: np.ndarray) -> np.ndarray:
    """A acquisition (first 90 days) -> B build-up (first year) -> C mature -> D decline -> E exit, as 1..5."""
    stage = np.where(tenure < 90, 1, np.where(tenure < 365, 2, 3))
    stage = np.where(declining & (tenure >= 90), 4, stage)
    return np.where(exited, 5, stage).astype(np.float64)


def derive(w: Windows, now_day: np.ndarray, zone: ZoneInfo,
           attributes: Mapping[str, Attribute] | None = None, day_over: bool = True) -> dict[str, np.ndarray]:
    """Every feature in `FEATURES` but `churn_score` (the pipeline adds it) for every customer of
    `w`, as of each one's event-time day `now_day`; days are the operator's (`zone`). With the
    declared `attributes`, their model columns too (contracts/attributes.py).

    `day_over` False: `now_day` is still under way (a live judgement), so the usage that can fall
    (minutes and activity over the recent days, against the days or the usual before) is measured
    over the whole days before it. Part of a day read as a day is a fall: judged as their events
    arrive in time order, customers' first calls of the morning made decliners of them. The model
    and the segment baselines learn whole days (a snapshot is taken once its day is over). Counts
    that only rise (complaints, dropped and off-net calls) keep today."""
    return _usage(w, now_day, zone, day_over) | (matrix([t and t.attributes for t in w.text], now_day, attributes)
                                                 if attributes else {})


def _usage(w: Windows, now_day: np.ndarray, zone: ZoneInfo, day_over: bool) -> dict[str, np.ndarray]:
    now_month = months_of_days(now_day)
    rec = w.rec
    months = aligned_months(w, now_month)

    def month(counter: str, age: int) -> np.ndarray:
        return months[:, C[counter], age] / SCALE.get(counter, 1.0)

    spend = [month("spend", a) + month("topup", a) for a in range(7)]
    mou = [month("out_min", a) for a in range(N_MONTHS)]
    in_m1 = month("in_min", 1)
    done = now_day if day_over else now_day - 1  # the last whole day
    done_month = now_month if day_over else months_of_days(done)
    done_months = months if np.array_equal(done_month, now_month) else aligned_months(w, done_month)
    days = DaysByAge(w, done, _AGES)
    today = days.ring if day_over else RingByAge(w, now_day, (0, 30))

    def today_on(counter: str) -> np.ndarray:  # counts that only rise: the 30 days up to today
        return today.total(counter, 0, 30)

    mou_14, mou_prev_14 = days.total(_OUT, 0, 14), days.total(_OUT, 14, 28)
    calls_30 = today_on("out_calls") + today_on("in_calls")
    out_30 = days.total(_OUT, 0, 30)
    out_prev_30 = days.total(_OUT, 30, 60)
    last_use_day = local_days(rec["last_seen"][:, :3].max(axis=1), zone)
    exit_day = local_days(rec["exit_ts"], zone)
    exited = (exit_day > 0) & (exit_day <= now_day)
    activation = rec["activation"].astype(np.float64)
    tenure = np.where(activation > 0, now_day - activation, 0.0)
    arpu_3m = (spend[1] + spend[2] + spend[3]) / 3.0
    six = np.stack(spend[1:7], axis=1)
    contacts = [month("contacts", a) for a in (1, 2)]
    data = [month("data_mb", a) for a in (1, 2)]
    mou_mom = ratio_change(mou[1], mou[2])
    mou_30_mom = ratio_change(out_30, out_prev_30)
    arpu_mom = ratio_change(spend[1], spend[2])
    history, low = w.month0 > 0, segments.REVENUE_CHURN_SPEND
    postpaid = rec["prepaid"] == 0
    arpu_cv = _share(six.std(axis=1), six.mean(axis=1))
    return {
        "tenure_days": tenure,
        "vip": rec["vip"].astype(np.float64),
        "arpu_m1": spend[1],
        "arpu_m2": spend[2],
        "arpu_3m": arpu_3m,
        "arpu_prev_3m": (spend[4] + spend[5] + spend[6]) / 3.0,
        "arpu_mom": arpu_mom,
        "arpu_cv_6m": arpu_cv,
        "prepaid": (~postpaid).astype(np.float64),
        "postpaid_arpu_m1": np.where(postpaid, spend[1], 0.0),
        "postpaid_arpu_mom": np.where(postpaid, arpu_mom, 0.0),
        "postpaid_arpu_cv_6m": np.where(postpaid, arpu_cv, 0.0),
        # A snapshot is taken after its day: the month's days after it are not its own.
        "mou_out_m0": days.total(_OUT, 0, done - first_days(now_month) + 1) if day_over else mou[0],
        "mou_out_m1": mou[1],
        "mou_out_m2": mou[2],
        "mou_out_mom": mou_mom,
        "mou_out_mom_z": own_zscore(mou),
        "arpu_mom_z": own_zscore(spend),
        "mou_out_30d": out_30,
        "mou_out_prev_30d": out_prev_30,
        "mou_out_30d_mom": mou_30_mom,
        "mou_out_30d_vs_m2": ratio_change(out_30 * 30.4 / 30, done_months[:, C["out_min"], 2] / SCALE["out_min"]),
        "mou_out_14d": mou_14,
        "mou_out_prev_14d": mou_prev_14,
        "mou_out_14d_trend": ratio_change(mou_14, mou_prev_14),
        "calls_out_30d": days.total(("out_calls",), 0, 30),
        **_activity(w, done_month, done_months, days),
        "cs_calls_30d": today_on("cs_calls"),
        "cs_calls_prev": month("cs_calls", 1),
        "dropped_rate_30d": _share(today_on("dropped_calls"), calls_30),
        "offnet_share_30d": _share(today_on("offnet_min"), today_on("out_min")),
        "offnet_share_m2": _share(month("offnet_min", 2), mou[2]),
        "roam_share_m1": _share(month("roam_min", 1), mou[1] + in_m1),
        "ld_share_m1": _share(month("ld_min", 1), mou[1] + in_m1),
        "fwd_share_m1": _share(month("fwd_calls", 1), month("in_calls", 1)),
        "out_share_m1": _share(mou[1], mou[1] + in_m1),
        "data_mb_m1": data[0],
        "data_mb_m2": data[1],
        "data_mom": ratio_change(data[0], data[1]),
        "contacts_m1": contacts[0],
        "contacts_m2": contacts[1],
        "contacts_mom": ratio_change(contacts[0], contacts[1]),
        "days_since_active": np.where(last_use_day > 0, np.maximum(now_day - last_use_day, 0), 0.0),
        "mid_high_end": (segments.mid_high(spend[1], mou[1]) | segments.mid_high(spend[2], mou[2])).astype(np.float64),
        "potential_mid_high_end": segments.potential(arpu_3m).astype(np.float64),
        "revenue_churn": (history & (spend[1] < low) & (spend[2] < low) & (spend[3] < low) & (spend[4] >= low)
                          ).astype(np.float64),
        "dormant": ((last_use_day > 0) & (now_day - last_use_day >= 30)).astype(np.float64),
        "exited": exited.astype(np.float64),
        "lifecycle": _lifecycle(tenure, exited, (mou_mom <= -0.3) | (mou_30_mom <= -0.3) | (arpu_mom <= -0.3)),
    }
