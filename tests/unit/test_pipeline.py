import asyncio
import math
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Collection

import msgspec
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream_app.alerts.build import in_holdout
from stream_app.metrics import STAGES, Metrics
from stream_app.model.scoring import NAMES, ModelSnapshot, Scorer
from stream_app.privacy import Pseudonyms
from stream_app.rules.pack import load_rules
from stream_app.settings import Settings
from stream_app.testing import run_through
from stream_app.tools.bench import stage_figures
from stream_app.tools.inspection import describe, render
from stream_app.windows.book import Book
from stream_app.windows.state import C, Windows, usage_fingerprint
from stream_app.windows.store import Applied, Increments, MemoryWindowStore, Write, state_ttl_s
from stream_app.worker.pipeline import BatchOutput, BatchProcessor, RawRecord
from tests.factories import Log, billing, cdr, decliner, profile

RULES = load_rules([Path(__file__).resolve().parents[2] / "alert_rules"])
CLOCK = datetime(2026, 12, 1, tzinfo=timezone.utc)  # the wall clock: after every event of these tests


def processor(store: MemoryWindowStore | None = None, model: Scorer | None = None) -> BatchProcessor:
    return BatchProcessor(Settings(), store or MemoryWindowStore(), lambda: RULES, Metrics(CollectorRegistry()),
                          clock=lambda: CLOCK, model=lambda: model)


def run(proc: BatchProcessor, records: list[RawRecord], size: int = 50) -> BatchOutput:
    return run_through(proc, records, size)


def test_a_decliner_is_alerted_and_a_steady_customer_is_not() -> None:
    log = Log()
    decliner(log, "8613800000001")
    decliner(log, "8613800000002", minutes=(300, 300, 300))
    out = run(processor(), log.records)
    assert [a.customer_id for a in out.alerts] == ["8613800000001"]
    alert = out.alerts[0]
    assert alert.segment == "mid_high_end" and alert.level in ("medium", "high") and alert.region == "north"
    assert {r.rule_id for r in alert.reasons} >= {"mou_out_drop_mom"}
    assert "60, down 80% from 300 the month before" in next(r.text for r in alert.reasons if r.rule_id == "mou_out_drop_mom")


def test_in_a_replay_a_date_decades_ahead_goes_to_dead_letter_and_the_recording_goes_on() -> None:
    """A replay has no wall clock to bound event times: a record more than a year past the newest
    before it would carry the clock there and make everything after it late."""
    log = Log()
    customer = "8613800000021"
    for day in (1, 2):
        log.add("cdr", customer, cdr(customer, f"2026-03-{day:02d}T10:00:00+08:00"))
    stray = log.add("cdr", customer, cdr(customer, "2099-12-31T10:00:00+08:00"))
    for day in (3, 4):
        log.add("cdr", customer, cdr(customer, f"2026-03-{day:02d}T10:00:00+08:00"))
    store = MemoryWindowStore()
    replaying = BatchProcessor(Settings(), store, lambda: RULES, Metrics(CollectorRegistry()), clock=lambda: CLOCK,
                               wall_clock_bound=False)
    out = run(replaying, log.records, size=2)
    assert [(d.offset, d.reason, d.field) for d in out.deadletters] == [(stray.offset, "out_of_range", "ts")]
    assert "a year past the newest event time" in out.deadletters[0].detail
    [state] = store.data.values()
    w = Windows.load([customer], [state])
    assert w.daily[0, :4, 0].tolist() == [1, 1, 1, 1] and date.fromordinal(int(w.day0[0])) == date(2026, 3, 4)


