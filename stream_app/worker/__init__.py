"""The streaming worker: the consumer that owns partitions, the batch pipeline that wires the
stages together, the faust app, and the health and metrics endpoints.

Imported on their own, for what they load: `app` (faust)."""

from stream_app.rules.in_state import evaluate_rules
from stream_app.worker.consumer import BatchConsumer, Rebuild, rebuilds
from stream_app.worker.endpoints import Health, serve
from stream_app.worker.pipeline import BatchOutput, BatchProcessor, RawRecord
from stream_app.worker.runtime import Emitter, Worker, until_done

__all__ = [
    "BatchConsumer", "BatchOutput", "BatchProcessor", "Emitter", "evaluate_rules", "Health", "RawRecord",
    "Rebuild", "rebuilds", "serve", "until_done", "Worker"
]
