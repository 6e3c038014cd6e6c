"""A batch's snapshots, field by field: who is left out, and each value as a plain Python one."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import numpy as np

from stream_app.contracts.events import Snapshot
from stream_app.model.observations import snapshots


def test_snapshots_leave_out_the_gone_and_carry_plain_values() -> None:
    sub = SimpleNamespace(customers=["a0001", "b0002", "c0003", "d0004"])
    features = {"exited": np.array([0, 1, 0, 0], np.int8), "revenue_churn": np.array([0.0, 0.0, 1.0, 0.0]),
                "churn_score": np.array([0.12345678, 0.5, 0.5, np.nan])}
    x = np.arange(12, dtype=np.float64).reshape(4, 3) / 4
    rules = SimpleNamespace(level=np.array([3, 0, 1, 2], np.int64), score=np.array([2.5, 0.0, 1.0, 0.0], np.float32))
    days = np.array([740_000, 740_001, 740_002, 740_003], np.int64)
    out = snapshots(sub, x, features, rules, days, SimpleNamespace(version=7), [11, 12, 13, 14], digest=99)
    assert out == [Snapshot("a0001", 740_000, [0.0, 0.25, 0.5], 0.123457, 7, 3, 2.5, 11, 99),
                   Snapshot("d0004", 740_003, [2.25, 2.5, 2.75], None, 7, 2, 0.0, 14, 99)]
    assert all(type(v) in (int, float, str, type(None)) for s in out for v in msgspec.structs.astuple(s)
               if not isinstance(v, list))
    assert msgspec.json.decode(msgspec.json.encode(out), type=list[Snapshot]) == out
    assert snapshots(sub, x, features, rules, days, None, [0] * 4)[0].model_version is None
