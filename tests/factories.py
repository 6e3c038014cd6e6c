"""Builders for the tests: the public ones (`stream_app.testing`), and snapshot features."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from stream_app.features.baselines import BASELINED as BASELINE_FEATURES
from stream_app.ingest.admission import Event
from stream_app.testing import Log, billing, cdr, decliner, profile
from stream_app.windows.apply import Envelope

__all__ = ["Log", "billing", "cdr", "decliner", "envelope", "loosened_pack", "profile", "shipped_pack_with",
           "snapshot_features"]

SHIPPED_PACK = Path(__file__).resolve().parents[1] / "alert_rules"


def shipped_pack_with(folder: Path, old: str, new: str) -> Path:
    """`folder`: a copy of the shipped rule pack whose churn.yaml has `old` (found exactly once) as `new`."""
    shutil.copytree(SHIPPED_PACK, folder)
    text = (folder / "churn.yaml").read_text()
    assert text.count(old) == 1, f"the shipped pack no longer has {old!r} once: pick another part to change"
    (folder / "churn.yaml").write_text(text.replace(old, new))
    return folder


# The shipped rule on a 30-day fall of minutes, and the same loosened: a smaller fall, no segment
# baseline (which a worker rereads on a timer), and weight enough for medium alone.
_FALLING_30D = """          mou_out_30d_mom <= -0.45 and mou_out_prev_30d >= 100
          and not 1 + mou_out_30d_mom > 0.55 * (1 + segment_p50(mou_out_30d_mom))
        importance: 2"""
_LOOSE_FALLING_30D = """          mou_out_30d_mom <= -0.3 and mou_out_prev_30d >= 50
        importance: 3"""


def loosened_pack(folder: Path) -> Path:
    """`folder`: the shipped pack with its 30-day fall rule loosened. On a small simulated base the
    shipped pack raises a handful of alerts, or none; a test that needs alerts, whatever the
    timing, runs with this."""
    return shipped_pack_with(folder, _FALLING_30D, _LOOSE_FALLING_30D)


def envelope(topic: int, partition: int, offset: int, event: Event) -> Envelope:
    """An event as `apply` gets it, with its time in seconds as the worker's edge reads it."""
    ts = getattr(event, "ts", None)
    return Envelope(topic, partition, offset, event, int(ts.timestamp()) if ts is not None else 0)


def snapshot_features(n: int, **given: np.ndarray) -> dict[str, np.ndarray]:
    """Features of `n` snapshots for the segment baselines: mid/high-end customers whose changes
    have nothing before to compare with (so count in no histogram), but those `given`."""
    nothing = ("arpu_m2", "mou_out_m2", "mou_out_prev_30d", "mou_out_prev_14d", "data_mb_m2", "contacts_m2",
               "activity_usual", "potential_mid_high_end", *BASELINE_FEATURES)
    return {**{name: np.zeros(n) for name in nothing}, "prepaid": np.ones(n), "mid_high_end": np.ones(n), **given}
