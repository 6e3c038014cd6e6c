"""The growth list (the lifecycle's build-up stage): potential mid/high-end customers (3-month
average spend between 100 and 120 yuan, DOMAIN.md) whose spend is rising, ranked by how soon
they reach the mid/high-end line at their pace, each with an upsell from the growth table
(alert_rules/growth.yaml).

It is built from the state the workers keep (every customer's monthly windows in Redis,
windows/scan.py), with the features the rules see (features/derive.py), all judged on the
list's day. A customer is on it when, over their last three complete months:
- their spend averages 100 to 120 yuan, and they are not mid/high-end already (in either of
  the last two months) nor gone;
- they have been with us six months at least (`SETTLED_DAYS`), the months the rule reads: a
  newcomer's first months, or those of a customer back on their number, ramp up from nothing;
- they are postpaid: a prepaid line's spend is its top-ups, which come in lumps of 30 to 100
  yuan, and three months of them show no trend to trust (on the simulator, every prepaid line
  that looked rising was a steady one);
- their spend rose, by at least the table's `min_monthly_growth` of that average a month (the
  least-squares slope of the three months: a single month's step is as often a holiday, a short
  February or a one-off charge), and the 3-month average stands that much a month above the
  three months before when those are known (a customer back from a dip rises too, to where
  they were);
- and so did their usage: outgoing minutes of the last 30 days against the 30 before (days, so
  that month lengths do not count), or data last month, by that share at least;
- at that pace, and at last month's pace of their outgoing minutes, a month's spend reaches 120
  yuan and its minutes 100 (both make a mid/high-end month) in a finite time: `months_to_line`.
The nearest first; ties go to the higher spend.
"""

from __future__ import annotations

from datetime import date
from typing import Iterable, NamedTuple, Sequence
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from stream_app.contracts.calendar import month_label, month_of_day
from stream_app.contracts.lists import GrowthEntry
from stream_app.contracts.segments import MID_HIGH_MOU, MID_HIGH_SPEND
from stream_app.features.derive import derive
from stream_app.rules.growth_table import GrowthTable
from stream_app.windows.state import VIP_TIERS, Windows

__all__ = ["Found", "SETTLED_DAYS", "growth_candidates", "ranked", "rising", "spend_slope"]

SETTLED_DAYS = 183  # tenure before which a customer's spend has no six months to be judged on


class Found(NamedTuple):
    entries: list[GrowthEntry]  # ranks still to give (`ranked`)
    unreadable: int  # states another version wrote: left out
    billed: int  # postpaid customers with spend in the last complete month: none, and its bills are not read yet


def growth_candidates(customers: list[str], raws: Sequence[bytes | None], day: date, zone: ZoneInfo,
                      table: GrowthTable) -> Found:
    """The customers of one chunk of states who are on the list on `day`."""
    w = Windows.load(customers, raws)
    f = derive(w, np.full(len(customers), day.toordinal(), np.int64), zone)
    m1, avg, slope = f["arpu_m1"], f["arpu_3m"], spend_slope(f)
    mou_pace = f["mou_out_m1"] - f["mou_out_m2"]
    with np.errstate(divide="ignore", invalid="ignore"):
        spend_months = np.where(m1 >= MID_HIGH_SPEND, 0.0, (MID_HIGH_SPEND - m1) / slope)
        mou_months = np.where(f["mou_out_m1"] >= MID_HIGH_MOU, 0.0,
                              np.where(mou_pace > 0, (MID_HIGH_MOU - f["mou_out_m1"]) / mou_pace, np.inf))
    months = np.maximum(spend_months, mou_months)
    on = rising(f, table.min_monthly_growth) & (f["potential_mid_high_end"] > 0) & (f["mid_high_end"] == 0) \
        & np.isfinite(months)
    driver = np.where(f["data_mom"] > f["mou_out_mom"], "data", "voice")
    month = month_label(month_of_day(day.toordinal()) - 1)
    entries = []
    for i in np.nonzero(on)[0]:  # an unreadable state loads empty: never on the list
        tier = VIP_TIERS[int(w.rec["vip"][i])]
        entries.append(GrowthEntry(
            rank=1, day=day.isoformat(), month=month, customer_id=customers[i], arpu_3m=round(float(avg[i]), 2),
            arpu_m1=round(float(m1[i]), 2), growth=round(float(slope[i]), 2),
            mou_out_m1=round(float(f["mou_out_m1"][i]), 1),
            months_to_line=round(float(months[i]), 2), driver=str(driver[i]),  # type: ignore[arg-type]
            upsell=table.upsell_for(str(driver[i]), tier), vip_tier=tier,
            region=w.text[i].region if w.text[i] else "", tenure_days=int(f["tenure_days"][i])))
    billed = int(((f["prepaid"] == 0) & (m1 > 0)).sum())
    return Found(entries, len(w.quarantined), billed)


def spend_slope(f: dict[str, np.ndarray]) -> np.ndarray:
    """Spend gained per month over the last three complete months: the least-squares slope of three
    equally spaced points is half the difference of the outer two."""
    m3 = 3 * f["arpu_3m"] - f["arpu_m1"] - f["arpu_m2"]
    return (f["arpu_m1"] - m3) / 2


def rising(f: dict[str, np.ndarray], min_growth: float) -> np.ndarray:
    """Postpaid customers still with us whose spend rose over the last three complete months by
    `min_growth` of its average a month at least, whose 3-month average is that much a month above
    the three months before (when those are known), and whose outgoing minutes of the last 30 days
    (against the 30 before) or data of the last month rose by that share."""
    avg = f["arpu_3m"]
    m3 = 3 * avg - f["arpu_m1"] - f["arpu_m2"]
    usage = np.maximum(f["mou_out_30d_mom"], f["data_mom"])
    settled = f["tenure_days"] >= SETTLED_DAYS  # a newcomer's first months ramp up from nothing: not growth
    return (f["exited"] == 0) & (f["prepaid"] == 0) & settled & (m3 > 0) & (spend_slope(f) >= min_growth * avg) \
        & (avg >= (1 + 3 * min_growth) * f["arpu_prev_3m"]) & (usage > 0) & (usage >= min_growth)


def ranked(entries: Iterable[GrowthEntry]) -> list[GrowthEntry]:
    """The list in order: nearest the line first, then the higher spend, then a fixed order."""
    order = sorted(entries, key=lambda e: (e.months_to_line, -e.arpu_3m, e.customer_id))
    return [msgspec.structs.replace(e, rank=rank) for rank, e in enumerate(order, 1)]
