"""The ceiling and the oracle of the simulator: what the counted traffic and the truth behind it allow."""

from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
import pytest

from stream_app.offline.ceiling import WINDOWS, truth_features
from stream_app.offline.simulator import SimConfig, Simulator

CONFIG = SimConfig(customers=300, days=150, seed=9, warmup_days=60, monthly_churn=0.06)


def traffic(keep_counts: bool) -> tuple[Simulator, str]:
    sim = Simulator(SimConfig(**{**CONFIG.__dict__, "keep_counts": keep_counts}))
    digest = hashlib.sha256()
    for record in sim.records():
        digest.update(record.value)
    return sim, digest.hexdigest()


@pytest.fixture(scope="module")
def counted() -> Simulator:
    sim, kept = traffic(True)
    assert kept == traffic(False)[1]  # keeping the counts does not change one record
    return sim


def test_the_usual_rates_expect_what_is_counted_and_a_decline_falls_short(counted: Simulator) -> None:
    sim = counted
    day = np.arange(60, 140)
    stable = [t.customer_id for t in sim.truth if t.pattern == "stable"]
    who = np.repeat(stable, len(day))
    when = np.tile(day, len(stable)) + sim.cfg.start.toordinal()
    full, usage_only = truth_features(sim, who, when)["ceiling"]
    assert np.array_equal(usage_only, full[:, :2 * len(WINDOWS)])  # the observer's usage counts, learned alone too
    ratio_30d = full[:, 2 * WINDOWS.index((0, 30)) + 1]
    # Holidays and weekends are in the expectation: a stable customer's calls, SMS and data sessions of
    # a month are counted as expected.
    assert 0.9 < ratio_30d.mean() < 1.1
    # And the truth behind them is usual: a multiplier of 1 on weekdays, weekends and holidays alike.
    own_month = truth_features(sim, who, when)["oracle"][0][:, WINDOWS.index((0, 30))]
    assert np.allclose(own_month, 1.0)

    decliners = [t for t in sim.truth if t.pattern == "decliner"]
    assert len(decliners) >= 5
    who = [t.customer_id for t in decliners]
    when = np.array([date.fromisoformat(t.churn_date).toordinal() - 3 for t in decliners])
    features = truth_features(sim, np.array(who), when)
    assert np.median(features["ceiling"][0][:, 2 * WINDOWS.index((0, 7))]) < -2  # standard deviations short
    own_last_week = features["oracle"][0][:, WINDOWS.index((0, 7))]
    assert own_last_week.max() < 0.6  # the truth: each is at 15-50% of usual by the end of the ramp


def test_without_the_counts_there_is_no_ceiling() -> None:
    sim = Simulator(SimConfig(customers=5, days=10))
    with pytest.raises(ValueError, match="keep_counts"):
        truth_features(sim, np.array([sim.ids[0]]), np.array([sim.cfg.start.toordinal() + 3]))
