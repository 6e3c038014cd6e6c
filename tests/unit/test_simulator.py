"""The simulator's churn rate is the one asked for, so that no figure is measured on a base that
leaves faster than an operator's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream_app.offline.simulator import SimConfig, Simulator


@pytest.mark.parametrize("days,warmup", [(240, 70), (360, 180)])
def test_the_monthly_churn_rate_holds_over_the_days_after_the_warm_up(days: int, warmup: int) -> None:
    sim = Simulator(SimConfig(customers=20_000, days=days, warmup_days=warmup, monthly_churn=0.02, seed=3))
    exits = np.array([sim.exit_day[i] for i in range(20_000) if sim.truth[i].churn_date])
    assert exits.min() >= warmup
    months = (days - warmup) / 30
    monthly = 1 - (1 - len(exits) / 20_000) ** (1 / months)
    # 20,000 customers: the rate's standard error is about 0.0007 on 4 to 6 months.
    assert math.isclose(monthly, 0.02, abs_tol=0.002), monthly
