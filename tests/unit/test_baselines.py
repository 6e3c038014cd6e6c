"""Live segment baselines: histograms from snapshots, quantiles with their guard rails."""

from __future__ import annotations

import collections
import math
from datetime import date, timedelta

import numpy as np
import pytest

from stream_app.baselines import BaselineRule, Baselines, column_name, increments, parse_call

DAY = date(2026, 10, 8)


def features(mom: list[float], mid_high: list[int] | None = None) -> dict[str, np.ndarray]:
    n = len(mom)
    return {"mou_out_mom": np.array(mom), "arpu_mom": np.zeros(n), "mou_out_m2": np.full(n, 300.0),
            "arpu_m2": np.full(n, 150.0), "mid_high_end": np.array(mid_high or [1] * n, np.float64),
            "potential_mid_high_end": np.zeros(n)}


def counts_for(days: dict[date, list[float]]) -> dict[str, int]:
    """Report counters as the workers would leave them: one snapshot per customer and day."""
    total: collections.Counter[str] = collections.Counter()
    for day, moms in days.items():
        ids = [f"c{k}" for k in range(len(moms))]
        for per_customer in increments(ids, features(moms), np.full(len(moms), day.toordinal())).values():
            total.update(per_customer)
    return dict(total)


def test_quantiles_follow_the_segment_and_a_whole_base_drop_moves_them() -> None:
    rng = np.random.default_rng(1)
    normal = list(rng.normal(0.0, 0.1, 1000))
    holiday = list(rng.normal(-0.4, 0.1, 1000))  # everyone down 40%
    rule = BaselineRule(window_days=1, min_customers=200, max_step=1.0)
    before = Baselines.from_counts(counts_for({DAY: normal}), rule)
    after = Baselines.from_counts(counts_for({DAY: normal, DAY + timedelta(days=1): holiday}), rule)
    p10, p50 = before.values[("mid_high_end", "mou_out_mom")][10], before.values[("mid_high_end", "mou_out_mom")][50]
    assert p10 == pytest.approx(np.percentile(normal, 10), abs=0.03) and p50 == pytest.approx(0.0, abs=0.03)
    assert after.values[("mid_high_end", "mou_out_mom")][50] == pytest.approx(-0.4, abs=0.03)
    assert after.day == DAY + timedelta(days=1) and after.samples[("mid_high_end", "mou_out_mom")] == 1000


def test_too_few_customers_give_nan_and_a_quantile_moves_at_most_max_step_a_day() -> None:
    small = Baselines.from_counts(counts_for({DAY: [0.0] * 50}), BaselineRule(min_customers=200))
    assert math.isnan(small.values[("mid_high_end", "mou_out_mom")][10])
    days = {DAY: [0.0] * 300, DAY + timedelta(days=1): [-0.5] * 300}
    capped = Baselines.from_counts(counts_for(days), BaselineRule(window_days=1, min_customers=200, max_step=0.05))
    assert capped.values[("mid_high_end", "mou_out_mom")][50] == pytest.approx(0.025 - 0.05)


def test_each_customer_gets_the_baseline_of_their_segment() -> None:
    counts = counts_for({DAY: [-0.2] * 300})  # mid/high-end only: the mass segment has no baseline
    columns = Baselines.from_counts(counts).columns(features([0.0, 0.0], mid_high=[1, 0]))
    p50 = columns[column_name(50, "mou_out_mom")]
    assert p50[0] == pytest.approx(-0.175) and math.isnan(p50[1])


def test_a_change_without_a_month_before_is_not_counted() -> None:
    f = features([-1.0, 0.5])
    f["mou_out_m2"] = np.array([0.0, 300.0])
    got = increments(["a", "b"], f, np.full(2, DAY.toordinal()))
    assert not any("mou_out_mom" in k for k in got.get("a", {})) and any("mou_out_mom" in k for k in got["b"])


def test_only_known_quantiles_and_features_are_allowed() -> None:
    assert parse_call("segment_p10", ["mou_out_mom"]) == "segment_p10(mou_out_mom)"
    for function, args in (("segment_p11", ["mou_out_mom"]), ("segment_p10", ["tenure_days"]),
                           ("segment_p10", ["mou_out_mom", "arpu_mom"])):
        with pytest.raises(ValueError, match="segment_pQ"):
            parse_call(function, args)
