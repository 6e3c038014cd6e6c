import gc
import random
from datetime import date, datetime
from hashlib import blake2b
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pytest

from stream_app.contracts.calendar import month_index
from stream_app.contracts.events import decode_billing, decode_cdr, decode_outcome, decode_profile
from stream_app.windows.apply import Envelope, apply, roll_buckets
from stream_app.windows.id_memory import as_bytes, grouped
from stream_app.windows.state import (
    _PACKED,
    _WHOLE,
    DAILY,
    ID_DIGEST,
    N_DAYS,
    N_MONTHS,
    N_TOPICS,
    STATE,
    STATE_VERSION,
    C,
    D,
    NewerState,
    StateTail,
    Windows,
    contacts_estimate,
    record_and_tail,
)
from tests.factories import billing, cdr, envelope, profile

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
CUST = "8613800000001"


def env(raw: bytes, offset: int, topic: int = 0, partition: int = 0) -> Envelope:
    event = decode_cdr(raw) if topic == 0 else decode_billing(raw)
    return envelope(topic, partition, offset, event)


def fresh() -> Windows:
    return Windows.load([CUST], [None])


def test_month_boundary_follows_the_operator_zone() -> None:
    w = fresh()
    # 16:30 UTC on 31 March is 00:30 on 1 April in Shanghai.
    apply(w, [(0, env(cdr(CUST, "2026-03-31T16:30:00+00:00", duration_s=120), 0))], SH, 3)
    assert w.month0[0] == month_index(2026, 4)
    assert w.monthly[0, 0, C["out_min"]] == 20  # tenths of a minute
    assert w.day0[0] == datetime(2026, 4, 1).toordinal()


def test_dst_change_lands_in_the_right_local_day() -> None:
    w = Windows.load([CUST], [None])
    # New York springs forward on 8 March 2026: 06:30 UTC is 01:30 EST on the 8th, 07:30 UTC is 03:30 EDT.
    batch = [(0, env(cdr(CUST, "2026-03-08T06:30:00+00:00"), 0)), (0, env(cdr(CUST, "2026-03-09T03:59:00+00:00"), 1))]
    apply(w, batch, NY, 3)
    assert w.day0[0] == datetime(2026, 3, 8).toordinal()  # 23:59 EDT on the 8th
    assert w.daily[0, 0, D["out_calls"]] == 2


