"""The charts a retention manager looks at, drawn from the same report objects as the tables,
so the numbers in a chart are the numbers in its table.

Each colour means one thing across the panels: churn types have their own colours, months are
shades of grey (a sequence, not categories), the mid/high-end base is green. A series with
nothing in it gets no legend entry, and every axis leaves room above its tallest bar or label.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stream_app.contracts.events import REASON_CODES  # noqa: E402
from stream_app.model.qini import Qini  # noqa: E402
from stream_app.reports.monthly import ChurnReport, CohortReport  # noqa: E402

__all__ = ["churn_charts", "churn_figure", "cohort_chart", "cohort_figure", "qini_chart", "qini_figure", "TYPE_COLOURS",
           "BASE_COLOUR", "HEADROOM", "save_figure", "plt"]

TYPE_COLOURS = {"voluntary": "#1f77b4", "involuntary": "#d62728", "revenue churn": "#9467bd"}
BASE_COLOUR, SHARE_COLOUR = "#2ca02c", "#555555"
HEADROOM = 1.2  # the top of an axis, over its tallest bar or point: room for the labels above them
SHOWN_FROM, FINAL_FROM = 0.5, 0.98  # the base of a month closed for this share of its customers: drawn, final


def churn_charts(r: ChurnReport, path: Path) -> None:
    """Churn by month stacked by type, exits by reason code, and the mid/high-end base by month."""
    save_figure(churn_figure(r), path)


def churn_figure(r: ChurnReport) -> Figure:
    fig, (by_type, by_reason, base) = plt.subplots(1, 3, figsize=(16, 5), layout="constrained")
    _by_type(r, by_type)
    _by_reason(r, by_reason)
    _base(r, base)
    return fig


def _by_type(r: ChurnReport, ax: Axes) -> None:
    months = [m.month for m in r.months]
    bottom = np.zeros(len(months))
    for label, values in (("voluntary", [m.voluntary_churn for m in r.months]),
                          ("involuntary", [m.involuntary_churn for m in r.months]),
                          ("revenue churn", [m.revenue_churn for m in r.months])):
        if not any(values):
            continue  # no legend entry for a type no month had
        bars = ax.bar(months, values, bottom=bottom, label=label, color=TYPE_COLOURS[label])
        ax.bar_label(bars, labels=[str(v) if v else "" for v in values], label_type="center", color="white")
        bottom += values
    for x, total in zip(months, bottom):
        ax.annotate(f"{total:.0f}", (x, total), textcoords="offset points", xytext=(0, 3), ha="center")
    ax.set(title="Churn by month and type (revenue churners stayed)", ylabel="customers",
           ylim=(0, max(bottom.max(initial=0), 1) * HEADROOM))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left")
    else:
        ax.text(0.5, 0.5, "no churn in these months", transform=ax.transAxes, ha="center")


def _by_reason(r: ChurnReport, ax: Axes) -> None:
    months = [m.month for m in r.months]
    codes = [str(c) for c in REASON_CODES] + (["unknown"] if any("unknown" in row for row in r.by_reason.values()) else [])
    names = [f"{c} {REASON_CODES[int(c)]}" if c.isdigit() else c for c in codes]
    shades = plt.get_cmap("Greys")(np.linspace(0.35, 0.85, max(len(months), 1)))
    left = np.zeros(len(codes))
    for month, shade in zip(months, shades):
        values = [r.by_reason.get(month, {}).get(code, 0) for code in codes]
        ax.barh(names, values, left=left, color=shade, label=month if any(values) else "_nolegend_")
        left += values
    for y, total in enumerate(left):
        ax.annotate(f"{total:.0f}", (total, y), textcoords="offset points", xytext=(4, 0), va="center")
    ax.invert_yaxis()  # codes in report order, top down
    ax.set(title="Exits by reason code, stacked by month", xlabel="customers",
           xlim=(0, max(left.max(initial=0), 1) * HEADROOM))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")


def _base(r: ChurnReport, ax: Axes) -> None:
    """The base by month, once at least half its customers have closed the month; a month not yet
    closed for nearly all of them is drawn hollow and says how far it is (its count still grows)."""
    closed = [m for m in r.months if m.mid_high_end is not None and m.closed_share >= SHOWN_FROM]
    counts = [m.mid_high_end or 0 for m in closed]
    labels = [m.month for m in closed]
    ax.plot(labels, counts, color=BASE_COLOUR, label="mid/high-end customers")
    final = [m.closed_share >= FINAL_FROM for m in closed]
    for x, y, done, m in zip(labels, counts, final, closed):
        ax.plot([x], [y], marker="o", color=BASE_COLOUR, markerfacecolor=BASE_COLOUR if done else "white")
        ax.annotate(str(y), (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
        if not done:
            ax.annotate(f"partial: {m.closed_share:.0%} closed", (x, y), textcoords="offset points", xytext=(0, -16),
                        ha="center", fontsize=8, color=SHARE_COLOUR)
    ax.set(title="Mid/high-end base (closed months)", ylabel="customers", ylim=(0, max(counts + [1]) * 1.35))
    ax.set_xlim(-0.6, len(labels) - 0.4)  # room for the labels of the first and last months
    if not all(final):
        ax.text(0.02, 0.98, "hollow: not yet closed for every customer\n(a prepaid month closes at the next top-up)",
                transform=ax.transAxes, fontsize=7, va="top", color=SHARE_COLOUR)
    share = ax.twinx()
    share.plot(labels, [100 * (m.mid_high_end_revenue_share or 0) for m in closed], color=SHARE_COLOUR,
               linestyle="--", marker="s", label="their share of revenue (%)")
    share.set_ylim(0, 100 * HEADROOM)
    share.set_ylabel("% of revenue")
    lines = ax.get_legend_handles_labels()[0] + share.get_legend_handles_labels()[0]
    share.legend(lines, [str(line.get_label()) for line in lines], loc="lower center", ncol=2, fontsize=8)


def cohort_chart(r: CohortReport, path: Path) -> None:
    """The cohort's retention rate month by month after the snapshot."""
    save_figure(cohort_figure(r), path)


