"""What the windows say about a customer: derived features, and the segment baselines that
measure a change against what is normal this month."""

from stream_app.features.baseline_counts import BaselineSource, read_baselines
from stream_app.features.baselines import (
    BASELINED,
    COLUMNS,
    QUANTILES,
    SEGMENTS,
    BaselineRule,
    Baselines,
    column_name,
    comparable,
    increments,
    parse_call,
    segment_of,
    segment_order,
)
from stream_app.features.derive import ACTIVITY_PERIODS, FEATURES, Feature, own_zscore, ratio_change, shortfall_z

__all__ = [
    "BASELINED", "BaselineRule", "Baselines", "BaselineSource", "ACTIVITY_PERIODS", "column_name", "COLUMNS",
    "comparable", "Feature", "FEATURES", "increments", "own_zscore", "parse_call", "QUANTILES", "ratio_change",
    "read_baselines", "segment_of", "segment_order", "SEGMENTS", "shortfall_z"
]
