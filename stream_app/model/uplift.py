"""Uplift: how much a call lowers a customer's chance of leaving, learned online from the closed
loop (the control group, the calls and who churned after them).

A two-model ("T-") learner: one churn model for the control group (alerted, never called) and
one per treatment for the customers a call with that treatment reached; a customer's uplift for a
treatment is the control model's churn probability minus the treatment model's. Why this and not
a transformed outcome: the control group is small (`CHURNWATCH_HOLDOUT_SHARE`, 10% by default),
and a transformed outcome weighs each label by 1 / (e (1 - e)), e the share called: at e = 0.9
a label weighs up to 11 times another, and that variance swamps the effect until tens of
thousands of labels. Here each arm is an ordinary churn model on its own labels, the same
pipeline as the online churn model. The price: an arm learns from its labels only, so a
treatment's uplift is given only once it and the control have `MIN_ARM_LABELS` labels, churners
among them (`ready`); until then callers keep the churn ranking, and say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from river import compose, linear_model, optim, preprocessing

from stream_app.model.scoring import LEARNING_RATE, NAMES, clip_z

__all__ = ["UpliftModel", "CONTROL", "MIN_ARM_LABELS", "MIN_ARM_CHURNERS", "MIN_CONTROL_SHARE", "uplift_learnable"]

CONTROL = "control"
MIN_ARM_LABELS, MIN_ARM_CHURNERS = 500, 20
# Below this control share, the control arm gathers too few labels to learn from within a season:
# at 2,000 alerts a month, 5% is 100 control labels a month, 5 months to MIN_ARM_LABELS.
MIN_CONTROL_SHARE = 0.05


def uplift_learnable(holdout_share: float) -> str | None:
    """Why uplift cannot be learned with this control share, or None if it can."""
    if holdout_share < MIN_CONTROL_SHARE:
        return (f"CHURNWATCH_HOLDOUT_SHARE is {holdout_share:g}: uplift needs a control group of at least "
                f"{MIN_CONTROL_SHARE:g} of the alerts; the churn ranking stays in force")
    return None


def _arm_model() -> compose.Pipeline:
    return (preprocessing.StandardScaler() | compose.FuncTransformer(clip_z)
            | linear_model.LogisticRegression(optimizer=optim.AdaGrad(LEARNING_RATE)))


@dataclass
class _Arm:
    model: compose.Pipeline = field(default_factory=_arm_model)
    labels: int = 0
    churners: int = 0

    @property
    def ready(self) -> bool:
        return self.labels >= MIN_ARM_LABELS and self.churners >= MIN_ARM_CHURNERS


class UpliftModel:
    """The control's churn model and one per treatment, learning one label at a time."""

    def __init__(self, features: tuple[str, ...] = NAMES) -> None:
        self.features = features
        self.arms: dict[str, _Arm] = {}

    def learn(self, x: np.ndarray, arm: str, churned: bool) -> None:
        """A label of a customer in `arm` (CONTROL, or the treatment a call reached them with)."""
        a = self.arms.setdefault(arm, _Arm())
        a.model.learn_one(self._dict(x), churned)
        a.labels += 1
        a.churners += churned

    def churn(self, x: np.ndarray, arm: str) -> float:
        return float(self.arms[arm].model.predict_proba_one(self._dict(x)).get(True, 0.0))

    def ready(self, treatment: str) -> bool:
        return treatment in self.arms and CONTROL in self.arms and self.arms[treatment].ready \
            and self.arms[CONTROL].ready

    def uplift(self, x: np.ndarray, treatment: str) -> float | None:
        """P(churn | not called) - P(churn | called with `treatment`), or None before `ready`."""
        if not self.ready(treatment):
            return None
        return self.churn(x, CONTROL) - self.churn(x, treatment)

    def evidence(self) -> dict[str, dict[str, int]]:
        return {arm: {"labels": a.labels, "churners": a.churners} for arm, a in sorted(self.arms.items())}

    def _dict(self, x: np.ndarray) -> dict[str, float]:
        return dict(zip(self.features, x.tolist()))