def cohort_figure(r: CohortReport) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    months = [r.snapshot] + r.months
    rates = [100.0] + [100 * x for x in r.retention_rate]
    ax.plot(months, rates, marker="o", color=BASE_COLOUR)
    for x, y in zip(months, rates):
        ax.annotate(f"{y:.1f}%", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    fig.suptitle(f"Snapshot cohort {r.snapshot}: retention of {r.members:,} customers")
    ax.set_title(r.definition, fontsize=8)
    ax.set(ylabel="retained (%)", ylim=(min(rates + [70.0]) - 5, 100 * 1.05))
    ax.axhspan(70, 75, color="#bbbbbb", alpha=0.3, label="usual one-year target, 70-75%")
    ax.legend(loc="lower left")
    return fig


def qini_chart(curve: np.ndarray, q: Qini, path: Path, note: str = "") -> None:
    """The Qini curve of the call list's order (`campaign_customers`), against a random order."""
    save_figure(qini_figure(curve, q, note), path)


def qini_figure(curve: np.ndarray, q: Qini, note: str = "") -> Figure:
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    n = len(curve) - 1
    share = np.linspace(0, 100, n + 1)
    ax.plot(share, curve, color=BASE_COLOUR, label="ranked by value at risk, as the call list is")
    ax.plot([0, 100], [0, curve[-1]], color=SHARE_COLOUR, linestyle="--", label="a random order")
    fig.suptitle(f"Qini curve: customers the calls kept, {q.called:,} called and {q.control:,} in the control group")
    ax.set_title(f"Qini coefficient {q.coefficient:+.4f} (95% interval {q.low:+.4f} to {q.high:+.4f})"
                 + (f"; {note}" if note else ""), fontsize=8)
    low, high = min(0.0, float(curve.min())), max(0.0, float(curve.max()))
    ax.set(xlabel="customers, highest value at risk first (%)", ylabel="customers kept (called less control)",
           ylim=(low - 0.1 * (high - low or 1), high + (HEADROOM - 1) * (high - low or 1)))
    ax.axhline(0, color="#bbbbbb", linewidth=0.8)
    ax.legend(loc="upper left")
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
