"""Admission's inline path for the common CDR gives what every check in turn gives: the same
event and time for a record that passes, the same refusal for one that does not."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from stream_app.errors import InvalidEvent
from stream_app.ingest.admission import Edge
from stream_app.settings import Settings
from stream_app.worker.output import RawRecord
from tests.factories import billing, cdr, profile

NOW = datetime(2026, 3, 12, 12, 0, tzinfo=timezone.utc)
CUST = "8613800000001"


def _records(settings: Settings) -> list[RawRecord]:
    t = settings.topics
    key = CUST.encode()
    values = [
        cdr(CUST, "2026-03-12T10:00:00+08:00"), cdr(CUST, "2026-03-12T02:00:00Z"),
        cdr(CUST, "2026-03-11T21:30:00.5-05:30"), cdr(CUST, "2026-03-12T02:00:00+00:00"),
        cdr(CUST, "2026-03-12T19:59:00+08:00"),  # 1 minute before the clock: within the skew
        cdr(CUST, "2026-03-13T10:00:00+08:00"),  # a day ahead of the clock
        cdr(CUST, "1999-12-31T23:59:59Z"), cdr(CUST, "2000-01-01T00:00:00Z"),  # either side of the floor
        cdr("8613800000002", "2026-03-12T10:00:00+08:00"),  # not the key's customer
        cdr("86138{0000}1", "2026-03-12T10:00:00+08:00"), cdr(CUST, "2026-03-12T10:00:00+08:00", duration_s=-1),
        cdr(CUST, "2026-03-12T10:00:00+08:00", cell_id="c" * 5000),  # over max_record_bytes
        b'{"oops', None,
    ]
    records = [RawRecord(t.cdr, 0, i, key, v) for i, v in enumerate(values)]
    records.append(RawRecord(t.cdr, 0, len(records), None, cdr(CUST, "2026-03-12T10:00:00+08:00")))
    records.append(RawRecord(t.cdr, 0, len(records), "8613800000001\u00e9".encode(), cdr(CUST, "2026-03-12T10:00:00Z")))
    records.append(RawRecord(t.billing, 0, 0, key, billing(CUST, "2026-03-12T10:00:00+08:00", period="2026-03")))
    records.append(RawRecord(t.customers, 0, 0, key, profile(CUST)))
    records.append(RawRecord(t.customers, 0, 1, key, None))
    return records


def _outcome(admit, rec: RawRecord, latest: float) -> object:
    try:
        return admit(rec, latest)
    except InvalidEvent as err:
        return err.reason, err.field


@pytest.mark.parametrize("pseudonym_key", [None, "sixteen-byte-key"])
def test_the_inline_path_admits_and_refuses_as_every_check_does(pseudonym_key: str | None) -> None:
    settings = Settings(_env_file=None, pseudonym_key=pseudonym_key, max_record_bytes=4096)
    edge = Edge(settings, lambda: NOW)
    latest = edge.bounds.latest()
    outcomes = [(_outcome(edge.admit, rec, latest), _outcome(edge._checked, rec, latest))
                for rec in _records(settings)]
    assert [inline for inline, _ in outcomes] == [checked for _, checked in outcomes]
    admitted = [inline for inline, _ in outcomes if not isinstance(inline[1], (str, type(None)))]
    refused = [inline for inline, _ in outcomes if isinstance(inline[1], (str, type(None)))]
    assert len(admitted) == 9 and len(refused) == 10  # both kinds met, so the comparison says something
    if pseudonym_key:
        assert all(event.customer_id != CUST for event, _ in admitted)
