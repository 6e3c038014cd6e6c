"""The online churn model: inputs, learner and scorer, the snapshots and labels it learns from,
the one trainer, the registry that publishes versions, and signed pickles."""

from stream_app.model.labels import Labeler
from stream_app.model.observations import churn_events, snapshot_days, snapshots, value_segment
from stream_app.model.registry import LeaseLost, ScorerSource, publish
from stream_app.model.scoring import (
    FORMAT,
    MODEL_FEATURES,
    Adaptation,
    Driver,
    Learner,
    ModelRefused,
    ModelSnapshot,
    Scorer,
    decode_model,
    encode_snapshot,
    model_inputs,
    monthly_pending,
)
from stream_app.model.signing import Signer, Unsigned
from stream_app.model.trainer import TrainerCore, decode_feature_snapshot, decode_label, encode_internal, run_trainer
from stream_app.model.validation import ProgressiveValidation, auc, budget_figures

__all__ = [
    "Adaptation", "auc", "budget_figures", "churn_events", "decode_feature_snapshot", "decode_label",
    "decode_model", "Driver", "encode_internal", "encode_snapshot", "FORMAT", "Labeler", "Learner", "LeaseLost",
    "MODEL_FEATURES", "model_inputs", "ModelRefused", "ModelSnapshot", "monthly_pending",
    "ProgressiveValidation", "publish", "run_trainer", "Scorer", "ScorerSource", "Signer", "snapshot_days",
    "snapshots", "TrainerCore", "Unsigned", "value_segment"
]
