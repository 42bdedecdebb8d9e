"""Report figures (matplotlib, Agg backend, SVG): ROC and precision-recall curves, confusion matrices, training
curves and the teacher-vs-students chart."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from kdgat.chain import MODEL_TITLES, MODELS, STAGES, VARIANT_TITLES, VARIANTS
from kdgat.files import FileContentError, save_figure, text_separator


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


def _legend(axis, **options) -> None:
    """The axis's legend, drawn only when a line or bar is labelled: a panel of one class has no curve, and
    matplotlib warns "No artists with labels found to put in legend" for an empty one."""
    if axis.get_legend_handles_labels()[0]:
        axis.legend(**options)


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
    _legend(axis, loc="lower right", fontsize=8)
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
    _legend(axis, loc="lower left", fontsize=8)
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


TRAINING_AXES = ("epoch", "episode", "step")  # the x axis of a training curve, in the order looked for


def read_history(path: str | os.PathLike) -> pd.DataFrame:
    try:
        history = pd.read_csv(path, sep=text_separator(path))  # as write_table wrote it
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise FileContentError(f"{path}: not a readable training history CSV ({error})") from error
    # e.g. a metrics.json or a scores table given as a history
    if not set(TRAINING_AXES) & set(history.columns):
        raise FileContentError(
            f"{path}: not a training history: no epoch, episode or step column (columns: "
            f"{list(history.columns)[:8]}); give the history.csv a training stage writes"
        )
    numeric = history.select_dtypes("number")
    if numeric.empty:
        raise FileContentError(
            f"{path}: training history has no numeric columns (columns: {list(history.columns)})"
        )
    return history


def _history_columns(history: pd.DataFrame, x_name: str) -> tuple[list[str], list[str]]:
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
            x_name = next(c for c in TRAINING_AXES if c in history.columns)
            x = history[x_name]
            losses, scores = _history_columns(history, x_name)
            # A line through one point draws nothing: a one-epoch history shows its points as markers.
            marker = "o" if len(history) == 1 else None
            for column in losses:
                axis.plot(x, history[column], "-", label=column, lw=1.2, marker=marker)
            axis.set_xlabel(x_name)
            axis.set_ylabel("loss" if losses else "")
            handles, labels = axis.get_legend_handles_labels()
            if scores:
                twin = axis.twinx()
                for k, column in enumerate(scores):
                    twin.plot(
                        x,
                        history[column],
                        "--",
                        color=f"C{len(losses) + k}",
                        label=column,
                        lw=1.2,
                        marker=marker,
                    )
                twin.set_ylim(-0.02, 1.02)
                twin.set_ylabel("validation score")
                more_handles, more_labels = twin.get_legend_handles_labels()
                handles, labels = handles + more_handles, labels + more_labels
            axis.legend(handles, labels, fontsize=6)
    figure.suptitle(f"{title} training curves".strip())
    figure.tight_layout()
    save_figure(figure, path)


def plot_size_f1(table: pd.DataFrame, path: str | os.PathLike, title: str = "", seeds: str = "") -> None:
    """Teacher vs students: parameters (log scale), F1 per model and latency, grouped by dataset, the latency's
    panel titled with the hardware it was measured on (``table``'s ``hardware``); ``seeds`` (e.g. "seeds 42, 43,
    44") names the seeds the means are over."""
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
        ("parameters (VGAE + GAT + DQN)", "F1, DQN fusion, test", "latency per window, batched path (ms)"),
        strict=True,
    ):
        axis.set_xticks(x, datasets)
        axis.set_ylabel(ylabel)
        _legend(axis, fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, 1.05)
    hardware = sorted(set(table["hardware"])) if "hardware" in table else []
    if hardware:  # which GPU or CPU the latencies are of: a figure read alone must say it too
        machines = hardware[0] if len(hardware) == 1 else "several machines (see the summary's table)"
        axes[2].set_title(f"measured on {machines}", fontsize=8)
    figure.suptitle(f"{title} teacher vs students".strip() + (f", {seeds}" if seeds else ""))
    figure.tight_layout()
    save_figure(figure, path)
