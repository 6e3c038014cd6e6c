"""The simulator's churn rate is the one asked for, so that no figure is measured on a base that
leaves faster than an operator's."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest

from stream_app.offline.delivery import in_time_order
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


def test_in_time_order_interleaves_each_days_customers_and_keeps_every_record_on_its_day() -> None:
    """The bench's traffic as a mediation system delivers it: a batch of 2,000 records holds one
    or two of each customer's, not ten of a few hundred customers' days."""
    records = list(Simulator(SimConfig(customers=3000, days=3, seed=5)).records())
    ordered = in_time_order(records)
    assert sorted(ordered) == sorted(records)
    assert [r.day for r in ordered] == sorted(r.day for r in records)
    stamps = [msgspec.json.decode(r.value)["ts"] for r in ordered if r.day == 1]
    late = sum(1 for a, b in zip(stamps, stamps[1:]) if b < a)
    assert late == 0  # within a day, every record's time at or after the one before
    day1 = [r for r in ordered if r.day == 1 and r.topic == "cdr"]
    window = day1[len(day1) // 2:len(day1) // 2 + 2000]
    assert len({r.key for r in window}) > 1000
    as_delivered = [r for r in records if r.day == 1 and r.topic == "cdr"]
    assert len({r.key for r in as_delivered[len(day1) // 2:len(day1) // 2 + 2000]}) < 500
