"""Trivial baselines, reported beside the models so that a model's number means something:

* ``baseline_unknown_id``: attack when a message of the window carries a CAN ID outside the vocabulary (built from
  the normal frames of the training blocks, so this is "an ID never seen in attack-free training"). Score: 1 when
  an unknown ID is present, plus the share of the window's messages that carry one (ranks windows for ROC-AUC).
* ``baseline_id_counts``: a logistic regression (scikit-learn, standardised inputs) on the number of messages of
  each vocabulary ID in the window (the OOV column included), fitted on the training split; the decision threshold
  is chosen on validation with Youden's J, like the VGAE's, and reused unchanged on test.
* ``baseline_id_rate``: how far the window's most deviating ID is from its attack-free rate: for every
  vocabulary ID (OOV included) the mean and standard deviation of its messages per window over the *normal*
  windows of the training split, and the score max over IDs of ``|count − mean| / (std + 0.5)``. Half a message
  keeps an ID that never varied in training (counts are integers) from turning a one-message change into an
  infinite score. It never sees an attack while fitting, so a held-out attack family is as new to it as to the
  VGAE; the threshold is Youden's J on validation, as above. A frequency detector is the classic CAN-IDS
  baseline for injection, replay and suppression; masquerade (forged payloads at the ID's own rate) is what it
  cannot see.

All three read the graphs only (no model), so they are computed once per dataset. Messages per ID come from the
edges: a node's messages are the rows where it is the source, and each edge carries its row count (edge feature 0).

A baseline the training split cannot fit is *not applicable* rather than the end of the evaluation: on attack-free
training captures (which kd_gat trains on) the regression has no attack to learn from, and with fewer than two
normal training windows the rate rule has no rate. The unknown-ID rule needs no fitting. baselines.json then lacks
that baseline's results and names it under ``not_applicable`` with its reason (:func:`not_applicable`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kdgat.evaluation.metrics import (
    FPR_TARGETS,
    EvaluationSettingsError,
    binary_metrics,
    checked_fpr_targets,
    input_files,
)
from kdgat.evaluation.thresholds import youden_threshold
from kdgat.graphs import GraphArrays

log = logging.getLogger(__name__)

UNKNOWN_ID, ID_COUNTS, ID_RATE = "baseline_unknown_id", "baseline_id_counts", "baseline_id_rate"
BASELINES = (UNKNOWN_ID, ID_COUNTS, ID_RATE)
RATE_STD_FLOOR = 0.5  # messages: see the module docstring
EDGE_COUNT = 0  # edge feature 0: how many rows (messages) the edge stands for


def messages_per_id(graphs: GraphArrays, num_ids: int) -> np.ndarray:
    """``[num_graphs, num_ids]``: messages of each vocabulary index in each window."""
    counts = np.zeros((len(graphs), num_ids), dtype=np.float64)
    if len(graphs) == 0:
        return counts
    graph_of_edge = np.repeat(np.arange(len(graphs)), np.diff(graphs.edge_ptr))
    source = graphs.edge_index[0] + graphs.node_ptr[graph_of_edge]
    ids = graphs.x[source, 0].astype(np.int64)
    if len(ids) and (ids.min() < 0 or ids.max() >= num_ids):
        raise ValueError(f"a graph holds a CAN-ID index outside [0, {num_ids}) (metadata num_ids)")
    np.add.at(counts, (graph_of_edge, ids), graphs.edge_attr[:, EDGE_COUNT].astype(np.float64))
    return counts


def unknown_id_scores(graphs: GraphArrays, oov_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(score, decision) of the unknown-ID rule for every window."""
    counts = messages_per_id(graphs, oov_index + 1)
    # Messages of the window, not nodes: a node that is only the target of the last row is the next window's
    # first message.
    present = counts[:, oov_index] > 0
    share = counts[:, oov_index] / np.maximum(counts.sum(axis=1), 1.0)
    return present + share, present.astype(np.int64)


class _ValidationThresholdBaseline:
    """A baseline whose ``scores`` are cut at ``threshold``, chosen on validation by ``fit`` (Youden's J)."""

    threshold = None

    def scores(self, graphs: GraphArrays) -> np.ndarray:
        raise NotImplementedError

    def decide(self, graphs: GraphArrays) -> tuple[np.ndarray, np.ndarray]:
        scores = self.scores(graphs)
        return scores, (scores >= self.threshold.threshold).astype(np.int64)


