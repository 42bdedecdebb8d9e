"""Evaluation of trained KD-GAT detectors: metrics, thresholds, speed, summary tables and plots.

The detector is scored per window graph by ``kdgat.inference.score_graphs`` (one row per graph with
``label, vgae_score, gat_prob, fusion_alpha, fusion_score, fusion_pred``). This module turns such tables into
metrics for three models (VGAE alone, GAT alone, DQN fusion), for the validation split and every test
scenario. The VGAE threshold is chosen on validation with Youden's J and reused unchanged on test, so test
numbers never see test labels.

Undefined metrics (e.g. ROC-AUC on a scenario that holds only normal traffic) are ``None`` and the reason is
recorded under ``"undefined"``: a single-class scenario is a fact to report, not an error.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import auc, average_precision_score, roc_auc_score, roc_curve

from kdgat.files import (
    copy_file,
    json_safe,
    load_json,
    new_directory,
    publish_directory,
    save_figure,
    write_json,
    write_table,
    write_text,
)

log = logging.getLogger(__name__)

MODELS = ("vgae", "gat", "fusion")
MODEL_TITLES = {"vgae": "VGAE (alone)", "gat": "GAT (alone)", "fusion": "DQN fusion"}
VARIANTS = ("teacher", "student_kd", "student")
VARIANT_TITLES = {"teacher": "teacher", "student_kd": "student (KD)", "student": "student (no KD)"}
STAGES = ("vgae", "gat", "dqn")
FPR_TARGETS = (0.05, 0.01, 0.001)
GAT_THRESHOLD = 0.5
SCORE_COLUMNS = ("label", "vgae_score", "gat_prob", "fusion_alpha", "fusion_score", "fusion_pred")


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------
def _as_binary(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values).reshape(-1)
    if array.size and not np.isin(array, (0, 1)).all():
        bad = sorted(set(np.unique(array).tolist()) - {0, 1})[:5]
        raise ValueError(f"{name} must hold only 0 (normal) and 1 (attack); found {bad}")
    return array.astype(np.int64)


def confusion_counts(labels: Any, predictions: Any) -> dict[str, int]:
    """True/false positives/negatives with attack (1) as the positive class."""
    y = _as_binary(labels, "labels")
    p = _as_binary(predictions, "predictions")
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.size}) and predictions ({p.size}) differ in length")
    return {
        "tn": int(((y == 0) & (p == 0)).sum()),
        "fp": int(((y == 0) & (p == 1)).sum()),
        "fn": int(((y == 1) & (p == 0)).sum()),
        "tp": int(((y == 1) & (p == 1)).sum()),
    }


def detection_rate_at_fpr(labels: Any, scores: Any, max_fpr: float) -> float | None:
    """Highest true-positive rate reachable with a false-positive rate of at most ``max_fpr``.

    ``None`` when the ROC curve is undefined (only one class present).
    """
    y = _as_binary(labels, "labels")
    if len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, np.asarray(scores, dtype=float), drop_intermediate=False)
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
    y = _as_binary(labels, "labels")
    pred = _as_binary(predictions, "predictions")
    score = np.asarray(scores, dtype=float).reshape(-1)
    if not (y.size == pred.size == score.size):
        raise ValueError(
            f"labels ({y.size}), scores ({score.size}), predictions ({pred.size}) differ in length"
        )
    if y.size == 0:
        raise ValueError("cannot compute metrics on an empty split")
    if not np.isfinite(score).all():
        raise ValueError(f"scores contain {int((~np.isfinite(score)).sum())} non-finite values")

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
        "pr_auc": float(average_precision_score(y, score)) if n_pos else note("pr_auc", None, no_attacks),
    }
    for target in fpr_targets:
        key = f"detection_rate_at_fpr_{target:g}"
        metrics[key] = float(roc[1][roc[0] <= target + 1e-12].max()) if roc else note(key, None, one_class)
    metrics["confusion_matrix"] = {**counts, "matrix": [[tn, fp], [fn, tp]]}
    metrics["undefined"] = undefined
    return metrics


# --------------------------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------------------------
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
    y = _as_binary(labels, "labels")
    score = np.asarray(scores, dtype=float).reshape(-1)
    if y.size == 0:
        raise ValueError("cannot choose a threshold on an empty split")
    if not (y == 1).any():
        return ThresholdChoice(
            float(np.nextafter(score.max(), np.inf)), None, "no attack windows: just above the highest score"
        )
    if not (y == 0).any():
        return ThresholdChoice(float(score.min()), None, "no normal windows: the lowest score")
    fpr, tpr, thresholds = roc_curve(y, score, drop_intermediate=False)
    # Index 0 is sklearn's "+inf" threshold (predict nothing); never a useful choice.
    j = (tpr - fpr)[1:]
    best = int(np.argmax(j)) + 1  # argmax returns the first maximum = the highest threshold
    return ThresholdChoice(float(thresholds[best]), float(j[best - 1]), "Youden's J on validation")


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
    return {
        "vgae": (vgae, (vgae >= vgae_threshold).astype(np.int64)),
        "gat": (gat, (gat >= gat_threshold).astype(np.int64)),
        "fusion": (fusion, scored["fusion_pred"].to_numpy().astype(np.int64)),
    }


def evaluate_scored_splits(
    val: pd.DataFrame,
    tests: Mapping[str, pd.DataFrame],
    fpr_targets: Sequence[float] = FPR_TARGETS,
    gat_threshold: float = GAT_THRESHOLD,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics for validation, every test scenario and all test scenarios pooled.

    Returns the metrics document and one long table of per-window scores and decisions (column ``split``:
    ``val`` or ``test``; ``scenario``: ``val`` or the scenario name).
    """
    if val.empty:
        raise ValueError("the validation split is empty: the VGAE threshold cannot be chosen")
    choice = youden_threshold(val["label"], val["vgae_score"])
    frames = []

    def assess(frame: pd.DataFrame, split: str, scenario: str) -> dict[str, Any]:
        decisions = model_decisions(frame, choice.threshold, gat_threshold)
        labels = frame["label"].to_numpy()
        out = frame.loc[:, list(SCORE_COLUMNS)].copy()
        out.insert(0, "scenario", scenario)
        out.insert(0, "split", split)
        out["vgae_pred"] = decisions["vgae"][1]
        out["gat_pred"] = decisions["gat"][1]
        frames.append(out)
        return {m: binary_metrics(labels, s, p, fpr_targets) for m, (s, p) in decisions.items()}

    document: dict[str, Any] = {
        "thresholds": {"vgae": choice.as_dict(), "gat": gat_threshold, "fusion": "fusion_pred from the DQN"},
        "val": assess(val, "val", "val"),
        "test": {},
    }
    for scenario, frame in tests.items():
        if frame.empty:
            raise ValueError(f"test scenario {scenario!r} has no graphs")
        document["test"][scenario] = assess(frame, "test", scenario)
    if tests:
        pooled = pd.concat(list(tests.values()), ignore_index=True)
        decisions = model_decisions(pooled, choice.threshold, gat_threshold)
        labels = pooled["label"].to_numpy()
        document["test_pooled"] = {
            m: binary_metrics(labels, s, p, fpr_targets) for m, (s, p) in decisions.items()
        }
    scores = pd.concat(frames, ignore_index=True)
    scores["label"] = scores["label"].astype("int64")
    return document, scores


