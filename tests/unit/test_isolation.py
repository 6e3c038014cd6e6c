"""No record can stop a batch, and no valid-looking record can move a customer's clock: poison
records go to dead letter with a reason and their neighbours are processed."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import msgspec
import pytest

from stream_app.ingest.deadletters import DEAD_LETTER_PREFIX
from stream_app.windows import apply as windows
from stream_app.windows import state as windows_state
from stream_app.windows.jit import CompilerUnavailable
from stream_app.windows.state import C, NewerState, Windows
from stream_app.windows.store import MemoryWindowStore
from stream_app.worker import pipeline
from tests.factories import Log, billing, cdr, decliner, profile
from tests.unit.test_pipeline import processor, run

GOOD = "8613800000201"


def state(store: MemoryWindowStore, customer: str) -> Windows:
    return Windows.load([customer], asyncio.run(store.load([customer])))


def reasons(out: pipeline.BatchOutput) -> list[tuple[int, str, str | None]]:
    return [(d.offset, d.reason, d.field) for d in out.deadletters]


def test_tombstones_on_usage_and_billing_go_to_dead_letter_and_the_batch_goes_on() -> None:
    log = Log()
    log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T10:00:00+08:00"))
    cdr_tomb = log.add("cdr", GOOD, None)  # type: ignore[arg-type]
    bill_tomb = log.add("billing", GOOD, None)  # type: ignore[arg-type]
    log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T11:00:00+08:00"))
    store = MemoryWindowStore()
    out = run(processor(store), log.records)
    assert reasons(out) == [(cdr_tomb.offset, "tombstone", None), (bill_tomb.offset, "tombstone", None)]
    assert out.applied == 2 and state(store, GOOD).monthly[0, 0, C["out_calls"]] == 2
    assert all(d.value_b64 is None and d.size == 0 for d in out.deadletters)


@pytest.mark.parametrize("ts", ["9999-12-31T00:00:00+08:00", "2200-01-01T00:00:00+08:00",
                                "2100-01-01T00:00:00+08:00", "2026-12-01T10:00:00+08:00",
                                "0001-01-01T00:00:00+08:00", "1999-12-31T00:00:00+08:00"])
def test_an_event_time_out_of_bounds_is_refused_and_moves_no_clock(ts: str) -> None:
    """Ahead of the clock (the tests' wall clock is 2026-12-01 00:00 UTC, 08:00 in Shanghai,
    and the allowed skew an hour) or before the floor (2000)."""
    log = Log()
    first = log.add("cdr", GOOD, cdr(GOOD, ts))  # the first record a fresh worker sees
    log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T10:00:00+08:00"))
    bad = log.add("cdr", GOOD, cdr(GOOD, ts))
    log.add("cdr", GOOD, cdr(GOOD, "2026-03-02T10:00:00+08:00"))
    store = MemoryWindowStore()
    proc = processor(store)
    out = run(proc, log.records, size=1)
    assert reasons(out) == [(first.offset, "out_of_range", "ts"), (bad.offset, "out_of_range", "ts")]
    w = state(store, GOOD)
    assert w.monthly[0, 0, C["out_calls"]] == 2  # the day after the bad one still counts: nothing was "late"
    assert max(proc.event_clock.watermarks.values()) == int(w.day0[0])


def test_an_event_time_within_the_skew_is_admitted() -> None:
    log = Log()
    log.add("cdr", GOOD, cdr(GOOD, "2026-12-01T08:30:00+08:00"))  # half an hour ahead of the tests' clock
    assert run(processor(), log.records).applied == 1


def test_a_bill_for_a_period_far_from_its_date_is_refused() -> None:
    log = Log()
    log.add("cdr", GOOD, cdr(GOOD, "2026-08-10T10:00:00+08:00"))
    far = log.add("billing", GOOD, billing(GOOD, "2026-09-01T02:00:00+08:00", amount=150.0, period="9999-12"))
    early = log.add("billing", GOOD, billing(GOOD, "2026-09-01T02:00:00+08:00", amount=150.0, period="2026-06"))
    log.add("billing", GOOD, billing(GOOD, "2026-09-01T02:00:00+08:00", amount=90.0, period="2026-08"))
    store = MemoryWindowStore()
    out = run(processor(store), log.records)
    assert reasons(out) == [(far.offset, "out_of_range", "period"), (early.offset, "out_of_range", "period")]
    w = state(store, GOOD)
    assert w.monthly[0, 0, C["spend"]] == 9000  # August, in fen: only the bill that fits


def test_an_oversized_record_is_refused_before_decoding_and_its_dead_letter_stays_small() -> None:
    log = Log()
    huge = log.add("cdr", GOOD, b"x" * (2 << 20))  # 2 MB, not even JSON
    long_cell = log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T10:00:00+08:00", cell_id="c" * 600_000))
    small_long_cell = log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T10:00:00+08:00", cell_id="c" * 100_000))
    log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T11:00:00+08:00"))
    out = run(processor(), log.records)
    assert reasons(out) == [(huge.offset, "too_large", None), (long_cell.offset, "too_large", None),
                            (small_long_cell.offset, "invalid_field", "cell_id")]
    assert out.applied == 1
    first = out.deadletters[0]
    assert first.size == 2 << 20 and first.truncated
    assert first.sha256 == hashlib.sha256(huge.value).hexdigest()  # type: ignore[arg-type]
    assert base64.b64decode(first.value_b64) == huge.value[:DEAD_LETTER_PREFIX]  # type: ignore[index]
    assert all(len(msgspec.json.encode(d)) < 16_384 for d in out.deadletters)  # far under the producer's 1 MB


def test_a_tombstone_on_customers_erases_the_customer_but_keeps_their_offsets() -> None:
    gone, kept = "8613800000202", "8613800000203"
    log = Log()
    decliner(log, gone)
    decliner(log, kept)
    store = MemoryWindowStore()
    run(processor(store), log.records)
    report_before = dict(store.report)
    history = list(log.records)
    tomb = log.add("customers", gone, None)  # type: ignore[arg-type]
    out = run(processor(store), [tomb])
    assert out.erased == [gone] and out.alerts == [] and out.snapshots == []
    w = state(store, gone)
    assert not w.monthly.any() and not w.daily.any() and w.text[0] is None
    assert w.rec["profile_ts"][0] == 0 and w.rec["offset"][0, 2] == tomb.offset
    assert store.report == report_before  # erasing reports nothing
    again = run(processor(store), history + [tomb], size=40)  # a replay after a crash: nothing comes back
    assert again.applied == 0 and again.erased == []
    assert not state(store, gone).monthly.any() and state(store, kept).monthly.any()
    back = log.add("cdr", gone, cdr(gone, "2026-07-21T10:00:00+08:00"))  # the number in use again: a new customer
    assert run(processor(store), [back]).applied == 1
    assert state(store, gone).monthly[0, 0, C["out_calls"]] == 1


def test_events_before_a_tombstone_in_its_batch_are_erased_with_it_and_those_after_are_kept() -> None:
    c = "8613800000204"
    log = Log()
    log.add("customers", c, profile(c))
    log.add("cdr", c, cdr(c, "2026-03-01T10:00:00+08:00"))
    log.add("customers", c, None)  # type: ignore[arg-type]
    log.add("cdr", c, cdr(c, "2026-03-02T10:00:00+08:00"))
    store = MemoryWindowStore()
    out = run(processor(store), log.records)
    assert out.erased == [c]
    w = state(store, c)
    assert w.monthly[0, 0, C["out_calls"]] == 1 and w.rec["profile_ts"][0] == 0


def test_a_customer_whose_records_make_the_batch_raise_is_set_aside_and_the_others_are_processed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    poison = "8613800000205"
    real = pipeline.derive

    def derive(w: Windows, now_day, zone, attributes=None, day_over=True):  # type: ignore[no-untyped-def]
        if poison in w.customers:
            raise ValueError("a state no test foresaw")
        return real(w, now_day, zone, attributes, day_over)

    monkeypatch.setattr(pipeline, "derive", derive)
    log = Log()
    for i in range(6):
        decliner(log, f"861380000030{i}")
    decliner(log, poison)
    store = MemoryWindowStore()
    out = run(processor(store), log.records, size=len(log.records))
    poisoned = [r for r in log.records if r.key == poison.encode()]
    assert sorted(d.offset for d in out.deadletters) == sorted(r.offset for r in poisoned)
    assert {d.reason for d in out.deadletters} == {"processing_failed"}
    assert "ValueError: a state no test foresaw" in out.deadletters[0].detail
    assert set(store.data) == {f"861380000030{i}" for i in range(6)}
    assert len(out.alerts) == 6


def test_an_event_that_raises_while_it_is_applied_goes_to_dead_letter_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    real = windows._add_other

    def add_other(w, s, rows, moves, cust, e, ts, month):  # type: ignore[no-untyped-def]
        if getattr(e, "amount", 0) == 66.6:
            raise OverflowError("Python int too large to convert to C int")
        return real(w, s, rows, moves, cust, e, ts, month)

    monkeypatch.setattr(windows, "_add_other", add_other)
    log = Log()
    log.add("cdr", GOOD, cdr(GOOD, "2026-08-10T10:00:00+08:00"))
    bad = log.add("billing", GOOD, billing(GOOD, "2026-09-01T02:00:00+08:00", amount=66.6, period="2026-08"))
    log.add("billing", GOOD, billing(GOOD, "2026-09-01T03:00:00+08:00", amount=90.0, period="2026-08"))
    store = MemoryWindowStore()
    out = run(processor(store), log.records)
    assert reasons(out) == [(bad.offset, "apply_failed", None)]
    assert state(store, GOOD).monthly[0, 0, C["spend"]] == 9000


def test_a_stored_state_of_an_unknown_layout_is_set_aside_counted_and_never_stops_a_batch() -> None:
    store = MemoryWindowStore()
    garbage = b"\x00" + bytes(300)  # no layout at all: version 0
    store.data[GOOD] = garbage
    log = Log()
    log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T10:00:00+08:00"))
    proc = processor(store)
    out = run(proc, log.records)
    assert out.applied == 1 and out.deadletters == []
    assert store.quarantined == {GOOD: garbage}
    assert proc.metrics.registry.get_sample_value("churnwatch_states_quarantined_total") == 1
    w = state(store, GOOD)
    assert w.quarantined == [] and w.monthly[0, 0, C["out_calls"]] == 1


def test_a_state_a_newer_release_wrote_holds_the_batch_instead_of_being_overwritten() -> None:
    """Not the records' fault: nothing goes to dead letter, nothing is written, the batch is tried
    again (runtime.until_done) until a worker that reads the layout takes over."""
    store = MemoryWindowStore()
    log = Log()
    log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T10:00:00+08:00"))
    run(processor(store), log.records)
    stored = store.data[GOOD]
    store.data[GOOD] = newer = bytes([stored[0] + 1]) + stored[1:]
    later = Log()
    later.add("cdr", GOOD, cdr(GOOD, "2026-03-02T10:00:00+08:00"))
    with pytest.raises(NewerState):
        asyncio.run(processor(store).run(later.records, lambda out: asyncio.sleep(0)))
    assert store.data[GOOD] == newer


def test_loops_that_cannot_compile_hold_the_batch_instead_of_sending_it_to_dead_letter(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The install's fault, not the records': every batch would fail alike, so none is split into
    dead letters; the batch is tried again (runtime.until_done) and readiness says why."""

    def broken(*args: object) -> None:
        raise CompilerUnavailable("numba cannot be imported, so the state's loops cannot compile: llvmlite is broken")

    store = MemoryWindowStore()
    log = Log()
    log.add("cdr", GOOD, cdr(GOOD, "2026-03-01T10:00:00+08:00"))
    log.add("cdr", "8613800000202", cdr("8613800000202", "2026-03-01T11:00:00+08:00"))
    monkeypatch.setattr(windows_state, "unpack_batch", broken)
    sent: list[pipeline.BatchOutput] = []
    with pytest.raises(CompilerUnavailable):
        asyncio.run(processor(store).run(log.records, lambda out: asyncio.sleep(0, sent.append(out))))
    assert sent == [] and store.data == {}
