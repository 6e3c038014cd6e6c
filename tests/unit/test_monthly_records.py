"""A month of monthly aggregates planned as arrays: the records come day by day and carry the totals exactly."""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

from stream_app.offline.monthly_records import LONGEST_CALL_S, month_records

ZONE = ZoneInfo("Asia/Kolkata")
CUSTOMERS = ["cust-00001", "cust-00002", "cust-00003"]
COUNTERS = [
    # Minutes over one call a month more than a day long; an average under one SMS; dropped and off-net calls.
    {"out_min": 3000.0, "out_calls": 1.0, "offnet_min": 1000.0, "in_min": 12.5, "sms_out": 0.4,
     "dropped_calls": 1.0, "contacts": 2.7, "data_mb": 100.3, "data_sessions": 3.0, "spend": 210.456, "topup": 50.0},
    # Totals without counts: spread over the default number of records; a customer-service call.
    {"out_min": 7.3, "in_min": 0.0, "cs_calls": 1.0, "data_mb": 0.0, "spend": 0.0},
    {},  # a customer without usage that month has no records
]


def _records() -> list[tuple[str, str, dict]]:
    return [(topic, key.decode(), json.loads(value))
            for topic, key, value in month_records(CUSTOMERS, COUNTERS, "2014-07", date(2014, 7, 1), 31, ZONE)]


def test_records_come_day_by_day_then_customer_by_customer_then_in_number_order() -> None:
    records = _records()
    order = [(datetime.fromisoformat(v["ts"]).date(), CUSTOMERS.index(k), int(v["event_id"].rsplit("-", 1)[1]))
             for _, k, v in records]
    assert order == sorted(order)
    assert all(date(2014, 7, 3) <= day <= date(2014, 7, 31) for day, _, _ in order)  # the month's last 29 days
    for c in (0, 1):  # each customer's records numbered 1..n, none twice
        assert sorted(n for _, who, n in order if who == c) == list(range(1, sum(who == c for _, who, _ in order) + 1))
    assert {k for _, k, _ in records} == set(CUSTOMERS[:2])


def test_the_records_carry_each_total_exactly_and_no_call_lasts_over_a_day() -> None:
    records = _records()
    mine = [v for _, k, v in records if k == CUSTOMERS[0]]
    out = [v for v in mine if v["kind"] == "voice" and v["direction"] == "MO"]
    assert sum(v["duration_s"] for v in out) == 180_000 and len(out) == 3
    assert max(v["duration_s"] for v in out) <= LONGEST_CALL_S
    assert sum(v["duration_s"] for v in mine if v.get("direction") == "MT") == 750
    data = [v["data_bytes"] for v in mine if v["kind"] == "data"]
    assert sum(data) == round(100.3 * 1024 * 1024) and len(data) == 3  # over the sessions the table counts
    assert len([v for v in mine if v["kind"] == "sms"]) == 0  # 0.4 SMS rounds to none
    assert [v["termination"] for v in out] == ["dropped", "normal", "normal"]
    assert [v["peer_network"] for v in out] == ["off_net", "on_net", "on_net"]  # a third of the minutes
    assert {v["peer_id"] for v in out} == {"p0", "p1"}  # 2.7 contacts: two
    billing = {v["kind"]: v for _, k, v in records if k == CUSTOMERS[0] and v["kind"] in ("bill", "recharge")}
    assert billing["bill"]["amount"] == 210.46 and billing["bill"]["period"] == "2014-07"
    assert billing["bill"]["ts"].startswith("2014-07-31") and billing["recharge"]["amount"] == 50.0
    second = [v for _, k, v in records if k == CUSTOMERS[1]]
    assert [v for v in second if v.get("customer_service")] and len(second) == 8 + 1
    assert sum(v["duration_s"] for v in second if not v.get("customer_service")) == 438


def test_counters_made_by_hand_that_are_negative_or_not_numbers_make_no_records() -> None:
    odd = [{"sms_out": -3.0, "cs_calls": -1.0, "out_min": float("nan"), "in_min": float("inf"), "contacts": 1e19,
            "spend": 12.0}]
    records = list(month_records(["cust-00009"], odd, "2014-07", date(2014, 7, 1), 31, ZONE))
    assert [json.loads(v)["kind"] for _, _, v in records] == ["bill"]
