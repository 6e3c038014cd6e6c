"""The labels the boosted trees are refitted on: bounded, and spread over the days they span."""

from __future__ import annotations

import numpy as np

from stream_app.model.label_store import LabelStore


def fill(store: LabelStore, days: range, per_day: int, churners: int = 5) -> None:
    """`per_day` labels a day, of customers 0.. (the first `churners` of them positive), each
    labelled with its day as its feature."""
    for day in days:
        for k in range(per_day):
            store.add(np.array([day, k]), int(k < churners), day, k)


def test_the_store_keeps_the_newest_labels_within_its_age() -> None:
    store = LabelStore(capacity=8, width=2, max_age_days=10)
    for k, day in enumerate([1, 2, 3, 20, 25, 26]):
        store.add(np.array([k, k]), k % 2, day, 100 + k)
    x, y, who = store.recent()
    assert x[:, 0].tolist() == [3.0, 4.0, 5.0] and y.tolist() == [1, 0, 1]  # day 3 is older than 26 - 10
    assert who.tolist() == [103, 104, 105]


def test_a_full_store_samples_its_labels_to_span_its_days() -> None:
    # 100 labels a day into 1,000 rows: the newest would be the last 10 days; sampled, about 50.
    store = LabelStore(capacity=1000, width=2, max_age_days=50)
    fill(store, range(200), 100)
    x, y, _ = store.recent()
    assert store.keep_share() == 1000 / (100 * 50) and store.seen == 200 * 100
    assert 45 <= 199 - x[:, 0].min() <= 55
    assert 0.02 < y.mean() < 0.09  # the churners' share as the labels came (5%)
    # Each day of the span holds about its share, not the first labels the day brought.
    per_day = np.bincount(x[:, 0].astype(int) - int(x[:, 0].min()))[1:-1]
    assert per_day.min() >= 8 and per_day.max() <= 34
    assert x[:, 1].max() > 90  # customers late in a day's labels are kept too


def test_which_labels_are_kept_follows_from_the_customer_and_the_day_alone() -> None:
    first, second = LabelStore(capacity=300, width=2, max_age_days=30), LabelStore(capacity=300, width=2,
                                                                                   max_age_days=30)
    fill(first, range(60), 100)
    for day in range(60):  # the same labels, each day's customers in the reverse order
        for k in reversed(range(100)):
            second.add(np.array([day, k]), int(k < 5), day, k)
    kept = [{(int(d), int(w)) for d, w in store.recent()[0]} for store in (first, second)]
    assert kept[0] == kept[1]


def test_labels_of_one_day_are_kept_newest_first_as_before() -> None:
    # A monthly table's replay labels every customer on the same day: no whole day to sample by.
    store = LabelStore(capacity=100, width=2, max_age_days=30)
    fill(store, range(7, 8), 500)
    assert store.keep_share() == 1.0
    assert store.recent()[0][:, 1].tolist() == list(range(400, 500))


def test_a_resized_store_keeps_the_newest_labels_and_its_count() -> None:
    store = LabelStore(capacity=400, width=2, max_age_days=40)
    fill(store, range(30), 50)
    smaller = store.resized(100, 20)
    assert np.array_equal(smaller.recent()[0], store.recent()[0][-100:])
    assert smaller.seen == store.seen and smaller.keep_share() == 100 / (50 * 20)


def test_the_rate_is_read_from_every_partition_of_a_day_whatever_their_pace() -> None:
    # 3,000 labels a day from three partitions, one of them a day behind the others.
    store = LabelStore(capacity=1000, width=2, max_age_days=90)
    for tick in range(20):
        for k in range(3000):  # the day's labels of two partitions, then the day before's of the third
            day = tick - 1 if k % 3 == 0 else tick
            if day >= 0:
                store.add(np.array([day, k]), 0, day, k)
    assert store.keep_share() == 1000 / (3000 * 90)


def test_a_store_from_before_sampling_reads_as_one_that_kept_every_label() -> None:
    store = LabelStore(capacity=10, width=2, max_age_days=30)
    fill(store, range(1, 3), 4)
    del store.kept, store.day_counts  # as a checkpoint of the build before pickled it
    store.upgrade()
    assert len(store) == 8 and store.recent()[0][:, 1].tolist() == [0, 1, 2, 3] * 2
    store.add(np.array([3, 9]), 0, 3, 9)
    assert store.recent()[0][-1].tolist() == [3, 9]