def test_bad_events_go_to_dead_letter_and_their_neighbours_are_processed() -> None:
    log = Log()
    good = "8613800000003"
    log.add("cdr", good, cdr(good, "2026-03-01T10:00:00+08:00"))
    bad = [
        log.add("cdr", good, b'{"oops'),
        log.add("cdr", good, cdr(good, "2026-03-01T10:00:00+08:00", duration_s="long")),
        log.add("cdr", good, b'{"event_id":"x","ts":"2026-03-01T10:00:00+08:00","kind":"voice"}'),
        log.add("cdr", good, cdr(good, "2026-03-01T10:00:00+08:00", duration_s=-1)),
        log.add("cdr", good, cdr("8613800000999", "2026-03-01T10:00:00+08:00")),
    ]
    log.add("cdr", good, cdr(good, "2026-03-01T11:00:00+08:00"))
    store = MemoryWindowStore()
    out = run(processor(store), log.records)
    assert [(d.offset, d.reason, d.field) for d in out.deadletters] == [
        (bad[0].offset, "not_json", None), (bad[1].offset, "invalid_field", "duration_s"),
        (bad[2].offset, "invalid_field", "customer_id"), (bad[3].offset, "invalid_field", "duration_s"),
        (bad[4].offset, "key_mismatch", "customer_id")]
    assert out.applied == 2
    w = Windows.load([good], asyncio.run(store.load([good])))
    assert w.rec["offset"][0, 0] == log.offsets["cdr"] - 1 and w.monthly[0, 0, C["out_calls"]] == 2


def test_reprocessing_the_same_records_changes_nothing_and_repeats_no_alert() -> None:
    log = Log()
    decliner(log, "8613800000004")
    store = MemoryWindowStore()
    first = run(processor(store), log.records)
    snapshot = dict(store.data)
    again = run(processor(store), log.records, size=7)
    assert again.applied == 0 and again.replayed == first.applied
    assert again.alerts == [] and store.data == snapshot


def test_batch_boundaries_do_not_change_the_state() -> None:
    log = Log()
    for i in range(5):
        decliner(log, f"861380000010{i}")
    stores = [MemoryWindowStore(), MemoryWindowStore()]
    run(processor(stores[0]), log.records, size=1000)
    run(processor(stores[1]), log.records, size=3)
    a, b = ({c: usage_fingerprint(raw) for c, raw in s.data.items()} for s in stores)
    assert a == b
    # Every report figure is the same. (The segment histograms, `store.baselines`, follow the
    # snapshots, which skip the batch a customer first appears in.)
    assert stores[0].report == stores[1].report and stores[0].report


def test_an_exit_read_before_the_usage_does_not_silence_the_warning() -> None:
    log = Log()
    decliner(log, "8613800000005")
    exit_event = billing("8613800000005", "2026-07-15T09:00:00+08:00", kind="port_out", reason_code=102)
    catch_up = [r for r in log.records if r.topic != "cdr"] + [log.add("billing", "8613800000005", exit_event)]
    out = run(processor(), catch_up + [r for r in log.records if r.topic == "cdr"])
    assert [a.customer_id for a in out.alerts] == ["8613800000005"]


def test_inspect_shows_what_made_the_alert() -> None:
    log = Log()
    decliner(log, "8613800000006")
    store = MemoryWindowStore()
    run(processor(store), log.records)
    report = describe("8613800000006", store.data["8613800000006"], Settings().zone)
    assert report["as_of"] == "2026-06-19"
    assert report["features"]["mou_out_m2"] == 300 and report["features"]["mou_out_mom"] == -0.8
    assert report["months"]["2026-05"]["out_min"] == 60 and report["months"]["2026-05"]["spend"] == 150
    assert report["profile"]["region"] == "north" and report["profile"]["vip_tier"] == "gold"
    assert "mou_out_mom" in render(report)


def test_customers_with_only_a_profile_or_bills_are_processed() -> None:
    log = Log()
    log.add("customers", "8613800000008", profile("8613800000008"))
    log.add("billing", "8613800000008", billing("8613800000008", "2026-04-01T02:00:00+08:00", amount=80.0,
                                                period="2026-03"))
    out = run(processor(), log.records)
    assert out.applied == 2 and out.alerts == []


