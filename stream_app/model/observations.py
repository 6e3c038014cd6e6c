"""What a batch tells the model and the reports, besides alerts: daily feature snapshots of
the customers it touched, the customers who churned in it, and those who came back."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import numpy as np

from stream_app.contracts.calendar import local_days
from stream_app.contracts.events import ChurnEvent, Snapshot, WonBack
from stream_app.features.derive import month_counter
from stream_app.model.scoring import Scorer
from stream_app.rules.evaluate import Evaluation
from stream_app.windows.lifecycle import Moves, Return
from stream_app.windows.state import N_DAYS, REVENUE_CHURN_FLAG, StateTail, Windows

__all__ = ["snapshot_days", "snapshots", "churn_events", "spent_before", "value_segment", "won_back"]



def value_segment(features: dict[str, np.ndarray], i: int) -> str:
    if features["mid_high_end"][i]:
        return "mid_high_end"
    return "potential_mid_high_end" if features["potential_mid_high_end"][i] else "mass"


def snapshot_days(w: Windows, rows: list[int], day_before: np.ndarray, every_days: int) -> tuple[list[int], np.ndarray]:
    """Which rows to snapshot and as of which days. A day is snapshotted once it is over: the
    last active day of each period the customer's usage has moved past (a batch may span
    several), so that snapshots do not depend on where batches end. A customer's very last
    day of usage is never over in this sense, so a leaver's last day is not snapshotted;
    their earlier days are, even when the exit was read first (billing can run ahead). Nor is a
    day the daily buckets no longer hold (a batch that spans their length, or a customer back after
    as long): its month's count would mix in the days that came after it."""
    picks, days = [], []
    at, day0 = np.asarray(rows, np.int64), w.day0
    moved = at[(day_before[at] > 0) & (day0[at] > day_before[at])]  # in a batch of hours, the few whose day moved
    for i, before, now in zip(moved.tolist(), day_before[moved].tolist(), day0[moved].tolist()):
        if now == before + 1:  # most often the day after: no day between to look up
            if before // every_days < now // every_days:
                picks.append(i)
                days.append(before)
            continue
        active = [before] + [d for d in range(before + 1, now) if now - d < N_DAYS and w.daily[i, now - d].any()]
        ends = active[1:] + [now]
        if now - active[0] >= N_DAYS:
            active, ends = active[1:], ends[1:]
        wanted = [d for d, nxt in zip(active, ends) if d // every_days < nxt // every_days]
        picks += [i] * len(wanted)
        days += wanted
    return picks, np.array(days, np.int64)


def snapshots(sub: Windows, x: np.ndarray, features: dict[str, np.ndarray], rules: Evaluation,
              days: np.ndarray, scorer: Scorer | None, exits_known: list[int], digest: int = 0) -> list[Snapshot]:
    """The snapshots of `sub` (from `snapshot_days`), but not of those already gone: after an exit
    or in revenue churn there is nothing left to predict. `digest`: which features `x` holds."""
    version = scorer.version if scorer else None
    kept = np.nonzero(~(features["exited"].astype(bool) | features["revenue_churn"].astype(bool)))[0]
    # Whole columns to lists once: a numpy scalar read per field and snapshot cost more than the rest.
    scores = [None if s != s else round(s, 6) for s in features["churn_score"][kept].tolist()]  # s != s: NaN
    columns = zip(kept.tolist(), days[kept].tolist(), x[kept].tolist(), scores, rules.level[kept].tolist(),
                  rules.score[kept].astype(float).tolist())
    return [Snapshot(sub.customers[k], day, xs, s, version, level, rules_score, exits_known[k], digest)
            for k, day, xs, s, level, rules_score in columns]


def churn_events(w: Windows, features: dict[str, np.ndarray], rows: list[int], moves: Moves,
                 now_day: np.ndarray, zone: ZoneInfo) -> tuple[list[ChurnEvent], dict[int, bool]]:
    """The batch's exits (`moves.exits`, from `apply`; on the operator's day, `zone`), and revenue churn
    when it starts (reported once per episode); and, per row whose episode began or ended, whether
    one is now reported (for `Windows.mark_revenue_churn`)."""
    rec, exits = w.rec, moves.exits
    day = np.zeros(len(w.customers), np.int64)
    day[list(exits)] = local_days(np.array([e.ts for e in exits.values()], np.int64), zone)
    out, reported_now = [], {}
    # Only rows that left, or whose revenue churn began or ended, have anything to say.
    at = np.asarray(rows, np.int64)
    on, reported = features["revenue_churn"][at] > 0, (rec["flags"][at] & REVENUE_CHURN_FLAG) > 0
    news = set(at[(on & ~reported & (features["exited"][at] == 0)) | (~on & reported)].tolist()) | set(exits)
    for i in rows:
        if i not in news:
            continue
        tail = w.text[i]
        region = tail.region if tail else ""
        activated = int(rec["activation"][i])

        def tenure(day: int) -> int:
            return max(day - activated, 0) if activated else 0

        if i in exits:
            e = exits[i]
            out.append(ChurnEvent(w.customers[i], int(day[i]), e.kind, e.reason_code,  # type: ignore[arg-type]
                                  None if e.reason_code is None else e.reason_code < 300, region,
                                  value_segment(features, i), spent_before(*moves.as_at_exit(w, i), int(day[i])),
                                  tenure(int(day[i]))))
        reported = bool(rec["flags"][i] & REVENUE_CHURN_FLAG)
        if features["revenue_churn"][i] and not reported and not features["exited"][i]:
            reported_now[i] = True
            before = round(float(features["arpu_prev_3m"][i]), 2)  # their spend before the cut, not after
            out.append(ChurnEvent(w.customers[i], int(now_day[i]), "revenue", None, None, region,
                                  value_segment(features, i), before, tenure(int(now_day[i]))))
        elif not features["revenue_churn"][i] and reported:
            reported_now[i] = False
    return out, reported_now


def spent_before(w: Windows, i: int, day: int) -> float:
    """What a leaver spent in the month before the one of `day` they left on, however far past it
    the batch has read."""
    sub, when = w.subset([i]), np.array([day], np.int64)
    return round(float(month_counter(sub, when, "spend", 1)[0] + month_counter(sub, when, "topup", 1)[0]), 2)


def won_back(w: Windows, features: dict[str, np.ndarray], returns: dict[int, Return], zone: ZoneInfo) -> list[WonBack]:
    """The batch's returns (`returns`, from `apply`): on the same number, or on a new line."""
    out = []
    for i, r in sorted(returns.items()):
        tail = w.text[i] or StateTail()
        day = int(local_days(np.array([r.ts]), zone)[0])
        left = int(local_days(np.array([r.left_ts]), zone)[0]) if r.left_ts else None
        out.append(WonBack(w.customers[i], day, r.previous, left, tail.region, value_segment(features, i)))
    return out
