"""The managers' reports: counters the workers keep per batch, the monthly churn and cohort
reports read from them, and their charts.

Imported on their own, for what they load: `charts` (matplotlib)."""

from stream_app.reports.facts import Before, report_increments
from stream_app.reports.monthly import ChurnMonth, ChurnReport, CohortReport, churn_report, cohort_report, latest_month

__all__ = [
    "Before", "churn_report", "ChurnMonth", "ChurnReport", "cohort_report", "CohortReport", "latest_month",
    "report_increments"
]
