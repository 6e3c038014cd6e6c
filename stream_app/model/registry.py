"""Where published models live (Redis), and how scorers pick up a new version between batches."""

from __future__ import annotations

import logging
from typing import Any

from stream_app.contracts import keys
from stream_app.errors import ChurnwatchError
from stream_app.metrics import Metrics
from stream_app.model.scoring import NAMES, ModelRefused, ModelSnapshot, Scorer, decode_model, encode_snapshot
from stream_app.model.signing import Signer

__all__ = ["LeaseLost", "publish", "ScorerSource"]

log = logging.getLogger(__name__)


# KEYS: lease, model, version, checkpoint. ARGV: the lease's token, then their values.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SET', KEYS[4], ARGV[4])
return 1
"""


class LeaseLost(ChurnwatchError):
    """The trainer's lease went to another trainer: this one must not publish."""


def publish(client: Any, snapshot: ModelSnapshot, checkpoint: bytes, lease_token: bytes) -> None:
    """Store `snapshot` as the current model with the trainer checkpoint it came from, in one
    script that first checks the trainer still holds its lease (a fencing token): a trainer
    paused past its lease, whose successor took over, cannot overwrite the successor's work.
    A synchronous client; the keys share a hash tag, so this runs on Redis Cluster too."""
    done = client.eval(_PUBLISH, 4, keys.TRAINER_LEASE, keys.MODEL, keys.MODEL_VERSION, keys.TRAINER_STATE,
                       lease_token, encode_snapshot(snapshot), snapshot.version, checkpoint)
    if not done:
        raise LeaseLost(f"model version {snapshot.version} not published: another trainer holds the lease")


class ScorerSource:
    """The scorer a worker uses: the newest good model, or None (rules alone) until there is one.

    A model that fails its checks is refused, logged and counted once, and the previous one
    stays in use."""

    def __init__(self, metrics: Metrics, signer: Signer | None = None, features: tuple[str, ...] = NAMES) -> None:
        self.metrics = metrics
        self.signer = signer
        self.features = features  # what this worker computes (`model_features`)
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
            snapshot = decode_model(raw, self.features)
            scorer = Scorer(snapshot, self.signer)
        except ModelRefused as exc:
            self.metrics.model_refused.inc()
            kept = self.scorer.version if self.scorer else "none (rules alone)"
            log.error("refused published model: %s; keeping version %s", exc, kept)
            return
        self.scorer = scorer
        self.metrics.model_version.set(snapshot.version)
        self.metrics.model_labels.set(snapshot.labels)
        log.info("scoring with model version %d (%s, %d labels learned)", snapshot.version, snapshot.kind,
                 snapshot.labels)
