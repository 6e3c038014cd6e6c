import random

import numpy as np

from stream_app.windows.id_memory import ID_DIGEST, as_bytes, digest_of, digests, grouped, remembered, resent

TOPICS = 5


def digest(k: int) -> bytes:
    return k.to_bytes(ID_DIGEST, "little")


def test_an_event_ids_digest_is_the_one_states_already_hold() -> None:
    # BLAKE2b of the id's UTF-8 bytes, 6 bytes long: a resend after an upgrade must match what the
    # release before remembered, so the bytes are pinned, not recomputed the same way.
    ids = ["sim-3-1262629", "évènement-1", ""]
    pinned = [bytes.fromhex(h) for h in ("125a24a1c7ca", "ec64b4cefe4e", "ddd9c40767f9")]
    assert [digest_of(i) for i in ids] == pinned
    assert digests(ids) == pinned and digests([]) == []


def test_a_map_of_ids_and_its_bytes_convert_both_ways_and_a_large_group_goes_on_in_another() -> None:
    groups = {30: digest(1) + digest(2), 7: digest(3), 12: b""}
    stored = as_bytes(groups)
    assert grouped(stored) == {7: digest(3), 30: digest(1) + digest(2)}  # by key; an empty group is none
    assert grouped(as_bytes({7: digest(3) + b"\x01\x02"})) == {7: digest(3)}  # a digest cut short never matched
    many = b"".join(digest(k) for k in range(70_000))
    stored = as_bytes({7: many})
    assert len(stored) == 2 * 6 + len(many) and grouped(stored) == {7: many}


def test_a_resend_is_found_in_its_customers_group_or_earlier_in_the_batch_and_nowhere_else() -> None:
    memories = [as_bytes({10: digest(1) + digest(2), 11: digest(3)}), b""]
    rows = np.array([0, 0, 0, 1, 1, 0, 1])
    keys = np.array([10, 11, 12, 10, 10, 12, 11])
    ids = [digest(2), digest(1), digest(3), digest(2), digest(2), digest(3), digest(2)]
    # stored; another group's id; an id stored under another group; another customer's id; that id
    # again in the batch; an id earlier in the batch, same group; the same, another group
    assert resent(memories, rows, keys, ids).tolist() == [True, False, False, False, True, True, False]


def test_a_memory_cut_short_is_read_as_far_as_it_holds_whole_groups_and_never_past_its_end() -> None:
    whole = as_bytes({10: digest(1), 11: digest(2)})
    # The first memory loses its last byte; the next one's bytes would complete it if read across.
    memories = [whole[:-1], whole[-1:] + whole]
    found = resent(memories, np.array([0, 0]), np.array([10, 11]), [digest(1), digest(2)])
    assert found.tolist() == [True, False]
    kept = remembered(memories, np.array([0]), np.array([12]), [digest(9)], np.zeros((2, TOPICS), np.int64))
    assert grouped(kept[0]) == {10: digest(1), 12: digest(9)}
    # Groups out of order (no worker writes them so): each is still read, as `grouped` reads them
    # (the one-by-one path), and the merge ends.
    unordered = as_bytes({9: digest(1)}) + as_bytes({5: digest(2)})
    assert resent([unordered], np.array([0]), np.array([5]), [digest(2)]).tolist() == [True]
    kept = remembered([unordered], np.array([0]), np.array([5]), [digest(3)], np.zeros((1, TOPICS), np.int64))
    assert grouped(kept[0]) == {5: digest(3) + digest(2), 9: digest(1)}
    # A key no day and topic can have, from a map gone wrong, is dropped rather than raising.
    assert grouped(as_bytes({-1: digest(1), 2**32: digest(2), 7: digest(3)})) == {7: digest(3)}
    rng = random.Random(4)
    for _ in range(300):  # any bytes at all: read without error
        junk = [rng.randbytes(rng.randrange(40)) for _ in range(3)]
        resent(junk, np.array([1, 2]), np.array([5, 9]), [digest(1), digest(2)])
        remembered(junk, np.array([1, 2]), np.array([5, 9]), [digest(1), digest(2)], np.zeros((3, TOPICS), np.int64))


def test_the_batch_merges_as_a_map_of_ids_would_and_drops_the_days_the_grace_has_closed() -> None:
    """Against a plain Python memory: the groups of every customer with new ids, their ids in the
    order applied, without the groups whose day is before their topic's floor."""
    rng = random.Random(7)
    for _ in range(50):
        n = rng.randrange(1, 6)
        maps = [{day * TOPICS + topic: b"".join(digest(rng.randrange(1000)) for _ in range(rng.randrange(1, 4)))
                 for day in range(100, 100 + rng.randrange(4)) for topic in rng.sample(range(TOPICS), 2)}
                for _ in range(n)]
        events = [(rng.randrange(n), (100 + rng.randrange(5)) * TOPICS + rng.randrange(TOPICS),
                   digest(rng.randrange(1000))) for _ in range(rng.randrange(12))]
        floors = np.array([[rng.randrange(99, 104) for _ in range(TOPICS)] for _ in range(n)], np.int64)
        got = remembered([as_bytes(m) for m in maps], np.array([r for r, _, _ in events], np.int64),
                         np.array([k for _, k, _ in events], np.int64), [d for _, _, d in events], floors)
        expected: dict[int, dict[int, bytes]] = {}
        for row, key, d in events:
            mine = expected.setdefault(row, dict(maps[row]))
            mine[key] = mine.get(key, b"") + d
        expected = {row: {key: ids for key, ids in sorted(m.items()) if key // TOPICS >= floors[row, key % TOPICS]}
                    for row, m in expected.items()}
        assert {row: grouped(ids) for row, ids in got.items()} == expected
        assert all(ids == as_bytes(expected[row]) for row, ids in got.items())  # the same bytes, whichever way


def test_ids_added_to_a_full_group_go_on_in_another_of_the_same_key_and_are_found() -> None:
    many = b"".join(digest(k) for k in range(0xFFFF))
    kept = remembered([as_bytes({7: many})], np.array([0, 0]), np.array([7, 7]), [digest(10**6), digest(10**6 + 1)],
                      np.zeros((1, TOPICS), np.int64))
    assert len(kept[0]) == 2 * 6 + len(many) + 2 * ID_DIGEST
    assert grouped(kept[0]) == {7: many + digest(10**6) + digest(10**6 + 1)}
    assert resent([kept[0]], np.array([0]), np.array([7]), [digest(10**6 + 1)]).tolist() == [True]
    # Stored in two groups of the key already: the batch's ids go after both.
    more = many + b"".join(digest(k) for k in range(0xFFFF, 70_000))
    kept = remembered([as_bytes({7: more})], np.array([0]), np.array([7]), [digest(10**6)],
                      np.zeros((1, TOPICS), np.int64))
    assert grouped(kept[0]) == {7: more + digest(10**6)}