def test_a_rule_with_for_counts_days_across_batches_through_the_state() -> None:
    c = "8613800000009"
    log = Log()
    log.add("customers", c, profile(c))
    for day in (3, 4):
        for k in range(4):  # complaints on consecutive days, each day its own batch below
            log.add("cdr", c, cdr(c, f"2026-05-{day:02d}T1{k}:00:00+08:00", customer_service=True))
    store = MemoryWindowStore()
    proc = processor(store)
    seen = []

    async def send(out: BatchOutput) -> None:
        seen.append(sorted({r.rule_id for a in out.alerts for r in a.reasons}))

    async def go() -> None:
        await proc.run(log.records[:5], send)  # profile + day 3
        w = Windows.load([c], await store.load([c]))
        assert w.text[0] is not None and len(w.text[0].streaks) == 1  # the streak is in the state
        await proc.run(log.records[5:], send)  # day 4

    asyncio.run(go())
    assert seen == [[], []]  # fired on day 4, but 1.5 alone stays under the default low level
    w = Windows.load([c], asyncio.run(store.load([c])))
    assert list(w.text[0].streaks.values())[0][0] == 2  # two days in a row


def test_alert_reasons_carry_values_and_thresholds() -> None:
    log = Log()
    decliner(log, "8613800000010")
    [alert] = run(processor(), log.records).alerts
    drop = next(r for r in alert.reasons if r.rule_id == "mou_out_drop_mom")
    assert drop.thresholds == {"mou_out_mom": -0.3, "mou_out_m2": 100.0}
    assert drop.values["mou_out_mom"] == -0.8 and drop.reason_code == 205


def test_one_snapshot_per_customer_per_ended_active_day_and_none_after_the_exit() -> None:
    c = "8613800000011"
    log = Log()
    log.add("customers", c, profile(c))
    for day in (3, 3, 4, 6):
        log.add("cdr", c, cdr(c, f"2026-05-{day:02d}T10:00:00+08:00"))
    log.add("billing", c, billing(c, "2026-05-07T09:00:00+08:00", kind="disconnect", reason_code=335))
    log.add("cdr", c, cdr(c, "2026-05-08T10:00:00+08:00"))
    log.add("cdr", c, cdr(c, "2026-05-09T10:00:00+08:00"))
    proc = processor()
    out = run(proc, log.records, size=2)
    counted = proc.metrics.registry.get_sample_value
    assert counted("churnwatch_snapshots_total") == 3
    assert counted("churnwatch_churn_events_total", {"kind": "disconnect", "region": "other"}) == 1
    assert [date.fromordinal(s.day).day for s in out.snapshots] == [3, 4, 6]  # not 8: the line had ended
    assert all(len(s.x) == len(NAMES) and s.score is None for s in out.snapshots)
    [exit_event] = out.churn_events
    assert (exit_event.kind, exit_event.reason_code, exit_event.voluntary) == ("disconnect", 335, False)
    assert date.fromordinal(exit_event.day) == date(2026, 5, 7) and exit_event.region == "north"
    again = run(processor(), log.records, size=3)  # other batch boundaries, same facts
    # Only the progress marker (how far exits had been read) depends on where batches end.
    strip = lambda snaps: [msgspec.structs.replace(s, exits_known=0) for s in snaps]  # noqa: E731
    assert strip(again.snapshots) == strip(out.snapshots) and again.churn_events == out.churn_events


def test_revenue_churn_is_reported_once_per_episode() -> None:
    c = "8613800000012"
    log = Log()
    log.add("customers", c, profile(c))
    for month, amount in ((1, 80.0), (2, 30.0), (3, 30.0), (4, 30.0), (5, 30.0)):
        log.add("cdr", c, cdr(c, f"2026-{month:02d}-10T10:00:00+08:00"))
        log.add("billing", c, billing(c, f"2026-{month + 1:02d}-01T02:00:00+08:00", amount=amount,
                                      period=f"2026-{month:02d}"))
    log.add("cdr", c, cdr(c, "2026-06-15T10:00:00+08:00"))
    out = run(processor(), log.records, size=2)
    assert [(e.kind, date.fromordinal(e.day).month) for e in out.churn_events] == [("revenue", 5)]


