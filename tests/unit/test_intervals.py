import numpy as np
import pytest

from stream_app.offline.intervals import WeeklyCalls, median_interval, precision_interval


def weeks(n: int, rate: float, seed: int) -> WeeklyCalls:
    calls = np.full(n, 30)
    return WeeklyCalls(np.random.default_rng(seed).binomial(30, rate, n), calls)


def test_a_precision_interval_holds_the_figure_and_narrows_as_weeks_are_added() -> None:
    short, long = weeks(12, 0.6, 1), weeks(120, 0.6, 1)
    low, high = precision_interval(short)
    assert low < short.precision < high
    long_low, long_high = precision_interval(long)
    assert long_low < long.precision < long_high
    assert (long_high - long_low) < 0.5 * (high - low)


def test_the_interval_is_95_percent_of_the_spread_between_weeks() -> None:
    # Enough weeks that the spread of their pooled precision is the weeks' own standard error
    # (the calls are equal each week): 1.96 of them either side.
    many = weeks(400, 0.6, 4)
    low, high = precision_interval(many)
    se = many.hits.std(ddof=1) / 30 / np.sqrt(400)
    assert (high - low) / 2 == pytest.approx(1.96 * se, rel=0.06)


def test_precision_is_pooled_over_the_weeks_calls_not_averaged_over_weeks() -> None:
    # Short weeks of 10 calls at 0.9 and long ones of 50 at 0.2: 190 hits of 600 calls, 0.32;
    # the mean of the weeks' own precisions would be 0.55.
    mixed = WeeklyCalls([9, 10] * 10, [10, 50] * 10)
    low, high = precision_interval(mixed)
    assert mixed.precision == pytest.approx(190 / 600)
    assert low <= mixed.precision <= high < 0.55


def test_the_ratio_to_the_ceiling_resamples_the_same_weeks_of_both() -> None:
    service, ceiling = weeks(15, 0.55, 2), weeks(15, 0.65, 3)
    low, high = precision_interval(service, ceiling)
    assert low < service.precision / ceiling.precision < high
    # Paired: the same weeks on both sides, so a service that made the ceiling's calls is exactly 1.
    assert precision_interval(service, service) == [1.0, 1.0]
    # Unpaired weeks cannot be compared.
    assert precision_interval(service, weeks(14, 0.65, 3)) is None


def test_too_little_to_resample_gives_no_interval() -> None:
    assert precision_interval(WeeklyCalls([1, 2], [3, 3])) is None
    assert precision_interval(WeeklyCalls([0, 0, 0], [0, 0, 0])) is None
    assert median_interval([12, 14]) is None


def test_a_median_interval_holds_the_median_and_the_values_bound_it() -> None:
    leads = [9, 10, 11, 12, 13, 13, 14, 15, 16, 18, 20, 25, 30]
    low, high = median_interval(leads)
    assert min(leads) <= low <= np.median(leads) <= high <= max(leads)
    assert low < high
