"""Metrics of one binary detector on one split: confusion counts, threshold-based scores and threshold-free ones
(ROC-AUC, PR-AUC, detection rate at a fixed false-positive rate). Plain numpy/scikit-learn, no torch.

Attack (1) is the positive class. Undefined metrics (e.g. ROC-AUC on a scenario that holds only normal traffic) are
``None`` and the reason is recorded under ``"undefined"``: a single-class scenario is a fact to report, not an error.
Also the refusals of what an evaluation or the baselines are given (settings, input paths), below everything that
checks them (kdgat.evaluation.inputs imports the baselines).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import auc, average_precision_score, roc_curve

from kdgat.files import MissingInputError
from wrapper_rules import InputError

FPR_TARGETS = (0.05, 0.01, 0.001)


class EvaluationSettingsError(ValueError, InputError):
    """An evaluation setting, input or a summary's param that is not what it takes (``evaluation.fpr_targets``,
    ``batch_size``, ``speed``, ``history_keys``, an input that is no file's path); the message names it and what
    was expected."""


# What each input of evaluate_files and baselines_files is.
INPUT_FILES = {
    **dict.fromkeys(("vgae", "gat", "dqn"), "model.pt"),
    **{split: f"{split}.pt" for split in ("train", "val", "test")},
    "metadata": "metadata.json",
}


def input_file(value: Any, name: str, of: str = "the evaluation") -> str | os.PathLike:
    """``value`` when it is one file's path (input ``name`` of ``of``); refused naming the input otherwise: no file
    or a list of files failed as pathlib's "expected str, bytes or os.PathLike object", naming neither."""
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise EvaluationSettingsError(
            f"input {name!r} of {of} must be the path of one {INPUT_FILES[name]}; got {value!r}"
        )
    return value


def input_files(given: Mapping[str, Any], of: str) -> dict[str, str | os.PathLike]:
    """:func:`input_file` of every input (``{name: value}``), then a :class:`MissingInputError` naming the first
    that does not exist, before anything is loaded."""
    paths = {name: input_file(value, name, of) for name, value in given.items()}
    for name, path in paths.items():
        if not Path(path).is_file():
            raise MissingInputError(f"input {name!r} of {of} does not exist: {path}")
    return paths


