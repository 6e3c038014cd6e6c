"""`churnwatch inspect CUSTOMER`: a customer's windows and features, for support and for
managers checking why someone was flagged."""

from __future__ import annotations

from datetime import date
from zoneinfo import ZoneInfo

import numpy as np

from stream_app.features.derive import FEATURES, derive
from stream_app.windows.state import COUNTERS, DAILY, LAST_SEEN_KINDS, SCALE, VIP_TIERS, Windows

__all__ = ["describe", "render"]


def describe(customer: str, raw: bytes, zone: ZoneInfo, as_of: date | None = None) -> dict:
    """Everything the service knows about one customer, as plain data (days in the operator's `zone`)."""
    w = Windows.load([customer], [raw])
    rec = w.rec[0]
    day0, month0 = int(rec["day0"]), int(rec["month0"])
    now = np.array([as_of.toordinal() if as_of else max(day0, 1)])
    # Without `as_of`, as the worker judges the newest day: still under way (`derive`).
    features = {name: round(float(v[0]), 4) for name, v in derive(w, now, zone, day_over=as_of is not None).items()}
    months = {}
    for age in range(w.monthly.shape[1]):
        index = month0 - age
        label = f"{index // 12:04d}-{index % 12 + 1:02d}" if month0 else f"m-{age}"
        months[label] = {c: float(w.monthly[0, age, j]) / SCALE.get(c, 1.0) for j, c in enumerate(COUNTERS)}
    days = {}
    for age in range(w.daily.shape[1]):
        if day0 and w.daily[0, age].any():
            days[date.fromordinal(day0 - age).isoformat()] = {
                c: float(w.daily[0, age, j]) / SCALE.get(c, 1.0) for j, c in enumerate(DAILY)}
    text = w.text[0]
    return {
        "customer_id": customer,
        "as_of": date.fromordinal(int(now[0])).isoformat() if now[0] > 1 else None,
        "profile": {"activation": date.fromordinal(int(rec["activation"])).isoformat() if rec["activation"] else None,
                    "vip_tier": VIP_TIERS[int(rec["vip"])], "prepaid": bool(rec["prepaid"]), "age": int(rec["age"]),
                    "plan": text.plan if text else None, "region": text.region if text else None},
        "last_seen": {k: int(v) for k, v in zip(LAST_SEEN_KINDS, rec["last_seen"])},
        "offsets": {"partition": rec["part"].tolist(), "offset": rec["offset"].tolist()},
        "exit": {"ts": int(rec["exit_ts"]), "reason_code": int(rec["exit_reason"])} if rec["exit_ts"] else None,
        "call_outcome": {"result": text.outcome, "ts": text.outcome_ts} if text and text.outcome else None,
        "features": features,
        "months": months,
        "days": days,
    }


def render(d: dict) -> str:
    """A terminal view of `describe`'s output."""
    lines = [f"customer {d['customer_id']} as of {d['as_of']}", f"profile  {d['profile']}",
             f"exit     {d['exit']}", f"outcome  {d['call_outcome']}", "", "features:"]
    lines += [f"  {name:24} {value:>12,.3f}  {FEATURES[name].unit}" for name, value in d["features"].items()]
    shown = ("out_min", "out_calls", "in_min", "sms_out", "data_mb", "spend", "topup", "cs_calls",
             "dropped_calls", "offnet_min", "contacts")
    lines += ["", "months:   " + "".join(f"{c:>11}" for c in shown)]
    lines += [f"  {m:8}" + "".join(f"{v[c]:>11,.1f}" for c in shown) for m, v in d["months"].items()]
    lines += ["", "days:     " + "".join(f"{c:>11}" for c in DAILY)]
    lines += [f"  {day}" + "".join(f"{v[c]:>11,.1f}" for c in DAILY) for day, v in d["days"].items()]
    return "\n".join(lines)