class IdCountBaseline(_ValidationThresholdBaseline):
    """Logistic regression on per-ID message counts, with a validation-chosen threshold."""

    def __init__(self, num_ids: int, seed: int = 0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self.num_ids = num_ids
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))

    def fit(self, train: GraphArrays, val: GraphArrays) -> IdCountBaseline:
        if len(np.unique(train.y)) < 2:
            raise ValueError("the id-count baseline needs normal and attack windows in the training split")
        self.model.fit(messages_per_id(train, self.num_ids), train.y)
        self.threshold = youden_threshold(val.y, self.scores(val))
        return self

    def scores(self, graphs: GraphArrays) -> np.ndarray:
        if len(graphs) == 0:
            return np.zeros(0)
        return self.model.predict_proba(messages_per_id(graphs, self.num_ids))[:, 1]


class IdRateBaseline(_ValidationThresholdBaseline):
    """Largest per-ID deviation from the attack-free rate (messages per window), with a validation threshold."""

    def __init__(self, num_ids: int):
        self.num_ids = num_ids
        self.mean = self.std = None

    def fit(self, train: GraphArrays, val: GraphArrays) -> IdRateBaseline:
        normal = messages_per_id(train, self.num_ids)[train.y == 0]
        if len(normal) < 2:
            raise ValueError("the id-rate baseline needs at least two normal windows in the training split")
        self.mean, self.std = normal.mean(axis=0), normal.std(axis=0)
        self.threshold = youden_threshold(val.y, self.scores(val))
        return self

    def scores(self, graphs: GraphArrays) -> np.ndarray:
        if len(graphs) == 0:
            return np.zeros(0)
        deviation = np.abs(messages_per_id(graphs, self.num_ids) - self.mean) / (self.std + RATE_STD_FLOOR)
        return deviation.max(axis=1)


def not_applicable(train_labels: np.ndarray) -> dict[str, str]:
    """``{baseline: reason}`` for each baseline the training split's labels cannot fit (none for the unknown-ID rule,
    which is not fitted)."""
    reasons = {}
    normal = int((train_labels == 0).sum())
    if len(np.unique(train_labels)) < 2:
        every = "an attack" if normal == 0 else "normal"
        reasons[ID_COUNTS] = (
            f"every training window is {every}: a logistic regression needs normal and attack windows in the "
            "training split"
        )
    if normal < 2:
        reasons[ID_RATE] = (
            f"{normal} normal training window{'' if normal == 1 else 's'}: each ID's attack-free rate needs at "
            "least two"
        )
    return reasons


