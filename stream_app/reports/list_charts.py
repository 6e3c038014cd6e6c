"""Charts of the lifecycle's lists (`calls winback|growth|competitor --plot`), drawn from the list's
own entries, so the chart adds up to the table: who is on it, how soon, how long ago or how widely
known, and what they are worth, stacked by what a manager acts on (the reason they left, what is
growing, the competitor)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

from matplotlib.figure import Figure

from stream_app.contracts.events import REASON_CODES
from stream_app.contracts.lists import CompetitorEntry, GrowthEntry, WinbackEntry
from stream_app.reports.charts import HEADROOM, plt, save_figure

__all__ = ["winback_chart", "winback_figure", "growth_chart", "growth_figure", "competitor_chart", "competitor_figure",
           "WINBACK_WEEKS", "GROWTH_MONTHS", "BREADTH"]

E = TypeVar("E")
WINBACK_WEEKS = ((0, 7, "this week"), (7, 14, "1 week"), (14, 28, "2-3 weeks"), (28, 56, "4-7 weeks"),
                 (56, 10**6, "8+ weeks"))  # days since they left
GROWTH_MONTHS = ((0, 1, "< 1"), (1, 2, "1-2"), (2, 3, "2-3"), (3, 6, "3-6"), (6, float("inf"), "6+"))
BREADTH = ((0, 5, "1-4"), (5, 10, "5-9"), (10, 20, "10-19"), (20, 50, "20-49"), (50, 10**9, "50+"))  # customers of ours


def winback_chart(entries: Sequence[WinbackEntry], title: str, path: Path) -> None:
    save_figure(winback_figure(entries, title), path)


def winback_figure(entries: Sequence[WinbackEntry], title: str) -> Figure:
    """Leavers by how long ago they left, stacked by why; and their monthly value."""
    return _stacked(entries, WINBACK_WEEKS, lambda e: e.days_since, _why, lambda e: e.monthly_value,
                    ("customers who left", "their monthly value before (yuan)", "since they left"), title)


def growth_chart(entries: Sequence[GrowthEntry], title: str, path: Path) -> None:
    save_figure(growth_figure(entries, title), path)


def growth_figure(entries: Sequence[GrowthEntry], title: str) -> Figure:
    """Growing customers by months to the mid/high-end line at their pace, stacked by what grows;
    and the monthly spend they bring now."""
    return _stacked(entries, GROWTH_MONTHS, lambda e: e.months_to_line, lambda e: e.driver, lambda e: e.arpu_3m,
                    ("customers growing", "their monthly spend now (yuan)", "months to the mid/high-end line"), title)


def competitor_chart(entries: Sequence[CompetitorEntry], title: str, path: Path) -> None:
    save_figure(competitor_figure(entries, title), path)


def competitor_figure(entries: Sequence[CompetitorEntry], title: str) -> Figure:
    """Competitors' numbers by how many customers of ours talk to them, stacked by competitor; and
    what they likely spend a month."""
    return _stacked(entries, BREADTH, lambda e: e.customers_of_ours, lambda e: e.competitor or "unnamed",
                    lambda e: e.value_estimate, ("numbers", "their likely monthly spend (yuan)", "customers of ours "
                                                 "talking to them"), title)


def _why(e: WinbackEntry) -> str:
    return f"{e.reason_code} {REASON_CODES.get(e.reason_code, '')}" if e.reason_code is not None else e.kind


def _stacked(entries: Sequence[E], bins: tuple, where: Callable[[E], float], group: Callable[[E], str],
             value: Callable[[E], float], labels: tuple[str, str, str], title: str) -> Figure:
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    groups = sorted({group(e) for e in entries})
    for ax, measure, ylabel in ((axes[0], lambda e: 1.0, labels[0]), (axes[1], value, labels[1])):
        bottom = [0.0] * len(bins)
        for g in groups:
            heights = [sum(measure(e) for e in entries if group(e) == g and low <= where(e) < high)
                       for low, high, _ in bins]
            ax.bar([b[2] for b in bins], heights, bottom=bottom, label=g)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set(xlabel=labels[2], ylabel=ylabel, ylim=(0, max(bottom + [1.0]) * HEADROOM))
        if groups:
            ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(title)
    return fig
