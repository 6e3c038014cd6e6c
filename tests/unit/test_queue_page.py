"""The call-queue page without a broker: what it renders, and what it refuses to record."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import msgspec
import pytest
from aiohttp.test_utils import TestClient, TestServer

from stream_app.alerts.queue_page import CallQueue, load_lookup, make_app
from stream_app.contracts.events import AlertReason
from stream_app.settings import Settings
from tests.unit.test_campaign import alert


def queue_with(*alerts, lookup: dict[str, str] | None = None) -> CallQueue:
    queue = CallQueue(Settings(), day=date(2026, 3, 2), budget=5, lookup=lookup)
    queue.alerts = list(alerts)
    return queue


async def fetch(queue: CallQueue, method: str, path: str, **kwargs) -> tuple[int, str]:
    async with TestClient(TestServer(make_app(queue, refresh_s=3600))) as client:
        resp = await client.request(method, path, allow_redirects=False, **kwargs)
        return resp.status, await resp.text()


def test_the_page_shows_the_number_from_the_lookup_and_escapes_what_it_shows() -> None:
    reason = AlertReason("mou_drop", 205, 1.0, {}, {}, "Outgoing minutes <script>alert(1)</script> fell 60%")
    a = msgspec.structs.replace(alert("p0000000000000000000001"), reasons=[reason])
    status, html = asyncio.run(fetch(queue_with(a, lookup={a.customer_id: "+86 138 0000 0001"}), "GET", "/?agent=a7"))
    assert status == 200
    assert "+86 138 0000 0001" in html and "&lt;script&gt;" in html and "<script>" not in html
    assert f'data-alert-id="{a.alert_id}"' in html and 'value="a7"' in html


def test_an_outcome_for_an_alert_not_on_the_list_or_an_unknown_result_is_refused() -> None:
    queue = queue_with(alert("c1"))
    status, text = asyncio.run(fetch(queue, "POST", "/outcome", data={"alert_id": "someone-else", "result": "accepted"}))
    assert status == 400 and "not on the call list" in text
    status, text = asyncio.run(fetch(queue, "POST", "/outcome", data={"alert_id": alert("c1").alert_id,
                                                                      "result": "maybe"}))
    assert status == 400 and "unknown result 'maybe'" in text
    assert queue.outcomes == {}


def test_the_lookup_file_must_name_its_columns(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("customer_id,phone\np1,+8613800000001\n")
    bad.write_text("id,number\np1,+8613800000001\n")
    assert load_lookup(good) == {"p1": "+8613800000001"}
    with pytest.raises(ValueError, match="expected the columns customer_id,phone"):
        load_lookup(bad)
