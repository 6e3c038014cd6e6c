"""Where published models live (Redis), and how scorers pick up a new version between batches."""

from __future__ import annotations

import logging
from typing import Any

from . import keys
from .metrics import Metrics
from .model import ModelRefused, ModelSnapshot, Scorer, decode_snapshot, encode_snapshot

__all__ = ["publish", "ScorerSource"]

log = logging.getLogger(__name__)


def publish(client: Any, snapshot: ModelSnapshot, checkpoint: bytes) -> None:
    """Store `snapshot` as the current model with the trainer checkpoint it came from, in one
    transaction (a synchronous client; the keys share a hash tag)."""
    pipe = client.pipeline(transaction=True)
    pipe.set(keys.MODEL, encode_snapshot(snapshot))
    pipe.set(keys.MODEL_VERSION, snapshot.version)
    pipe.set(keys.TRAINER_STATE, checkpoint)
    pipe.execute()


class ScorerSource:
    """The scorer a worker uses: the newest good model, or None (rules alone) until there is one.

    A model that fails its checks is refused, logged and counted once, and the previous one
    stays in use."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.scorer: Scorer | None = None
        self._seen: int | None = None

    def __call__(self) -> Scorer | None:
        return self.scorer

    async def refresh(self, client: Any) -> None:
        """Load the published model if its version is one this worker has not looked at yet."""
        raw_version = await client.get(keys.MODEL_VERSION)
        if raw_version is None:
            if self._seen is None:
                log.warning("no published model: scoring with rules alone (run `churnwatch trainer`, "
                            "or `churnwatch model bootstrap` to start from history)")
                self._seen = 0
            return
        version = int(raw_version)
        if version == self._seen:
            return
        self._seen = version
        raw = await client.get(keys.MODEL)
        self.offer(raw or b"")

    def offer(self, raw: bytes) -> None:
        try:
            snapshot = decode_snapshot(raw)
        except ModelRefused as exc:
            self.metrics.model_refused.inc()
            kept = self.scorer.version if self.scorer else "none (rules alone)"
            log.error("refused published model: %s; keeping version %s", exc, kept)
            return
        self.scorer = Scorer(snapshot)
        self.metrics.model_version.set(snapshot.version)
        self.metrics.model_labels.set(snapshot.labels)
        log.info("scoring with model version %d (%d labels learned)", snapshot.version, snapshot.labels)
