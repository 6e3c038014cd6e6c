"""An event's time in Unix seconds, as admission reads it: the same as `datetime.timestamp`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec
import pytest

from stream_app.contracts.events import AwareTime
from stream_app.ingest.admission import unix_seconds


class _Stamped(msgspec.Struct):
    ts: AwareTime


@pytest.mark.parametrize("text", ["2026-03-12T08:15:00+08:00", "2026-03-12T08:15:00.250001+08:00",
                                  "2026-03-12T00:15:00Z", "1970-01-02T00:00:00-05:30", "1969-12-31T23:59:59.5Z",
                                  "0001-01-01T00:00:00+08:00", "9999-12-31T23:59:59.999999-23:59",
                                  "2100-01-01T00:00:00+14:00"])
def test_a_decoded_time_reads_as_its_timestamp(text: str) -> None:
    ts = msgspec.json.decode(f'{{"ts": "{text}"}}'.encode(), type=_Stamped).ts
    assert unix_seconds(ts) == ts.timestamp()
    again = msgspec.json.decode(f'{{"ts": "{text}"}}'.encode(), type=_Stamped).ts
    assert unix_seconds(again) == unix_seconds(ts)  # the offset's epoch, kept, gives the same


def test_a_zone_with_summer_time_is_read_by_its_own_offset_on_each_side_of_the_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    before, after = datetime(2026, 3, 29, 1, 30, tzinfo=berlin), datetime(2026, 3, 29, 3, 30, tzinfo=berlin)
    assert unix_seconds(after) - unix_seconds(before) == 3600  # two hours on the clock, one in fact
    assert unix_seconds(after) == after.timestamp()


def test_equal_offsets_from_different_objects_give_the_same_seconds() -> None:
    ts = datetime(2026, 3, 12, 8, 15, tzinfo=timezone(timedelta(hours=8)))
    other = ts.replace(tzinfo=timezone(timedelta(hours=8)))
    assert unix_seconds(ts) == unix_seconds(other) == ts.timestamp()
