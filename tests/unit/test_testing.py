"""`stream_app.testing`, as an operator uses it to try a rule pack of their own."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from stream_app.testing import Log, cdr, decliner, fingerprint, fixed_clock, profile, run_batches
from stream_app.windows.store import MemoryWindowStore

PACK = """
groups:
  - name: service
    rules:
      - id: many_complaints
        expr: cs_calls_30d >= 3
        importance: 3
        labels: {reason_code: 103}
        annotations:
          summary: "{cs_calls_30d:.0f} calls to customer service in 30 days"
levels:
  default: {high: 3, medium: 2, low: 1}
"""


def test_an_operators_own_pack_runs_through_the_real_pipeline(tmp_path: Path) -> None:
    (tmp_path / "service.yaml").write_text(PACK)
    log = Log()
    for customer, complaints in (("8613800000001", 4), ("8613800000002", 1)):
        log.add("customers", customer, profile(customer))
        for day in range(1, 29):
            log.add("cdr", customer, cdr(customer, f"2026-05-{day:02d}T10:00:00+08:00"))
            if 20 <= day < 20 + complaints:
                log.add("cdr", customer, cdr(customer, f"2026-05-{day:02d}T11:00:00+08:00", customer_service=True))
    out = run_batches(log.records, [tmp_path])
    assert not out.deadletters
    assert [(a.customer_id, a.level) for a in out.alerts] == [("8613800000001", "high")]
    assert "4 calls to customer service in 30 days" in out.alerts[0].reasons[0].text


def test_a_replay_counts_nothing_twice_and_the_fingerprint_shows_it() -> None:
    log, store = Log(), MemoryWindowStore()
    decliner(log, "8613800000001")
    rules = [Path(__file__).resolve().parents[2] / "alert_rules"]
    first = run_batches(log.records, rules, store=store)
    counted = fingerprint(store, "8613800000001")
    again = run_batches(log.records, rules, store=store, batch_size=7)
    assert first.alerts and not again.alerts and again.replayed == len(log.records)
    assert fingerprint(store, "8613800000001") == counted


def test_a_clock_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fixed_clock(datetime(2026, 12, 1))