# --------------------------------------------------------------------------------------------------------------
# Model size and inference speed
# --------------------------------------------------------------------------------------------------------------
def count_parameters(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _forward_on_batch(model: Any, batch: Any) -> Any:
    """Call ``model`` with the batch attributes its ``forward`` names (``x``, ``edge_index``, ``batch``, ...)."""
    names = [
        name
        for name, parameter in inspect.signature(model.forward).parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    missing = [name for name in names if getattr(batch, name, None) is None]
    if missing:
        raise TypeError(f"{type(model).__name__}.forward needs {missing}, which a graph batch does not have")
    return model(**{name: getattr(batch, name) for name in names})


def measure_inference_speed(
    vgae: Any,
    gat: Any,
    dqn: Any,
    graphs: Sequence[Any],
    score_fn: Callable[..., pd.DataFrame],
    *,
    batch_size: int = 256,
    device: Any = "cpu",
    repeats: int = 5,
    latency_runs: int = 20,
    max_graphs: int = 1024,
) -> dict[str, Any]:
    """Batched throughput (graphs/s) and single-window latency (ms), medians over several runs.

    ``vgae`` and ``gat`` time each model's own forward pass on batched graphs (batching included);
    ``fusion`` times the whole detector as deployed (VGAE + GAT + DQN through ``score_fn``).
    """
    import torch
    from torch_geometric.loader import DataLoader

    if not graphs:
        raise ValueError("no graphs to measure inference speed on")
    sample = list(graphs[:max_graphs])
    repeats, latency_runs = max(1, repeats), max(1, latency_runs)

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def run_model(model: Any) -> Callable[[list], None]:
        def run(batch_graphs: list) -> None:
            for batch in DataLoader(batch_graphs, batch_size=batch_size, shuffle=False):
                _forward_on_batch(model, batch.to(device))

        return run

    def run_detector(batch_graphs: list) -> None:
        score_fn(vgae, gat, dqn, batch_graphs, batch_size=batch_size, device=device)

    def seconds(run: Callable[[list], None], batch_graphs: list) -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            run(batch_graphs)
        sync()
        return time.perf_counter() - start

    result: dict[str, Any] = {
        "device": str(device),
        "graphs": len(sample),
        "batch_size": batch_size,
        "repeats": repeats,
        "latency_runs": latency_runs,
    }
    for name, run in (("vgae", run_model(vgae)), ("gat", run_model(gat)), ("fusion", run_detector)):
        seconds(run, sample[:batch_size])  # warm-up: allocator, lazy initialisation, caches
        batched = float(np.median([seconds(run, sample) for _ in range(repeats)]))
        single = [seconds(run, [sample[i % len(sample)]]) for i in range(latency_runs)]
        result[name] = {
            "graphs_per_s": len(sample) / batched if batched > 0 else None,
            "latency_ms": float(np.median(single)) * 1e3,
        }
    return result


def evaluate_detector(
    vgae: Any,
    gat: Any,
    dqn: Any,
    val_graphs: Sequence[Any],
    test_sets: Mapping[str, Sequence[Any]],
    *,
    score_fn: Callable[..., pd.DataFrame] | None = None,
    batch_size: int = 256,
    device: Any = "cpu",
    fpr_targets: Sequence[float] = FPR_TARGETS,
    speed: Mapping[str, int] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score one trained detector (VGAE, GAT, DQN) on validation and every test scenario and evaluate it."""
    if score_fn is None:
        from kdgat.inference import score_graphs as score_fn
    if not val_graphs:
        raise ValueError("the validation graph list is empty")
    log.info("scoring %d validation graphs", len(val_graphs))
    val = score_fn(vgae, gat, dqn, list(val_graphs), batch_size=batch_size, device=device)
    tests = {}
    for scenario, graphs in test_sets.items():
        log.info("scoring %d graphs of test scenario %s", len(graphs), scenario)
        tests[scenario] = score_fn(vgae, gat, dqn, list(graphs), batch_size=batch_size, device=device)
    document, scores = evaluate_scored_splits(val, tests, fpr_targets)
    document["parameters"] = {
        "vgae": count_parameters(vgae),
        "gat": count_parameters(gat),
        "dqn": count_parameters(dqn),
    }
    document["parameters"]["total"] = sum(document["parameters"].values())
    log.info("measuring inference speed")
    document["speed"] = measure_inference_speed(
        vgae, gat, dqn, list(val_graphs), score_fn, batch_size=batch_size, device=device, **dict(speed or {})
    )
    return document, scores


# --------------------------------------------------------------------------------------------------------------
# Atomic writes and the result stash
# --------------------------------------------------------------------------------------------------------------
def file_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stash_key(inputs: Mapping[str, str | os.PathLike], params: Mapping[str, Any]) -> str:
    """A key that changes whenever an input's content or a parameter changes (not on mtime or path moves)."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        digest.update(f"{name}={file_digest(inputs[name])}\n".encode())
    digest.update(json.dumps(json_safe(dict(params)), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


class ResultStash:
    """Finished results kept outside Snakemake's declared outputs, keyed by a hash of inputs and parameters.

    Snakemake deletes the outputs of every member of a group job when one member fails. A member that commits
    its finished outputs here first can restore them on the rerun instead of recomputing. Entries are
    written to a temporary directory and renamed into place, so a half-written entry is never visible.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def entry(self, key: str) -> Path:
        return self.root / key

    def restore(self, key: str, outputs: Mapping[str, str | os.PathLike]) -> bool:
        entry = self.entry(key)
        if not (entry / "COMPLETE").is_file():
            return False
        stored = {name: entry / name for name in outputs}
        if not all(p.is_file() for p in stored.values()):
            log.warning("stash entry %s lacks some outputs; recomputing", entry)
            return False
        for name, target in outputs.items():
            copy_file(stored[name], target)
        return True

    def commit(self, key: str, outputs: Mapping[str, str | os.PathLike]) -> Path:
        entry = self.entry(key)
        if (entry / "COMPLETE").is_file():
            return entry
        staging = new_directory(self.root, prefix=f".{key}.")
        for name, source in outputs.items():
            copy_file(source, staging / name)
        write_json({"outputs": sorted(outputs)}, staging / "COMPLETE", indent=None)
        publish_directory(staging, entry)  # False: a concurrent writer won; its entry holds the same results
        return entry


# --------------------------------------------------------------------------------------------------------------
# Summary tables
# --------------------------------------------------------------------------------------------------------------
SUMMARY_COLUMNS = [
    "dataset",
    "variant",
    "params_vgae",
    "params_gat",
    "params_dqn",
    "params_total",
    "size_vs_teacher",
    "f1_vgae",
    "f1_gat",
    "f1_fusion",
    "roc_auc_fusion",
    "latency_ms_fusion",
    "graphs_per_s_fusion",
]


def summary_row(dataset: str, variant: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the summary: size, pooled-test F1 per model and end-to-end latency of one variant."""
    try:
        params = document["parameters"]
        speed = document["speed"]["fusion"]
        test = document.get("test_pooled") or document["val"]
    except KeyError as error:
        raise ValueError(f"metrics of {dataset}/{variant} lack the key {error}") from None
    return {
        "dataset": dataset,
        "variant": variant,
        "params_vgae": params["vgae"],
        "params_gat": params["gat"],
        "params_dqn": params["dqn"],
        "params_total": params["total"],
        "size_vs_teacher": None,
        "f1_vgae": test["vgae"]["f1"],
        "f1_gat": test["gat"]["f1"],
        "f1_fusion": test["fusion"]["f1"],
        "roc_auc_fusion": test["fusion"]["roc_auc"],
        "latency_ms_fusion": speed["latency_ms"],
        "graphs_per_s_fusion": speed["graphs_per_s"],
    }


def summary_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows from ``summary_row`` as a table, with each student's size relative to its dataset's teacher."""
    table = pd.DataFrame(list(rows), columns=SUMMARY_COLUMNS)
    order = {v: i for i, v in enumerate(VARIANTS)}
    table = table.sort_values(
        ["dataset", "variant"], key=lambda s: s.map(order) if s.name == "variant" else s
    ).reset_index(drop=True)
    teacher = table[table["variant"] == "teacher"].set_index("dataset")["params_total"]
    table["size_vs_teacher"] = table.apply(
        lambda r: (r["params_total"] / teacher[r["dataset"]]) if r["dataset"] in teacher.index else None,
        axis=1,
    ).astype(float)
    return table


def _markdown_cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if column.startswith("params"):
        return f"{int(value):,}"
    if column == "size_vs_teacher":
        return f"{100 * value:.1f}%"
    if column == "graphs_per_s_fusion":
        return f"{value:,.0f}"
    if column == "latency_ms_fusion":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def summary_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency such as ``tabulate``)."""
    headers = {
        "dataset": "dataset",
        "variant": "variant",
        "params_vgae": "VGAE params",
        "params_gat": "GAT params",
        "params_dqn": "DQN params",
        "params_total": "total params",
        "size_vs_teacher": "size vs teacher",
        "f1_vgae": "F1 VGAE",
        "f1_gat": "F1 GAT",
        "f1_fusion": "F1 fusion",
        "roc_auc_fusion": "ROC-AUC fusion",
        "latency_ms_fusion": "latency (ms/window)",
        "graphs_per_s_fusion": "graphs/s (batched)",
    }
    columns = [c for c in SUMMARY_COLUMNS if c in table.columns]
    lines = [
        "| " + " | ".join(headers[c] for c in columns) + " |",
        "|" + "|".join("---" if c in ("dataset", "variant") else "---:" for c in columns) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_markdown_cell(row[c], c) for c in columns) + " |")
    return (
        "F1 on all test scenarios pooled; latency is one window through VGAE + GAT + DQN fusion (median).\n\n"
        + "\n".join(lines)
        + "\n"
    )


# --------------------------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg backend, SVG)
# --------------------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _curve_split(scores: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Pooled test windows when they hold both classes, else validation (a curve needs both classes)."""
    test = scores[scores["split"] == "test"]
    if test["label"].nunique() == 2:
        return test, "test (all scenarios)"
    val = scores[scores["split"] == "val"]
    return val, "validation (test has one class only)"


_SCORE_OF = {"vgae": "vgae_score", "gat": "gat_prob", "fusion": "fusion_score"}


def plot_roc(scores: pd.DataFrame, path: str | os.PathLike, title: str = "") -> None:
    from sklearn.metrics import roc_curve as curve

    plt = _pyplot()
    frame, where = _curve_split(scores)
    figure, axis = plt.subplots(figsize=(5, 4.5))
    if frame["label"].nunique() == 2:
        for model in MODELS:
            fpr, tpr, _ = curve(frame["label"], frame[_SCORE_OF[model]])
            area = roc_auc_score(frame["label"], frame[_SCORE_OF[model]])
            axis.plot(fpr, tpr, label=f"{MODEL_TITLES[model]} (AUC {area:.3f})")
    else:
        axis.text(0.5, 0.5, "ROC undefined: one class only", ha="center")
    axis.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    axis.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title} ROC, {where}")
    axis.legend(loc="lower right", fontsize=8)
    save_figure(figure, path)


def plot_pr(scores: pd.DataFrame, path: str | os.PathLike, title: str = "") -> None:
    from sklearn.metrics import precision_recall_curve

    plt = _pyplot()
    frame, where = _curve_split(scores)
    figure, axis = plt.subplots(figsize=(5, 4.5))
    if (frame["label"] == 1).any():
        for model in MODELS:
            precision, recall, _ = precision_recall_curve(frame["label"], frame[_SCORE_OF[model]])
            ap = average_precision_score(frame["label"], frame[_SCORE_OF[model]])
            axis.plot(recall, precision, label=f"{MODEL_TITLES[model]} (AP {ap:.3f})")
        axis.axhline(frame["label"].mean(), ls=":", color="grey", lw=1)
    else:
        axis.text(0.5, 0.5, "PR curve undefined: no attacks", ha="center")
    axis.set(xlabel="recall", ylabel="precision", title=f"{title} precision-recall, {where}", ylim=(0, 1.02))
    axis.legend(loc="lower left", fontsize=8)
    save_figure(figure, path)


def plot_confusion(document: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> None:
    plt = _pyplot()
    block = document.get("test_pooled") or document["val"]
    where = "test (all scenarios)" if "test_pooled" in document else "validation"
    figure, axes = plt.subplots(1, len(MODELS), figsize=(3.4 * len(MODELS), 3.4))
    for index, (axis, model) in enumerate(zip(np.atleast_1d(axes), MODELS, strict=True)):
        matrix = np.asarray(block[model]["confusion_matrix"]["matrix"])
        axis.imshow(matrix, cmap="Blues")
        for (i, j), count in np.ndenumerate(matrix):
            colour = "white" if count > matrix.max() / 2 else "black"
            axis.text(j, i, f"{count:,}", ha="center", va="center", color=colour)
        axis.set(
            xticks=[0, 1],
            yticks=[0, 1],
            xticklabels=["normal", "attack"],
            yticklabels=["normal", "attack"],
            xlabel="predicted",
            ylabel="actual" if index == 0 else "",
            title=MODEL_TITLES[model],
        )
    figure.suptitle(f"{title} confusion matrices, {where}")
    figure.tight_layout()
    save_figure(figure, path)


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    try:
        history = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable training history CSV ({error})") from error
    numeric = history.select_dtypes("number")
    if numeric.empty:
        raise ValueError(
            f"{path}: training history has no numeric columns (columns: {list(history.columns)})"
        )
    return history


def _history_columns(history: pd.DataFrame, x_name: str | None) -> tuple[list[str], list[str]]:
    """Losses (left axis) and bounded validation scores such as AUC/F1/accuracy (right axis, [0, 1]).

    Throughput, timings and counts recorded in history.csv are left out: they are not training curves.
    """
    numeric = [c for c in history.select_dtypes("number").columns if c != x_name]
    losses = [c for c in numeric if "loss" in c]
    scores = []
    for column in numeric:
        values = history[column].dropna()
        if column in losses or not column.startswith("val_") or values.empty:
            continue
        if values.between(0, 1).all():
            scores.append(column)
    if not losses and not scores:
        losses = numeric
    return losses, scores


def plot_training_curves(
    histories: Mapping[tuple[str, str], str | os.PathLike], path: str | os.PathLike, title: str = ""
) -> None:
    """One panel per (variant, stage): losses and validation scores of history.csv against the epoch."""
    plt = _pyplot()
    variants = [v for v in VARIANTS if any(k[0] == v for k in histories)]
    stages = [s for s in STAGES if any(k[1] == s for k in histories)]
    figure, axes = plt.subplots(
        len(variants), len(stages), figsize=(4.2 * len(stages), 3.0 * len(variants)), squeeze=False
    )
    for row, variant in enumerate(variants):
        for col, stage in enumerate(stages):
            axis = axes[row][col]
            source = histories.get((variant, stage))
            axis.set_title(f"{VARIANT_TITLES[variant]} / {stage}", fontsize=9)
            if source is None:
                axis.set_axis_off()
                continue
            history = read_history(source)
            x_name = next((c for c in ("epoch", "episode", "step") if c in history.columns), None)
            x = history[x_name] if x_name else history.index
            losses, scores = _history_columns(history, x_name)
            for column in losses:
                axis.plot(x, history[column], "-", label=column, lw=1.2)
            axis.set_xlabel(x_name or "row")
            axis.set_ylabel("loss" if losses else "")
            handles, labels = axis.get_legend_handles_labels()
            if scores:
                twin = axis.twinx()
                for k, column in enumerate(scores):
                    twin.plot(x, history[column], "--", color=f"C{len(losses) + k}", label=column, lw=1.2)
                twin.set_ylim(-0.02, 1.02)
                twin.set_ylabel("validation score")
                more_handles, more_labels = twin.get_legend_handles_labels()
                handles, labels = handles + more_handles, labels + more_labels
            axis.legend(handles, labels, fontsize=6)
    figure.suptitle(f"{title} training curves".strip())
    figure.tight_layout()
    save_figure(figure, path)


def plot_size_f1(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> None:
    """Teacher vs students: parameters (log scale), F1 per model and latency, grouped by dataset."""
    plt = _pyplot()
    datasets = list(dict.fromkeys(table["dataset"]))
    variants = [v for v in VARIANTS if v in set(table["variant"])]
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    width = 0.8 / max(1, len(variants))
    x = np.arange(len(datasets))
    for k, variant in enumerate(variants):
        rows = table[table["variant"] == variant].set_index("dataset").reindex(datasets)
        offset = (k - (len(variants) - 1) / 2) * width
        label = VARIANT_TITLES[variant]
        axes[0].bar(x + offset, rows["params_total"].astype(float), width, label=label)
        axes[1].bar(x + offset, rows["f1_fusion"].astype(float), width, label=label)
        axes[2].bar(x + offset, rows["latency_ms_fusion"].astype(float), width, label=label)
    for axis, ylabel in zip(
        axes,
        ("parameters (VGAE + GAT + DQN)", "F1, DQN fusion, test", "latency per window (ms)"),
        strict=True,
    ):
        axis.set_xticks(x, datasets)
        axis.set_ylabel(ylabel)
        axis.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, 1.05)
    figure.suptitle(f"{title} teacher vs students".strip())
    figure.tight_layout()
    save_figure(figure, path)


# --------------------------------------------------------------------------------------------------------------
# File-level entry points (one call per wrapper)
# --------------------------------------------------------------------------------------------------------------
EVALUATION_OUTPUTS = ("metrics", "scores", "roc", "pr", "confusion")


def evaluate_files(
    *,
    vgae: str | os.PathLike,
    gat: str | os.PathLike,
    dqn: str | os.PathLike,
    val: str | os.PathLike,
    test: str | os.PathLike,
    outputs: Mapping[str, str | os.PathLike],
    dataset: str,
    variant: str,
    batch_size: int = 256,
    device: str = "auto",
    fpr_targets: Sequence[float] = FPR_TARGETS,
    speed: Mapping[str, int] | None = None,
    stash_dir: str | os.PathLike | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Evaluate one variant of one dataset from files; write metrics.json, scores.parquet and three SVGs.

    With ``stash_dir``, finished outputs are also committed to a :class:`ResultStash` keyed by the contents of
    every input and the parameters, and restored from it (without recomputing) when the same evaluation is asked
    for again, e.g. after a sibling in the same Snakemake group job failed and Snakemake deleted these outputs.
    """
    missing = [name for name in EVALUATION_OUTPUTS if name not in outputs]
    if missing:
        raise ValueError(f"evaluate_files needs the outputs {list(EVALUATION_OUTPUTS)}; missing {missing}")
    inputs = {"vgae": vgae, "gat": gat, "dqn": dqn, "val": val, "test": test}
    for name, path in inputs.items():
        if not Path(path).is_file():
            raise FileNotFoundError(f"input {name!r} of the evaluation does not exist: {path}")
    params = {
        "dataset": dataset,
        "variant": variant,
        "batch_size": batch_size,
        "device": device,
        "fpr_targets": list(fpr_targets),
        "speed": dict(speed or {}),
        "version": 1,  # bump when the evaluation's outputs change meaning
    }
    stash = ResultStash(stash_dir) if stash_dir else None
    stash_names = {f"{name}{Path(outputs[name]).suffix}": outputs[name] for name in EVALUATION_OUTPUTS}
    key = stash_key(inputs, params) if stash else None
    if stash and stash.restore(key, stash_names):
        log.info(
            "restored %s/%s from the result stash %s (inputs and params unchanged)", dataset, variant, key
        )
        return load_json(outputs["metrics"])

    import torch

    from kdgat.graph_store import load_graph_sets, load_graphs
    from kdgat.inference import load_model, select_device

    if threads:
        torch.set_num_threads(threads)
    torch_device = select_device(device)
    log.info("evaluating %s/%s on %s", dataset, variant, torch_device)
    models = {}
    for name in ("vgae", "gat", "dqn"):
        try:
            models[name] = load_model(inputs[name], device=torch_device)
        except Exception as error:
            raise ValueError(
                f"{inputs[name]}: cannot load the {name} model ({type(error).__name__}: {error})"
            ) from error
    val_graphs = load_graphs(val)
    test_sets = load_graph_sets(test)
    document, scores = evaluate_detector(
        models["vgae"],
        models["gat"],
        models["dqn"],
        val_graphs,
        test_sets,
        batch_size=batch_size,
        device=torch_device,
        fpr_targets=fpr_targets,
        speed=speed,
    )
    document = {"dataset": dataset, "variant": variant, **document}
    title = f"{dataset} {VARIANT_TITLES.get(variant, variant)}:"
    write_table(scores, outputs["scores"])
    plot_roc(scores, outputs["roc"], title)
    plot_pr(scores, outputs["pr"], title)
    plot_confusion(document, outputs["confusion"], title)
    write_json(document, outputs["metrics"])  # last: its presence means the evaluation finished
    if stash:
        log.info("committed results to the stash %s", stash.commit(key, stash_names))
    return document


def summarize_files(
    *,
    metrics: Sequence[str | os.PathLike],
    csv: str | os.PathLike,
    markdown: str | os.PathLike,
    chart: str | os.PathLike,
    histories: Mapping[str, str | os.PathLike] | None = None,
    curves: str | os.PathLike | None = None,
    title: str = "",
) -> pd.DataFrame:
    """Summary table (CSV + Markdown) and teacher-vs-student chart from metrics.json files.

    ``histories`` maps ``"<variant>/<stage>"`` to a training history.csv; with ``curves`` they are drawn.
    """
    rows = []
    for path in metrics:
        document = load_json(path)
        try:
            rows.append(summary_row(document["dataset"], document["variant"], document))
        except KeyError as error:
            raise ValueError(f"{path}: metrics lack the key {error}") from None
    table = summary_table(rows)
    log.info(
        "summary of %d evaluations (%s)",
        len(table),
        ", ".join(f"{d}/{v}" for d, v in zip(table["dataset"], table["variant"], strict=True)),
    )
    write_table(table, csv)
    write_text(summary_markdown(table), markdown)
    plot_size_f1(table, chart, title)
    if curves is not None:
        keyed = {}
        for key, path in (histories or {}).items():
            variant, _, stage = key.partition("/")
            if variant not in VARIANTS or stage not in STAGES:
                raise ValueError(
                    f"history key {key!r} must be '<variant>/<stage>' with {VARIANTS} and {STAGES}"
                )
            keyed[(variant, stage)] = path
        if not keyed:
            raise ValueError("training curves were asked for but no history.csv was given")
        plot_training_curves(keyed, curves, title)
    return table
