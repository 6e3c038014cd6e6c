"""Reading the live segment baselines back from Redis: workers refresh theirs on a timer,
`churnwatch baselines` prints them. Their histograms are report counters (baselines.py)."""

from __future__ import annotations

import collections
from datetime import date, timedelta
from typing import Any

from stream_app.contracts import keys
from stream_app.features.baselines import BASELINED, PREFIX, QUANTILES, BaselineRule, Baselines
from stream_app.metrics import Metrics
from stream_app.windows.scan import read_counts

__all__ = ["BaselineSource", "read_baselines"]

KEEP_DAYS = 70  # histograms kept: the month judged now and the one before (pending months look back)


def read_baselines(client: Any, rule: BaselineRule) -> Baselines:
    """The baselines now, with a blocking client (a single Redis or a cluster)."""
    return Baselines.from_counts(read_counts(client, histograms=True), rule)


class BaselineSource:
    """The baselines a worker evaluates rules with, refreshed between batches."""

    def __init__(self, rule: BaselineRule, metrics: Metrics) -> None:
        self.rule, self.metrics = rule, metrics
        self.current = Baselines()

    def __call__(self) -> Baselines:
        return self.current

    async def refresh(self, client: Any) -> None:
        """Reread the histograms, export the quantiles, and drop histograms too old to matter."""
        counts: collections.Counter[str] = collections.Counter()
        fields: dict[bytes, list[bytes]] = {}
        async for key in client.scan_iter(match=keys.REPORT_PATTERN, count=1000):
            mine = {name: value for name, value in (await client.hgetall(key)).items()
                    if name.startswith(PREFIX.encode())}
            if mine:
                fields[key] = list(mine)
                for name, value in mine.items():
                    counts[name.decode()] += int(value)
        self.current = Baselines.from_counts(counts, self.rule)
        self._export()
        if self.current.day is not None:
            await self._prune(client, fields, self.current.day - timedelta(days=KEEP_DAYS))

    def _export(self) -> None:
        for segment in self.current.segments():
            for feature in BASELINED:
                values, samples = self.current.current(segment, feature)
                for q in QUANTILES:
                    self.metrics.baseline.labels(segment, feature, str(q)).set(values.get(q, float("nan")))
                self.metrics.baseline_customers.labels(segment, feature).set(samples)

    @staticmethod
    async def _prune(client: Any, fields: dict[bytes, list[bytes]], before: date) -> None:
        for key, names in fields.items():
            old = [n for n in names if date.fromisoformat(n.decode()[len(PREFIX):].split("|")[0]) < before]
            if old:
                await client.hdel(key, *old)
