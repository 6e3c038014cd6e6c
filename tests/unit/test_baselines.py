"""Live segment baselines: histograms from snapshots, quantiles with their guard rails."""

from __future__ import annotations

import collections
import math
from datetime import date, timedelta

import numpy as np
import pytest

from stream_app.features.baselines import BaselineRule, Baselines, column_name, increments, parse_call
from tests.factories import snapshot_features

DAY = date(2026, 10, 8)  # its snapshots judge September (m1)
NEXT = date(2026, 11, 2)  # judges October


def features(mom: list[float], mid_high: list[int] | None = None, rolling: list[float] | None = None) -> dict[str, np.ndarray]:
    """Snapshot features: `mom` the month-over-month change of minutes, `rolling` the 30-day one
    (none: no 30 days before to compare with, so not counted)."""
    n = len(mom)
    return snapshot_features(n, mou_out_mom=np.array(mom), mou_out_m2=np.full(n, 300.0), arpu_m2=np.full(n, 150.0),
                             mid_high_end=np.array(mid_high or [1] * n, np.float64),
                             mou_out_30d_mom=np.array(rolling or [0.0] * n),
                             mou_out_prev_30d=np.full(n, 200.0 if rolling else 0.0))


def counts_for(days: dict[date, list[float]]) -> dict[str, int]:
    """Report counters as the workers would leave them: one snapshot per customer and day."""
    total: collections.Counter[str] = collections.Counter()
    for day, moms in days.items():
        ids = [f"c{k}" for k in range(len(moms))]
        for per_customer in increments(ids, features(moms), np.full(len(moms), day.toordinal())).values():
            total.update(per_customer)
    return dict(total)


def test_quantiles_follow_the_segment_and_a_whole_base_drop_moves_them_at_the_month_change() -> None:
    rng = np.random.default_rng(1)
    normal = list(rng.normal(0.0, 0.1, 1000))
    holiday = list(rng.normal(-0.4, 0.1, 1000))  # everyone down 40% in October
    rule = BaselineRule(min_samples=200, max_step=1.0)
    before, _ = Baselines.from_counts(counts_for({DAY: normal}), rule).current("mid_high_end", "mou_out_mom")
    after, n = Baselines.from_counts(counts_for({DAY: normal, NEXT: holiday}), rule).current("mid_high_end", "mou_out_mom")
    assert before[10] == pytest.approx(np.percentile(normal, 10), abs=0.03) and before[50] == pytest.approx(0.0, abs=0.03)
    assert after[50] == pytest.approx(-0.4, abs=0.03) and n == 1000


def test_too_few_samples_give_nan_and_a_quantile_moves_at_most_max_step_a_day() -> None:
    small, _ = Baselines.from_counts(counts_for({DAY: [0.0] * 50}), BaselineRule(min_samples=200)).current(
        "mid_high_end", "mou_out_mom")
    assert math.isnan(small[10])
    days = {DAY: [0.0] * 300, DAY + timedelta(days=1): [-0.5] * 300}
    capped, _ = Baselines.from_counts(counts_for(days), BaselineRule(min_samples=200, max_step=0.05)).current(
        "mid_high_end", "mou_out_mom")
    assert capped[50] == pytest.approx(0.025 - 0.05)


def test_each_customer_gets_their_segments_baseline_for_the_month_their_day_judges() -> None:
    found = Baselines.from_counts(counts_for({DAY: [-0.2] * 300}))  # mid/high-end only
    days = np.array([DAY.toordinal(), DAY.toordinal(), NEXT.toordinal()])
    p50 = found.columns(features([0.0, 0.0, 0.0], mid_high=[1, 0, 1]), days)[column_name(50, "mou_out_mom")]
    assert p50[0] == pytest.approx(-0.175)
    assert math.isnan(p50[1])  # the mass segment has no baseline: the fixed thresholds decide
    # October is not counted yet, but September had enough: pending, below every change.
    assert p50[2] == -math.inf


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


def test_a_segment_the_rule_files_add_takes_its_customers_and_has_its_own_quantiles() -> None:
    f = features([-0.5] * 300 + [0.1] * 300)
    f["prepaid_youth"] = np.array([1.0] * 300 + [0.0] * 300)
    day = np.full(600, DAY.toordinal())
    total: collections.Counter[str] = collections.Counter()
    for per_customer in increments([f"c{k}" for k in range(600)], f, day, ["prepaid_youth"]).values():
        total.update(per_customer)
    found = Baselines.from_counts(dict(total), BaselineRule(min_samples=200, max_step=1.0))
    assert found.segments() == ["mid_high_end", "potential_mid_high_end", "mass", "prepaid_youth"]
    assert found.current("prepaid_youth", "mou_out_mom")[0][50] == pytest.approx(-0.475)
    assert found.current("mid_high_end", "mou_out_mom")[0][50] == pytest.approx(0.125)
    p50 = found.columns(f, day, ["prepaid_youth"])[column_name(50, "mou_out_mom")]
    assert p50[0] == pytest.approx(-0.475) and p50[-1] == pytest.approx(0.125)
    # Without the segment (a rule file that dropped it), its customers are judged with their built-in one.
    assert found.columns(f, day)[column_name(50, "mou_out_mom")][0] == pytest.approx(0.125)


def test_a_rolling_change_is_judged_against_the_days_just_before_and_follows_a_slow_slide() -> None:
    total: collections.Counter[str] = collections.Counter()
    slide = {DAY + timedelta(days=k): -0.01 * k for k in range(20)}  # the whole base slides a point a day
    for day, level in slide.items():
        moms = list(np.linspace(level - 0.1, level + 0.1, 100))
        for per_customer in increments([f"c{k}" for k in range(100)], features(moms, rolling=moms),
                                       np.full(100, day.toordinal())).values():
            total.update(per_customer)
    found = Baselines.from_counts(dict(total), BaselineRule(min_samples=200, max_step=0.05))
    judge = DAY + timedelta(days=10)
    days = np.array([judge.toordinal(), (DAY + timedelta(days=1)).toordinal(), (DAY + timedelta(days=30)).toordinal()])
    p50 = found.columns(features([0.0] * 3), days)[column_name(50, "mou_out_30d_mom")]
    assert p50[0] == pytest.approx(-0.08, abs=0.015)  # the median of days 7 to 9
    assert math.isnan(p50[1])  # one day of 100 samples: too few
    assert math.isnan(p50[2])  # nothing counted for ten days: no baseline rather than a stale one
    assert found.current("mid_high_end", "mou_out_30d_mom")[1] == 300
