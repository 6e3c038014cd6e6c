"""Offline runs of the same pipeline: replays of recorded or monthly data, the evaluations
against a batch reference, and the traffic simulator.

Imported on their own, for what they load: `evaluate` (scikit-learn), `evaluate_monthly` (scikit-learn)."""

from stream_app.offline.monthly_data import (
    Mapping,
    MappingError,
    MonthlyRow,
    load_mapping,
    monthly_events,
    next_month,
    read_rows,
)
from stream_app.offline.replay import ReplayResult
from stream_app.offline.simulator import SimConfig, SimRecord, Simulator, Truth

__all__ = [
    "load_mapping", "Mapping", "MappingError", "monthly_events", "MonthlyRow", "next_month", "read_rows",
    "ReplayResult", "SimConfig", "SimRecord", "Simulator", "Truth"
]