def evaluate_baselines(
    train: GraphArrays,
    val: GraphArrays,
    tests: Mapping[str, GraphArrays],
    num_ids: int,
    fpr_targets: Sequence[float] = FPR_TARGETS,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics of every baseline on validation, every test scenario and all test scenarios pooled, and one row
    per window (split, scenario, label, each baseline's score and decision). A baseline ``train`` cannot fit
    (:func:`not_applicable`) has no results and no columns; the document's ``not_applicable`` gives its reason."""
    fpr_targets = checked_fpr_targets(fpr_targets)
    # input errors naming the argument (baselines_files names the file first): a direct caller gets one line
    if len(val) == 0:
        raise EvaluationSettingsError(
            "evaluate_baselines's val holds no window: the validation split is empty and the baselines' "
            "thresholds cannot be chosen"
        )
    if len(train) == 0:
        raise EvaluationSettingsError(
            "evaluate_baselines's train holds no window: the training split is empty; the baselines are fitted on it"
        )
    empty = [scenario for scenario, graphs in tests.items() if len(graphs) == 0]
    if empty:  # before anything is fitted, not after validation was assessed
        raise EvaluationSettingsError(
            f"evaluate_baselines's tests[{empty[0]!r}]: test scenario {empty[0]!r} has no graphs; every test "
            "scenario needs at least one"
        )
    skipped = not_applicable(train.y)
    fitted = {
        name: baseline.fit(train, val)
        for name, baseline in ((ID_COUNTS, IdCountBaseline(num_ids)), (ID_RATE, IdRateBaseline(num_ids)))
        if name not in skipped
    }
    oov_index = num_ids - 1
    rows = []

    def assess(graphs: GraphArrays, split: str, scenario: str) -> dict[str, Any]:
        decisions = {
            UNKNOWN_ID: unknown_id_scores(graphs, oov_index),
            **{name: baseline.decide(graphs) for name, baseline in fitted.items()},
        }
        frame = pd.DataFrame({"split": split, "scenario": scenario, "label": graphs.y.astype(np.int64)})
        for name, (score, pred) in decisions.items():
            frame[f"{name}_score"], frame[f"{name}_pred"] = score, pred
        rows.append(frame)
        return {name: binary_metrics(graphs.y, s, p, fpr_targets) for name, (s, p) in decisions.items()}

    document: dict[str, Any] = {
        "thresholds": {
            UNKNOWN_ID: "any CAN ID outside the vocabulary (normal frames of the training blocks)",
            **{name: baseline.threshold.as_dict() for name, baseline in fitted.items()},
        },
        "not_applicable": skipped,
        "val": assess(val, "val", "val"),
        "test": {},
    }
    for scenario, graphs in tests.items():
        document["test"][scenario] = assess(graphs, "test", scenario)
    if tests:
        pooled = GraphArrays.concat(list(tests.values()))
        document["test_pooled"] = assess(pooled, "test", "pooled")
        rows.pop()  # the pooled windows are already in the table, once per scenario
    return document, pd.concat(rows, ignore_index=True)


def baselines_files(
    *,
    train: str | os.PathLike,
    val: str | os.PathLike,
    test: str | os.PathLike,
    metadata: str | os.PathLike,
    metrics: str | os.PathLike,
    scores: str | os.PathLike,
    dataset: str | None = None,
    fpr_targets: Sequence[float] = FPR_TARGETS,
) -> dict[str, Any]:
    """Every baseline of one dataset from the preprocess outputs; writes baselines.json and the window scores.
    ``dataset``: the name recorded in baselines.json; None takes the one ``metadata`` records (the preprocess run's
    name, which evaluate_detector's metrics.json carries too), else ``"dataset"``."""
    from kdgat.files import FileContentError, load_json, write_json, write_table
    from kdgat.graph_store import check_graph_splits, graph_header, load_graph_arrays, load_graph_set_arrays

    given = {"train": train, "val": val, "test": test, "metadata": metadata}
    train, val, test, metadata = input_files(given, "the baselines").values()
    from kdgat.training.data import check_one_preprocess_run, refuse_vocab_as_metadata

    try:
        recorded = load_json(metadata)
        num_ids = int(recorded["num_ids"])
    except (KeyError, TypeError, ValueError) as error:
        raise FileContentError(
            f"{metadata}: expected preprocess metadata with an integer 'num_ids'"
        ) from error
    refuse_vocab_as_metadata(metadata, recorded)  # it holds num_ids too
    if dataset is None:
        # A fixed "dataset" here made summarize_evaluation refuse the baselines of the dataset its metrics name.
        dataset = str(recorded.get("dataset") or "dataset")
    # a test.pt of another run of as many CAN IDs passes the num_ids check below, scored without an error
    graphs = {"train": train, "val": val, "test": test}
    headers = {role: graph_header(path) for role, path in graphs.items()}  # for both checks: read once each
    check_one_preprocess_run(graphs, metadata=metadata, headers=headers)
    # train.pt and val.pt swapped look alike: the regression would be fitted on validation windows, unsaid
    check_graph_splits(graphs, headers)
    splits = [(train, load_graph_arrays(train)), (val, load_graph_arrays(val))]
    tests = load_graph_set_arrays(test)
    if not tests:
        raise FileContentError(f"{test}: holds no test scenario; the baselines report test results")
    for path, graphs in [*splits, (test, GraphArrays.concat(list(tests.values())))]:
        largest = int(graphs.x[:, 0].max()) if len(graphs.x) else -1
        if largest >= num_ids:
            raise FileContentError(
                f"{path}: a graph holds CAN-ID index {largest}, outside the {num_ids} of {metadata} (num_ids): "
                "graphs and metadata of different preprocess runs"
            )
    labels = splits[0][1].y
    if labels.size == 0:
        raise FileContentError(
            f"{train}: holds no training window; the baselines are fitted on the training split"
        )
    if len(splits[1][1]) == 0:  # evaluate_baselines' own refusal names no file or key
        raise FileContentError(
            f"{val}: holds no validation window; the baselines' thresholds are chosen on it, so "
            "preprocess.val_fraction must be > 0 for the graphs the baselines are given"
        )
    empty = [scenario for scenario, graphs in tests.items() if len(graphs) == 0]
    if empty:
        raise FileContentError(f"{test}: test scenario {empty[0]!r} holds no graph; it cannot be evaluated")
    # Attack-free training captures are allowed upstream (kd_gat trains on them with a warning): what the training
    # split cannot fit is reported as not applicable, naming the file, and the other baselines are computed.
    for name, reason in not_applicable(labels).items():
        log.warning("%s: %s not applicable: %s", train, name, reason)
    document, table = evaluate_baselines(splits[0][1], splits[1][1], tests, num_ids, fpr_targets)
    document = {"dataset": dataset, **document}
    log.info(
        "%s baselines, pooled test F1: %s",
        dataset,
        {name: document.get("test_pooled", {}).get(name, {}).get("f1") for name in BASELINES},
    )
    write_table(table, scores)
    write_json(document, metrics)
    return document