def test_a_published_model_scores_raises_the_level_and_explains_itself() -> None:
    weights = [0.0] * len(NAMES)
    weights[NAMES.index("mou_out_m1")] = 1.0  # this model fears heavy callers, whom no rule flags
    weights[NAMES.index("calls_out_30d")] = 0.03  # and raises a score by a hair for calls: no reason to read out
    snapshot = ModelSnapshot(7, "logistic", list(NAMES), 5000, 0.0, [0.0] * len(NAMES), [1.0] * len(NAMES),
                             weights, -2.0, {})
    log = Log()
    decliner(log, "8613800000013")
    decliner(log, "8613800000014", minutes=(300, 300, 300))
    young = run(processor(model=Scorer(msgspec.structs.replace(snapshot, labels=100))), log.records)
    assert [a.customer_id for a in young.alerts] == ["8613800000013"]  # a barely trained model escalates no one
    assert young.alerts[0].score is not None  # but its score is on the alert
    out = run(processor(model=Scorer(snapshot)), log.records)
    alert = next(a for a in out.alerts if a.customer_id == "8613800000014")
    assert alert.level == "high" and all(r.rule_id == "model" for r in alert.reasons)
    assert alert.model_version == 7 and alert.model_labels == 5000
    z = min(math.log1p(300), 5.0)  # standardised values are clipped at 5 sd
    sigmoid = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    assert sigmoid(z - 2.0) < alert.score < sigmoid(z - 2.0 + 0.03 * 5.0)  # the calls' hair is in the score
    [driver] = [r for r in alert.reasons if r.rule_id == "model"]
    assert driver.values == {"mou_out_m1": 300.0} and driver.text == "Outgoing minutes last month: 300"
    # Probability x monthly margin (all of the ARPU by default) x lifetime: 1 / the segment's monthly churn.
    lifetime = {"mid_high_end": 100.0, "potential_mid_high_end": 1 / 0.015, "mass": 40.0}[alert.segment]
    assert alert.value_at_risk == pytest.approx(alert.score * alert.arpu * min(lifetime, 60), rel=1e-3)
    assert {s.model_version for s in out.snapshots} == {7} and all(s.score is not None for s in out.snapshots)


def test_alerts_carry_the_action_tables_queue_and_the_control_group_flag() -> None:
    log = Log()
    decliner(log, "8613800000015")
    [alert] = run(processor(), log.records).alerts
    assert (alert.segment, alert.reason_code, alert.queue) == ("mid_high_end", 205, "account_manager")
    assert alert.lifecycle == "D" and "technical follow-up first" in alert.suggested_action
    assert alert.holdout == in_holdout("8613800000015", Settings().holdout_share)
    everyone = BatchProcessor(Settings(holdout_share=0.999999), MemoryWindowStore(), lambda: RULES,
                              Metrics(CollectorRegistry()), clock=lambda: CLOCK)
    [held] = run(everyone, log.records).alerts
    assert held.holdout
    assert everyone.metrics.registry.get_sample_value("churnwatch_alerts_suppressed_total", {"cause": "holdout"}) == 1


def test_the_control_group_is_a_stable_tenth_of_customers() -> None:
    ids = [f"86138{i:08d}" for i in range(20_000)]
    drawn = [in_holdout(c, 0.1) for c in ids]
    assert 0.09 < sum(drawn) / len(ids) < 0.11
    assert drawn == [in_holdout(c, 0.1) for c in ids]


def test_the_cooldown_holds_back_a_repeat_and_counts_it() -> None:
    c = "8613800000016"
    log = Log()
    decliner(log, c)
    proc = processor()
    held_back = lambda: proc.metrics.registry.get_sample_value(  # noqa: E731
        "churnwatch_alerts_suppressed_total", {"cause": "cooldown"}) or 0
    first = run(proc, log.records)
    before = held_back()
    later = [log.add("cdr", c, cdr(c, "2026-06-22T10:00:00+08:00", duration_s=60))]
    again = run(proc, later)
    assert len(first.alerts) == 1 and again.alerts == []
    assert held_back() == before + 1


