"""The managers' charts, as drawn: nothing clipped at an axis' edge, no legend entry for an empty
series, one meaning per colour across panels, and a PNG of the size asked for."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from stream_app.model.qini import qini, qini_curve
from stream_app.reports.charts import (
    BASE_COLOUR,
    churn_charts,
    churn_figure,
    cohort_chart,
    cohort_figure,
    qini_chart,
    qini_figure,
)
from stream_app.reports.monthly import ChurnMonth, ChurnReport, CohortReport


def month(label: str, voluntary: int, mid_high: int | None, revenue_churn: int = 0, closed: float = 1.0) -> ChurnMonth:
    return ChurnMonth(label, 300, 10, voluntary, 0, voluntary, 10 - voluntary, 300, voluntary / 310, revenue_churn,
                      100.0 * voluntary, int(310 * closed), 30000.0, mid_high, 0.4 if mid_high else None, closed)


@pytest.fixture
def report() -> ChurnReport:
    # No involuntary churn at all, one month with no exits, and one month far above the others.
    return ChurnReport([month("2026-08", 3, 30), month("2026-09", 0, 33, revenue_churn=2),
                        month("2026-10", 41, 29, closed=0.9), month("2026-11", 5, 1, closed=0.003)],
                       by_reason={"2026-08": {"101": 2, "205": 1}, "2026-09": {},
                                  "2026-10": {"101": 40, "unknown": 1}, "2026-11": {"380": 5}},
                       by_region={}, by_segment={})


def drawn(fig: Figure) -> Figure:
    fig.canvas.draw()
    return fig


def legend_labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_nothing_drawn_crosses_its_axes_edge(report: ChurnReport) -> None:
    fig = drawn(churn_figure(report))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    for ax in fig.axes:
        box = ax.get_window_extent(renderer)
        for bar in ax.patches:
            top = bar.get_y() + bar.get_height() if ax.get_ylim()[1] > ax.get_ylim()[0] else 0
            if bar.get_height() and not ax.yaxis_inverted():
                assert top <= ax.get_ylim()[1], ax.get_title()
            if bar.get_width() and ax.yaxis_inverted():
                assert bar.get_x() + bar.get_width() <= ax.get_xlim()[1], ax.get_title()
        for text in ax.texts:
            extent = text.get_window_extent(renderer)
            assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, (ax.get_title(), text.get_text())
            assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, (ax.get_title(), text.get_text())


def test_empty_series_have_no_legend_entry(report: ChurnReport) -> None:
    by_type, by_reason, base, share = churn_figure(report).axes
    assert legend_labels(by_type) == ["voluntary", "revenue churn"]  # no month had involuntary churn
    assert legend_labels(by_reason) == ["2026-08", "2026-10", "2026-11"]  # September had no exits
    # November is closed for 1 customer of 310: no base is drawn for it (it would read as 1).
    assert [t.get_text() for t in base.get_xticklabels()] == ["2026-08", "2026-09", "2026-10"]


def test_a_month_not_closed_for_every_customer_is_drawn_hollow_and_says_so(report: ChurnReport) -> None:
    by_type, by_reason, base, share = churn_figure(report).axes
    notes = [t.get_text() for t in base.texts]
    assert {"29", "partial: 90% closed", "33"} <= set(notes) and "partial: 100% closed" not in notes
    markers = {tuple(line.get_xdata()): to_hex(line.get_markerfacecolor()) for line in base.get_lines()
               if len(line.get_xdata()) == 1}
    assert markers[("2026-10",)] == "#ffffff" and markers[("2026-09",)] == BASE_COLOUR


def test_a_colour_means_one_thing_across_the_panels(report: ChurnReport) -> None:
    by_type, by_reason, base, share = churn_figure(report).axes
    types = {to_hex(p.get_facecolor()) for p in by_type.patches}
    months = {to_hex(p.get_facecolor()) for p in by_reason.patches}
    lines = {to_hex(line.get_color()) for ax in (base, share) for line in ax.get_lines()}
    assert len(types) == 2 and len(months) == 4 and len(lines) == 2
    assert not types & months and not (types | months) & lines and BASE_COLOUR in lines


def test_the_cohort_curve_keeps_its_labels_inside() -> None:
    r = CohortReport("2026-03", "spent 360 or more over 3 months", 120, ["2026-04", "2026-05"], [6, 4],
                     [114, 110], [0.95, 0.9167])
    fig = drawn(cohort_figure(r))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    [ax] = fig.axes
    box = ax.get_window_extent(renderer)
    for text in ax.texts:
        assert text.get_window_extent(renderer).y1 <= box.y1 + 1, text.get_text()


def test_the_pngs_are_written_at_the_size_asked(report: ChurnReport, tmp_path: Path) -> None:
    churn_charts(report, tmp_path / "churn.png")
    cohort_chart(CohortReport("2026-03", "definition", 10, ["2026-04"], [1], [9], [0.9]), tmp_path / "cohort.png")
    assert matplotlib.image.imread(tmp_path / "churn.png").shape[:2] == (550, 1760)
    assert matplotlib.image.imread(tmp_path / "cohort.png").shape[:2] == (550, 880)


def test_the_qini_curve_shows_its_coefficient_the_random_order_and_a_control_group_too_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    score, called = rng.random(60), np.arange(60) % 5 > 0  # 12 control customers
    churned = rng.random(60) < np.where(called, 0.2, 0.4)
    curve, q = qini_curve(score, called, churned), qini(score, called, churned)
    fig = drawn(qini_figure(curve, q, "only 12 control customers: too few to conclude"))
    [ax] = fig.axes
    assert legend_labels(ax) == ["ranked by value at risk, as the call list is", "a random order"]
    assert f"{q.coefficient:+.4f}" in ax.get_title() and "too few to conclude" in ax.get_title()
    low, high = ax.get_ylim()
    assert low < curve.min() and high > curve.max()  # the curve is inside the axes
    qini_chart(curve, q, tmp_path / "qini.png")
    assert matplotlib.image.imread(tmp_path / "qini.png").shape[:2] == (550, 880)