def as_binary(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.size and not np.isin(array, (0, 1)).all():
        bad = sorted(set(np.unique(array).tolist()) - {0, 1})[:5]
        raise ValueError(f"{name} must hold only 0 (normal) and 1 (attack); found {bad}")
    return array.astype(np.int64)


def confusion_counts(labels: Any, predictions: Any) -> dict[str, int]:
    """True/false positives/negatives with attack (1) as the positive class."""
    y = as_binary(labels, "labels")
    p = as_binary(predictions, "predictions")
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and predictions ({p.size}) differ in length")
    return {
        "tn": int(((y == 0) & (p == 0)).sum()),
        "fp": int(((y == 0) & (p == 1)).sum()),
        "fn": int(((y == 1) & (p == 0)).sum()),
        "tp": int(((y == 1) & (p == 1)).sum()),
    }


def setting_name(name: str) -> str:
    """An evaluation setting as its callers name it: the evaluate_detector / evaluate_baselines wrapper's
    params.<name>, the workflow's config key evaluation.<name> (which kdgat evaluate's options set too)."""
    return f"params.{name} (evaluation.{name} in the workflow's config)"


def checked_fpr_targets(fpr_targets: Any) -> tuple[float, ...]:
    """``fpr_targets`` as a tuple of floats, each a false-positive rate strictly between 0 and 1 (the schema's
    ``evaluation.fpr_targets``); a ValueError naming what is wrong otherwise, before any scoring."""
    if isinstance(fpr_targets, str | bytes) or not isinstance(fpr_targets, Sequence | np.ndarray):
        raise EvaluationSettingsError(
            f"{setting_name('fpr_targets')} must be a list of false-positive rates, e.g. [0.05, 0.01]; got "
            f"{fpr_targets!r}"
        )
    bad = [
        t
        for t in fpr_targets
        if isinstance(t, bool) or not isinstance(t, int | float | np.number) or not 0 < float(t) < 1
    ]
    if bad:
        raise EvaluationSettingsError(
            f"{setting_name('fpr_targets')} must be false-positive rates strictly between 0 and 1; got {bad}"
        )
    if len(fpr_targets) == 0:  # the schema's minItems 1 and the command refuse it; a wrapper's params took it
        raise EvaluationSettingsError(
            f"{setting_name('fpr_targets')} is empty: give at least one false-positive rate (e.g. [0.05, 0.01]); "
            "without one no detection rate is reported"
        )
    # Each rate is one metric, detection_rate_at_fpr_<rate:g>: two rates of one name (0.05 twice, or 0.1 and
    # 0.1000000001) were one column where two were meant, the last one's value under the first one's name.
    names: dict[str, float] = {}
    for target in (float(t) for t in fpr_targets):
        if (name := detection_rate_key(target)) in names:
            raise EvaluationSettingsError(
                f"{setting_name('fpr_targets')} must name each false-positive rate once; {names[name]!r} and "
                f"{target!r} are both "
                f"reported as {name}"
            )
        names[name] = target
    return tuple(names.values())


def detection_rate_key(target: float) -> str:
    """The metric that reports the detection rate at false-positive rate ``target``."""
    return f"detection_rate_at_fpr_{target:g}"


def finite_scores(scores: Any, size: int | None = None) -> np.ndarray:
    """``scores`` as a flat float array; a ValueError when one is NaN or infinite or (with ``size``) when their
    number is not ``size``."""
    score = np.asarray(scores, dtype=float).reshape(-1)
    if size is not None and score.size != size:
        raise ValueError(f"labels ({size}) and scores ({score.size}) differ in length")
    if not np.isfinite(score).all():
        raise ValueError(f"scores contain {int((~np.isfinite(score)).sum())} non-finite values (NaN or inf)")
    return score


def detection_rate_at_fpr(labels: Any, scores: Any, max_fpr: float) -> float | None:
    """Highest true-positive rate reachable with a false-positive rate of at most ``max_fpr``.

    ``None`` when the ROC curve is undefined (only one class present).
    """
    (max_fpr,) = checked_fpr_targets([max_fpr])
    y = as_binary(labels, "labels")
    score = finite_scores(scores, y.size)
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, score, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else float(numerator / denominator)


def binary_metrics(
    labels: Any, scores: Any, predictions: Any, fpr_targets: Sequence[float] = FPR_TARGETS
) -> dict[str, Any]:
    """Every metric of one model on one split.

    ``scores`` are continuous (higher = more likely an attack) and feed the threshold-free metrics (ROC-AUC,
    PR-AUC, detection rate at a fixed FPR); ``predictions`` are the thresholded 0/1 decisions.
    """
    fpr_targets = checked_fpr_targets(fpr_targets)
    y = as_binary(labels, "labels")
    pred = as_binary(predictions, "predictions")
    score = np.asarray(scores, dtype=float).reshape(-1)
    if not (y.size == pred.size == score.size):
        raise ValueError(
            f"labels ({y.size}), scores ({score.size}), predictions ({pred.size}) differ in length"
        )
    if y.size == 0:
        raise ValueError("cannot compute metrics on an empty split")
    finite_scores(score)

    counts = confusion_counts(y, pred)
    tn, fp, fn, tp = counts["tn"], counts["fp"], counts["fn"], counts["tp"]
    n_pos, n_neg = tp + fn, tn + fp
    undefined: dict[str, str] = {}

    def note(name: str, value: float | None, reason: str) -> float | None:
        if value is None:
            undefined[name] = reason
        return value

    no_attacks = "no attack windows in this split"
    no_normals = "no normal windows in this split"
    one_class = "only one class in this split"
    both = n_pos > 0 and n_neg > 0

    # From the counts (same definitions as scikit-learn's precision/recall/f1/matthews_corrcoef, checked against
    # them in the tests) and one ROC curve for ROC-AUC and every detection rate: 1M windows stay cheap.
    precision = _ratio(tp, tp + fp) if tp + fp else note("precision", None, "no window predicted as attack")
    recall = _ratio(tp, n_pos) if n_pos else note("recall", None, no_attacks)
    f1 = (
        _ratio(2 * tp, 2 * tp + fp + fn)
        if (2 * tp + fp + fn)
        else note("f1", None, "no attack windows and none predicted")
    )
    specificity = _ratio(tn, n_neg) if n_neg else note("specificity", None, no_normals)
    mcc_denominator = float(tp + fp) * float(tp + fn) * float(tn + fp) * float(tn + fn)
    mcc = (
        float((tp * tn - fp * fn) / math.sqrt(mcc_denominator))
        if mcc_denominator
        else note("mcc", None, "a row or column of the confusion matrix is empty")
    )
    roc = roc_curve(y, score, drop_intermediate=False) if both else None
    metrics: dict[str, Any] = {
        "n": int(y.size),
        "n_attack": int(n_pos),
        "n_normal": int(n_neg),
        "accuracy": float((tp + tn) / y.size),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "specificity": specificity,
        "balanced_accuracy": (recall + specificity) / 2
        if both
        else note("balanced_accuracy", None, one_class),
        "mcc": mcc,
        "fpr": _ratio(fp, n_neg) if n_neg else note("fpr", None, no_normals),
        "fnr": _ratio(fn, n_pos) if n_pos else note("fnr", None, no_attacks),
        "roc_auc": float(auc(roc[0], roc[1])) if roc else note("roc_auc", None, one_class),
        # without normal windows every ranking has precision 1 at every recall: sklearn's 1.0 measures nothing
        "pr_auc": float(average_precision_score(y, score))
        if both
        else note("pr_auc", None, no_normals if n_pos else no_attacks),
    }
    for target in fpr_targets:
        key = detection_rate_key(target)
        metrics[key] = float(roc[1][roc[0] <= target + 1e-12].max()) if roc else note(key, None, one_class)
    metrics["confusion_matrix"] = {**counts, "matrix": [[tn, fp], [fn, tp]]}
    metrics["undefined"] = undefined
    return metrics
