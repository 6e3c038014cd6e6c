"""CSV files the commands write: no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io

from stream_app.cli.report import _csv
from stream_app.cli.spreadsheet import write_csv


def test_text_a_spreadsheet_would_run_is_kept_as_text_and_numbers_stay_numbers() -> None:
    cells = ["=HYPERLINK(\"http://x\",\"y\")", "+86138", "-2+3", "@SUM(A1)", "\t=1", "\r=1", "plan A", "", "86138"]
    buf = io.StringIO()
    write_csv(buf, ["cell", "credit"], [{"cell": c, "credit": -5.5} for c in cells])
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["cell"] for r in rows] == ["'" + c for c in cells[:6]] + cells[6:]
    assert {r["credit"] for r in rows} == {"-5.5"}


def test_the_reports_csv_goes_through_it() -> None:
    out = _csv(["region", "lost"], [{"region": "=cmd|' /C calc'!A0", "lost": -1}, {"region": "north"}])
    assert out.splitlines() == ["region,lost", "'=cmd|' /C calc'!A0,-1", "north,0"]
