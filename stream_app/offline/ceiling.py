"""What anyone could reach on the simulator: the ceiling and the oracle behind `evaluate`'s
`precision_ceiling`, `precision_oracle` and `precision_to_ceiling`.

Counting noise caps every learner: a customer who makes three calls a day in a good month makes
two or four on a given day, and a decline is seen only once it outgrows that. So the service's
precision is measured against what the same traffic allows:
- **ceiling**: an observer who knows each customer's true usual rates (what perfect history would
  give: calls, SMS and data sessions, customer-service calls, dropped-call and off-net shares) and
  counts the same traffic. Per snapshot: the calls, SMS and data sessions counted in the last 7, 14
  and 30 days and in the 30 before, each against those expected at the usual rates over those days
  (with the holidays, slumps and weekends that move the whole base), in Poisson standard deviations
  and as a ratio; the customer-service, dropped and off-net calls of the last 30 days against what
  the usual rates expect of them.
- **oracle**, for reference: the noise-free truth behind the traffic, which no one observes: how far
  the customer's own usage multiplier is below usual over the same windows, and the complaint,
  dropped-call and off-net drivers of the decline on the snapshot's day.
Each is learned by boosted trees and by logistic regression, refitted every four weeks of the
evaluation's test period on the labels due by then, and judged on its test weeks exactly as the
service is (`offline/evaluate.py`); the ceiling is also learned on its usage counts alone, since
its other features can fit the training weeks' noise. The best is the figure (chosen on the test
weeks, so it leans high, as a ceiling should). Churners who leave without a warning sign stay
invisible to both.
"""

from __future__ import annotations

import numpy as np

from stream_app.offline.simulator import Simulator

__all__ = ["WINDOWS", "truth_features"]

#: (days back from the snapshot's day where a window ends, where it starts): the last 7, 14, 30 days
#: and the 30 before.
WINDOWS = ((0, 7), (0, 14), (0, 30), (30, 60))


def truth_features(sim: Simulator, customers: np.ndarray, days: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Per snapshot (a customer id and an ordinal day): the ceiling's and the oracle's features, each
    as the sets of columns it is learned on."""
    if not sim.counts:
        raise ValueError("the simulator did not keep its counts (SimConfig.keep_counts)")
    row = {c: i for i, c in enumerate(sim.ids)}
    i = np.array([row[c] for c in customers])
    d = np.asarray(days) - sim.cfg.start.toordinal()  # the snapshot's day, included in its windows
    active = np.arange(sim.cfg.days)[None, :] < sim.exit_day[:, None]
    # Calls, SMS and data sessions all follow the customer's usage that day: their sum is what the
    # observer reads a decline from (counted apart, each is a noisier reading of the same).
    base = (sim.common * sim.weekday)[None, :] * active
    usual = ((sim.mo_rate + sim.mt_rate + sim.sms_rate)[:, None] * base
             + 2 * np.minimum(base, 3) * (sim.data_mb > 0)[:, None])
    activity = sum(sim.counts[k].astype(np.float64) for k in ("calls", "sms", "data"))
    observed = _observed(sim, activity, usual, active, i, d)
    return {"ceiling": [observed, observed[:, :2 * len(WINDOWS)]], "oracle": [_noise_free(sim, active, i, d)]}


def _window_sums(daily: np.ndarray, i: np.ndarray, d: np.ndarray, back: int, length: int) -> np.ndarray:
    """Per snapshot, `daily` summed over the days d - back - length + 1 .. d - back."""
    cumulative = np.concatenate([np.zeros((len(daily), 1)), np.cumsum(daily, axis=1)], axis=1)
    end = np.clip(d - back + 1, 0, daily.shape[1])
    start = np.clip(d - back - length + 1, 0, daily.shape[1])
    return cumulative[i, end] - cumulative[i, start]


def _observed(sim: Simulator, activity: np.ndarray, usual: np.ndarray, active: np.ndarray, i: np.ndarray,
              d: np.ndarray) -> np.ndarray:
    columns = []
    for back, last in WINDOWS:
        seen = _window_sums(activity, i, d, back, last - back)
        expected = _window_sums(usual, i, d, back, last - back)
        columns += [(seen - expected) / np.sqrt(expected + 1.0), seen / (expected + 1.0)]
    month_calls = _window_sums(sim.counts["calls"].astype(np.float64), i, d, 0, 30)
    usual_cs = _window_sums(sim.cs_rate[:, None] * active, i, d, 0, 30)  # the days there were, active
    for name, usual_share in (("cs", None), ("dropped", sim.dropped), ("offnet", sim.offnet)):
        seen = _window_sums(sim.counts[name].astype(np.float64), i, d, 0, 30)
        expected = usual_cs if usual_share is None else month_calls * usual_share[i]
        columns.append((seen - expected) / np.sqrt(expected + 1.0))
    return np.column_stack(columns)


def _noise_free(sim: Simulator, active: np.ndarray, i: np.ndarray, d: np.ndarray) -> np.ndarray:
    own = np.where(active, sim.mult / sim.common[None, :], 1.0)  # the customer's own multiplier: 1 is usual
    # (the weekend is applied to the day's traffic, not kept in `mult`)
    columns = [_window_sums(own, i, d, back, last - back) / (last - back) for back, last in WINDOWS]
    day = np.clip(d, 0, sim.cfg.days - 1)
    columns += [sim.cs_mult[i, day], sim.drop_mult[i, day], sim.offnet_extra[i, day]]
    return np.column_stack(columns)