def test_with_a_pseudonym_key_state_and_dead_letters_name_the_pseudonym_never_the_number() -> None:
    number = "8613800000009"
    log = Log()
    log.add("cdr", number, cdr(number, "2026-03-01T10:00:00+08:00"))
    log.add("cdr", number, cdr(number, "2026-03-01T11:00:00+08:00", duration_s=-1))  # refused
    store = MemoryWindowStore()
    settings = Settings(pseudonym_key="sixteen-byte-key")
    proc = BatchProcessor(settings, store, lambda: RULES, Metrics(CollectorRegistry()), clock=lambda: CLOCK)
    out = run(proc, log.records)
    pseudonym = Pseudonyms(b"sixteen-byte-key")(number)
    assert list(store.data) == [pseudonym] and pseudonym != number
    [dead] = out.deadletters
    assert (dead.key, dead.value_b64, dead.field) == (pseudonym, None, "duration_s")
    assert number not in msgspec.json.encode(dead).decode()


def test_pseudonyms_are_stable_for_a_key_and_differ_between_keys() -> None:
    a, b = Pseudonyms(b"one"), Pseudonyms(b"two")
    assert a("8613800000001") == Pseudonyms(b"one")("8613800000001") != b("8613800000001")
    assert a("8613800000001") != a("8613800000002")
    assert Pseudonyms(None)("8613800000001") == "8613800000001"


def test_a_drop_ordinary_for_a_swinging_customer_is_not_warned_and_the_same_drop_for_a_steady_one_is() -> None:
    steady, swinging = "8613800000031", "8613800000032"
    log = Log()
    months = (1, 2, 3, 4, 5, 6)
    decliner(log, steady, months, (300, 300, 300, 300, 300, 60))
    decliner(log, swinging, months, (300, 60, 300, 60, 300, 60))  # falls this far every other month
    proc = processor()
    out = run(proc, log.records)
    assert [a.customer_id for a in out.alerts] == [steady]
    assert "mou_out_drop_mom" in {r.rule_id for r in out.alerts[0].reasons}
    z = {c: describe(c, proc.store.data[c], Settings().zone, date(2026, 7, 20))["features"]["mou_out_mom_z"] for c in (steady, swinging)}
    assert z[steady] < -2 < z[swinging]


def test_a_segment_the_rule_files_add_gets_its_own_baselines(tmp_path: Path) -> None:
    rules = (Path(__file__).resolve().parents[2] / "alert_rules" / "churn.yaml").read_text()
    (tmp_path / "churn.yaml").write_text(rules.replace("segments:\n", "segments:\n  heavy_talkers: mou_out_m2 >= 250\n", 1))
    custom = load_rules([tmp_path])
    heavy, light = "8613800000041", "8613800000042"
    log = Log()
    decliner(log, heavy, (3, 4, 5), (300, 300, 290))
    decliner(log, light, (3, 4, 5), (150, 150, 140))
    store = MemoryWindowStore()
    proc = BatchProcessor(Settings(), store, lambda: custom, Metrics(CollectorRegistry()), clock=lambda: CLOCK,
                          model=lambda: None)
    run(proc, log.records, size=5)  # snapshots skip the batch a customer first appears in
    segments = {key.split("|")[2] for key in store.baselines if "|mou_out_mom|" in key}
    # The light one is mid/high-end (150 yuan, over 100 minutes) and stays there; the heavy one
    # moves to the segment the file adds, and nobody is counted twice. (Month-over-month changes
    # only: the rolling ones start a month earlier, when neither was mid/high-end yet.)
    assert segments == {"heavy_talkers", "mid_high_end"}
    per_segment = {s: sum(n for k, n in store.baselines.items() if f"|{s}|mou_out_mom|" in k) for s in segments}
    assert per_segment["heavy_talkers"] == per_segment["mid_high_end"] > 0


