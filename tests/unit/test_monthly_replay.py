"""Real monthly data replayed as events: the mapping is checked, and the totals survive the trip."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from stream_app.contracts.calendar import month_index
from stream_app.features.derive import derive
from stream_app.offline.monthly_data import MappingError, MonthlyRow, load_mapping, monthly_events, read_rows
from stream_app.windows.state import SCALE, C, Windows
from stream_app.windows.store import MemoryWindowStore
from tests.conftest import shared_data
from tests.factories import Log
from tests.unit.test_pipeline import processor, run

REPO = Path(__file__).resolve().parents[2]
ZONE = ZoneInfo("Asia/Shanghai")


def test_a_bad_mapping_is_refused_with_every_problem_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('description: x\nid_column: a\nmonths: {"6": "2014-13"}\n'
                   'counters: {minutes: [{column: m}]}\nlabel: {meaning: x, exit_reason_code: 380}\n')
    with pytest.raises(MappingError) as exc:
        load_mapping(bad)
    lines = str(exc.value).splitlines()
    assert len(lines) == 3 and all(line.startswith(f"{bad}: ") for line in lines)
    assert "'2014-13'" in lines[0] and "unknown counter(s) minutes" in lines[1] and "either `column`" in lines[2]


def test_a_column_the_data_lacks_is_named(tmp_path: Path) -> None:
    mapping = load_mapping(REPO / "mappings" / "telecom_monthly_sample1000.yaml")
    data = tmp_path / "short.csv"
    data.write_text("mobile_number,arpu_6\n7000000001,100\n")
    with pytest.raises(MappingError, match=r"no column\(s\) 'aon', 'arpu_7', 'arpu_8'"):
        read_rows(data, mapping)


@pytest.mark.parametrize("name", ["telecom_monthly_sample1000", "iranian_churn_uci563"])
def test_the_shipped_mappings_read_their_data_with_the_documented_churn_rates(name: str) -> None:
    rows = read_rows(shared_data(f"{name}.csv"), load_mapping(REPO / "mappings" / f"{name}.yaml"))
    rate = sum(r.churned for r in rows) / len(rows)
    assert (len(rows), round(rate, 3)) == {"telecom_monthly_sample1000": (1000, 0.110),
                                           "iranian_churn_uci563": (3150, 0.157)}[name]


def test_minutes_data_and_money_arrive_in_the_windows_as_the_table_has_them() -> None:
    mapping = load_mapping(REPO / "mappings" / "telecom_monthly_sample1000.yaml")
    rows: list[MonthlyRow] = read_rows(shared_data("telecom_monthly_sample1000.csv"), mapping)[:60]
    log = Log()
    for topic, key, value in monthly_events(rows, mapping.label, ZONE):
        log.add(topic, key.decode(), value)
    store = MemoryWindowStore()
    run(processor(store), log.records, size=500)
    customers = [r.customer_id for r in rows]
    w = Windows.load(customers, [store.data[c] for c in customers])
    for i, r in enumerate(rows):
        for month, table in r.months.items():
            k = int(w.month0[i]) - month_index(int(month[:4]), int(month[5:]))
            got = {name: w.monthly[i, k, C[name]] / SCALE.get(name, 1) for name in ("out_min", "in_min", "data_mb",
                                                                                       "spend")}
            assert got["spend"] == pytest.approx(table["spend"], abs=0.01)
            assert got["out_min"] == pytest.approx(table["out_min"], abs=1.0)
            assert got["in_min"] == pytest.approx(table["in_min"], abs=1.0)
            assert got["data_mb"] == pytest.approx(table["data_mb"], abs=0.5)  # 64 KiB blocks per record
    exited = {customers[i] for i in range(len(rows)) if w.rec["exit_ts"][i] > 0}
    assert exited == {r.customer_id for r in rows if r.churned} and exited


def test_a_long_table_of_customer_months_reads_like_a_wide_one(tmp_path: Path) -> None:
    data = tmp_path / "long.csv"
    data.write_text("msisdn,ym,mou,fee,left\n8613800000001,a,120,30,0\n8613800000001,b,60,30,1\n"
                    "8613800000002,a,10,5,0\n")
    mapping = tmp_path / "long.yaml"
    mapping.write_text('description: x\nlayout: long\nid_column: msisdn\nmonth_column: ym\n'
                       'months: {a: "2026-01", b: "2026-02"}\ncurrency_per_yuan: 10\n'
                       'counters: {out_min: [{column: mou}], spend: [{column: fee}]}\n'
                       'label: {column: left, meaning: "left after the last month", exit_reason_code: 101}\n')
    rows = {r.customer_id: r for r in read_rows(data, load_mapping(mapping))}
    assert rows["8613800000001"].months == {"2026-01": {"out_min": 120.0, "spend": 3.0},
                                            "2026-02": {"out_min": 60.0, "spend": 3.0}}
    assert rows["8613800000001"].churned and not rows["8613800000002"].churned
    assert list(rows["8613800000002"].months) == ["2026-01"]


def _table(tmp_path: Path, csv_text: str, extra: str = "") -> Path:
    (tmp_path / "t.csv").write_text(csv_text)
    mapping = tmp_path / "t.yaml"
    mapping.write_text('description: x\nlayout: long\nid_column: msisdn\nmonth_column: ym\n'
                       'months: {a: "2026-01"}\n'
                       'counters: {out_min: [{column: mou}], out_calls: [{column: calls}], cs_calls: [{column: cs}]}\n'
                       'label: {column: left, meaning: "left after", exit_reason_code: 101}\n' + extra)
    return mapping


def test_a_month_is_whole_in_the_windows_of_the_day_it_is_judged_on(tmp_path: Path) -> None:
    # January has 31 days and the 30-day windows of 1 February hold only 29 of them: a lone
    # customer-service call, and minutes over an average of under one call a month, used to fall out.
    mapping = load_mapping(_table(tmp_path, "msisdn,ym,mou,calls,cs,left\n8613800000001,a,10,0.4,1,0\n"))
    rows = read_rows(tmp_path / "t.csv", mapping)
    log, store = Log(), MemoryWindowStore()
    for topic, key, value in monthly_events(rows, mapping.label, ZONE):
        log.add(topic, key.decode(), value)
    run(processor(store), log.records, size=500)
    w = Windows.load(["8613800000001"], [store.data["8613800000001"]])
    f = derive(w, np.array([date(2026, 2, 1).toordinal()]), ZONE)
    # Outgoing calls: the one that carries the minutes and the one to customer service.
    assert (f["mou_out_30d"][0], f["calls_out_30d"][0], f["cs_calls_30d"][0], f["mou_out_m1"][0]) == (10, 2, 1, 10)


def test_customer_ids_the_service_would_refuse_are_named_and_a_prefix_mends_them(tmp_path: Path) -> None:
    text = "msisdn,ym,mou,calls,cs,left\n1,a,10,2,0,0\n2,a,10,2,0,0\n8613800000003,a,10,2,0,0\n"
    with pytest.raises(MappingError, match=r"2 of 3 customer ids \(column 'msisdn'\) are not 5 to 64 .* '1', '2'"):
        read_rows(tmp_path / "t.csv", load_mapping(_table(tmp_path, text)))
    rows = read_rows(tmp_path / "t.csv", load_mapping(_table(tmp_path, text, "id_prefix: cust-\n")))
    assert [r.customer_id for r in rows] == ["cust-1", "cust-2", "cust-8613800000003"]


def test_tenure_comes_from_the_data_as_of_the_end_of_the_last_month(tmp_path: Path) -> None:
    text = "msisdn,ym,mou,calls,cs,left,aon\n8613800000001,a,10,2,0,0,400\n8613800000002,a,10,2,0,0,10\n"
    mapping = load_mapping(_table(tmp_path, text, "tenure: {column: aon, unit: days}\n"))
    rows = read_rows(tmp_path / "t.csv", mapping)
    assert [r.tenure_days for r in rows] == [400 - 31, 0]  # joined within the month: from its first day
    profiles = [json.loads(v) for t, _, v in monthly_events(rows, mapping.label, ZONE) if t == "customers"]
    assert [p["activation_date"] for p in profiles] == ["2024-12-28", "2026-01-01"]
    default = read_rows(tmp_path / "t.csv", load_mapping(_table(tmp_path, text)))
    assert {r.tenure_days for r in default} == {365}


def test_a_line_cut_short_is_named_rather_than_read_with_cells_missing(tmp_path: Path) -> None:
    text = "msisdn,ym,mou,calls,cs,left\n8613800000001,a,10,2,0,0\n8613800000002,a,10\n"
    with pytest.raises(MappingError, match=r"t\.csv:3: 3 cells where the header has 6; every line needs them all"):
        read_rows(tmp_path / "t.csv", load_mapping(_table(tmp_path, text)))