def test_replayed_offsets_are_skipped() -> None:
    w = fresh()
    batch = [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00"), i)) for i in range(3)]
    first = apply(w, batch, SH, 3)
    again = apply(w, batch, SH, 3)
    assert (first.applied, again.applied, again.replayed) == (3, 0, 3)
    assert w.monthly[0, 0, C["out_calls"]] == 3


def test_late_events_within_grace_land_and_later_ones_are_refused() -> None:
    w = fresh()
    batch = [
        (0, env(cdr(CUST, "2026-03-10T10:00:00+08:00"), 0)),
        (0, env(cdr(CUST, "2026-03-08T10:00:00+08:00"), 1)),  # 2 days late: within grace
        (0, env(cdr(CUST, "2026-03-01T10:00:00+08:00"), 2)),  # 9 days late: refused
    ]
    result = apply(w, batch, SH, 3)
    assert result.applied == 2 and len(result.refused) == 1 and result.refused[0][0].offset == 2
    assert result.refused[0][1].reason == "late"
    assert w.daily[0, 2, D["out_calls"]] == 1  # day0 is the 10th, the 8th is two buckets back


def test_buckets_roll_off() -> None:
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-01-05T10:00:00+08:00"), 0))], SH, 3)
    apply(w, [(0, env(cdr(CUST, "2026-03-20T10:00:00+08:00"), 1))], SH, 3)
    assert w.daily[0, :, D["out_calls"]].sum() == 1  # January's day fell off the daily window
    assert w.monthly[0, 2, C["out_calls"]] == 1 and w.monthly[0, 0, C["out_calls"]] == 1


def test_rows_roll_on_by_their_own_shift_at_once() -> None:
    rng = np.random.default_rng(5)
    buckets = rng.integers(1, 100, (40, N_DAYS, 3))
    old = rng.integers(0, 3, 40) * rng.integers(730_000, 730_010, 40)  # some never used (0)
    old[:4] = 730_000
    new = np.where(old > 0, old + np.r_[0, 1, N_DAYS, N_DAYS + 2, rng.integers(0, N_DAYS + 3, 36)], 730_005)
    expected = buckets.copy()
    for i in range(40):  # one row at a time: bucket j takes bucket j - shift, the newest are empty
        shift = new[i] - old[i] if old[i] else N_DAYS
        expected[i] = 0
        if shift < N_DAYS:
            expected[i, shift:] = buckets[i, :N_DAYS - shift]
    roll_buckets(buckets, old, new)
    assert (buckets == expected).all()


def test_bills_count_in_the_month_they_charge_for() -> None:
    w = fresh()
    raw = billing(CUST, "2026-04-01T02:00:00+08:00", amount=150.0, period="2026-03")
    apply(w, [(0, env(raw, 0, topic=1))], SH, 3)
    march = w.month0[0] - month_index(2026, 3)
    assert w.monthly[0, march, C["spend"]] == 15000  # fen
    assert w.day0[0] == 0  # bills do not move the usage days


def test_state_does_not_depend_on_how_topics_interleave() -> None:
    rng = random.Random(3)
    cdrs = [env(cdr(CUST, f"2026-03-{d:02d}T10:00:00+08:00", duration_s=d * 10), i) for i, d in enumerate(range(1, 29))]
    bills = [env(billing(CUST, f"2026-{m + 1:02d}-01T02:00:00+08:00", amount=99.0, period=f"2026-{m:02d}"), i, 1)
             for i, m in enumerate((2, 3))]
    results = []
    for _ in range(5):
        merged, a, b = [], list(cdrs), list(bills)
        while a or b:  # a random interleaving that keeps each topic's own order
            src = a if (a and (not b or rng.random() < 0.9)) else b
            merged.append((0, src.pop(0)))
        w = fresh()
        for k in range(0, len(merged), rng.randint(1, 7)):
            apply(w, merged[k:k + 7], SH, 3)
        results.append((w.daily.copy(), w.monthly.copy()))
    for daily, monthly in results[1:]:
        np.testing.assert_array_equal(daily, results[0][0])
        np.testing.assert_array_equal(monthly, results[0][1])


def test_state_round_trips_through_its_encoding() -> None:
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00", duration_s=4000), 0))], SH, 3)
    [(expected, blob)] = w.dump([0])
    assert expected == bytes(8) and record_and_tail(blob)[1]  # the tail remembers the event's id
    again = Windows.load([CUST], [blob])
    np.testing.assert_array_equal(again.monthly, w.monthly)
    np.testing.assert_array_equal(again.daily, w.daily)
    assert again.rec.tobytes() == w.rec.tobytes()
    assert int(again.rec["seq"][0]) == 1 and again.rec["offset"][0, 0] == 0


def test_tails_as_read_and_as_remembered_are_out_of_the_cycle_collectors_sight() -> None:
    # A batch reads and replaces thousands: each one tracked made the collector run more often and longer.
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00"), 0))], SH, 3)
    [(_, blob)] = w.dump([0])
    again = Windows.load([CUST], [blob])
    assert w.text[0] is not None and again.text[0] is not None
    assert not gc.is_tracked(w.text[0]) and not gc.is_tracked(again.text[0])


def test_a_batch_of_states_is_stored_without_their_zero_bytes_and_read_back_whole() -> None:
    rng = np.random.default_rng(5)
    n = 50
    # Records as sparse as a customer's first days or as full as years of traffic (the last one),
    # stored whole in layout 3.
    size = _WHOLE[3].itemsize
    raw = np.zeros((n, size), np.uint8)
    for i in range(n):
        there = rng.random(size - 10) < (i + 1) / n
        raw[i, 10:] = np.where(there, rng.integers(1, 256, size - 10), 0)
    raw[:, 0] = 3
    w = Windows.load([f"c{i:04d}" for i in range(n)], [bytes(r) for r in raw])
    w.text[3] = StateTail(plan="gold", ids=as_bytes({12: b"abcdef"}))
    stored = [blob for _, blob in w.dump(list(range(n)))]
    assert stored[0][0] == STATE_VERSION and len(stored[0]) < STATE.itemsize / 4  # mostly zeros: small
    assert len(stored[-1]) > size  # nothing to leave out of what there was: the bitmap is extra
    again = Windows.load(w.customers, stored)
    assert again.quarantined == [] and again.rec.tobytes() == w.rec.tobytes() and again.text[3] == w.text[3]
    assert np.array_equal(again.monthly, w.monthly) and np.array_equal(again.daily, w.daily)
    # The write counter stays where the store's compare-and-set reads it.
    assert [blob[2:10] for blob in stored] == [int(s).to_bytes(8, "little") for s in w.rec["seq"]]


def test_a_state_a_newer_release_wrote_is_neither_read_nor_set_aside() -> None:
    [(_, good)] = fresh().dump([0])
    newer = bytes([STATE_VERSION + 1]) + good[1:]
    with pytest.raises(NewerState, match=f"layout {STATE_VERSION + 1}, newer than this worker's {STATE_VERSION}"):
        Windows.load(["a1234", CUST], [good, newer])


def test_during_a_rolling_upgrade_states_are_written_whole_for_the_release_before() -> None:
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00", duration_s=4000), 0))], SH, 3)
    [(_, whole)] = w.dump([0], layout=3)
    # What a release that reads only layout 3 does with it: the record whole, then the tail.
    size = _WHOLE[3].itemsize
    record = np.frombuffer(whole[:size], _WHOLE[3])
    assert record["version"][0] == 3 and record["m_minutes"][0].any()
    # Its tail keeps the event ids as a map, where that release reads them.
    ids = w.text[0].ids
    assert msgspec.msgpack.decode(whole[size:], type=StateTail) == msgspec.structs.replace(
        w.text[0], seen=grouped(ids), ids=b"")
    again = Windows.load([CUST], [whole])
    np.testing.assert_array_equal(again.monthly, w.monthly)
    assert again.text[0] == w.text[0]  # and read back as bytes
    with pytest.raises(ValueError, match=f"layout 3 or 4 or 5 or {STATE_VERSION}, not 2"):
        again.dump([0], layout=2)


def test_a_state_stored_whole_by_the_previous_version_is_read_and_written_packed() -> None:
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00", duration_s=4000), 0))], SH, 3)
    [(_, previous)] = w.dump([0], layout=3)
    again = Windows.load([CUST], [previous])
    assert again.quarantined == [] and again.text[0] == w.text[0]
    np.testing.assert_array_equal(again.monthly, w.monthly)
    [(expected, packed)] = again.dump([0])
    assert expected == previous[2:10] and packed[0] == STATE_VERSION and len(packed) < len(previous)


def test_a_resent_event_id_counts_once() -> None:
    w = fresh()
    raw = cdr(CUST, "2026-03-01T10:00:00+08:00")
    result = apply(w, [(0, env(raw, 0)), (0, env(raw, 1))], SH, 3)
    assert (result.applied, result.duplicates) == (1, 1)
    assert w.monthly[0, 0, C["out_calls"]] == 1


def test_an_id_found_only_across_two_remembered_ids_is_not_a_resend() -> None:
    """The memory holds whole digests one after another: bytes that match across two are no match,
    however often."""
    w = fresh()
    raw = cdr(CUST, "2026-03-01T10:00:00+08:00")
    digest = blake2b(decode_cdr(raw).event_id.encode(), digest_size=ID_DIGEST).digest()
    straddled = b"".join(b"\xff" * k + digest + b"\xff" * (ID_DIGEST - k) for k in (1, ID_DIGEST // 2))  # 4 ids
    w.text[0] = StateTail(ids=as_bytes({date(2026, 3, 1).toordinal() * N_TOPICS: straddled}))
    result = apply(w, [(0, env(raw, 0))], SH, 3)
    assert (result.applied, result.duplicates) == (1, 0)
    w.text[0] = StateTail(ids=as_bytes({date(2026, 3, 1).toordinal() * N_TOPICS: straddled + digest}))
    assert apply(w, [(0, env(raw, 1))], SH, 3).duplicates == 1  # whole, after a match across two, it is one


def test_the_same_id_of_another_customer_or_another_day_in_a_batch_is_no_resend() -> None:
    """A batch's ids are remembered per customer, day and topic, as the stored memory is."""
    w = Windows.load([CUST, "8613800000002"], [None, None])
    mine, other_day = (cdr(CUST, f"2026-03-0{d}T10:00:00+08:00", event_id="e-1") for d in (1, 2))
    theirs = cdr("8613800000002", "2026-03-01T10:00:00+08:00", event_id="e-1")
    result = apply(w, [(0, env(mine, 0)), (1, env(theirs, 1)), (0, env(other_day, 2)), (0, env(mine, 3))], SH, 3)
    assert (result.applied, result.duplicates) == (3, 1)


def test_a_resend_counts_once_however_many_events_lie_between_within_the_grace() -> None:
    """Mediation resends hours later: a CDR after 137 others, a recharge after 2 others."""
    w = fresh()
    calls = [cdr(CUST, f"2026-03-01T{8 + k // 60:02d}:{k % 60:02d}:00+08:00") for k in range(138)]
    recharges = [billing(CUST, f"2026-03-01T0{k}:00:00+08:00", kind="recharge", amount=10.0) for k in range(3)]
    batch = [(0, env(c, k)) for k, c in enumerate(calls)] + [(0, env(r, k, topic=1)) for k, r in enumerate(recharges)]
    apply(w, batch, SH, 3)
    two_days_later = [(0, env(cdr(CUST, "2026-03-03T10:00:00+08:00"), 138))]
    apply(w, two_days_later, SH, 3)
    resent = apply(w, [(0, env(calls[0], 139)), (0, env(recharges[0], 3, topic=1))], SH, 3)
    assert (resent.applied, resent.duplicates) == (0, 2)
    assert w.monthly[0, 0, C["out_calls"]] == 139 and w.monthly[0, 0, C["topup"]] == 3000


def test_the_memory_of_ids_keeps_the_grace_window_and_no_more() -> None:
    w = fresh()
    days = [cdr(CUST, f"2026-03-{d:02d}T10:00:00+08:00") for d in range(1, 11)]
    apply(w, [(0, env(raw, k)) for k, raw in enumerate(days)], SH, 3)
    kept = sorted(key // 4 for key in grouped(w.text[0].ids))
    assert kept == [datetime(2026, 3, d).toordinal() for d in range(7, 11)]  # the 10th and the three days before
    assert all(len(ids) == 6 for ids in grouped(w.text[0].ids).values())
    old = apply(w, [(0, env(days[0], 10))], SH, 3)  # past the grace: refused as late, not counted
    assert old.applied == 0 and [err.reason for _, err in old.refused] == ["late"]


def test_a_state_of_the_previous_layout_is_read_and_written_in_the_new_one() -> None:
    old = np.zeros(1, _WHOLE[2])
    old["version"], old["seq"], old["day0"], old["offset"] = 2, 41, 740_000, [5, 6, 7, 8]
    old["m_counts"][0, 0, 0] = 12
    raw = old.tobytes() + msgspec.msgpack.encode(["plan", "north", "mass", {}, [], []])
    w = Windows.load([CUST], [raw])
    assert w.quarantined == [] and w.rec["version"][0] == STATE_VERSION
    assert (int(w.rec["seq"][0]), int(w.day0[0]), w.rec["offset"][0].tolist()) == (41, 740_000, [5, 6, 7, 8])
    assert w.monthly[0, 0, C["out_calls"]] == 12 and w.text[0].plan == "plan"
    [(expected, new)] = w.dump([0])
    assert expected == (41).to_bytes(8, "little") and Windows.load([CUST], [new]).rec["seq"][0] == 42


def test_counters_past_their_stored_width_are_kept_at_its_largest_value_not_wrapped() -> None:
    w = Windows.load(["a", "b"], [None, None])
    w.daily[0, 3, D["out_calls"]] = 300  # a byte a day
    w.daily[1, 3, D["sms_out"]] = 70_000  # 16 bits a day
    w.monthly[0, 2, C["roam_min"]] = 80_000  # 16 bits a month, in tenths of a minute
    w.monthly[1, 2, C["spend"]] = 5_000_000_000  # 32 bits a month, in fen
    w.monthly[0, 1, C["out_calls"]] = -4  # never below nothing
    back = Windows.load(["a", "b"], [blob for _, blob in w.dump([0, 1])])
    assert back.daily[0, 3, D["out_calls"]] == 255 and back.daily[1, 3, D["sms_out"]] == 65_535
    assert back.monthly[0, 2, C["roam_min"]] == 65_535 and back.monthly[1, 2, C["spend"]] == 2**32 - 1
    assert back.monthly[0, 1, C["out_calls"]] == 0
    assert back.daily.sum() == 255 + 65_535 and back.monthly.sum() == 65_535 + 2**32 - 1  # nothing else moved


def test_a_state_that_cannot_be_read_is_quarantined_and_the_customer_starts_afresh() -> None:
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00", duration_s=4000), 0))], SH, 3)
    good = w.dump([0])[0][1]
    record, tail = record_and_tail(good)
    unknown = b"\x7f" + good[1:]  # no layout a release could have written
    cut = good[:40]
    bad_tail = good + b"\xc1\xc1"
    short = record[:-1]  # the bitmap promises a byte more than there is
    padded = bytearray(w.dump([0], layout=4)[0][1])  # layout 4's bitmap has bits past its record
    assert _PACKED[4].padding & 1
    padded[10 + _PACKED[4].bitmap - 1] |= 1  # a bit past the record's last byte
    stored = [unknown, cut, bad_tail, short, bytes(padded), good]
    w = Windows.load(["a1234", "b1234", "c1234", "d1234", "e1234", "f1234"], stored)
    assert [(i, why.split(";")[0].split(":")[0]) for i, why in w.quarantined] == [
        (0, "layout version 127"), (1, "40 bytes"), (2, "its tail does not decode"), (3, f"{len(short)} bytes"),
        (4, "its bitmap marks bytes past the record")]
    assert not w.monthly[:5].any() and w.text[:5] == [None] * 5 and w.monthly[5].any()
    # The write goes to the key read: compared with the counter's bytes as they were.
    assert [expected for expected, _ in w.dump(list(range(6)))] == [raw[2:10] for raw in stored]


def test_a_batch_of_states_reads_as_each_state_read_alone() -> None:
    # The current layout is read batch-wide, in one buffer; every other value one by one.
    rng = np.random.default_rng(11)
    names = [f"c{i:04d}" for i in range(40)]
    w = Windows.load(names, [None] * 40)
    for i in range(40):
        minutes = rng.integers(0, 2000, size=int(rng.integers(0, 6))).tolist()
        apply(w, [(i, env(cdr(f"c{i:04d}", f"2026-03-{1 + k % 28:02d}T10:00:00+08:00", duration_s=m), k))
                  for k, m in enumerate(minutes)], SH, 3)
    stored: list[bytes | None] = [blob for _, blob in w.dump(list(range(40)))]
    stored[3], stored[7], stored[9] = None, stored[7][:30], stored[9] + b"\xc1"  # type: ignore[index, operator]
    stored[12] = w.dump([12], layout=4)[0][1]  # an earlier layout, among them
    batch = Windows.load(names, stored)
    alone = [Windows.load([name], [raw]) for name, raw in zip(names, stored)]
    assert batch.rec.tobytes() == b"".join(one.rec.tobytes() for one in alone)
    assert batch.text == [one.text[0] for one in alone] and batch.expected == [one.expected[0] for one in alone]
    assert batch.quarantined == [(i, one.quarantined[0][1]) for i, one in enumerate(alone) if one.quarantined]
    assert [i for i, _ in batch.quarantined] == [7, 9] and batch.monthly[[0, 12, 39]].any(axis=(1, 2)).tolist() == [
        bool(w.monthly[i].any()) for i in (0, 12, 39)]


def test_distinct_contacts_are_estimated_per_month() -> None:
    w = fresh()
    batch = [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00", peer_id=f"86139{k % 40:08d}"), k)) for k in range(200)]
    apply(w, batch, SH, 3)
    assert 34 <= w.monthly[0, 0, C["contacts"]] <= 46  # 40 distinct numbers
    april = [(0, env(cdr(CUST, "2026-04-02T10:00:00+08:00", peer_id=f"86139{k:08d}"), 200 + k)) for k in range(5)]
    apply(w, april, SH, 3)
    assert 34 <= w.monthly[0, 1, C["contacts"]] <= 46 and 4 <= w.monthly[0, 0, C["contacts"]] <= 6
    assert contacts_estimate(np.zeros((1, 16), np.uint8))[0] == 0


def test_a_bill_read_ahead_of_the_usage_does_not_lose_the_month_of_contacts() -> None:
    w = fresh()
    march = [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00", peer_id=f"86139{k:08d}"), k)) for k in range(20)]
    apply(w, march[:10], SH, 3)
    # A recharge from May comes in: billing runs weeks ahead of usage in a catch-up ...
    recharge = billing(CUST, "2026-05-03T09:00:00+08:00", kind="recharge", amount=50.0)
    apply(w, [(0, env(recharge, 0, topic=1))], SH, 3)
    apply(w, march[10:], SH, 3)  # ... then the rest of March's calls
    assert w.month0[0] == month_index(2026, 5)
    assert 17 <= w.monthly[0, 2, C["contacts"]] <= 23  # all 20 of March's contacts, in March's bucket


def test_which_ids_are_remembered_does_not_depend_on_how_topics_interleave() -> None:
    calls = [cdr(CUST, f"2026-03-01T1{k % 10}:00:00+08:00", event_id=f"call-{k}") for k in range(12)]
    bills = [billing(CUST, f"2026-03-01T0{k}:00:00+08:00", kind="recharge", amount=10.0, event_id=f"pay-{k}")
             for k in range(5)]
    streams = []
    for order in ("calls first", "bills first", "interleaved"):
        w = fresh()
        batch = [(0, env(c, k)) for k, c in enumerate(calls)]
        paid = [(0, env(b, k, topic=1)) for k, b in enumerate(bills)]
        batch = {"calls first": batch + paid, "bills first": paid + batch,
                 "interleaved": [x for pair in zip(batch, paid) for x in pair] + batch[5:]}[order]
        apply(w, batch, SH, 3)
        resent = apply(w, [(0, env(calls[0], 100))], SH, 3)  # the first call again, 16 events later
        assert resent.duplicates == 1, order
        streams.append(record_and_tail(w.dump([0])[0][1])[1])  # the tail's bytes, as stored
    assert streams[0] == streams[1] == streams[2]


def test_where_a_batch_ends_does_not_change_the_contacts() -> None:
    august = cdr(CUST, "2026-08-31T10:00:00+08:00", peer_id="8613900000001", event_id="a")
    sms = cdr(CUST, "2026-09-01T09:00:00+08:00", kind="sms", duration_s=0, peer_id="8613900000002", event_id="b")
    call = cdr(CUST, "2026-09-01T10:00:00+08:00", peer_id="8613900000003", event_id="c")
    states = []
    for batches in ([[august], [sms, call]], [[august], [sms], [call]]):
        w, offset = fresh(), 0
        for batch in batches:
            apply(w, [(0, env(raw, offset + k)) for k, raw in enumerate(batch)], SH, 3)
            offset += len(batch)
        states.append(w.rec["contacts"].tobytes())
        assert w.monthly[0, 0, C["contacts"]] == 2  # September: the SMS's peer and the call's
    assert states[0] == states[1]


def test_a_profile_update_keeps_the_customers_streaks_and_cohorts() -> None:
    # A plan change mid-life: what reports and rules remember of the customer must survive it.
    w = fresh()
    w.text[0] = StateTail("old-plan", "north", "consumer", streaks={7: (2, 5)}, cohorts=(24319,), cohort_lost=())
    event = decode_profile(profile(CUST, plan="new-plan", region="south"))
    apply(w, [(0, envelope(2, 0, 0, event))], SH, 3)
    tail = msgspec.structs.replace(w.text[0], ids=b"")  # the profile's id is remembered too
    # Its first profile read also says when the customer joined (reports/facts.py counts them then).
    assert tail == StateTail("new-plan", "south", "consumer", streaks={7: (2, 5)}, cohorts=(24319,),
                             joined=date(2020, 5, 1).toordinal())


def outcome(result: str, ts: str) -> Envelope:
    raw = msgspec.json.encode({"event_id": f"o-{result}-{ts}", "customer_id": CUST, "ts": ts, "alert_id": "a1",
                               "result": result, "offer": "PLAN20", "agent_id": "agent-7"})
    return envelope(3, 0, 0, decode_outcome(raw))


def test_the_latest_outcome_is_kept_and_an_accepted_offer_closes_the_case_for_the_cooldown() -> None:
    w = fresh()
    w.rec["alerted_level"][0], w.rec["alerted_day"][0] = 2, 740_000  # warned at medium on that day
    apply(w, [(0, outcome("not_reached", "2026-06-03T10:00:00+08:00"))], SH, 3)
    assert (w.text[0].outcome, w.rec["alerted_level"][0]) == ("not_reached", 2)
    accepted = outcome("accepted", "2026-06-04T10:00:00+08:00")
    apply(w, [(0, envelope(3, 0, 1, accepted.event))], SH, 3)
    assert w.text[0].outcome == "accepted" and w.text[0].outcome_ts == int(accepted.event.ts.timestamp())
    assert (w.rec["alerted_level"][0], w.rec["alerted_day"][0]) == (3, 740_000)  # high now cools too
    older = outcome("declined", "2026-06-02T10:00:00+08:00")  # recorded before, read after
    apply(w, [(0, envelope(3, 0, 2, older.event))], SH, 3)
    assert w.text[0].outcome == "accepted"
    [(_, raw)] = w.dump([0])
    assert Windows.load([CUST], [raw]).text[0].outcome == "accepted"


def test_a_tail_written_before_the_outcome_fields_still_decodes() -> None:
    old = msgspec.msgpack.encode(["plan", "north", "mass", {}, [24319], []])
    [(_, raw)] = fresh().dump([0])
    header = record_and_tail(raw)[0]
    assert Windows.load([CUST], [header + old]).text[0] == StateTail("plan", "north", "mass", cohorts=(24319,))


def test_a_chunk_of_no_customers_loads_and_derives_to_empty_columns() -> None:
    from stream_app.features.derive import derive

    w = Windows.load([], [])
    assert w.daily.shape == (0, N_DAYS, len(DAILY)) and w.monthly.shape[:2] == (0, N_MONTHS)
    features = derive(w, np.zeros(0, np.int64), SH)
    assert features and all(column.shape == (0,) for column in features.values())


def test_sms_and_data_sessions_are_counted_by_day_and_month() -> None:
    w = fresh()
    records = [cdr(CUST, "2026-03-01T10:00:00+08:00", kind="sms", direction="MT", duration_s=0),
               cdr(CUST, "2026-03-02T10:00:00+08:00", kind="sms", duration_s=0),
               *[cdr(CUST, f"2026-03-02T1{k}:00:00+08:00", kind="data", duration_s=0, data_bytes=200_000)
                 for k in range(3)]]
    apply(w, [(0, env(raw, k)) for k, raw in enumerate(records)], SH, 3)
    today, yesterday = w.daily[0, 0], w.daily[0, 1]
    assert (today[D["sms_out"]], today[D["sms_in"]], today[D["data_sessions"]]) == (1, 0, 3)
    assert (yesterday[D["sms_out"]], yesterday[D["sms_in"]], yesterday[D["data_sessions"]]) == (0, 1, 0)
    assert w.monthly[0, 0, C["data_sessions"]] == 3 and w.monthly[0, 0, C["data_mb"]] == 3 * 4  # 64 KiB blocks


def test_a_state_written_packed_for_the_release_before_keeps_its_counters_across_the_upgrade() -> None:
    """Layout 4, which a worker writes during a rolling upgrade from the release before, has no SMS
    or data sessions by day: they start at zero on the new release, every other counter carries over."""
    w = fresh()
    apply(w, [(0, env(cdr(CUST, "2026-03-01T10:00:00+08:00", duration_s=4000), 0)),
              (0, env(cdr(CUST, "2026-03-01T11:00:00+08:00", kind="sms", duration_s=0), 1))], SH, 3)
    [(_, packed)] = w.dump([0], layout=4)
    [(_, whole)] = w.dump([0], layout=3)
    [(_, current)] = w.dump([0])
    assert packed[0] == 4 and len(packed) < _WHOLE[3].itemsize
    # A batch holding every layout, and a customer never seen: each layout converted at once.
    again = Windows.load([CUST, CUST, "a1234", CUST], [packed, whole, None, current])
    assert again.quarantined == [] and (again.rec["version"] == STATE_VERSION).all() and again.text[0] == w.text[0]
    for row in (0, 1):
        np.testing.assert_array_equal(again.monthly[row], w.monthly[0])
        assert again.daily[row, 0, D["out_calls"]] == 1 and again.daily[row, 0, D["sms_out"]] == 0
    np.testing.assert_array_equal(again.daily[3], w.daily[0])
    assert not again.monthly[2].any() and again.text[2] is None
    # Activity counts SMS and sessions only over days that kept them (features/derive.py).
    assert again.rec["messages_since"].tolist() == [w.day0[0] + 1, w.day0[0] + 1, 0, 0]
    [(expected, new)] = again.dump([0])
    assert expected == packed[2:10] and new[0] == STATE_VERSION


def test_a_state_of_layout_5_keeps_its_event_ids_and_days_of_messages_across_the_upgrade() -> None:
    """Layout 5 has this record, and keeps the event ids in the tail as a map. A worker writes it
    during a rolling upgrade from that release, which reads the ids from the map."""
    w = fresh()
    call = cdr(CUST, "2026-03-01T10:00:00+08:00")
    apply(w, [(0, env(call, 0)), (0, env(cdr(CUST, "2026-03-02T11:00:00+08:00", kind="sms", duration_s=0), 1))],
          SH, 3)
    [(_, five)] = w.dump([0], layout=5)
    tail = msgspec.msgpack.decode(record_and_tail(five)[1], type=StateTail)
    assert five[0] == 5 and tail.ids == b"" and tail.seen == grouped(w.text[0].ids) and len(tail.seen) == 2
    again = Windows.load([CUST], [five])
    assert again.quarantined == [] and again.text[0] == w.text[0]
    assert again.rec["messages_since"][0] == w.rec["messages_since"][0] == 0  # its days of SMS were kept from the first
    np.testing.assert_array_equal(again.daily, w.daily)
    assert apply(again, [(0, env(call, 2))], SH, 3).duplicates == 1  # the ids came across: a resend is known
    [(_, six)] = again.dump([0])
    assert six[0] == STATE_VERSION and Windows.load([CUST], [six]).text[0] == again.text[0]


def test_a_broken_streak_is_dropped_from_the_state_and_a_running_one_kept() -> None:
    w = Windows.load(["a1234", "b1234", "c1234", "d1234", "e1234"], [None] * 5)
    w.text[0] = StateTail(streaks={7: (3, 100), 9: (1, 100)})
    w.text[1] = StateTail(plan="gold")
    w.text[2] = StateTail(plan="gold", streaks={7: (2, 100)})
    w.text[3] = StateTail(streaks={7: (5, 100)})
    count = np.array([[0, 2], [1, 0], [0, 0], [4, 0], [0, 0]])
    period = np.array([[0, 101], [101, 0], [0, 0], [101, 0], [0, 0]])
    w.set_streaks([7, 9], count, period, [0, 1, 2, 4])
    assert w.text[0].streaks == {9: (2, 101)}  # rule 7's broke: dropped
    assert w.text[1].streaks == {7: (1, 101)} and w.text[1].plan == "gold"
    assert w.text[2] == StateTail(plan="gold")  # every one broke: none kept
    assert w.text[3].streaks == {7: (5, 100)}  # not among the rows: as it was
    assert w.text[4] is None  # nothing running, nothing kept: no tail made


def test_a_subsets_changes_do_not_reach_the_batch() -> None:
    """Snapshots judge a copy of some rows as of their day: what that copy changes stays in it."""
    w = Windows.load(["8613800000001", "8613800000002"], [None, None])
    w.daily[:] = 3
    w.monthly[:] = 5
    sub = w.subset([1, 1, 0])
    sub.daily[:] = 7
    sub.monthly[:] = 9
    sub.rec["seq"] = 11
    assert (w.daily == 3).all() and (w.monthly == 5).all() and (w.rec["seq"] == 0).all()
    assert sub.daily.shape == (3, *w.daily.shape[1:])


def test_a_days_minutes_past_their_width_are_kept_at_its_most_never_wrapped() -> None:
    """A day's minutes are stored in 16 bits: a batch of day-long calls on one customer's day (28.8
    million tenths of a minute) is stored as the most 16 bits hold, and the month, 32 bits wide,
    keeps every tenth."""
    w = fresh()
    batch = [(0, env(cdr(CUST, "2026-03-10T10:00:00+08:00", duration_s=86_400), k)) for k in range(2_000)]
    assert apply(w, batch, SH, 3).applied == 2_000
    assert w.daily[0, 0, D["out_min"]] == 2_000 * 14_400
    (_, raw), = w.dump([0])
    again = Windows.load([CUST], [raw])
    assert again.daily[0, 0, D["out_min"]] == np.iinfo(np.uint16).max
    assert again.monthly[0, 0, C["out_min"]] == 2_000 * 14_400
