"""The charts a retention manager looks at, drawn from the same report objects as the tables,
so the numbers in a chart are the numbers in its table."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server

import matplotlib.pyplot as plt  # noqa: E402

from stream_app.contracts.events import REASON_CODES  # noqa: E402
from stream_app.reports.monthly import ChurnReport, CohortReport  # noqa: E402

__all__ = ["churn_charts", "cohort_chart"]


def churn_charts(r: ChurnReport, path: Path) -> None:
    """Churn by month stacked by type, exits by reason code, and the mid/high-end base by month."""
    months = [m.month for m in r.months]
    fig, (by_type, by_reason, base) = plt.subplots(1, 3, figsize=(16, 5), layout="constrained")
    bottom = [0] * len(months)
    for label, values in (("voluntary", [m.voluntary_churn for m in r.months]),
                          ("involuntary", [m.involuntary_churn for m in r.months]),
                          ("revenue churn", [m.revenue_churn for m in r.months])):
        bars = by_type.bar(months, values, bottom=bottom, label=label)
        by_type.bar_label(bars, labels=[str(v) if v else "" for v in values], label_type="center")
        bottom = [b + v for b, v in zip(bottom, values)]
    by_type.set(title="Churn by month and type (revenue churners stayed)", ylabel="customers")
    by_type.legend()

    codes = [str(c) for c in REASON_CODES] + (["unknown"] if any("unknown" in row for row in r.by_reason.values()) else [])
    names = [f"{c} {REASON_CODES[int(c)]}" if c.isdigit() else c for c in codes]
    left = [0] * len(codes)
    for month in months:
        values = [r.by_reason[month].get(code, 0) for code in codes]
        by_reason.barh(names, values, left=left, label=month)
        left = [a + v for a, v in zip(left, values)]
    for y, total in enumerate(left):
        by_reason.annotate(str(total), (total, y), textcoords="offset points", xytext=(4, 0), va="center")
    by_reason.invert_yaxis()  # codes in report order, top down
    by_reason.set(title="Exits by reason code, stacked by month", xlabel="customers")
    by_reason.legend(fontsize=8)

    closed = [m for m in r.months if m.mid_high_end is not None]  # open months have no figure yet
    counts = [m.mid_high_end for m in closed]
    base.plot([m.month for m in closed], counts, marker="o", label="mid/high-end customers")
    for m in closed:
        base.annotate(str(m.mid_high_end), (m.month, m.mid_high_end), textcoords="offset points", xytext=(0, 6),
                      ha="center")
    base.set(title="Mid/high-end base (closed months)", ylabel="customers", ylim=(0, max(counts + [1]) * 1.2))
    share = base.twinx()
    share.plot([m.month for m in closed], [100 * (m.mid_high_end_revenue_share or 0) for m in closed],
               color="tab:orange", marker="s", label="share of revenue (%)")
    share.set_ylim(0, 100)
    share.set_ylabel("% of revenue")
    lines = base.get_legend_handles_labels()[0] + share.get_legend_handles_labels()[0]
    share.legend(lines, [str(line.get_label()) for line in lines], loc="lower center", ncol=2, fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cohort_chart(r: CohortReport, path: Path) -> None:
    """The cohort's retention rate month by month after the snapshot."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    months = [r.snapshot] + r.months
    rates = [100.0] + [100 * x for x in r.retention_rate]
    ax.plot(months, rates, marker="o")
    for x, y in zip(months, rates):
        ax.annotate(f"{y:.1f}%", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    fig.suptitle(f"Snapshot cohort {r.snapshot}: retention of {r.members:,} customers")
    ax.set_title(r.definition, fontsize=8)
    ax.set(ylabel="retained (%)", ylim=(min(rates + [70.0]) - 5, 102))
    ax.axhspan(70, 75, color="tab:green", alpha=0.15, label="usual one-year target, 70-75%")
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
