"""Decision thresholds: how each scored model turns a score into an attack/normal decision.

* VGAE: attack when ``vgae_score >= threshold``, the threshold chosen on the validation split with Youden's J
  (:func:`youden_threshold`) and reused unchanged on test, so test numbers never see test labels. ``>=`` is the
  convention of the ROC curve the threshold is read from.
* GAT: attack when ``gat_prob > 0.5`` (kdgat.chain.DECISION_THRESHOLD, fixed, not fitted): the same rule training
  validates with and the DQN fusion applies to its fused score, so a tie at exactly 0.5 is normal everywhere.
* Fusion: the DQN's own decision (``fusion_pred`` = fused score > 0.5, see kdgat.models.dqn.fuse).
* Fixed-α fusions, the yardsticks of the learned α: ``fixed_alpha_<a>`` scores ``(1 − a)·vgae_score + a·gat_prob``
  and decides by the same rule as the fusion (> 0.5); ``fixed_alpha_0`` is the calibrated VGAE score at 0.5 (its
  training validation threshold), ``fixed_alpha_1`` the GAT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from kdgat.chain import DECISION_THRESHOLD
from kdgat.evaluation.metrics import as_binary, finite_scores
from wrapper_rules import InputError

GAT_THRESHOLD = DECISION_THRESHOLD
SCORED_NUMBERS = ("vgae_score", "gat_prob", "fusion_alpha", "fusion_score")
SCORE_COLUMNS = ("label", "vgae_score", "gat_prob", "fusion_alpha", "fusion_score", "fusion_pred")
# The model each scored number comes from: its input's name (of evaluate_files) and title.
SCORING_MODEL = {"vgae_score": ("vgae", "VGAE"), "gat_prob": ("gat", "GAT")} | dict.fromkeys(
    ("fusion_alpha", "fusion_score"), ("dqn", "fusion (DQN)")
)
FIXED_ALPHAS = (0.0, 0.5, 1.0)


def fixed_alpha_model(alpha: float) -> str:
    """``fixed_alpha_0``, ``fixed_alpha_0.5``, ``fixed_alpha_1``."""
    return f"fixed_alpha_{alpha:g}"


FIXED_ALPHA_MODELS = tuple(fixed_alpha_model(alpha) for alpha in FIXED_ALPHAS)


class NonFiniteScoresError(ValueError, InputError):
    """Scores of a model that are NaN or infinite (a diverged training run), found before any metric is computed;
    ``model`` is the model's input (vgae, gat or dqn), which evaluate_files names by its file."""

    def __init__(self, message: str, model: str):
        super().__init__(message)
        self.model = model


def check_scored(frame: pd.DataFrame, where: str) -> None:
    """A ValueError naming the split and column when a score of ``frame`` is NaN or infinite (a diverged model: a
    NonFiniteScoresError): a NaN VGAE score on validation would give a NaN threshold, one on test a normal window."""
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{where}: scored table lacks columns {missing}; expected {list(SCORE_COLUMNS)}")
    labels = set(pd.unique(frame["label"]).tolist()) - {0, 1}
    if labels:
        # metrics.as_binary would refuse them too, naming neither the split nor the scenario
        raise ValueError(
            f"{where}: label holds {sorted(labels, key=str)[:5]}; expected 0 (normal) or 1 (attack) for every window"
        )
    for column in SCORED_NUMBERS:
        bad = int((~np.isfinite(frame[column].to_numpy(float))).sum())
        if bad:
            model, title = SCORING_MODEL[column]
            raise NonFiniteScoresError(
                f"{where}: {column} holds {bad} non-finite values (NaN or inf) of {len(frame)} windows: the "
                f"{title} model's scores are not finite (a diverged training run?); no metric computed",
                model,
            )


@dataclass(frozen=True)
class ThresholdChoice:
    """A decision threshold (predict attack when ``score >= threshold``) and how it was chosen."""

    threshold: float
    youden_j: float | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "youden_j": self.youden_j, "reason": self.reason}


def youden_threshold(labels: Any, scores: Any) -> ThresholdChoice:
    """The score threshold maximising Youden's J = TPR − FPR on (validation) labels.

    Ties go to the highest threshold (fewest false alarms). With one class only, J is undefined: the threshold
    then separates nothing wrongly on this split (just above the highest normal score, or at the lowest attack
    score) and the reason says so.
    """
    y = as_binary(labels, "labels")
    if y.size == 0:
        raise ValueError("cannot choose a threshold on an empty split")
    score = finite_scores(scores, y.size)  # a NaN would give a NaN threshold: every window normal, silently
    if not (y == 1).any():
        return ThresholdChoice(
            float(np.nextafter(score.max(), np.inf)), None, "no attack windows: just above the highest score"
        )
    if not (y == 0).any():
        return ThresholdChoice(float(score.min()), None, "no normal windows: the lowest score")
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    # Index 0 is sklearn's "+inf" threshold (predict nothing); never a useful choice.
    best = youden_best_index(y, fpr[1:], tpr[1:]) + 1
    return ThresholdChoice(float(thresholds[best]), float(tpr[best] - fpr[best]), "Youden's J on validation")


def youden_best_index(labels: np.ndarray, fpr: np.ndarray, tpr: np.ndarray) -> int:
    """The index of the largest Youden's J = TPR − FPR of a ROC curve of 0/1 ``labels`` (sklearn's order, the
    highest threshold first), the first of equal ones: the highest threshold wins a tie. J is compared exactly, as
    tp·N − fp·P in integers: in floats two equal J can differ by an ulp (0.3 − 0.1 < 0.5 − 0.3) and the lower
    threshold won. The rates are counts / P or N, so rint recovers the counts."""
    positives, negatives = int((labels == 1).sum()), int((labels == 0).sum())
    true_positives = np.rint(tpr * positives).astype(np.int64)
    false_positives = np.rint(fpr * negatives).astype(np.int64)
    return int(np.argmax(true_positives * negatives - false_positives * positives))


def model_decisions(
    scored: pd.DataFrame, vgae_threshold: float, gat_threshold: float = GAT_THRESHOLD
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(scores, predictions) for each model from a ``score_graphs`` table."""
    missing = [c for c in SCORE_COLUMNS if c not in scored.columns]
    if missing:
        raise ValueError(f"scored table lacks columns {missing}; expected {list(SCORE_COLUMNS)}")
    vgae = scored["vgae_score"].to_numpy(float)
    gat = scored["gat_prob"].to_numpy(float)
    fusion = scored["fusion_score"].to_numpy(float)
    decisions = {
        "vgae": (vgae, (vgae >= vgae_threshold).astype(np.int64)),
        "gat": (gat, (gat > gat_threshold).astype(np.int64)),
        "fusion": (fusion, scored["fusion_pred"].to_numpy().astype(np.int64)),
    }
    for alpha in FIXED_ALPHAS:
        fixed = (1.0 - alpha) * vgae + alpha * gat
        decisions[fixed_alpha_model(alpha)] = (fixed, (fixed > DECISION_THRESHOLD).astype(np.int64))
    return decisions