def _state(w: Windows) -> tuple[bytes, list]:
    return w.rec.tobytes(), list(w.text)


def test_the_stages_return_what_they_decide_and_leave_the_windows_they_read_alone() -> None:
    from stream_app.alerts.build import AlertPolicy, build_alerts
    from stream_app.features.derive import derive
    from stream_app.model.observations import churn_events
    from stream_app.reports.facts import Before, report_increments
    from stream_app.windows.lifecycle import Exit, Moves
    from stream_app.worker.pipeline import evaluate_rules

    store, log = MemoryWindowStore(), Log()
    decliner(log, "8613800000001")
    decliner(log, "8613800000002", minutes=(300, 300, 300))
    log.add("billing", "8613800000003", billing("8613800000003", "2026-05-20T12:00:00+08:00", kind="port_out", reason_code=101))
    run(processor(store), log.records)
    customers = sorted(store.data)
    w = Windows.load(customers, [store.data[c] for c in customers])
    w.rec["alerted_level"], w.rec["alerted_day"] = 0, 0  # as if never alerted: the decliner is due again
    s, rows = Settings(), list(range(len(customers)))
    now_day = w.day0.astype(np.int64)
    before = Before.of(w, s.zone, s.late_grace_days)
    before.exit_ts[:] = 0  # as if the exit came in this batch
    leaver = customers.index("8613800000003")
    moves = Moves(exits={leaver: Exit(int(w.rec["exit_ts"][leaver]), "port_out", 101)})
    untouched = _state(w)
    features = derive(w, now_day, s.zone)
    features["churn_score"] = np.full(len(rows), np.nan)
    ev = evaluate_rules(w, RULES, features, now_day)
    events, reported = churn_events(w, features, rows, moves, now_day, s.zone)
    report, tails = report_increments(w, rows, before, events, moves, s.zone, s.cohort, s.late_grace_days)
    alerts, _, alerted = build_alerts(w, ev.features, ev, RULES, rows, now_day, s.zone, AlertPolicy(), CLOCK)
    assert _state(w) == untouched  # every stage only read the windows
    decliner_row = customers.index("8613800000001")
    assert [a.customer_id for a in alerts] == ["8613800000001"]
    assert alerted == {decliner_row: (int(ev.level[decliner_row]), int(now_day[decliner_row]))}
    assert [e.customer_id for e in events if e.kind == "port_out"] == ["8613800000003"]
    assert set(reported) <= set(rows) and set(tails) <= set(rows)
    w.mark_alerted(alerted)
    assert int(w.rec["alerted_level"][decliner_row]) == alerted[decliner_row][0]


def test_a_model_reason_a_rule_has_given_already_is_not_read_twice() -> None:
    weights = [0.0] * len(NAMES)
    weights[NAMES.index("mou_out_mom")] = -2.0  # this model fears falling minutes, as the rule does
    snapshot = ModelSnapshot(7, "logistic", list(NAMES), 5000, 0.0, [0.0] * len(NAMES), [1.0] * len(NAMES),
                             weights, -2.0, {})
    log = Log()
    decliner(log, "8613800000015")
    [alert] = run(processor(model=Scorer(snapshot)), log.records).alerts
    texts = [r.text for r in alert.reasons]
    assert "Outgoing minutes last month: 60, down 80% from 300 the month before" in texts
    assert len(texts) == len(set(texts)) and [r.rule_id for r in alert.reasons if r.rule_id == "model"] == []


def test_an_alert_in_the_hours_before_the_last_bill_comes_is_valued_by_the_bill_before() -> None:
    log = Log()
    decliner(log, "8613800000001")
    # May's bill is late: June's usage, and the alerts on it, come first.
    late = [r for r in log.records if r.topic == "billing" and b'"2026-05"' in (r.value or b"")]
    assert len(late) == 1
    out = run(processor(), [r for r in log.records if r not in late])
    assert out.alerts and all(a.arpu == 150 and a.value_at_risk > 0 for a in out.alerts)


