"""Uplift learned online (a churn model per arm) and the Qini coefficient that measures it: on a
population where a call keeps only some customers, the model ranks them first, and a score that
knows nothing does not pass for one that does."""

from __future__ import annotations

import numpy as np
import pytest

from stream_app.model.qini import qini, qini_curve
from stream_app.model.uplift import CONTROL, MIN_ARM_LABELS, UpliftModel, uplift_learnable


def population(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, called or not (half each), churned: 35% churn, but a call keeps those with x0 > 0
    down to 10% (the persuadable); x1 is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    called = rng.random(n) < 0.5
    p = np.where(called & (x[:, 0] > 0), 0.10, 0.35)
    return x, called, rng.random(n) < p


def test_the_qini_curve_counts_the_customers_the_calls_kept_among_the_first_k() -> None:
    # Called stayed, control churned, called churned, control stayed.
    curve = qini_curve(np.array([4.0, 3, 2, 1]), np.array([1, 0, 1, 0]), np.array([0, 1, 1, 0]))
    assert curve.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_a_two_model_learner_ranks_the_persuadable_first_and_a_random_score_does_not() -> None:
    model = UpliftModel(features=("x0", "x1"))
    x, called, churned = population(8000, seed=1)
    for xi, c, y in zip(x, called, churned):
        model.learn(xi, "plan_offer" if c else CONTROL, bool(y))
    assert model.ready("plan_offer") and not model.ready("technical_fix")
    x, called, churned = population(4000, seed=2)
    learned = qini(np.array([model.uplift(xi, "plan_offer") for xi in x]), called, churned)
    blind = qini(np.random.default_rng(3).random(len(x)), called, churned)
    assert learned.low > 0 and learned.coefficient > 0.01
    assert blind.low < 0 < blind.high and blind.coefficient < learned.low


def test_uplift_waits_for_evidence_in_both_arms_and_a_small_control_group_is_refused() -> None:
    model = UpliftModel(features=("x0", "x1"))
    x, called, churned = population(2 * MIN_ARM_LABELS, seed=4)
    for xi, y in zip(x, churned):
        model.learn(xi, "plan_offer", bool(y))  # calls only: nothing to compare with
    assert model.uplift(x[0], "plan_offer") is None
    assert model.evidence()["plan_offer"]["labels"] == 2 * MIN_ARM_LABELS
    assert "at least 0.05" in (uplift_learnable(0.02) or "") and uplift_learnable(0.1) is None


@pytest.mark.parametrize("n", [0, 1])
def test_the_qini_of_too_few_customers_does_not_fail(n: int) -> None:
    result = qini(np.zeros(n), np.ones(n, bool), np.zeros(n, bool), resamples=5)
    assert result.called == n