def test_the_demo_shows_an_alert_on_one_short_line() -> None:
    from stream_app.tools.demo import ALERT_LINE, alert_line

    log = Log()
    decliner(log, "8613800000001")
    [alert] = run(processor(), log.records).alerts
    line = alert_line(alert)
    strongest = max(alert.reasons, key=lambda r: r.importance).text
    assert len(line) <= ALERT_LINE and "\n" not in line, line
    assert line.startswith(f"[{alert.level.upper():6}] ") and alert.customer_id in line and "150 yuan/month" in line
    assert strongest[:40] in line and line.endswith(f"-> {alert.queue.replace('_', ' ')}")
    assert (f"(+{len(alert.reasons) - 1} more)" in line) == (len(alert.reasons) > 1)


def test_metrics_count_alerts_and_churn_by_the_regions_settings_name_and_the_rest_as_other() -> None:
    log = Log()
    for customer, region in (("8613800000301", "north"), ("8613800000302", "atlantis")):
        decliner(log, customer, region=region)
        log.add("billing", customer, billing(customer, "2026-06-25T09:00:00+08:00", kind="port_out", reason_code=101))
    proc = BatchProcessor(Settings(_env_file=None, regions=["north", "south"]), MemoryWindowStore(), lambda: RULES,
                          Metrics(CollectorRegistry()), clock=lambda: CLOCK)
    out = run(proc, log.records)
    assert {a.region for a in out.alerts} == {"north", "atlantis"}
    counted = proc.metrics.registry.get_sample_value
    for region in ("north", "other"):
        assert sum(counted("churnwatch_alerts_total", {"level": level, "region": region}) or 0
                   for level in ("low", "medium", "high")) >= 1
        assert counted("churnwatch_churn_events_total", {"kind": "port_out", "region": region}) == 1
    assert counted("churnwatch_churn_events_total", {"kind": "port_out", "region": "atlantis"}) is None


def test_the_profiles_account_manager_is_on_the_customers_alerts_and_a_new_profile_changes_it() -> None:
    log = Log()
    decliner(log, "8613800000401", account_manager="am-17")
    decliner(log, "8613800000402")
    out = run(processor(), log.records)
    assert {a.customer_id: a.account_manager for a in out.alerts} == {"8613800000401": "am-17", "8613800000402": ""}
    log.add("customers", "8613800000401", profile("8613800000401", ts="2026-06-01T00:00:00+08:00",
                                                   account_manager="am-20"))
    for day in range(21, 29, 3):
        log.add("cdr", "8613800000401", cdr("8613800000401", f"2026-06-{day}T10:00:00+08:00", duration_s=360))
    store = MemoryWindowStore()
    proc = processor(store=store)
    run(proc, log.records)
    [tail] = Windows.load(["8613800000401"], asyncio.run(store.load(["8613800000401"]))).text
    assert tail.manager == "am-20"


def test_each_stage_of_a_batch_is_timed_and_together_they_fit_in_its_time() -> None:
    log = Log()
    decliner(log, "8613800000001")
    proc = processor()
    started = time.perf_counter()
    run(proc, log.records, size=len(log.records))
    wall = time.perf_counter() - started
    seconds = {s.labels["stage"]: s.value for s in proc.metrics.stage_seconds.collect()[0].samples
               if s.name.endswith("_total")}
    # The consumer times fetch and commit; a batch through the pipeline goes through every other stage.
    assert {stage for stage, spent in seconds.items() if spent > 0} == set(STAGES) - {"fetch", "commit"}
    assert sum(seconds.values()) <= wall


def test_stage_figures_say_which_stage_caps_the_worker() -> None:
    figures = stage_figures({"decode": 2.0, "apply": 6.0}, events=1_000_000, wall_s=10.0, ceiling=200_000)
    assert figures["apply"] == {"us_per_event": 6.0, "share": 0.6, "ratio": round(1e6 / 6.0 / 200_000, 3)}
    assert figures["decode"]["ratio"] == 2.5  # alone it would run at 500,000 events/s: 2.5 ceilings
    assert figures["other"] == {"us_per_event": 2.0, "share": 0.2, "ratio": 2.5}  # the 2 s no stage counted
    assert "ratio" not in stage_figures({"apply": 1.0}, events=10, wall_s=1.0)["apply"]  # no ceiling, no ratio


class _Renewals(MemoryWindowStore):
    """A store that keeps which customers each write renewed the expiry of."""

    def __init__(self) -> None:
        super().__init__()
        self.renewed: list[set[str]] = []

    async def save(self, writes: dict[str, Write], report: Increments | None = None, applied: Applied | None = None,
                   book: Book | None = None, renew: Collection[str] | None = None,
                   sent: asyncio.Event | None = None) -> list[str]:
        self.renewed.append(set(writes if renew is None else renew))
        return await super().save(writes, report, applied, book, renew, sent)


def test_a_state_s_expiry_starts_again_with_its_customer_s_first_write_of_a_new_day() -> None:
    store, log, a, b = _Renewals(), Log(), "8613800000100", "8613800000110"
    proc = processor(store)
    made = {"cdr": cdr, "billing": lambda c, ts: billing(c, ts, amount=80.0, period="2026-04")}
    for batch in ([("cdr", a, "2026-05-01T10:00"), ("cdr", b, "2026-05-01T11:00")],  # new customers
                  [("cdr", a, "2026-05-01T15:00"), ("cdr", b, "2026-05-02T09:00")],  # b's day moved on
                  [("cdr", a, "2026-04-30T23:00")],  # a late call: an older day
                  [("billing", a, "2026-05-03T08:00")]):  # a bill on a new day
        out = run(proc, [log.add(topic, c, made[topic](c, f"{ts}:00+08:00")) for topic, c, ts in batch])
        assert out.applied == len(batch)
    assert store.renewed == [{a, b}, {b}, set(), {a}]


def test_a_state_outlives_its_customer_s_last_event_by_the_idle_expiry_after_an_event_dated_ahead() -> None:
    # A bill dated three days ahead (within the skew allowed) moves the newest day on at once, so the
    # calls of the days between renew nothing: the state's time to live must cover them.
    settings, store, log, c = Settings(max_clock_skew_s=3 * 86400), _Renewals(), Log(), "8613800000120"
    now = [datetime(2026, 5, 1, 2, tzinfo=timezone.utc)]
    proc = BatchProcessor(settings, store, lambda: RULES, Metrics(CollectorRegistry()), clock=lambda: now[0])
    renewed_at = []
    bill = billing(c, "2026-05-04T02:00:00+00:00", amount=80.0, period="2026-05")
    for wall, topic, event in ((datetime(2026, 5, 1, 2), "cdr", cdr(c, "2026-05-01T01:00:00+00:00")),
                               (datetime(2026, 5, 1, 3), "billing", bill),
                               *((datetime(2026, 5, day, 14), "cdr", cdr(c, f"2026-05-{day:02d}T13:00:00+00:00"))
                                 for day in (2, 3, 4))):
        now[0] = wall.replace(tzinfo=timezone.utc)
        assert run(proc, [log.add(topic, c, event)]).applied == 1
        renewed_at += [now[0]] if c in store.renewed[-1] else []
    assert len(renewed_at) == 2  # the first call and the bill dated ahead; the calls after renew nothing
    last_event = datetime(2026, 5, 4, 13, tzinfo=timezone.utc)
    expires = renewed_at[-1] + timedelta(seconds=state_ttl_s(settings.idle_expiry_days, settings.max_clock_skew_s))
    assert expires >= last_event + timedelta(days=settings.idle_expiry_days)
