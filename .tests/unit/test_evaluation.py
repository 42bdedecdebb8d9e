"""kdgat.evaluation: metrics on fixed arrays (checked by hand), thresholds, stash, tables, speed, plots."""

from __future__ import annotations

import json
import logging
import math
import os
import pwd
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)
from testkit import REPO, count_header_reads
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import global_mean_pool

import kdgat
from kdgat.chain import MODEL_TITLES
from kdgat.evaluation.metrics import EvaluationSettingsError, binary_metrics, detection_rate_at_fpr
from kdgat.evaluation.plots import plot_confusion, plot_pr, plot_roc, plot_size_f1, plot_training_curves
from kdgat.evaluation.run import evaluate_detector, evaluate_files, evaluate_scored_splits
from kdgat.evaluation.speed import measure_inference_speed
from kdgat.evaluation.stash import ResultStash, library_code_digest, stash_key
from kdgat.evaluation.summary import pooled_table, variant_summary
from kdgat.evaluation.thresholds import model_decisions, youden_threshold
from kdgat.files import FileContentError, write_json
from kdgat.graph_store import save_graph_sets, save_graphs
from kdgat.model_store import save_model
from kdgat.models import GAT, VGAE, QNetwork, count_parameters, fuse
from kdgat.testing import toy_graphs
from wrapper_rules import InputError

# 10 windows: 4 attacks. Scores are distinct so AUC can be counted by hand.
LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
SCORES = np.array([0.05, 0.10, 0.20, 0.30, 0.45, 0.70, 0.40, 0.60, 0.80, 0.90])
PREDS = (SCORES >= 0.5).astype(int)  # -> fp at 0.70; fn at 0.40


def test_binary_metrics_match_hand_computed_values():
    m = binary_metrics(LABELS, SCORES, PREDS)
    # tp=3 (0.6, 0.8, 0.9), fn=1 (0.4), fp=1 (0.7), tn=5
    assert m["confusion_matrix"] == {"tn": 5, "fp": 1, "fn": 1, "tp": 3, "matrix": [[5, 1], [1, 3]]}
    assert m["accuracy"] == pytest.approx(8 / 10)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert m["fpr"] == pytest.approx(1 / 6)
    assert m["fnr"] == pytest.approx(1 / 4)
    mcc = (3 * 5 - 1 * 1) / math.sqrt(4 * 4 * 6 * 6)
    assert m["mcc"] == pytest.approx(mcc)
    assert m["mcc"] == pytest.approx(matthews_corrcoef(LABELS, PREDS))
    # AUC = fraction of (attack, normal) pairs ranked correctly: attacks 0.4 beats 4 normals, 0.6 beats 5,
    # 0.8 and 0.9 beat 6 each -> 21 / 24.
    assert m["roc_auc"] == pytest.approx(21 / 24)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(LABELS, SCORES))
    # Average precision by hand: ranks of attacks 1 (0.9), 2 (0.8), 4 (0.6), 6 (0.4) -> precisions 1, 1, 3/4, 4/6
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)
    assert m["undefined"] == {}


def test_metrics_agree_with_scikit_learn_on_random_arrays():
    rng = np.random.default_rng(7)
    labels = (rng.random(500) < 0.3).astype(int)
    scores = rng.random(500) + 0.3 * labels
    preds = (scores > 0.6).astype(int)
    m = binary_metrics(labels, scores, preds)
    assert m["precision"] == pytest.approx(precision_score(labels, preds))
    assert m["recall"] == pytest.approx(recall_score(labels, preds))
    assert m["f1"] == pytest.approx(f1_score(labels, preds))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(labels, preds))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, preds))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels, scores))
    assert m["pr_auc"] == pytest.approx(average_precision_score(labels, scores))


def test_detection_rate_at_fixed_false_positive_rate():
    # FPR <= 5% allows no false positive (6 normals): threshold above 0.70 catches 0.8 and 0.9 -> 2/4
    assert detection_rate_at_fpr(LABELS, SCORES, 0.05) == pytest.approx(0.5)
    # FPR <= 1/6 allows the 0.70 normal: 0.6 is caught too -> 3/4
    assert detection_rate_at_fpr(LABELS, SCORES, 1 / 6) == pytest.approx(0.75)
    m = binary_metrics(LABELS, SCORES, PREDS, fpr_targets=(0.05, 0.01, 0.001))
    assert m["detection_rate_at_fpr_0.05"] == pytest.approx(0.5)
    assert m["detection_rate_at_fpr_0.001"] == pytest.approx(0.5)


def test_single_class_scenario_reports_null_with_reason_instead_of_crashing():
    labels = np.zeros(5, dtype=int)
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    m = binary_metrics(labels, scores, (scores >= 0.5).astype(int))
    assert m["accuracy"] == pytest.approx(4 / 5)
    assert m["specificity"] == pytest.approx(4 / 5)
    for key in ("roc_auc", "pr_auc", "recall", "balanced_accuracy", "detection_rate_at_fpr_0.05"):
        assert m[key] is None
        assert m["undefined"][key]
    assert "one class" in m["undefined"]["roc_auc"]
    json.dumps(m)  # stays JSON-serialisable


def test_pr_auc_of_a_scenario_without_normal_windows_is_null_not_the_one_of_any_ranking():
    """On attack windows alone every score, a constant one included, has precision 1 at every recall: sklearn's
    average precision is 1.0 whatever the model, a perfect PR-AUC reported as if measured."""
    labels = np.ones(6, dtype=int)
    for scores in (np.full(6, 0.3), np.linspace(0.9, 0.1, 6)):
        m = binary_metrics(labels, scores, (scores > 0.5).astype(int))
        assert m["pr_auc"] is None
        assert m["undefined"]["pr_auc"] == "no normal windows in this split"
        assert m["roc_auc"] is None and m["recall"] is not None  # recall is measured on attacks alone


def test_bad_labels_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="only 0 .* and 1"):
        binary_metrics([0, 2], [0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="differ in length"):
        binary_metrics([0, 1], [0.1], [0, 1])


def test_youden_threshold_on_a_constructed_case():
    labels = [0, 0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6]
    choice = youden_threshold(labels, scores)
    # candidates: 0.5 -> J = 2/3 - 0; 0.35 -> J = 1 - 1/4 = 0.75 (best); 0.1 -> J = 0
    assert choice.threshold == pytest.approx(0.35)
    assert choice.youden_j == pytest.approx(0.75)


def test_youden_threshold_ties_go_to_the_higher_threshold():
    # Predict attack at score >= t. t = 0.4: TPR 1/2, FPR 0 -> J = 1/2. t = 0.3: 1/2, 1/2 -> 0.
    # t = 0.2: TPR 1, FPR 1/2 -> J = 1/2. t = 0.1: 1, 1 -> 0. 0.4 and 0.2 tie; docs: the higher one wins.
    choice = youden_threshold([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4])
    assert choice.youden_j == pytest.approx(0.5)
    assert choice.threshold == pytest.approx(0.4)


def test_youden_threshold_ties_go_to_the_higher_threshold_when_float_rounding_splits_them():
    # 10 attacks and 10 normals, scores 20, 19, ..., 1 (attack when >= t). t = 17: TPR 3/10, FPR 1/10; t = 13: TPR
    # 5/10, FPR 3/10: J = 1/5 both, the best. In floats 0.3 - 0.1 = 0.19999999999999998 < 0.5 - 0.3 = 0.2, so
    # the lower threshold won, with two more false alarms on validation for the same J.
    labels = [0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    scores = np.arange(20, 0, -1, dtype=float)
    choice = youden_threshold(labels, scores)
    assert choice.youden_j == pytest.approx(0.2)
    assert choice.threshold == 17.0


def test_youden_threshold_with_one_class_only():
    only_normal = youden_threshold([0, 0, 0], [0.1, 0.5, 0.3])
    assert only_normal.threshold > 0.5 and only_normal.youden_j is None
    assert "no attack" in only_normal.reason
    only_attack = youden_threshold([1, 1], [0.4, 0.7])
    assert only_attack.threshold == pytest.approx(0.4)


def _scored(labels, vgae, gat, fusion):
    fusion = np.asarray(fusion, dtype=float)
    return pd.DataFrame(
        {
            "label": labels,
            "vgae_score": vgae,
            "gat_prob": gat,
            "fusion_alpha": 0.5,
            "fusion_score": fusion,
            "fusion_pred": (fusion > 0.5).astype(int),
        }
    )


def test_validation_threshold_is_reused_on_test():
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    # A test-optimal threshold would be 10; the validation one (3.0) must be used instead.
    test = _scored([0, 0, 1, 1], [2.5, 3.5, 10.0, 11.0], [0.4, 0.6, 0.7, 0.2], [0.1, 0.6, 0.7, 0.9])
    normal_only = _scored([0, 0], [0.5, 5.0], [0.1, 0.2], [0.1, 0.2])
    document, scores = evaluate_scored_splits(val, {"dos": test, "clean": normal_only})
    assert document["thresholds"]["vgae"]["threshold"] == pytest.approx(3.0)
    vgae = document["test"]["dos"]["vgae"]["confusion_matrix"]
    assert (vgae["tn"], vgae["fp"], vgae["fn"], vgae["tp"]) == (1, 1, 0, 2)
    gat = document["test"]["dos"]["gat"]["confusion_matrix"]  # threshold 0.5: fp at 0.6, fn at 0.2
    assert (gat["tn"], gat["fp"], gat["fn"], gat["tp"]) == (1, 1, 1, 1)
    assert document["test"]["clean"]["fusion"]["roc_auc"] is None
    assert document["test_pooled"]["vgae"]["n"] == 6
    assert list(scores["split"].unique()) == ["val", "test"]
    assert set(scores["scenario"]) == {"val", "dos", "clean"}
    assert scores.loc[scores["scenario"] == "dos", "vgae_pred"].tolist() == [0, 1, 1, 1]


def test_stash_restores_only_for_identical_inputs_and_params(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"weights-1")
    key = stash_key({"model": model}, {"batch_size": 8})
    assert key == stash_key({"model": model}, {"batch_size": 8})
    assert key != stash_key({"model": model}, {"batch_size": 16})
    out = tmp_path / "out" / "metrics.json"
    write_json({"f1": 0.9}, out)
    stash = ResultStash(tmp_path / "stash")
    assert not stash.restore(key, {"metrics.json": out})
    stash.commit(key, {"metrics.json": out})
    out.unlink()
    assert stash.restore(key, {"metrics.json": out})
    assert json.loads(out.read_text()) == {"f1": 0.9}
    model.write_bytes(b"weights-2")  # new content -> new key -> nothing to restore
    assert not stash.restore(stash_key({"model": model}, {"batch_size": 8}), {"metrics.json": out})
    assert not list((tmp_path / "stash").glob(".*"))  # no staging leftovers


def test_a_stash_dir_starting_with_a_tilde_is_in_the_home_folder_not_the_working_directory(
    tmp_path, monkeypatch
):
    """evaluation.stash_dir ~/stash made a folder named "~" in the working directory, beside the results."""
    home, workdir = tmp_path / "home", tmp_path / "run"
    workdir.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(workdir)
    out = workdir / "metrics.json"
    write_json({"f1": 0.9}, out)
    stash = ResultStash("~/stash").prepare()
    stash.commit("k" * 32, {"metrics.json": out})
    assert stash.root == home / "stash"
    assert [p.name for p in (home / "stash").iterdir()] == ["k" * 32]
    assert sorted(p.name for p in workdir.iterdir()) == ["metrics.json"]


def test_the_stash_key_follows_contents_and_values_not_paths_or_the_order_they_are_given_in(tmp_path):
    """stash_key: a key that changes with an input's content or a parameter, not on a path move (a results folder
    moved to another disk still restores), nor with the order of the mappings it is given."""
    model, graphs = tmp_path / "model.pt", tmp_path / "val.pt"
    model.write_bytes(b"weights")
    graphs.write_bytes(b"graphs")
    moved = tmp_path / "moved" / "model.pt"
    moved.parent.mkdir()
    shutil.copyfile(model, moved)
    params = {"batch_size": 8, "speed": {"repeats": 3, "latency_runs": 5}}
    key = stash_key({"model": model, "val": graphs}, params)
    assert stash_key({"model": moved, "val": graphs}, params) == key
    reordered = {"speed": {"latency_runs": 5, "repeats": 3}, "batch_size": 8}
    assert stash_key({"val": graphs, "model": model}, reordered) == key
    assert stash_key({"model": graphs, "val": model}, params) != key  # each name's content counts


def tiny_evaluation_inputs(folder):
    """Untrained small models and a few toy graphs: evaluate_files only needs them to load and score."""
    save_graphs(toy_graphs(20, num_ids=20, seed=1), folder / "val.pt")
    save_graph_sets({"dos": toy_graphs(20, num_ids=20, seed=2)}, folder / "test.pt")
    torch.manual_seed(0)
    vgae_config = {"num_ids": 20, "hidden_dims": (8, 4), "latent_dim": 4}
    vgae = VGAE(**vgae_config)
    vgae.anomaly_threshold.fill_(1.0)  # scoring refuses an uncalibrated VGAE
    save_model(vgae, "vgae", vgae_config, folder / "vgae.pt")
    save_model(GAT(num_ids=20), "gat", {"num_ids": 20}, folder / "gat.pt")
    save_model(QNetwork(), "dqn", {}, folder / "dqn.pt")
    return {name: str(folder / f"{name}.pt") for name in ("vgae", "gat", "dqn", "val", "test")}


@pytest.mark.usefixtures("one_torch_thread")
def test_an_empty_stash_dir_switches_the_result_stash_off(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # a relative stash path, or a fallback one, would land in here
    caplog.set_level("INFO", logger="kdgat")
    suffixes = {"metrics": ".json", "scores": ".parquet", "roc": ".svg", "pr": ".svg", "confusion": ".svg"}
    outputs = {name: tmp_path / "out" / f"{name}{suffix}" for name, suffix in suffixes.items()}
    shipped_stash = tmp_path / "results" / "evaluation" / ".stash"  # config.yaml's evaluation.stash_dir
    inputs = tiny_evaluation_inputs(tmp_path)

    def evaluate(stash_dir):
        caplog.clear()
        for path in outputs.values():
            path.unlink(missing_ok=True)  # what Snakemake does to the members of a failed group job
        before = {p for p in tmp_path.rglob("*") if p.is_file()}
        evaluate_files(
            **inputs, outputs=outputs, dataset="tiny", variant="teacher",
            device="cpu", speed={"repeats": 1, "latency_runs": 1, "max_graphs": 4}, stash_dir=stash_dir,
        )  # fmt: skip
        return {p for p in tmp_path.rglob("*") if p.is_file()} - before

    def stash_said() -> bool:
        """Whether the evaluation's own lines speak of the stash (another may name tmp_path, *_stash_*)."""
        return any("stash" in r.getMessage() for r in caplog.records if r.name.startswith("kdgat.evaluation"))

    # Off: only the declared outputs are written, and the evaluation is computed.
    assert evaluate("") == set(outputs.values())
    assert "evaluating tiny/teacher" in caplog.text and not stash_said()
    # given no seed, the line says so ("seed None" read like a seed named None)
    assert "evaluating tiny/teacher (no seed) on cpu" in caplog.text and "seed None" not in caplog.text
    # Control: a non-empty stash_dir commits an entry.
    written = evaluate(str(shipped_stash.relative_to(tmp_path)))
    assert any(p.name == "COMPLETE" and shipped_stash in p.parents for p in written)
    assert "committed results to the stash" in caplog.text
    # Off again, with that entry (same inputs and params) on disk: recomputed, not restored, nothing stashed.
    assert evaluate("") == set(outputs.values())
    assert "evaluating tiny/teacher" in caplog.text and not stash_said()


@pytest.mark.usefixtures("one_torch_thread")
def test_metrics_json_is_written_last_so_an_evaluation_that_fails_writing_leaves_none(tmp_path):
    """evaluate_detector's meta.yaml: "Outputs are written atomically; metrics.json is written last": an evaluation
    that cannot write its last picture (here a directory stands where the file goes) has written its scores and
    leaves no metrics.json, so nothing takes it for finished; with the path free, all five are written."""
    suffixes = {"metrics": ".json", "scores": ".parquet", "roc": ".svg", "pr": ".svg", "confusion": ".svg"}
    outputs = {name: tmp_path / "out" / f"{name}{suffix}" for name, suffix in suffixes.items()}
    outputs["confusion"].mkdir(parents=True)
    inputs = tiny_evaluation_inputs(tmp_path)
    run = dict(
        dataset="tiny",
        variant="teacher",
        device="cpu",
        speed={"repeats": 1, "latency_runs": 1, "max_graphs": 4},
    )
    with pytest.raises(OSError):
        evaluate_files(**inputs, outputs=outputs, **run)
    assert outputs["scores"].is_file() and outputs["roc"].is_file() and not outputs["metrics"].exists()
    outputs["confusion"].rmdir()
    evaluate_files(**inputs, outputs=outputs, **run)
    assert all(path.is_file() for path in outputs.values())


def test_the_library_code_digest_changes_with_any_module_of_the_package(tmp_path):
    package = tmp_path / "kdgat"
    shutil.copytree(Path(kdgat.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__"))
    assert library_code_digest(package) == library_code_digest()  # the installed package by default
    before = library_code_digest(package)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "graphs.cpython-311.pyc").write_bytes(b"compiled")  # not source
    assert library_code_digest(package) == before
    for module in ("evaluation/metrics.py", "inference.py", "models/gat.py"):
        path = package / module
        text = path.read_text()
        path.write_text(text + "\n# changed\n")
        assert library_code_digest(package) != before, module
        path.write_text(text)
    assert library_code_digest(package) == before


@pytest.mark.usefixtures("one_torch_thread")
def test_another_library_release_recomputes_instead_of_restoring_from_the_stash(
    tmp_path, monkeypatch, caplog
):
    import kdgat.evaluation.run as run

    caplog.set_level("INFO", logger="kdgat")
    outputs = {name: tmp_path / "out" / f"{name}{suffix}" for name, suffix in
               (("metrics", ".json"), ("scores", ".parquet"), ("roc", ".svg"), ("pr", ".svg"),
                ("confusion", ".svg"))}  # fmt: skip
    inputs = tiny_evaluation_inputs(tmp_path)

    def evaluate():
        caplog.clear()
        evaluate_files(
            **inputs, outputs=outputs, dataset="tiny", variant="teacher", device="cpu",
            speed={"repeats": 1, "latency_runs": 1, "max_graphs": 4}, stash_dir=tmp_path / "stash",
        )  # fmt: skip
        return caplog.text

    assert "committed results to the stash" in evaluate()
    assert "restored tiny/teacher (no seed) from the result stash" in evaluate()  # same code: restored
    monkeypatch.setattr(run, "library_code_digest", lambda: "a-later-release", raising=False)
    log = evaluate()
    assert "evaluating tiny/teacher" in log and "restored" not in log


@pytest.mark.usefixtures("one_torch_thread")
def test_a_stash_miss_names_the_input_or_library_file_that_changed(tmp_path, monkeypatch, caplog):
    """An evaluation that reran instead of restoring said only "evaluating ...": not which of its inputs (a retrained
    model) or which library file (an upgrade) made its stash key another. The latest entry of the same evaluation
    (dataset, variant, seed, outputs) is compared now, naming the first part that differs, both digests shortened."""
    import kdgat.evaluation.run as run
    import kdgat.evaluation.stash as stash_module
    from kdgat.files import file_sha256

    caplog.set_level("INFO", logger="kdgat")
    _unrendered(monkeypatch)
    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)

    def evaluate():
        caplog.clear()
        evaluate_files(
            **inputs, outputs=outputs, dataset="tiny", variant="teacher", seed=1, device="cpu",
            speed=TINY_SPEED, stash_dir=tmp_path / "stash",
        )  # fmt: skip
        return caplog.text

    assert "no result stash entry" not in evaluate()  # the first evaluation: nothing to compare with
    recorded = file_sha256(inputs["gat"])
    torch.manual_seed(1)
    save_model(GAT(num_ids=20), "gat", {"num_ids": 20}, inputs["gat"])  # a retrained GAT
    log = evaluate()
    assert "evaluating tiny/teacher" in log and "restored" not in log
    assert (
        f"was computed from other inputs, params or library code: inputs.gat differs (recorded {recorded[:12]}, "
        f"now {file_sha256(inputs['gat'])[:12]}); computing"
    ) in log, log
    # another release of the library: the file that changed (library_code, its one digest, changes the key)
    real = stash_module.source_digests
    metrics_file = real(Path(kdgat.__file__).parent, [Path(kdgat.__file__).parent / "evaluation/metrics.py"])
    monkeypatch.setattr(
        stash_module, "source_digests",
        lambda package, files: real(package, files) | {"evaluation/metrics.py": "0123456789abcdef"},
    )  # fmt: skip
    monkeypatch.setattr(run, "library_code_digest", lambda: "a-later-release")
    log = evaluate()
    assert (
        "library/evaluation/metrics.py differs (recorded "
        f"{metrics_file['evaluation/metrics.py']}, now 0123456789ab); computing"
    ) in log, log
    assert "restored tiny/teacher seed 1" in evaluate()  # unchanged since: restored, nothing to name


def test_fixed_alpha_models_score_the_weighted_mean_and_decide_above_one_half():
    scored = pd.DataFrame(
        {"label": [0, 1, 1, 0], "vgae_score": [0.2, 0.9, 0.4, 0.7], "gat_prob": [0.1, 0.2, 0.8, 0.2],
         "fusion_alpha": 1.0, "fusion_score": [0.1, 0.2, 0.8, 0.2], "fusion_pred": [0, 0, 1, 0]}
    )  # fmt: skip
    decisions = model_decisions(scored, vgae_threshold=0.5)
    assert decisions["fixed_alpha_0"][1].tolist() == [0, 1, 0, 1]
    assert decisions["fixed_alpha_1"][1].tolist() == decisions["gat"][1].tolist() == [0, 0, 1, 0]
    assert decisions["fixed_alpha_0.5"][0].tolist() == pytest.approx([0.15, 0.55, 0.6, 0.45])
    assert decisions["fixed_alpha_0.5"][1].tolist() == [0, 1, 1, 0]
    document, _ = evaluate_scored_splits(scored, {"dos": scored})
    assert set(document["test"]["dos"]) == {"vgae", "gat", "fusion", "fixed_alpha_0", "fixed_alpha_0.5",
                                            "fixed_alpha_1"}  # fmt: skip
    alpha = document["fusion_alpha"]["dos"]
    assert alpha["counts"][-1] == 4 and alpha["mean"] == 1.0 and alpha["agrees_with_gat"] == 1.0
    assert alpha["agrees_with_vgae"] == 0.25


class _NodeModel(torch.nn.Module):  # forward(x, edge_index), like the VGAE
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x, edge_index):
        return self.linear(x)


class _GraphModel(_NodeModel):  # forward(x, edge_index, batch), like the GAT
    def forward(self, x, edge_index, batch):
        return global_mean_pool(self.linear(x), batch)


def test_inference_speed_times_each_model_and_the_whole_detector():
    vgae, gat, dqn = _NodeModel(), _GraphModel(), torch.nn.Linear(2, 2)
    graphs = [
        Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=torch.tensor([i % 2]))
        for i in range(32)
    ]
    calls = []

    def score(vgae, gat, dqn, graphs, batch_size, device):
        calls.append(len(graphs))
        for batch in DataLoader(graphs, batch_size=batch_size):
            dqn(gat(batch.x, batch.edge_index, batch.batch))

    speed = measure_inference_speed(vgae, gat, dqn, graphs, score, batch_size=8, repeats=3, latency_runs=4)
    for model in ("vgae", "gat", "fusion"):
        assert speed[model]["graphs_per_s"] > 0
        assert speed[model]["latency_ms"] > 0
    assert speed["graphs"] == 32
    # the detector ran once to warm up, 3 times on all graphs, 4 times on one graph
    assert calls == [8, 32, 32, 32, 1, 1, 1, 1]
    assert count_parameters(vgae) == 3 * 2 + 2

    class NeedsEdges(torch.nn.Module):
        def forward(self, x, edge_weight):
            return x

    with pytest.raises(TypeError, match="needs \\['edge_weight'\\]"):
        measure_inference_speed(NeedsEdges(), gat, dqn, graphs, score, repeats=1, latency_runs=1)


def test_plots_are_written_as_svg(tmp_path):
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    test = _scored([0, 1, 0, 1], [1.5, 3.5, 2.0, 5.0], [0.3, 0.7, 0.1, 0.9], [0.3, 0.7, 0.6, 0.9])
    document, scores = evaluate_scored_splits(val, {"dos": test})
    plot_roc(scores, tmp_path / "roc.svg", "ds teacher")
    plot_pr(scores, tmp_path / "pr.svg", "ds teacher")
    plot_confusion(document, tmp_path / "cm.svg", "ds teacher")
    history = tmp_path / "history.csv"
    history.write_text("epoch,train_loss,val_loss,val_f1\n1,1.0,1.1,0.5\n2,0.5,0.7,0.8\n")
    plot_training_curves({("teacher", "gat"): history}, tmp_path / "curves.svg", "ds")
    metrics = {**document, "dataset": "ds", "variant": "teacher", "seed": 1}
    metrics |= {"parameters": {"vgae": 1, "gat": 2, "dqn": 3, "total": 6}}
    metrics |= {"speed": {"fusion": {"latency_ms": 1.0, "graphs_per_s": 10.0}}}
    plot_size_f1(variant_summary([metrics], pooled_table([metrics])), tmp_path / "size.svg")
    for name in ("roc", "pr", "cm", "curves", "size"):
        text = (tmp_path / f"{name}.svg").read_text()
        assert text.lstrip().startswith("<?xml") and "<svg" in text
    assert "AUC" in (tmp_path / "roc.svg").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,note\nfirst,abc\n")
    with pytest.raises(ValueError, match="bad.csv: training history has no numeric columns"):
        plot_training_curves({("teacher", "gat"): bad}, tmp_path / "x.svg")
    # A metrics.json (or any table) given as a history was drawn as a chart of its numbers, exit 0.
    (tmp_path / "metrics.json").write_text(json.dumps({"val": {"f1": 0.9}, "seed": 1}))
    (tmp_path / "scores.csv").write_text("label,score\n0,0.1\n1,0.9\n")
    for wrong in ("metrics.json", "scores.csv"):
        with pytest.raises(
            ValueError, match=rf"{wrong}: not a training history: no epoch, episode or step column"
        ):
            plot_training_curves({("teacher", "gat"): tmp_path / wrong}, tmp_path / "x.svg")
    assert not (tmp_path / "x.svg").exists()


def _drawn(monkeypatch) -> list:
    """The figures the plots module draws, kept instead of written."""
    import kdgat.evaluation.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: figures.append(figure))
    return figures


# Six windows, each model ranking them differently (so each model's curve is its own).
CURVE_LABELS = [0, 0, 0, 1, 1, 1]
CURVE_SCORES = {
    "vgae_score": [1.0, 4.0, 2.0, 3.0, 5.0, 6.0],
    "gat_prob": [0.1, 0.2, 0.7, 0.6, 0.3, 0.9],
    "fusion_score": [0.5, 0.1, 0.2, 0.9, 0.8, 0.4],
}


def _curve_frames(test_labels):
    val = _scored(CURVE_LABELS, *CURVE_SCORES.values()).assign(split="val")
    test = _scored(test_labels, *(v[::-1] for v in CURVE_SCORES.values())).assign(split="test")
    return pd.concat([val, test], ignore_index=True)


@pytest.mark.parametrize("split, test_labels", [("test", CURVE_LABELS), ("val", [0] * 6)])
def test_roc_and_pr_curves_are_each_models_own_score_on_test_or_else_validation(
    monkeypatch, split, test_labels
):
    from sklearn.metrics import precision_recall_curve, roc_curve

    figures = _drawn(monkeypatch)
    scores = _curve_frames(test_labels)
    plot_roc(scores, "roc.svg")
    plot_pr(scores, "pr.svg")
    frame = scores[scores["split"] == split]
    for figure, curve in zip(figures, (roc_curve, precision_recall_curve), strict=True):
        axis = figure.axes[0]
        assert ("validation" in axis.get_title()) == (split == "val")
        lines = axis.get_lines()
        for model, column in (("vgae", "vgae_score"), ("gat", "gat_prob"), ("fusion", "fusion_score")):
            first, second, _ = curve(frame["label"], frame[column])
            x, y = (
                (first, second) if curve is roc_curve else (second, first)
            )  # ROC: fpr, tpr; PR: recall, precision
            line = next(line for line in lines if line.get_label().startswith(MODEL_TITLES[model] + " ("))
            np.testing.assert_allclose(line.get_xdata(), x)
            np.testing.assert_allclose(line.get_ydata(), y)


def test_confusion_size_and_training_pictures_plot_the_numbers_they_name(monkeypatch, tmp_path):
    figures = _drawn(monkeypatch)
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    test = _scored(
        [0, 1, 0, 1, 1], [1.5, 3.5, 2.0, 5.0, 0.5], [0.3, 0.7, 0.6, 0.9, 0.2], [0.7, 0.7, 0.6, 0.9, 0.2]
    )
    document, _ = evaluate_scored_splits(val, {"dos": test})
    plot_confusion(document, "cm.svg")
    shown = [np.asarray(axis.get_images()[0].get_array()) for axis in figures[0].axes]
    pooled = document["test_pooled"]
    assert [m.tolist() for m in shown] == [
        pooled[m]["confusion_matrix"]["matrix"] for m in ("vgae", "gat", "fusion")
    ]
    assert shown[0].tolist() != np.asarray(document["val"]["vgae"]["confusion_matrix"]["matrix"]).tolist()

    # the students' rows in the other dataset order: each bar must still stand over its own dataset
    table = pd.DataFrame(
        {"dataset": ["a", "b", "b", "a"], "variant": ["teacher", "teacher", "student", "student"],
         "params_total": [9000, 8000, 800, 900], "f1_fusion": [0.9, 0.8, 0.6, 0.7], "f1_gat": [0.1] * 4,
         "latency_ms_fusion": [3.0, 2.0, 0.5, 1.0]}
    )  # fmt: skip
    plot_size_f1(table, "size.svg")
    in_order = table.set_index(["dataset", "variant"]).loc[[("a", "teacher"), ("a", "student"), ("b", "teacher"),
                                                            ("b", "student")]]  # fmt: skip
    for axis, column in zip(figures[1].axes, ("params_total", "f1_fusion", "latency_ms_fusion"), strict=True):
        bars = sorted(axis.patches, key=lambda bar: bar.get_x())
        assert len({bar.get_x() for bar in bars}) == 4  # side by side, none hidden behind another
        assert [bar.get_height() for bar in bars] == in_order[column].tolist()

    history = tmp_path / "history.csv"
    history.write_text("epoch,train_loss,val_f1,val_graphs_per_s\n1,1.0,0.5,480\n2,0.5,0.8,510\n")
    plot_training_curves({("teacher", "gat"): history}, "curves.svg")
    plotted = {
        line.get_label(): line.get_ydata().tolist() for axis in figures[2].axes for line in axis.get_lines()
    }
    assert plotted == {"train_loss": [1.0, 0.5], "val_f1": [0.5, 0.8]}  # throughput is no training curve


def test_confusion_matrices_without_test_results_are_validations_and_say_so(monkeypatch):
    """plot_confusion: pooled test when the document has it, else validation, named in the title (as the ROC and PR
    curves fall back)."""
    figures = _drawn(monkeypatch)
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.6, 0.8, 0.4], [0.1, 0.2, 0.8, 0.9])
    document, _ = evaluate_scored_splits(val, {})
    assert "test_pooled" not in document
    plot_confusion(document, "cm.svg")
    shown = [np.asarray(axis.get_images()[0].get_array()).tolist() for axis in figures[0].axes]
    assert shown == [document["val"][m]["confusion_matrix"]["matrix"] for m in ("vgae", "gat", "fusion")]
    assert figures[0].get_suptitle().endswith("confusion matrices, validation")


def test_a_history_without_losses_or_validation_scores_draws_its_numeric_columns(monkeypatch, tmp_path):
    """_history_columns: a history with neither a loss nor a bounded val_ score (a hand-made one) draws its numeric
    columns on the left axis instead of an empty panel."""
    figures = _drawn(monkeypatch)
    history = tmp_path / "history.csv"
    history.write_text("episode,reward,epsilon\n1,0.5,1.0\n2,0.7,0.5\n")
    plot_training_curves({("teacher", "dqn"): history}, "curves.svg")
    plotted = {
        line.get_label(): line.get_ydata().tolist() for axis in figures[0].axes for line in axis.get_lines()
    }
    assert plotted == {"reward": [0.5, 0.7], "epsilon": [1.0, 0.5]}


def test_a_one_epoch_training_history_is_drawn_as_visible_points(monkeypatch, tmp_path):
    """A line through a single point renders nothing: the panel of a one-epoch run was empty but for its legend."""
    figures = _drawn(monkeypatch)
    history = tmp_path / "history.csv"
    history.write_text("epoch,train_loss,val_f1\n1,1.0,0.5\n")
    plot_training_curves({("teacher", "gat"): history}, "curves.svg")
    lines = [line for axis in figures[0].axes for line in axis.get_lines()]
    assert {line.get_label(): line.get_ydata().tolist() for line in lines} == {
        "train_loss": [1.0],
        "val_f1": [0.5],
    }
    assert all(line.get_marker() not in (None, "None", "", " ") for line in lines)


def test_the_size_chart_draws_the_parameters_on_a_log_scale(monkeypatch):
    """plot_size_f1: parameters (log scale): a teacher and a student hundreds of times smaller both stay visible."""
    figures = _drawn(monkeypatch)
    table = pd.DataFrame(
        {"dataset": ["a", "a"], "variant": ["teacher", "student"], "params_total": [1_186_481, 90_729],
         "f1_fusion": [0.9, 0.8], "latency_ms_fusion": [3.0, 1.0]}
    )  # fmt: skip
    plot_size_f1(table, "size.svg")
    parameters, f1, latency = figures[0].axes
    assert parameters.get_yscale() == "log"
    assert f1.get_yscale() == latency.get_yscale() == "linear"


def test_gat_and_fusion_call_a_tie_at_one_half_normal_like_training():
    """One decision rule for p(attack): > 0.5 in evaluation, in the fusion (and so in training's DQN reward) and in
    the GAT's per-epoch validation; the VGAE keeps >= its validation threshold (the ROC convention)."""
    scored = pd.DataFrame(
        {"label": [0, 1, 1], "vgae_score": [0.2, 0.5, 0.9], "gat_prob": [0.5, 0.51, 0.9],
         "fusion_alpha": [1.0, 1.0, 1.0], "fusion_score": [0.5, 0.51, 0.9], "fusion_pred": [0, 1, 1]}
    )  # fmt: skip
    decisions = model_decisions(scored, vgae_threshold=0.5)
    assert decisions["gat"][1].tolist() == [0, 1, 1]
    assert decisions["vgae"][1].tolist() == [0, 1, 1]
    _, _, fused = fuse(torch.tensor([20, 20, 20]), torch.zeros(3), torch.tensor([0.5, 0.51, 0.9]))
    assert fused.tolist() == decisions["gat"][1].tolist()


def test_detection_rate_counts_a_false_positive_rate_reached_exactly():
    """'At most' the target FPR: a target that one false alarm reaches exactly (1 of 6 normals) counts it."""
    m = binary_metrics(LABELS, SCORES, PREDS, fpr_targets=(1 / 6, 0.5))
    assert m["detection_rate_at_fpr_0.166667"] == pytest.approx(0.75)  # the 0.70 normal allowed: 0.6 caught
    assert m["detection_rate_at_fpr_0.5"] == pytest.approx(1.0)  # 3 false alarms (0.7, 0.45, 0.3): all caught
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(40, int), np.ones(20, int)]
    scores = np.round(rng.random(60) + 0.4 * labels, 1)  # ties across the classes
    targets = (0.025, 0.05, 0.1, 0.2, 0.3)  # 1, 2, 4, 8, 12 of the 40 normals
    m = binary_metrics(labels, scores, (scores > 0.5).astype(int), fpr_targets=targets)
    for target in targets:
        expected = detection_rate_at_fpr(labels, scores, target)
        assert m[f"detection_rate_at_fpr_{target:g}"] == pytest.approx(expected)
        # By hand: the largest TPR over thresholds t (attack when score >= t) with FPR <= target.
        reachable = [
            (scores[labels == 1] >= t).mean() for t in scores if (scores[labels == 0] >= t).mean() <= target
        ]
        assert expected == pytest.approx(max(reachable, default=0.0))


def test_undefined_metrics_without_both_classes_and_refused_inputs():
    only_normal = binary_metrics([0, 0, 0], [0.1, 0.2, 0.9], [0, 0, 1])
    assert only_normal["mcc"] is None and "empty" in only_normal["undefined"]["mcc"]  # not sklearn's 0.0
    assert detection_rate_at_fpr([0, 0, 0], [0.1, 0.2, 0.9], 0.05) is None
    assert detection_rate_at_fpr([1, 1], [0.1, 0.2], 0.05) is None
    # A NaN score is refused even where no threshold-free metric would read it (a split of one class).
    with pytest.raises(ValueError, match="1 non-finite"):
        binary_metrics([0, 0, 0], [0.1, np.nan, 0.3], [0, 0, 0])
    with pytest.raises(ValueError, match="1 non-finite"):
        detection_rate_at_fpr([0, 1, 0], [0.1, np.inf, 0.3], 0.05)
    with pytest.raises(ValueError, match="empty split"):
        binary_metrics([], [], [])


@pytest.mark.parametrize(
    "targets, message",
    [
        ((-0.1,), r"strictly between 0 and 1; got \[-0.1\]"),  # was numpy's "zero-size array to reduction"
        ((0.05, 1.0), r"strictly between 0 and 1; got \[1.0\]"),  # was a detection rate of 1.0, silently
        ((0.0,), r"strictly between 0 and 1; got \[0.0\]"),
        (0.05, "must be a list of false-positive rates"),  # was "'float' object is not iterable"
        (("0.05",), r"got \['0.05'\]"),
        # the schema (minItems 1) and the kdgat command refuse it; the wrappers' params.fpr_targets took it, and
        # the metrics reported no detection rate at all
        ((), r"fpr_targets \(evaluation.fpr_targets in the workflow's config\) is empty: give at least one"),
    ],
)
def test_fpr_targets_outside_zero_one_are_refused_naming_them(targets, message):
    with pytest.raises(ValueError, match=message):
        binary_metrics(LABELS, SCORES, PREDS, fpr_targets=targets)
    with pytest.raises(ValueError, match=message):
        evaluate_scored_splits(_scored([0, 1], [0.1, 0.9], [0.1, 0.9], [0.1, 0.9]), {}, fpr_targets=targets)


@pytest.mark.parametrize("targets", [(0.05, 0.01, 0.05), (0.1, 0.1000000001)])
def test_fpr_targets_reported_under_one_name_are_refused_naming_both(targets):
    """The schema refuses a rate given twice ("[0.05, 0.05] reports one column where two were meant"), but the
    wrappers and the kdgat command take fpr_targets without it, and two distinct rates of one name (0.1 and
    0.1000000001, both detection_rate_at_fpr_0.1) pass even the schema's uniqueItems: one column, the second
    rate's value under the first one's name. Refused naming both, before any scoring."""
    first, second = (t for t in targets if f"{t:g}" == f"{targets[-1]:g}")
    message = re.escape(f"{first!r} and {second!r} are both reported as detection_rate_at_fpr_{second:g}")
    with pytest.raises(EvaluationSettingsError, match=message):
        binary_metrics(LABELS, SCORES, PREDS, fpr_targets=targets)
    with pytest.raises(EvaluationSettingsError, match=message):
        evaluate_scored_splits(_scored([0, 1], [0.1, 0.9], [0.1, 0.9], [0.1, 0.9]), {}, fpr_targets=targets)
    distinct = binary_metrics(LABELS, SCORES, PREDS, fpr_targets=(0.1, 0.01))
    assert [key for key in distinct if key.startswith("detection_rate")] == [
        "detection_rate_at_fpr_0.1",
        "detection_rate_at_fpr_0.01",
    ]


def test_a_nan_score_is_refused_naming_the_split_and_column_not_turned_into_a_nan_threshold():
    with pytest.raises(ValueError, match="1 non-finite"):
        youden_threshold([0, 0, 0], [0.1, np.nan, 0.3])  # was a NaN threshold: every window normal
    with pytest.raises(ValueError, match="differ in length"):
        youden_threshold([0, 0, 1], [0.1, 0.3])
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    nan_val = val.assign(vgae_score=[1.0, np.nan, 3.0, 4.0])
    with pytest.raises(ValueError, match="validation: vgae_score holds 1 non-finite"):
        evaluate_scored_splits(nan_val, {"dos": val})
    nan_gat = val.assign(gat_prob=[0.1, 0.2, np.nan, 0.9])
    with pytest.raises(ValueError, match="test scenario 'dos': gat_prob holds 1 non-finite"):
        evaluate_scored_splits(val, {"dos": nan_gat})
    with pytest.raises(ValueError, match="test scenario 'dos' has no graphs"):
        evaluate_scored_splits(val, {"dos": val.iloc[:0]})
    with pytest.raises(ValueError, match="validation split is empty"):
        evaluate_scored_splits(val.iloc[:0], {"dos": val})


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_an_infinite_score_is_refused_naming_the_split_and_column_like_a_nan(value):
    """check_scored: a score that is NaN or infinite (a diverged model) is refused naming the split and the
    column, not left to the metrics, whose message names neither."""
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    infinite = val.assign(fusion_score=[0.1, value, 0.8, 0.9])
    with pytest.raises(ValueError, match="test scenario 'dos': fusion_score holds 1 non-finite"):
        evaluate_scored_splits(val, {"dos": infinite})


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(
    ("name", "column", "title"), [("gat", "gat_prob", "GAT"), ("dqn", "fusion_alpha", "fusion (DQN)")]
)
def test_a_diverged_model_is_refused_naming_its_file_the_evaluation_and_the_windows_before_any_metric(
    tmp_path, name, column, title
):
    """A GAT with NaN weights (a diverged run) ended the evaluation with a bare ValueError naming neither the model
    file nor the dataset, variant and seed, and not a user's mistake (a traceback in the wrapper's log); a DQN with
    NaN weights was not caught at all (argmax over NaN Q-values: α = 0 and finite fusion scores)."""
    inputs = tiny_evaluation_inputs(tmp_path)
    model, config = (GAT(num_ids=20), {"num_ids": 20}) if name == "gat" else (QNetwork(), {})
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    save_model(model, name, config, tmp_path / f"{name}.pt")
    with pytest.raises(InputError) as error:
        evaluate_files(
            **inputs, outputs=_evaluation_outputs(tmp_path), dataset="tiny", variant="teacher", seed=3,
            device="cpu", speed=TINY_SPEED,
        )  # fmt: skip
    assert str(error.value) == (
        f"{inputs[name]} (tiny/teacher seed 3, the {name} model): validation: {column} holds 20 non-finite values "
        f"(NaN or inf) of 20 windows: the {title} model's scores are not finite (a diverged training run?); no "
        "metric computed"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("column", "model"), [("vgae_score", "VGAE"), ("fusion_alpha", "fusion (DQN)")])
def test_non_finite_scores_name_the_model_they_come_from(column, model):
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    with pytest.raises(
        InputError, match=rf"of 4 windows: the {re.escape(model)} model's scores are not finite"
    ):
        evaluate_scored_splits(val, {"dos": val.assign(**{column: [0.1, np.inf, 0.8, 0.9]})})


@pytest.mark.parametrize(("split", "label"), [("val", 2), ("dos", 2), ("dos", -1)])
def test_a_label_other_than_zero_or_one_is_refused_naming_the_split(split, label):
    """Multi-class labels (an attack class id) were refused by metrics.as_binary with a message naming neither the
    validation split nor the scenario."""
    good = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    bad = good.assign(label=[0, 0, 1, label])
    where = "validation" if split == "val" else "test scenario 'dos'"
    with pytest.raises(
        ValueError, match=rf"{where}: label holds \[{label}\]; expected 0 \(normal\) or 1 \(attack\)"
    ):
        evaluate_scored_splits(bad if split == "val" else good, {"dos": bad if split == "dos" else good})


def test_test_labels_play_no_part_and_pooled_test_is_the_scenarios_decisions_together():
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    dos = _scored([0, 0, 1, 1], [2.5, 3.5, 10.0, 11.0], [0.4, 0.6, 0.7, 0.2], [0.1, 0.6, 0.7, 0.9])
    clean = _scored([0, 0, 0], [0.5, 5.0, 12.0], [0.1, 0.7, 0.55], [0.1, 0.2, 0.6])
    targets = (0.2, 0.5)
    document, scores = evaluate_scored_splits(val, {"dos": dos, "clean": clean}, targets, gat_threshold=0.65)
    # The same thresholds and test decisions whatever the test labels say (here: every one flipped).
    flipped = {
        name: frame.assign(label=1 - frame["label"]) for name, frame in {"dos": dos, "clean": clean}.items()
    }
    document_flipped, scores_flipped = evaluate_scored_splits(val, flipped, targets, gat_threshold=0.65)
    assert document_flipped["thresholds"] == document["thresholds"]
    assert document["thresholds"]["vgae"] == youden_threshold(val["label"], val["vgae_score"]).as_dict()
    pred_columns = ["vgae_pred", "gat_pred", "fusion_pred"]
    assert scores_flipped[pred_columns].equals(scores[pred_columns])
    # The table's decisions are each model's own; the GAT's at the threshold given (0.65: only 0.7 flags).
    assert scores.loc[scores["scenario"] == "dos", "gat_pred"].tolist() == [0, 0, 1, 0]
    assert scores.loc[scores["scenario"] == "dos", "vgae_pred"].tolist() == [0, 1, 1, 1]
    # Pooled test: every test window once, decided as in its scenario, so the confusion counts add up.
    models = document["test_pooled"].keys()
    assert set(models) == set(document["test"]["dos"]) == set(document["val"])
    for model in models:
        pooled = document["test_pooled"][model]["confusion_matrix"]
        for cell in ("tn", "fp", "fn", "tp"):
            per_scenario = [
                document["test"][name][model]["confusion_matrix"][cell] for name in ("dos", "clean")
            ]
            assert pooled[cell] == sum(per_scenario), (model, cell)
    # The FPR targets asked for, on every split.
    asked = {"detection_rate_at_fpr_0.2", "detection_rate_at_fpr_0.5"}
    for split in (document["val"], document["test"]["dos"], document["test_pooled"]):
        for metrics in split.values():
            assert {key for key in metrics if key.startswith("detection_rate")} == asked


def test_fixed_alpha_models_call_a_fused_score_of_exactly_one_half_normal():
    scored = pd.DataFrame(
        {"label": [1, 1, 0], "vgae_score": [0.5, 0.4, 0.9], "gat_prob": [0.5, 0.6, 0.1],
         "fusion_alpha": 0.5, "fusion_score": 0.5, "fusion_pred": 0}
    )  # fmt: skip
    decisions = model_decisions(scored, vgae_threshold=0.7)
    assert decisions["fixed_alpha_0.5"][0].tolist() == [0.5, 0.5, 0.5]
    for model in ("fixed_alpha_0", "fixed_alpha_0.5", "fixed_alpha_1"):
        assert decisions[model][1][:2].tolist() == [0, int(model == "fixed_alpha_1")], model


def test_evaluate_detector_reports_the_fpr_targets_it_is_given():
    from kdgat.evaluation.run import evaluate_detector

    graphs = [
        Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=torch.tensor([i % 2]))
        for i in range(8)
    ]

    def score(vgae, gat, dqn, graphs, batch_size, device):
        labels = [int(g.y) for g in graphs]
        ranked = np.linspace(0.1, 0.9, len(graphs)) if len(graphs) > 1 else np.array([0.5])
        return _scored(labels, ranked, ranked, ranked)

    document, _ = evaluate_detector(
        _NodeModel(), _GraphModel(), torch.nn.Linear(2, 2), graphs, {"dos": graphs}, score_fn=score,
        batch_size=4, fpr_targets=(0.25,), speed={"repeats": 1, "latency_runs": 1},
    )  # fmt: skip
    for split in (document["val"], document["test"]["dos"], document["test_pooled"]):
        assert [key for key in split["gat"] if key.startswith("detection_rate")] == [
            "detection_rate_at_fpr_0.25"
        ]


def test_evaluate_detector_scores_each_split_on_its_own_graphs_with_the_batch_size_device_and_speed_given():
    from kdgat.evaluation.run import evaluate_detector

    def graphs(labels):
        return [
            Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=torch.tensor([y]))
            for y in labels
        ]

    splits = {"val": [0, 1] * 4, "dos": [1, 1, 0, 1, 0, 1], "clean": [0, 0, 0]}
    val, tests = graphs(splits["val"]), {name: graphs(splits[name]) for name in ("dos", "clean")}
    calls = []

    def score(vgae, gat, dqn, graphs, batch_size, device):
        calls.append((batch_size, device))
        labels = [int(g.y) for g in graphs]
        return _scored(labels, np.linspace(0.1, 0.9, len(graphs)), [0.5] * len(graphs), [0.5] * len(graphs))

    document, scores = evaluate_detector(
        _NodeModel(), _GraphModel(), torch.nn.Linear(2, 2), val, tests, score_fn=score, batch_size=3,
        device="cpu:0", speed={"repeats": 2, "latency_runs": 1},
    )  # fmt: skip
    for name, labels in splits.items():
        assert scores.loc[scores["scenario"] == name, "label"].tolist() == labels, name
        split = document["val"] if name == "val" else document["test"][name]
        assert split["gat"]["n"] == len(labels) and split["gat"]["n_attack"] == sum(labels), name
    assert document["test_pooled"]["gat"]["n"] == len(splits["dos"]) + len(splits["clean"])
    # Every scoring, of the splits and of the speed measurement, with the batch size and device given.
    assert len(calls) > 3 and set(calls) == {(3, "cpu:0")}
    assert (document["speed"]["repeats"], document["speed"]["batch_size"]) == (2, 3)


def _evaluation_outputs(folder) -> dict:
    suffixes = {"metrics": ".json", "scores": ".parquet", "roc": ".svg", "pr": ".svg", "confusion": ".svg"}
    return {name: folder / "out" / f"{name}{suffix}" for name, suffix in suffixes.items()}


TINY_SPEED = {"repeats": 1, "latency_runs": 1, "max_graphs": 4}


def _unrendered(monkeypatch) -> None:
    """The evaluation's SVGs written as placeholders (rendering them is most of a tiny evaluation's time)."""
    import matplotlib.pyplot as plt

    import kdgat.evaluation.plots as plots

    def placeholder(figure, path):
        plt.close(figure)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text("<svg/>")

    monkeypatch.setattr(plots, "save_figure", placeholder)


def _evaluated_after_a_group_failure(inputs, outputs, stash_dir, caplog) -> str:
    """The log of one evaluation of the tiny models with the result stash ``stash_dir``, its outputs deleted first
    (what Snakemake does to the members of a failed group job)."""
    caplog.clear()
    for path in outputs.values():
        path.unlink(missing_ok=True)
    evaluate_files(
        **inputs, outputs=outputs, dataset="tiny", variant="teacher", device="cpu", speed=TINY_SPEED,
        stash_dir=stash_dir,
    )  # fmt: skip
    return caplog.text


@pytest.mark.usefixtures("one_torch_thread")
def test_a_second_evaluation_into_the_same_outputs_stops_at_once_and_stashes_nothing(tmp_path, monkeypatch):
    """Two evaluations writing one set of outputs at once (`kdgat evaluate --out` by hand on a folder a workflow
    job writes, two working directories naming the outputs by absolute path, as README says of training) each wrote
    their files in turn: metrics.json of one beside the scores of the other, and the job that committed last put
    into the stash, under its own key, the files the other had just written, restored by every later rerun. An
    evaluation holds the lock of its metrics.json (`.metrics.json.lock`, as a training job holds its model's) from
    before its restore to after its commit: a second one stops at once naming the outputs, before it writes or
    stashes anything; with the lock free it runs."""
    from kdgat.files import OutputInUse, output_lock

    _unrendered(monkeypatch)
    inputs, outputs, stash = (
        tiny_evaluation_inputs(tmp_path),
        _evaluation_outputs(tmp_path),
        tmp_path / "stash",
    )
    run = dict(dataset="tiny", variant="teacher", device="cpu", speed=TINY_SPEED, stash_dir=str(stash))
    with output_lock(outputs["metrics"], "evaluation output"):  # the first evaluation, under way
        with pytest.raises(
            OutputInUse, match=r"metrics\.json: another process \(pid \d+ on host .*\) is writing"
        ):
            evaluate_files(**inputs, outputs=outputs, **run)
        assert not any(path.exists() for path in outputs.values())
        assert not stash.exists() or not any(stash.iterdir())
    evaluate_files(**inputs, outputs=outputs, **run)
    assert all(path.is_file() for path in outputs.values())
    assert not list(outputs["metrics"].parent.glob(".*.lock"))  # the lock goes with the evaluation


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_files_scores_on_the_threads_and_batch_size_given_and_names_dataset_variant_seed_device(
    tmp_path, monkeypatch
):
    import kdgat.inference

    scored_with = []

    def recording(*args, batch_size, device, **kwargs):
        scored_with.append((torch.get_num_threads(), batch_size))
        return score_graphs(*args, batch_size=batch_size, device=device, **kwargs)

    score_graphs = kdgat.inference.score_graphs
    monkeypatch.setattr(kdgat.inference, "score_graphs", recording)
    _unrendered(monkeypatch)
    threads = torch.get_num_threads() + 1  # one_torch_thread: 1 here, so 2 is the setting's doing
    outputs = _evaluation_outputs(tmp_path)
    document = evaluate_files(
        **tiny_evaluation_inputs(tmp_path), outputs=outputs, dataset="tiny", variant="student_kd", seed=3,
        batch_size=7, device="cpu", threads=threads, speed=TINY_SPEED,
    )  # fmt: skip
    assert scored_with and set(scored_with) == {(threads, 7)}
    written = json.loads(outputs["metrics"].read_text())
    for metrics in (document, written):
        assert (metrics["dataset"], metrics["variant"], metrics["seed"]) == ("tiny", "student_kd", 3)
        assert metrics["device"] == "cpu"  # where it ran, read by bench/bench_train_gpu.py


@pytest.mark.usefixtures("one_torch_thread")
def test_the_stash_restores_no_evaluation_of_another_seed_variant_or_dataset(tmp_path, monkeypatch, caplog):
    """The same model and graph files evaluated as another seed, variant or dataset are another evaluation:
    restoring the first one's metrics.json would record its name and seed (two entries of one seed)."""
    caplog.set_level("INFO", logger="kdgat")
    _unrendered(monkeypatch)
    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)
    first = {"dataset": "tiny", "variant": "teacher", "seed": 1}
    evaluate_files(
        **inputs, outputs=outputs, **first, device="cpu", speed=TINY_SPEED, stash_dir=tmp_path / "s"
    )
    for change in ({"seed": 2}, {"variant": "student"}, {"dataset": "other"}):
        caplog.clear()
        named = first | change
        document = evaluate_files(
            **inputs, outputs=outputs, **named, device="cpu", speed=TINY_SPEED, stash_dir=tmp_path / "s"
        )
        assert "restored" not in caplog.text and "evaluating" in caplog.text, change
        assert {key: document[key] for key in named} == named
        assert {key: json.loads(outputs["metrics"].read_text())[key] for key in named} == named


def test_evaluate_files_refuses_a_missing_output_or_input_before_loading_anything(tmp_path):
    """A missing input was a bare FileNotFoundError, not a user's mistake: the wrapper printed a traceback."""
    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)
    settings = {"dataset": "tiny", "variant": "teacher", "device": "cpu"}
    without_roc = {name: path for name, path in outputs.items() if name != "roc"}
    with pytest.raises(ValueError, match=r"needs the outputs .*; missing \['roc'\]"):
        evaluate_files(**inputs, outputs=without_roc, **settings)
    Path(inputs["gat"]).unlink()
    with pytest.raises(InputError) as error:
        evaluate_files(**inputs, outputs=outputs, **settings)
    assert isinstance(error.value, FileNotFoundError)  # what callers caught before still catches it
    assert str(error.value) == f"input 'gat' of the evaluation does not exist: {inputs['gat']}"
    assert not (tmp_path / "out").exists()


# evaluate_detector's settings as a wrapper user and the workflow's config name them
SPEED = r"params\.speed \(evaluation\.speed in the workflow's config\)"
BATCH_SIZE = r"params\.batch_size \(evaluation\.batch_size in the workflow's config\)"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"speed": {"repeat": 2}}, SPEED + r": \['repeat'\] are unknown; expected some of \['repeats'"),
        (
            {"speed": {"latency_runs": 0}},
            SPEED + r": each must be a positive integer; got \{'latency_runs': 0\}",
        ),
        (
            {"batch_size": 0},
            BATCH_SIZE + r" must be a positive integer \(graphs per inference batch\); got 0",
        ),
        ({"speed": {"repeats": True}}, SPEED + r": each must be a positive integer; got \{'repeats': True\}"),
        (
            {"batch_size": True},
            BATCH_SIZE + r" must be a positive integer \(graphs per inference batch\); got True",
        ),
    ],
)
def test_a_mistyped_speed_setting_or_batch_size_stops_the_evaluation_before_any_model_is_loaded(
    tmp_path, monkeypatch, setting, message
):
    """A typo in evaluation.speed (a wrapper or library user has no schema) used to surface as a TypeError of
    measure_inference_speed after every split was scored; a batch size of 0 as torch's DataLoader error."""
    import kdgat.model_store

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the settings were checked")

    monkeypatch.setattr(kdgat.model_store, "load_model", never)
    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)
    with pytest.raises(ValueError, match=message):
        evaluate_files(**inputs, outputs=outputs, dataset="tiny", variant="teacher", device="cpu", **setting)
    assert not (tmp_path / "out").exists()


def test_evaluate_detector_checks_its_speed_settings_before_scoring():
    def never(*args, **kwargs):
        raise AssertionError("scored before the settings were checked")

    with pytest.raises(ValueError, match=SPEED + r": \['repeat'\] are unknown"):
        evaluate_detector(None, None, None, ["graph"], {}, score_fn=never, speed={"repeat": 2})


@pytest.mark.parametrize(
    ("val_graphs", "test_sets", "message"),
    [
        (
            [],
            {"dos": ["graph"]},
            "evaluate_detector's val_graphs is empty: the VGAE's threshold is chosen on the validation graphs "
            "(val.pt's); give at least one",
        ),
        # evaluate_files refused a test.pt without scenarios, but evaluate_detector called directly returned a
        # document without test results
        (
            ["graph"],
            {},
            "evaluate_detector's test_sets holds no test scenario: give {scenario: graphs} for at least one; the "
            "evaluation reports test results (never validation's)",
        ),
        # a scenario with no graphs died in fusion_inputs as "no graphs to score", naming no scenario, after
        # validation was scored
        (
            ["graph"],
            {"dos": ["graph"], "fuzzy": []},
            "evaluate_detector's test_sets['fuzzy'] has no graphs: every test scenario needs at least one",
        ),
    ],
    ids=["no-validation-graph", "no-test-scenario", "scenario-without-graphs"],
)
def test_evaluate_detector_refuses_missing_graphs_as_an_input_error_naming_the_argument_before_scoring(
    val_graphs, test_sets, message
):
    """These were plain ValueErrors: a direct caller's mistake ended failure_logged with a traceback (a bug's
    report), and the message named no argument of evaluate_detector."""
    from kdgat.logs import failure_logged
    from wrapper_rules import InputRefused

    def never(*args, **kwargs):
        raise AssertionError("scored before the graphs were checked")

    with pytest.raises(InputRefused) as ended, failure_logged("evaluate_detector"):
        evaluate_detector(None, None, None, val_graphs, test_sets, score_fn=never)
    assert isinstance(ended.value.error, EvaluationSettingsError)
    assert isinstance(ended.value.error, ValueError)  # callers that catch ValueError still do
    assert str(ended.value) == message


def test_a_test_file_with_a_scenario_without_graphs_is_refused_naming_the_file_and_scenario(tmp_path):
    inputs = tiny_evaluation_inputs(tmp_path)
    save_graph_sets({"dos": toy_graphs(4, num_ids=20, seed=2), "fuzzy": []}, inputs["test"])
    with pytest.raises(FileContentError) as error:
        evaluate_files(**inputs, outputs=_evaluation_outputs(tmp_path), dataset="tiny", variant="teacher")
    assert (
        str(error.value) == f"{inputs['test']}: test scenario 'fuzzy' holds no graph; it cannot be evaluated"
    )


@pytest.mark.parametrize(
    ("name", "value", "what"),
    [("vgae", [], "model.pt"), ("val", ["a.pt", "b.pt"], "val.pt"), ("test", "", "test.pt")],
)
def test_an_input_that_is_not_one_files_path_is_refused_naming_it_and_what_it_should_be(
    tmp_path, name, value, what
):
    """A Snakemake input given as a list (none, or several files) failed as pathlib's "expected str, bytes or
    os.PathLike object, not list", naming neither the input nor what it should be."""
    inputs = {key: str(tmp_path / f"{key}.pt") for key in ("vgae", "gat", "dqn", "val", "test")}
    with pytest.raises(InputError) as error:
        evaluate_files(
            **{**inputs, name: value},
            outputs=_evaluation_outputs(tmp_path),
            dataset="tiny",
            variant="teacher",
        )
    assert (
        str(error.value) == f"input {name!r} of the evaluation must be the path of one {what}; got {value!r}"
    )


def test_an_empty_val_file_is_refused_naming_it_and_preprocess_val_fraction(tmp_path):
    """preprocess.val_fraction: 0 writes an empty val.pt; evaluate_files then died on evaluate_detector's bare
    ValueError "the validation graph list is empty", naming neither the file nor the key (a traceback in the
    wrapper's log). Now it is the user's mistake (FileContentError, an InputError), before anything is scored."""
    inputs = tiny_evaluation_inputs(tmp_path)
    save_graphs([], tmp_path / "val.pt")
    with pytest.raises(FileContentError) as error:
        evaluate_files(
            **inputs, outputs=_evaluation_outputs(tmp_path), dataset="tiny", variant="teacher", device="cpu",
            speed=TINY_SPEED,
        )  # fmt: skip
    assert isinstance(error.value, InputError)
    assert str(error.value) == (
        f"{tmp_path / 'val.pt'}: holds no validation graph; the VGAE's threshold is chosen on validation windows, "
        "so preprocess.val_fraction must be > 0 for the graphs an evaluation is given"
    )
    assert not (tmp_path / "out").exists()


def test_a_training_file_given_as_val_is_refused_naming_it_before_scoring(tmp_path):
    """The VGAE's threshold is chosen on val.pt: a train.pt given in its place (graph files look alike) chose it on
    the windows the models were fitted on, unsaid. The file records its split now; a file that records none
    (written before) is scored as before."""
    inputs = tiny_evaluation_inputs(tmp_path)
    save_graphs(toy_graphs(20, num_ids=20, seed=1), tmp_path / "train.pt", split="train")
    run = dict(
        **{**inputs, "val": str(tmp_path / "train.pt")}, outputs=_evaluation_outputs(tmp_path), dataset="tiny",
        variant="teacher", device="cpu", speed=TINY_SPEED,
    )  # fmt: skip
    with pytest.raises(FileContentError) as error:
        evaluate_files(**run)
    assert str(error.value).startswith(
        f"{tmp_path / 'train.pt'}: given as the val split, but it holds the train split"
    )
    assert not (tmp_path / "out").exists()


def _other_model_files(folder, inputs, mistake):
    """``inputs`` with the model files of one of the mistakes below, and what the refusal must say."""
    if mistake == "swapped":
        return {
            **inputs,
            "vgae": inputs["gat"],
            "gat": inputs["vgae"],
        }, rf"{inputs['gat']}: given as the vgae model"
    if mistake == "gat_vocabulary":
        save_model(GAT(num_ids=10), "gat", {"num_ids": 10}, folder / "gat10.pt")
        return {
            **inputs,
            "gat": str(folder / "gat10.pt"),
        }, r"vgae.pt knows 20 CAN-ID indices but .*gat10.pt knows 10"
    if mistake == "graph_vocabulary":
        vgae_config = {"num_ids": 10, "hidden_dims": (8, 4), "latent_dim": 4}
        vgae = VGAE(**vgae_config)
        vgae.anomaly_threshold.fill_(1.0)
        save_model(vgae, "vgae", vgae_config, folder / "vgae10.pt")
        save_model(GAT(num_ids=10), "gat", {"num_ids": 10}, folder / "gat10.pt")
        changed = {**inputs, "vgae": str(folder / "vgae10.pt"), "gat": str(folder / "gat10.pt")}
        return changed, rf"{inputs['val']}: a graph holds CAN-ID index 1\d, outside the 10 indices of"
    save_model(QNetwork(), "dqn", {}, folder / "dqn_student.pt", variant="student")
    return (
        {**inputs, "dqn": str(folder / "dqn_student.pt")},
        r"dqn_student.pt: a dqn model trained as variant 'student', evaluated as variant 'teacher'",
    )


@pytest.mark.parametrize("mistake", ["swapped", "gat_vocabulary", "graph_vocabulary", "other_variant"])
def test_model_files_that_are_not_one_detector_for_the_graphs_are_refused_naming_the_file(tmp_path, mistake):
    """Swapped model inputs, a VGAE and a GAT of different vocabularies, graphs of another preprocess run (an
    AttributeError or torch's 'index out of range in self', naming no file, before) and a model of another variant
    (silently reported as this variant before)."""
    inputs, message = _other_model_files(tmp_path, tiny_evaluation_inputs(tmp_path), mistake)
    with pytest.raises(ValueError, match=message):
        evaluate_files(
            **inputs, outputs=_evaluation_outputs(tmp_path), dataset="tiny", variant="teacher", device="cpu",
            speed=TINY_SPEED,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_graphs_of_another_preprocess_run_with_a_vocabulary_of_the_same_size_are_refused_naming_both_files(
    tmp_path,
):
    """docs/evaluation.md: an evaluation refuses "a VGAE, GAT and graphs of different vocabularies". Only the
    vocabularies' sizes were compared: models scored on the graphs of another preprocess run (another dataset of
    as many CAN IDs, the same index meaning another ID) wrote a metrics.json of meaningless numbers, although every
    graph file and model.pt records its run's vocabulary digest (and kdgat evaluate --data refuses them)."""
    ours, theirs = "a" * 64, "b" * 64
    inputs = tiny_evaluation_inputs(tmp_path)
    vgae_config = {"num_ids": 20, "hidden_dims": (8, 4), "latent_dim": 4}
    vgae = VGAE(**vgae_config)
    vgae.anomaly_threshold.fill_(1.0)  # scoring refuses an uncalibrated VGAE
    save_model(vgae, "vgae", vgae_config, inputs["vgae"], vocabulary=ours)
    save_model(GAT(num_ids=20), "gat", {"num_ids": 20}, inputs["gat"], vocabulary=ours)
    save_model(QNetwork(), "dqn", {}, inputs["dqn"], vocabulary=ours)
    save_graphs(toy_graphs(20, num_ids=20, seed=1), inputs["val"], vocabulary=theirs)
    save_graph_sets({"dos": toy_graphs(20, num_ids=20, seed=2)}, inputs["test"], vocabulary=theirs)
    run = dict(
        **inputs, outputs=_evaluation_outputs(tmp_path), dataset="tiny", variant="teacher", device="cpu",
        speed=TINY_SPEED,
    )  # fmt: skip
    with pytest.raises(
        FileContentError,
        match=rf"{re.escape(inputs['vgae'])} \(vgae\) and {re.escape(inputs['val'])} \(val\) are of different "
        r"preprocess runs",
    ):
        evaluate_files(**run)
    assert not (tmp_path / "out").exists()
    # the graphs of the models' own run are evaluated
    save_graphs(toy_graphs(20, num_ids=20, seed=1), inputs["val"], vocabulary=ours)
    save_graph_sets({"dos": toy_graphs(20, num_ids=20, seed=2)}, inputs["test"], vocabulary=ours)
    assert evaluate_files(**run)["test"]["dos"]["fusion"]["n"] == 20


def test_a_graph_index_one_past_the_models_vocabulary_is_refused_and_the_last_index_is_not(tmp_path):
    """The models know the CAN-ID indices 0 to num_ids - 1: a graph holding index num_ids is of another vocabulary
    (an embedding lookup out of range), one holding num_ids - 1 is theirs."""
    from kdgat.evaluation.inputs import check_detector_files
    from kdgat.models.vgae import ID_COLUMN

    num_ids = 20
    vgae_config = {"num_ids": num_ids, "hidden_dims": (8, 4), "latent_dim": 4}
    models = {"vgae": VGAE(**vgae_config), "gat": GAT(num_ids=num_ids), "dqn": QNetwork()}
    configs = {"vgae": vgae_config, "gat": {"num_ids": num_ids}, "dqn": {}}
    paths = {name: tmp_path / f"{name}.pt" for name in models}
    for name, model in models.items():
        save_model(model, name, configs[name], paths[name])
    graphs = toy_graphs(4, num_ids=num_ids, seed=3)
    graphs[1].x[0, ID_COLUMN] = num_ids - 1
    check_detector_files(models, paths, "teacher", {"val.pt": graphs})
    graphs[1].x[0, ID_COLUMN] = num_ids
    with pytest.raises(
        ValueError, match=rf"val\.pt: a graph holds CAN-ID index {num_ids}, outside the {num_ids} "
    ):
        check_detector_files(models, paths, "teacher", {"val.pt": graphs})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"kd_gat": {"seeds": []}}, r"config key 'kd_gat\.seeds' must be a non-empty list .*; got \[\]"),
        ({"kd_gat": {"seeds": 42}}, r"config key 'kd_gat\.seeds' must be a non-empty list .*; got 42"),
        ({"kd_gat": {"seeds": [7, 7]}}, r"config key 'kd_gat\.seeds' .*; \[7\] appear twice"),
        (
            {"kd_gat": {"seeds": ["x", 4.5, True]}},
            r"config key 'kd_gat\.seeds' .*; \['x', 4\.5, True\] are not",
        ),
        ({"kd_gat": {"seeds": [3, -1]}}, r"config key 'kd_gat\.seeds' .*; \[-1\] are not"),
        ({"kd_gat": {"variants": []}}, r"config key 'kd_gat\.variants' must list the variants to evaluate"),
        ({"kd_gat": {"variants": "teacher"}}, r"config key 'kd_gat\.variants' must list .*; got 'teacher'"),
        (
            {"kd_gat": {"variants": ["teacher", "techer"]}},
            r"config key 'kd_gat\.variants' has unknown variants \['techer'\]",
        ),
        ({"datasets": "tiny"}, r"config key 'datasets' must map each dataset name .*; got 'tiny'"),
        ({"datasets": [1, 2]}, r"config key 'datasets' must map each dataset name .*; got \[1, 2\]"),
        ({"datasets": {}}, r"config key 'datasets' is missing or empty"),
    ],
)
def test_the_evaluation_targets_refuse_what_cannot_be_evaluated_naming_the_key(config, message):
    """The evaluation module used alone (no kd_gat schema) failed on seeds [] with an IndexError and on ['x'] with
    int()'s ValueError, evaluated seeds [7, 7] as two seeds of one file, had nothing to summarise with variants [],
    and evaluated datasets 't', 'i', 'n', 'y' for datasets: tiny."""
    from kdgat.evaluation.targets import configured_datasets, configured_seeds, configured_variants

    config = {"datasets": {"tiny": {}}, **config}
    with pytest.raises(ValueError, match=message):
        configured_datasets(config), configured_variants(config), configured_seeds(config)


@pytest.mark.parametrize("section", [None, [1], "teacher"])
def test_a_kd_gat_key_that_maps_no_settings_is_refused_naming_it_not_an_attribute_error(section):
    """The evaluation module used alone read `kd_gat:` with every setting commented out (None) with .get() and
    stopped on an AttributeError ('NoneType' object has no attribute 'get') naming no key."""
    from kdgat.evaluation.targets import configured_data_prefix, configured_seeds, configured_variants

    config = {"datasets": {"tiny": {}}, "kd_gat": section}
    for read in (configured_variants, configured_seeds, configured_data_prefix):
        with pytest.raises(
            ValueError,
            match=rf"^config key 'kd_gat' must map its settings .*; got {re.escape(repr(section))}$",
        ):
            read(config)


@pytest.mark.parametrize("prefix", ["", None, 5])
def test_an_empty_or_non_text_data_prefix_is_refused_naming_the_key(prefix):
    """The kd_gat schema refuses an empty kd_gat.data_prefix (the graphs would be looked up under /), but beside
    the evaluation module alone nothing did: '' read /<dataset>/val.pt and 5 stopped on an AttributeError."""
    from kdgat.evaluation.targets import configured_data_prefix

    with pytest.raises(
        ValueError,
        match=rf"^config key 'kd_gat\.data_prefix' must be .*a non-empty path; got {re.escape(repr(prefix))}$",
    ):
        configured_data_prefix({"datasets": {"tiny": {}}, "kd_gat": {"data_prefix": prefix}})


def test_the_data_prefix_of_a_valid_config():
    from kdgat.evaluation.targets import configured_data_prefix

    assert configured_data_prefix({}) == "results/preprocess"
    assert configured_data_prefix({"kd_gat": {}}) == "results/preprocess"
    assert configured_data_prefix({"kd_gat": {"data_prefix": "/data/graphs/"}}) == "/data/graphs"


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("./results/preprocess", "results/preprocess"),
        ("results//preprocess/", "results/preprocess"),
        ("results/./preprocess", "results/preprocess"),
        ("../shared/graphs", "../shared/graphs"),
        ("/data/./graphs", "/data/graphs"),
    ],
)
def test_the_data_prefix_is_normalized_as_snakemake_matches_paths_as_written(given, used):
    """./results/preprocess/<dataset>/train.pt is no output of the preprocess module (results/preprocess/...):
    Snakemake warned of the ./ and then stopped on a missing input."""
    from kdgat.evaluation.targets import configured_data_prefix

    assert configured_data_prefix({"kd_gat": {"data_prefix": given}}) == used


@pytest.mark.parametrize("prefix", [".", "./", "results/.."])
def test_a_data_prefix_that_is_the_working_directory_is_refused_naming_the_key(prefix):
    from kdgat.evaluation.targets import configured_data_prefix

    with pytest.raises(
        ValueError,
        match=rf"^config key 'kd_gat\.data_prefix' is {re.escape(repr(prefix))}, the working directory itself: ",
    ):
        configured_data_prefix({"kd_gat": {"data_prefix": prefix}})


@pytest.mark.parametrize("prefix", ["~/graphs", "~", "~alice/graphs/"])
def test_a_data_prefix_starting_with_a_tilde_is_refused_naming_the_key_and_what_is_expected(prefix):
    """kd_gat.data_prefix: ~/graphs reached the rules as written and stopped the dry run on Snakemake's generic
    "Using '~' in your paths is not allowed", naming no config key."""
    from kdgat.evaluation.targets import configured_data_prefix

    with pytest.raises(ValueError) as refused:
        configured_data_prefix({"kd_gat": {"data_prefix": prefix}})
    message = str(refused.value)
    assert message.startswith(
        f"config key 'kd_gat.data_prefix' is {prefix!r}: a path starting with ~ is not expanded"
    )
    assert "relative to the working directory (results/preprocess" in message
    assert "absolute (/home/me/graphs)" in message


def test_the_evaluation_targets_of_a_valid_config():
    from kdgat.evaluation.targets import configured_datasets, configured_seeds, configured_variants

    config = {
        "datasets": {"a": {}, "b": {}},
        "kd_gat": {"variants": ["student", "teacher"], "seeds": [3, "4"]},
    }
    assert configured_datasets(config) == ["a", "b"] and configured_datasets({"datasets": ["c"]}) == ["c"]
    assert configured_variants(config) == ["teacher", "student"]  # the chain's order
    assert configured_seeds(config) == [3, 4]
    assert configured_seeds({}) == [42, 43, 44] and configured_variants({}) == [
        "teacher",
        "student_kd",
        "student",
    ]


@pytest.mark.parametrize("scenarios", [{}, {"val": 1}, {"test_pooled": 1, "dos": 2}])
def test_a_test_file_without_scenarios_or_with_a_scenario_named_like_a_split_is_refused_naming_it(
    tmp_path, scenarios
):
    """A test.pt with no scenario gave a metrics.json without test results (refused only later by the summary);
    a scenario named 'val' or 'test_pooled' silently replaced that split's fusion_alpha entry (or lost its own)."""
    inputs = tiny_evaluation_inputs(tmp_path)
    save_graph_sets(
        {name: toy_graphs(10, num_ids=20, seed=seed) for name, seed in scenarios.items()}, tmp_path / "t.pt"
    )
    reserved = [name for name in scenarios if name in ("val", "test_pooled")]
    message = (
        f"a test scenario is named '{reserved[0]}', which metrics.json keeps for"
        if reserved
        else "holds no test"
    )
    with pytest.raises(ValueError, match=rf"{tmp_path / 't.pt'}: {message}"):
        evaluate_files(
            **{**inputs, "test": str(tmp_path / "t.pt")}, outputs=_evaluation_outputs(tmp_path), dataset="tiny",
            variant="teacher", device="cpu", speed=TINY_SPEED,
        )  # fmt: skip
    assert not (tmp_path / "out").exists()
    if reserved:  # the library call the file-level one makes refuses it too
        scored = _scored([0, 1], [1.0, 2.0], [0.2, 0.8], [0.2, 0.8])
        with pytest.raises(ValueError, match=rf"a test scenario is named '{reserved[0]}'"):
            evaluate_scored_splits(scored, {name: scored for name in scenarios})


def test_a_stash_dir_that_cannot_hold_the_stash_stops_the_evaluation_before_scoring(tmp_path, monkeypatch):
    """A file where evaluation.stash_dir points failed with FileExistsError when the finished results were
    committed: after the whole evaluation, failing the job (and, in a group job, costing every sibling its outputs)."""
    import kdgat.model_store

    def never(*args, **kwargs):
        raise AssertionError("a model was loaded before the stash was checked")

    monkeypatch.setattr(kdgat.model_store, "load_model", never)
    (tmp_path / "stash").write_text("not a directory")
    with pytest.raises(
        ValueError, match=rf"stash_dir {tmp_path / 'stash'}: cannot hold the result stash \(File exists\)"
    ):
        evaluate_files(
            **tiny_evaluation_inputs(tmp_path), outputs=_evaluation_outputs(tmp_path), dataset="tiny",
            variant="teacher", device="cpu", stash_dir=tmp_path / "stash",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_stash_dir_the_jobs_cannot_write_is_refused_naming_it(tmp_path, monkeypatch):
    """ResultStash.prepare: a directory that exists but cannot be written is named before any evaluation (the
    tests run as root, where every directory is writable: the permission check itself answers no here)."""
    import kdgat.evaluation.stash as stash_module

    locked = tmp_path / "locked"
    access = os.access
    monkeypatch.setattr(
        stash_module.os, "access", lambda path, mode: False if Path(path) == locked else access(path, mode)
    )
    with pytest.raises(
        ValueError, match=rf"stash_dir {locked}: cannot hold the result stash \(not writable\)"
    ):
        ResultStash(locked).prepare()
    ResultStash(tmp_path / "open").prepare()
    assert (tmp_path / "open").is_dir()


def test_a_stash_another_researcher_made_under_umask_022_names_its_folder_and_how_to_share_it(tmp_path):
    """docs/evaluation.md: a stash shared between researchers needs a group-writable folder. One made by a first
    researcher's run under umask 022 (0755) stopped a second researcher's evaluations at prepare() with "not
    writable" and the advice to point stash_dir elsewhere, never what makes the shared folder work. The second
    user is this process bound by permissions: as root, without the capabilities that let root write any folder
    (setpriv, util-linux), in a folder another user (nobody) owns; as another user, in a folder of its own made
    read-only."""
    stash = tmp_path / "shared" / "stash"
    previous = os.umask(0o022)
    try:
        ResultStash(stash).prepare()  # the first researcher's run
    finally:
        os.umask(previous)
    assert stash.stat().st_mode & 0o777 == 0o755
    argv = [
        sys.executable, "-c",
        "import sys\nfrom kdgat.evaluation.stash import ResultStash\n"
        "try:\n    ResultStash(sys.argv[1]).prepare()\nexcept ValueError as error:\n    sys.exit(str(error))",
        str(stash),
    ]  # fmt: skip
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
        os.chown(stash, 65534, 65534)
        argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]
    else:
        stash.chmod(0o555)
    try:
        second = subprocess.run(
            argv, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=120,
        )  # fmt: skip
    finally:
        stash.chmod(0o755)
    found = stash.stat()
    owner = pwd.getpwuid(found.st_uid).pw_name
    assert second.returncode == 1, second.stderr
    assert second.stderr.strip() == (
        f"stash_dir {stash}: cannot hold the result stash (not writable): it is {owner}'s, mode "
        f"{0o555 if os.geteuid() else 0o755:04o}. A stash shared between researchers needs a folder the project "
        f"group may write: its owner runs `chgrp <group> {stash} && chmod 2775 {stash}`, and every researcher runs "
        "the workflow under a umask that lets the group read (002 or 022), so that the others may read the entries "
        "(each commit makes its entry group-writable there); point evaluation.stash_dir at "
        'a directory the jobs can write, or set it to "" to switch the stash off'
    )


def test_alpha_statistics_call_one_half_normal_and_cover_the_pooled_test_windows():
    """docs/evaluation.md: α per split, test_pooled included; the fused decision is compared with the GAT's
    (p > 0.5) and the VGAE-side one (calibrated score > 0.5), so a score of exactly one half is normal."""
    from kdgat.evaluation.run import alpha_statistics

    # Window 0: both inputs at one half (normal for both) and the fusion says normal: it agrees with both.
    dos = _scored([0, 1, 1], [0.5, 0.9, 0.2], [0.5, 0.2, 0.8], [0.5, 0.7, 0.6]).assign(
        fusion_alpha=[0.5, 0.0, 1.0]
    )
    clean = _scored([0, 0], [0.1, 0.5], [0.5, 0.3], [0.2, 0.4]).assign(fusion_alpha=[0.25, 0.5])
    stats = alpha_statistics(dos)
    assert (stats["agrees_with_gat"], stats["agrees_with_vgae"]) == pytest.approx((2 / 3, 2 / 3))
    document, _ = evaluate_scored_splits(dos, {"dos": dos, "clean": clean})
    pooled = document["fusion_alpha"]["test_pooled"]
    assert pooled == alpha_statistics(pd.concat([dos, clean], ignore_index=True))
    assert pooled["n"] == 5 and sum(pooled["counts"]) == 5


def test_alpha_statistics_count_alpha_in_ten_bins_of_zero_to_one_the_last_one_closed():
    """docs/evaluation.md: ``fusion_alpha`` holds, per split, a histogram of α over ten bins of [0, 1]."""
    from kdgat.evaluation.run import alpha_statistics

    alphas = [0.0, 0.05, 0.1, 0.55, 0.95, 1.0]
    frame = _scored([0] * 6, [0.2] * 6, [0.2] * 6, [0.2] * 6).assign(fusion_alpha=alphas)
    stats = alpha_statistics(frame)
    assert stats["bins"] == pytest.approx([i / 10 for i in range(11)])
    assert stats["counts"] == [2, 1, 0, 0, 0, 1, 0, 0, 0, 2]  # 0.1 opens the second bin, 1.0 is in the last
    assert stats["mean"] == pytest.approx(sum(alphas) / len(alphas))


def test_alpha_statistics_count_each_alpha_the_dqn_can_choose_in_its_own_bin():
    """The DQN's α are float32 (kdgat.models.dqn.alphas, i / 20): α = 0.7 is 0.69999999 and α = 0.9 is 0.89999998,
    which the float64 edges 0.7000000000000001 and 0.9 put one bin low: a DQN that always chose α = 0.9 showed
    an "α ≥ 0.9" share of 0 in summary.md and a histogram of [0.8,0.9)."""
    from kdgat.evaluation.run import alpha_statistics
    from kdgat.models.dqn import alphas

    chosen = alphas().numpy().astype(float)  # every α the agent can choose, as score_graphs records them
    frame = _scored([0] * len(chosen), [0.2] * len(chosen), [0.2] * len(chosen), [0.2] * len(chosen)).assign(
        fusion_alpha=chosen
    )
    assert alpha_statistics(frame)["counts"] == [2, 2, 2, 2, 2, 2, 2, 2, 2, 3]  # 0.95 and 1.0 with 0.9
    at_09 = frame.assign(fusion_alpha=float(chosen[18]))
    assert alpha_statistics(at_09)["counts"] == [0] * 9 + [len(chosen)]


def _speed_on_a_fake_clock(monkeypatch, durations, repeats, latency_runs):
    """measure_inference_speed on 32 small graphs where each scoring call takes the next of ``durations``
    (seconds: the warm-up, then the batched runs, then the single windows) and nothing else takes time."""
    import types

    import kdgat.evaluation.speed as speed_module

    clock = [0.0]
    monkeypatch.setattr(speed_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    times = iter(durations)

    def score(vgae, gat, dqn, graphs, batch_size, device):
        clock[0] += next(times)

    graphs = [
        Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=torch.tensor([i % 2]))
        for i in range(32)
    ]
    return measure_inference_speed(
        _NodeModel(), _GraphModel(), torch.nn.Linear(2, 2), graphs, score,
        batch_size=8, repeats=repeats, latency_runs=latency_runs,
    )  # fmt: skip


def test_speed_is_the_median_of_the_batched_runs_and_of_the_single_window_runs(monkeypatch):
    """docs/evaluation.md: ``graphs_per_s`` is the median of ``speed.repeats`` batched runs' throughputs,
    ``latency_ms`` the median of ``speed.latency_runs`` single-window runs: one slow run (a garbage collection)
    moves neither."""
    # warm-up, 3 batched runs, 4 single windows
    speed = _speed_on_a_fake_clock(monkeypatch, [9.0, 1.0, 2.0, 30.0, 0.1, 0.3, 0.5, 7.0], 3, 4)
    assert speed["fusion"]["graphs_per_s"] == pytest.approx(32 / 2.0)  # median of 1, 2, 30 s (the mean: 11 s)
    assert speed["fusion"]["latency_ms"] == pytest.approx(
        400.0
    )  # median of 0.1, 0.3, 0.5, 7 s (the mean: 2 s)


def test_speed_with_an_even_number_of_repeats_is_the_median_of_the_runs_throughputs(monkeypatch):
    """docs/evaluation.md: ``graphs_per_s`` is the median of the batched runs' throughputs, numpy's median with an
    even ``speed.repeats`` too: the mean of the two middle throughputs, not the sample over the two middle times'
    mean (their harmonic mean)."""
    batched = [1.0, 2.0, 4.0, 30.0]
    speed = _speed_on_a_fake_clock(
        monkeypatch, [9.0, *batched, 0.1], len(batched), 1
    )  # warm-up, batched, one
    throughputs = [32 / seconds for seconds in batched]
    assert speed["fusion"]["graphs_per_s"] == pytest.approx(float(np.median(throughputs)))
    from_median_time = 32 / float(np.median(batched))  # the two middle times' mean: a different figure here
    assert float(np.median(throughputs)) != pytest.approx(from_median_time)


def test_a_batched_run_the_clock_measures_as_0_s_gives_a_throughput_the_summaries_accept(
    monkeypatch, tmp_path
):
    """docs/evaluation.md: a batched run under the clock's resolution counts as one tick of it. measure_inference_speed
    wrote graphs_per_s null for it, and checked_metrics (every summary) then refused the metrics.json: "must be
    numbers"."""
    from kdgat.evaluation.inputs import checked_metrics
    from kdgat.evaluation.speed import CLOCK_RESOLUTION_S
    from kdgat.files import load_json

    # warm-up, 3 batched runs, 1 single window: the clock sees two of the batched runs take no time
    speed = _speed_on_a_fake_clock(monkeypatch, [1.0, 0.0, 0.0, 2.0, 0.5], 3, 1)
    assert speed["fusion"]["graphs_per_s"] == pytest.approx(32 / CLOCK_RESOLUTION_S)  # the median: a 0 s run
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    document, _ = evaluate_scored_splits(val, {"dos": val})
    metrics = {**document, "dataset": "ds", "variant": "teacher", "seed": 1, "speed": speed}
    metrics |= {"parameters": {"vgae": 1, "gat": 2, "dqn": 3, "total": 6}}
    path = write_json(metrics, tmp_path / "metrics.json")  # as evaluate_files writes it
    written = load_json(path)
    assert (
        checked_metrics(path, written)["speed"]["fusion"]["graphs_per_s"] == speed["fusion"]["graphs_per_s"]
    )


def test_speed_is_measured_on_the_first_max_graphs_graphs_only():
    """evaluation.speed.max_graphs: the batched runs score the first max_graphs graphs, the single-window runs
    take theirs from those, and graphs_per_s counts them, not every graph given."""
    graphs = [
        Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=torch.tensor([i % 2]))
        for i in range(32)
    ]
    scored = []

    def score(vgae, gat, dqn, graphs, batch_size, device):
        scored.append([id(graph) for graph in graphs])

    speed = measure_inference_speed(
        _NodeModel(), _GraphModel(), torch.nn.Linear(2, 2), graphs, score,
        batch_size=8, repeats=2, latency_runs=3, max_graphs=10,
    )  # fmt: skip
    first = [id(graph) for graph in graphs[:10]]
    assert speed["graphs"] == 10
    assert scored == [first[:8], first, first, first[:1], first[1:2], first[2:3]]


def test_the_defaults_docs_evaluation_md_states_are_the_schemas():
    """docs/evaluation.md names the FPR targets, the device, the seeds and the data prefix a config that leaves
    them out gets: the module schemas' defaults."""
    text = " ".join((REPO / "docs/evaluation.md").read_text().split())

    def properties(module, section):
        path = REPO / f"workflow/modules/{module}/schemas/config.schema.yaml"
        return yaml.safe_load(path.read_text())["properties"][section]["properties"]

    evaluation, kd_gat = properties("evaluation", "evaluation"), properties("kd_gat", "kd_gat")
    assert "detection rate (TPR) at FPR 5 % / 1 % / 0.1 %" in text
    assert evaluation["fpr_targets"]["default"] == [0.05, 0.01, 0.001]
    assert "CUDA is used when present (`device: auto`" in text
    assert evaluation["device"]["default"] == "auto"
    assert "the seeds are `kd_gat.seeds` (default 42, 43, 44)" in text
    assert kd_gat["seeds"]["default"] == [42, 43, 44]
    assert "(default prefix `results/preprocess`)" in text
    assert kd_gat["data_prefix"]["default"] == "results/preprocess"


def test_a_half_written_stash_entry_is_never_restored(tmp_path, monkeypatch, caplog):
    """docs/evaluation.md: entries are written to a temporary directory and renamed into place, so a half-written
    entry is never used: a commit that fails half-way leaves nothing under its key, and an entry without its
    completion mark or lacking an output restores nothing (the evaluation recomputes)."""
    import kdgat.evaluation.stash as stash_module

    out = {"metrics.json": tmp_path / "out" / "metrics.json", "scores.csv": tmp_path / "out" / "scores.csv"}
    write_json({"f1": 0.9}, out["metrics.json"])
    out["scores.csv"].write_text("label\n1\n")
    target = {name: tmp_path / "restored" / name for name in out}
    stash = ResultStash(tmp_path / "stash")
    copies = []

    def copy_then_fail(source, destination):
        if copies:
            raise OSError("disk full")
        copies.append(destination)
        shutil.copyfile(source, destination)

    with monkeypatch.context() as patch:
        patch.setattr(stash_module, "copy_file", copy_then_fail)
        assert stash.commit("half", out) is None  # a warning: the stash is a copy, never the job's failure
    assert copies and not stash.entry("half").exists()  # the one file copied is not under the key
    assert not list((tmp_path / "stash").glob(".half.*"))  # nor left in a staging folder
    assert not stash.restore("half", target)
    unmarked = stash.entry("unmarked")  # what a writer into the entry itself leaves when it is killed
    unmarked.mkdir(parents=True)
    shutil.copyfile(out["metrics.json"], unmarked / "metrics.json")
    assert not stash.restore("unmarked", {"metrics.json": target["metrics.json"]})
    stash.commit("short", {"metrics.json": out["metrics.json"]})
    with caplog.at_level(logging.WARNING):
        assert not stash.restore("short", target)
    assert "lacks some outputs; recomputing" in caplog.text
    assert not any(path.exists() for path in target.values())


@pytest.mark.usefixtures("one_torch_thread")
def test_an_evaluation_whose_stash_copy_fails_keeps_its_outputs_and_leaves_no_staging_folder(
    tmp_path, monkeypatch, caplog
):
    """The stash is a copy kept for a rerun: a commit that cannot copy (the quota or the disk full once the five
    outputs are written) failed the finished evaluation with OSError, so Snakemake deleted its outputs (and, in a
    group job, every sibling's), and every rerun failed again the same way; the half-filled staging folder stayed
    in the stash for good. Now: a warning, the evaluation succeeds, nothing is left in the stash. A stop by
    SIGTERM while committing removes the staging folder too."""
    import kdgat.evaluation.stash as stash_module
    from kdgat.logs import Terminated

    caplog.set_level("INFO", logger="kdgat")
    _unrendered(monkeypatch)
    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)
    stash_dir = tmp_path / "stash"
    copy_file = stash_module.copy_file
    copied = []

    def copy_then(failure):
        def copy(source, destination):
            if copied:
                raise failure
            copied.append(destination)
            return copy_file(source, destination)

        return copy

    monkeypatch.setattr(stash_module, "copy_file", copy_then(OSError(122, "Disk quota exceeded")))
    document = evaluate_files(
        **inputs, outputs=outputs, dataset="tiny", variant="teacher", device="cpu", speed=TINY_SPEED,
        stash_dir=stash_dir,
    )  # fmt: skip
    assert json.loads(outputs["metrics"].read_text()) == json.loads(json.dumps(document))
    assert all(path.is_file() for path in outputs.values())
    assert copied and list(stash_dir.iterdir()) == []  # no entry, no staging folder
    assert "could not commit to the result stash" in caplog.text and "Disk quota exceeded" in caplog.text
    assert "committed results to the stash" not in caplog.text

    copied.clear()
    monkeypatch.setattr(stash_module, "copy_file", copy_then(Terminated()))
    with pytest.raises(Terminated):
        ResultStash(stash_dir).commit(
            "key", {"metrics.json": outputs["metrics"], "scores.parquet": outputs["scores"]}
        )
    assert copied and list(stash_dir.iterdir()) == []


def test_a_stash_entry_left_without_its_completion_mark_is_replaced_by_the_next_commit(
    tmp_path, monkeypatch, caplog
):
    """An entry folder without COMPLETE (a writer killed in it, a folder made by hand) is in the way of the rename:
    the next commit replaces it, so a later run restores; a commit that still cannot publish says so (a warning,
    None) instead of claiming an entry that restores nothing."""
    import kdgat.evaluation.stash as stash_module

    out = tmp_path / "out" / "metrics.json"
    write_json({"f1": 0.9}, out)
    stash = ResultStash(tmp_path / "stash")
    stale = stash.entry("key")
    stale.mkdir(parents=True)
    (stale / "metrics.json").write_text('{"f1": 0.1')  # cut off mid-write, no COMPLETE
    assert stash.commit("key", {"metrics.json": out}) == stale
    out.unlink()
    assert stash.restore("key", {"metrics.json": out})
    assert json.loads(out.read_text()) == {"f1": 0.9}
    assert sorted(p.name for p in (tmp_path / "stash").iterdir()) == [
        "key"
    ]  # nothing staged or set aside is left
    monkeypatch.setattr(stash_module, "publish_directory", lambda staging, target: False)
    with caplog.at_level(logging.WARNING, logger="kdgat"):
        assert stash.commit("other", {"metrics.json": out}) is None
    assert f"could not commit to the result stash {stash.entry('other')}" in caplog.text
    assert not stash.restore("other", {"metrics.json": out})


def test_a_complete_stash_entry_lacking_an_output_is_replaced_by_the_next_commit(tmp_path, caplog):
    """An entry marked COMPLETE without one of the outputs asked for (committed with another output suffix, or a
    file purged from it) restored nothing, and the commit after the recompute kept it and returned it, so the
    evaluation logged `committed results to the stash` while every rerun recomputed. The commit now replaces it."""
    out = {"metrics.json": tmp_path / "out" / "metrics.json", "scores.csv": tmp_path / "out" / "scores.csv"}
    write_json({"f1": 0.9}, out["metrics.json"])
    out["scores.csv"].write_text("label\n1\n")
    stash = ResultStash(tmp_path / "stash")
    stash.commit("key", {"metrics.json": out["metrics.json"]})
    target = {name: tmp_path / "restored" / name for name in out}
    assert not stash.restore("key", target)  # lacks scores.csv: recomputed
    with caplog.at_level(logging.INFO, logger="kdgat"):
        assert stash.commit("key", out) == stash.entry("key")
    assert f"replacing the result stash entry {stash.entry('key')}, which lacks some outputs" in caplog.text
    assert stash.restore("key", target)
    assert all(target[name].read_bytes() == out[name].read_bytes() for name in out)
    assert sorted(p.name for p in stash.root.iterdir()) == ["key"]  # nothing set aside is left


def test_an_entry_another_researcher_committed_under_umask_022_is_replaced_without_leaving_it_aside(tmp_path):
    """A stash shared between researchers (its folder 2775, docs/evaluation.md): an entry the first researcher
    committed under umask 022 was 0755, so the second's commit replacing it (it lacks an output) moved it aside
    but could not empty it, and it stayed behind as `.<key>.stale.<hex>`. An entry committed into a group-writable
    stash is now group-writable. The second researcher is this process bound by permissions: as root, without
    the capabilities that let root write any folder (setpriv), with the entry another user's (nobody) of the
    stash's group; as another user, with the entry's owner bits those its group has."""
    out = {"metrics.json": tmp_path / "out" / "metrics.json", "scores.csv": tmp_path / "out" / "scores.csv"}
    write_json({"f1": 0.9}, out["metrics.json"])
    out["scores.csv"].write_text("label\n1\n")
    root = tmp_path / "shared" / "stash"
    root.mkdir(parents=True)
    root.chmod(0o2775)  # as its owner makes a shared stash
    previous = os.umask(0o022)
    try:
        first = ResultStash(root).commit("key", {"metrics.json": out["metrics.json"]})  # the first researcher
        argv = [
            sys.executable, "-c",
            "import sys\nfrom kdgat.evaluation.stash import ResultStash\n"
            "print(ResultStash(sys.argv[1]).commit('key', dict(zip(sys.argv[2::2], sys.argv[3::2]))))",
            str(root), *(str(part) for name, path in out.items() for part in (name, path)),
        ]  # fmt: skip
        if os.geteuid() == 0:
            setpriv = shutil.which("setpriv")
            assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
            for path in (first, *first.iterdir()):
                os.chown(path, 65534, root.stat().st_gid)
            argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]
        else:
            mode = first.stat().st_mode & 0o7777
            first.chmod(mode & ~0o700 | (mode & 0o070) << 3)
        second = subprocess.run(
            argv, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=120,
        )  # fmt: skip
    finally:
        os.umask(previous)
        for path in root.iterdir():  # what was left aside, so that pytest can remove it
            path.chmod(0o777)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == str(root / "key")
    assert sorted(path.name for path in root.iterdir()) == ["key"], sorted(root.iterdir())
    assert sorted(path.name for path in (root / "key").iterdir()) == [
        "COMPLETE",
        "metrics.json",
        "scores.csv",
    ]


def test_a_stash_entry_replaced_while_it_is_restored_is_recomputed_not_a_failure(
    tmp_path, monkeypatch, caplog
):
    """A commit may replace a complete entry that lacks its outputs while another job restores from it (for other
    outputs): the reader, finding a file gone, recomputes instead of failing."""
    import kdgat.evaluation.stash as stash_module

    out = {"metrics.json": tmp_path / "out" / "metrics.json", "scores.csv": tmp_path / "out" / "scores.csv"}
    write_json({"f1": 0.9}, out["metrics.json"])
    out["scores.csv"].write_text("label\n1\n")
    stash = ResultStash(tmp_path / "stash")
    stash.commit("key", out)
    copy_file = stash_module.copy_file

    def copy_then_replace(source, destination):
        copy_file(source, destination)
        shutil.rmtree(stash.entry("key"))  # the concurrent commit moves the entry aside

    monkeypatch.setattr(stash_module, "copy_file", copy_then_replace)
    with caplog.at_level(logging.WARNING, logger="kdgat"):
        assert not stash.restore("key", {name: tmp_path / "restored" / name for name in out})
    assert f"stash entry {stash.entry('key')} was replaced while it was restored; recomputing" in caplog.text


def test_a_restore_takes_every_file_from_one_entry_when_a_replacement_lands_between_its_copies(
    tmp_path, monkeypatch, caplog
):
    """An entry replaced between a restore's copies (the stash cleaned and refilled by another run of the same
    evaluation, whose scores and timings differ) gave metrics.json from the old entry and the scores from the new:
    a restore that claimed success with outputs of two evaluations. Now every copy is checked against the entry's
    record: the restore is made again from the new entry, or, when entries keep changing, recomputed."""
    import kdgat.evaluation.stash as stash_module

    def evaluation(folder: str, f1: float) -> dict[str, Path]:
        files = {
            "scores.csv": tmp_path / folder / "scores.csv",
            "metrics.json": tmp_path / folder / "metrics.json",
        }
        files["scores.csv"].parent.mkdir()
        files["scores.csv"].write_text(f"label,score\n1,{f1}\n")
        write_json({"f1": f1}, files["metrics.json"])
        return files

    runs = [evaluation(f"run{number}", f1) for number, f1 in enumerate((0.91, 0.92, 0.93))]
    stash = ResultStash(tmp_path / "stash")
    stash.commit("key", runs[0])
    target = {name: tmp_path / "restored" / name for name in runs[0]}
    copy_file, replacements = stash_module.copy_file, []

    def copy_then_replace(source, destination):
        copy_file(source, destination)
        if Path(source).parent == stash.entry("key") and replacements:
            shutil.rmtree(stash.entry("key"))  # cleaned, then committed again by another run
            stash.commit("key", replacements.pop(0))

    def restored_run() -> int | None:
        """Which run every restored file comes from (None: they are not all one run's)."""
        found = {
            number for number, run in enumerate(runs) for name in target
            if target[name].read_bytes() == run[name].read_bytes()
        }  # fmt: skip
        return found.pop() if len(found) == 1 else None

    monkeypatch.setattr(stash_module, "copy_file", copy_then_replace)
    replacements = [runs[1]]  # one replacement: restored again from the new entry
    caplog.set_level("INFO", logger="kdgat")
    assert stash.restore("key", target)
    assert restored_run() == 1
    assert "was replaced while it was restored; restoring again" in caplog.text
    caplog.clear()
    replacements = [runs[2], runs[0]] * 2  # a replacement after every copy, the one made again included
    assert not stash.restore("key", target)
    assert "was replaced while it was restored; recomputing" in caplog.text


@pytest.mark.usefixtures("one_torch_thread")
def test_a_restore_cut_short_leaves_no_metrics_json(tmp_path, monkeypatch):
    """metrics.json is written last, its presence meaning a finished evaluation, but a restore copied it first: a
    restore that failed after it (the entry moved aside) left it beside missing scores, and one killed there left
    it for good. An evaluation's restore now copies it last, and a restore that fails removes its copies."""
    import kdgat.evaluation.stash as stash_module

    _unrendered(monkeypatch)
    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)
    run = dict(dataset="tiny", variant="teacher", device="cpu", speed=TINY_SPEED)
    evaluate_files(**inputs, outputs=outputs, **run, stash_dir=tmp_path / "stash")
    for path in outputs.values():
        path.unlink()
    copy_file, copied = stash_module.copy_file, []

    def copy_and_note(source, target):
        copied.append(Path(target))
        return copy_file(source, target)

    monkeypatch.setattr(stash_module, "copy_file", copy_and_note)
    evaluate_files(**inputs, outputs=outputs, **run, stash_dir=tmp_path / "stash")
    assert sorted(copied) == sorted(outputs.values())  # restored, not computed
    assert copied[-1] == outputs["metrics"]

    (entry,) = [path for path in (tmp_path / "stash").iterdir() if not path.name.startswith(".")]
    restored = tmp_path / "restored"
    names = {"metrics.json": restored / "metrics.json"}  # first, as the evaluation gave them before
    names |= {path.name: restored / path.name for path in entry.iterdir() if path.name != "COMPLETE"}

    def copy_then_remove(source, target):
        copy_file(source, target)
        if len(list(restored.iterdir())) == 2:
            shutil.rmtree(entry)  # moved aside by a commit for other outputs, or cleaned by hand

    monkeypatch.setattr(stash_module, "copy_file", copy_then_remove)
    assert not ResultStash(tmp_path / "stash").restore(entry.name, names)
    assert list(restored.iterdir()) == []


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluations_of_one_key_with_other_output_formats_keep_each_its_own_stash_entry(
    tmp_path, monkeypatch, caplog
):
    """Two workflows sharing a stash evaluate the same models with the same params, one writing scores.parquet,
    the other scores.csv: each commit replaced the other's entry (it lacked its scores file), so every rerun of
    either recomputed. The output names are in the key now: each keeps its entry and restores from it."""
    _unrendered(monkeypatch)
    caplog.set_level("INFO", logger="kdgat")
    inputs = tiny_evaluation_inputs(tmp_path)
    parquet, csv = _evaluation_outputs(tmp_path / "parquet"), _evaluation_outputs(tmp_path / "csv")
    csv["scores"] = csv["scores"].with_suffix(".csv")

    def evaluate(outputs) -> str:
        return _evaluated_after_a_group_failure(inputs, outputs, tmp_path / "stash", caplog)

    assert "committed results to the stash" in evaluate(parquet)
    assert "committed results to the stash" in evaluate(csv)
    for outputs in (parquet, csv, parquet):
        assert "restored tiny/teacher (no seed) from the result stash" in evaluate(outputs)
        assert all(path.is_file() for path in outputs.values())


def test_a_stash_entry_the_job_cannot_read_is_recomputed_and_replaced_not_a_failure(
    tmp_path, monkeypatch, caplog
):
    """An entry another member of the project committed under umask 077 cannot be searched by the group: the
    restore's look at it raised PermissionError and failed the job, and so did the commit after a recompute, so a
    finished evaluation failed for its stash copy. Now it is recomputed (a warning naming the entry) and the commit
    replaces the entry with one the group can read. (The tests may run as root, whom no mode stops: the folder
    refuses a search here as the kernel refuses it to another user.)"""
    out = {"metrics.json": tmp_path / "out" / "metrics.json", "scores.csv": tmp_path / "out" / "scores.csv"}
    write_json({"f1": 0.9}, out["metrics.json"])
    out["scores.csv"].write_text("label\n1\n")
    stash = ResultStash(tmp_path / "stash")
    stash.commit("key", out)
    theirs, target = stash.entry("key"), {name: tmp_path / "restored" / name for name in out}

    def unsearchable(method):
        def refused(self, *args, **kwargs):
            if self.parent == theirs:
                raise PermissionError(13, "Permission denied", str(self))
            return method(self, *args, **kwargs)

        return refused

    with monkeypatch.context() as patch:
        patch.setattr(Path, "stat", unsearchable(Path.stat))
        patch.setattr(Path, "open", unsearchable(Path.open))
        with caplog.at_level(logging.WARNING, logger="kdgat"):
            assert not stash.restore("key", target)
        assert f"stash entry {theirs} cannot be read (PermissionError" in caplog.text
        assert stash.commit("key", out) == theirs
    assert stash.restore("key", target)
    assert all(target[name].read_bytes() == out[name].read_bytes() for name in out)
    assert sorted(p.name for p in stash.root.iterdir()) == ["key"]  # nothing set aside is left


def test_a_stash_entry_whose_file_changed_after_its_commit_is_not_restored_and_is_replaced(tmp_path, caplog):
    """A file of an entry cut short or changed after its commit (a copy of the stash interrupted, a hand edit) was
    restored as it was, a truncated scores table beside a complete metrics.json. The restore now checks each copy
    against the digest its entry recorded and recomputes; the commit after the recompute replaces the entry
    (keeping it, and saying `committed`, would make every rerun recompute)."""
    out = {"scores.csv": tmp_path / "out" / "scores.csv", "metrics.json": tmp_path / "out" / "metrics.json"}
    out["scores.csv"].parent.mkdir()
    out["scores.csv"].write_text("label,score\n1,0.9\n0,0.1\n")
    write_json({"f1": 0.9}, out["metrics.json"])
    stash = ResultStash(tmp_path / "stash")
    entry = stash.commit("key", out)
    (entry / "scores.csv").write_text("label,score\n1,0.9\n")  # cut short
    target = {name: tmp_path / "restored" / name for name in out}
    with caplog.at_level(logging.INFO, logger="kdgat"):
        assert not stash.restore("key", target)
        assert not any(path.exists() for path in target.values())
        assert stash.commit("key", out) == entry
    assert "scores.csv is not the one its entry recorded" in caplog.text
    assert f"replacing the result stash entry {entry}" in caplog.text
    assert stash.restore("key", target)
    assert all(target[name].read_bytes() == out[name].read_bytes() for name in out)


def _left_by_killed_commits(stash_root: Path) -> list[Path]:
    """What a commit killed by SIGKILL (the OOM killer, a node failure) leaves: its half-filled staging folder, or
    an entry it had moved aside and not yet removed (names as ResultStash.commit makes them)."""
    staging = stash_root / f".{'a' * 32}.0123456789ab"
    aside = stash_root / f".{'b' * 32}.stale.ba9876543210"
    long_ago = os.stat(stash_root.parent).st_mtime - 2 * 3600  # killed earlier than a live commit's last copy
    for folder in (staging, aside):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text('{"f1": 0.')
        for path in (folder / "metrics.json", folder):
            os.utime(path, (long_ago, long_ago))
    return [staging, aside]


def test_a_commit_removes_the_staging_folders_killed_commits_left_in_the_stash(tmp_path):
    """A killed commit's staging folder stayed in the stash for good (its clean-up runs only on an exception).
    The next commit that finds no other commit under way removes them, and nothing else of the stash."""
    out = tmp_path / "out" / "metrics.json"
    write_json({"f1": 0.9}, out)
    stash = ResultStash(tmp_path / "stash")
    left = _left_by_killed_commits(stash.root)
    others = [stash.root / ".keep", stash.root / f".{'c' * 32}.not-a-token"]
    for other in others:
        other.mkdir()
    assert stash.commit("key", {"metrics.json": out}) == stash.entry("key")
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in others)
    assert stash.restore("key", {"metrics.json": tmp_path / "restored.json"})


def test_a_commit_while_another_is_under_way_leaves_every_staging_folder_alone(tmp_path):
    """A staging folder is only stale when no commit is under way: one that another commit holds (its shared lock
    on the stash folder) may be that commit's, and stays."""
    import fcntl

    out = tmp_path / "out" / "metrics.json"
    write_json({"f1": 0.9}, out)
    stash = ResultStash(tmp_path / "stash")
    left = _left_by_killed_commits(stash.root)
    under_way = os.open(
        stash.root, os.O_RDONLY | os.O_DIRECTORY
    )  # another commit's hold, as ResultStash takes it
    try:
        fcntl.flock(under_way, fcntl.LOCK_SH)
        assert stash.commit("key", {"metrics.json": out}) == stash.entry("key")
        assert all(path.exists() for path in left)
    finally:
        os.close(under_way)
    assert stash.commit("other", {"metrics.json": out}) == stash.entry("other")
    assert not any(path.exists() for path in left)


def test_a_commit_leaves_a_staging_folder_changed_lately_whatever_the_nodes_clock_says(tmp_path, monkeypatch):
    """On NFS the flock that tells a commit no other is under way is the node's alone (the Linux client takes a
    flock on a folder locally), so a commit removed the live staging folder of a commit on another node, and that
    commit's entry was lost. A left folder now goes only once unchanged for an hour by the filesystem's clock; the
    node's clock, here a day ahead of the file server's, plays no part."""
    import time

    out = tmp_path / "out" / "metrics.json"
    write_json({"f1": 0.9}, out)
    stash = ResultStash(tmp_path / "stash")
    left = _left_by_killed_commits(stash.root)
    other_node = stash.root / f".{'d' * 32}.0123456789ab"  # its copy under way: no lock of this node holds it
    other_node.mkdir()
    (other_node / "metrics.json").write_text('{"f1": 0.')
    node_time = time.time
    monkeypatch.setattr(time, "time", lambda: node_time() + 86400)
    assert stash.commit("key", {"metrics.json": out}) == stash.entry("key")
    assert other_node.is_dir() and (other_node / "metrics.json").is_file()
    assert not any(path.exists() for path in left)


def test_a_file_or_dangling_link_at_a_stash_entry_is_replaced_by_the_next_commit_and_nothing_is_left_aside(
    tmp_path,
):
    """ResultStash.commit moved a plain file at an entry's path aside and left the .stale file behind (rmtree
    removes folders only), and did not see a dangling link at all (the entry could never be published)."""
    out = tmp_path / "out" / "metrics.json"
    write_json({"f1": 0.9}, out)
    stash = ResultStash(tmp_path / "stash")
    stash.prepare()
    stash.entry("file").write_text("in the way\n")
    assert stash.commit("file", {"metrics.json": out}) == stash.entry("file")
    assert sorted(p.name for p in (tmp_path / "stash").iterdir()) == ["file"]
    stash.entry("link").symlink_to(tmp_path / "gone")
    assert stash.commit("link", {"metrics.json": out}) == stash.entry("link")
    assert sorted(p.name for p in (tmp_path / "stash").iterdir()) == ["file", "link"]
    for key in ("file", "link"):
        assert stash.restore(key, {"metrics.json": tmp_path / key / "metrics.json"})
        assert json.loads((tmp_path / key / "metrics.json").read_text()) == {"f1": 0.9}


@pytest.mark.usefixtures("one_torch_thread")
def test_the_stash_key_holds_the_device_used_not_the_device_setting(tmp_path, monkeypatch, caplog):
    """docs/evaluation.md: the key holds the device the evaluation runs on (metrics.json's `device`), so `auto`
    that resolves to the CPU restores an entry computed with `cpu`, and a GPU's entry is not served to a CPU."""
    import kdgat.evaluation.run as run
    import kdgat.runtime

    # auto resolves to the CPU here whether or not this host has a GPU
    monkeypatch.setattr(kdgat.runtime, "select_device", lambda spec, setting: torch.device("cpu"))
    devices, real_key = [], run.stash_key
    monkeypatch.setattr(
        run,
        "stash_key",
        lambda inputs, params, parts=None: (
            devices.append(params["device"]) or real_key(inputs, params, parts)
        ),
    )
    caplog.set_level("INFO", logger="kdgat")
    outputs = {name: tmp_path / "out" / f"{name}{suffix}" for name, suffix in
               (("metrics", ".json"), ("scores", ".parquet"), ("roc", ".svg"), ("pr", ".svg"),
                ("confusion", ".svg"))}  # fmt: skip
    inputs = tiny_evaluation_inputs(tmp_path)
    for device in ("cpu", "auto"):
        evaluate_files(
            **inputs, outputs=outputs, dataset="tiny", variant="teacher", device=device,
            speed={"repeats": 1, "latency_runs": 1, "max_graphs": 4}, stash_dir=tmp_path / "stash",
        )  # fmt: skip
    assert devices == ["cpu", "cpu"]
    assert "restored tiny/teacher (no seed) from the result stash" in caplog.text


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(
    ("measured_by", "first", "second"),
    [
        # hardware: the key held only the device kind (`cuda`), and an A100's throughput was restored on a V100
        # node as that node's
        ("device_name", "NVIDIA A100-SXM4-40GB", "Tesla V100-SXM2-16GB"),
        # the torch build: after an upgrade of torch or its CUDA, an entry of the old build was restored
        ("torch_build", "torch 2.13.0+cu126 CUDA 12.6", "torch 2.13.0+cu118 CUDA 11.8"),
    ],
)
def test_the_stash_key_holds_the_hardware_and_torch_build_the_speed_was_measured_with(
    tmp_path, monkeypatch, caplog, measured_by, first, second
):
    """metrics.json's speed figures (and last digits) belong to the hardware and torch build that measured them;
    the key holds both (kdgat.runtime.device_name and torch_build, injected here): the same restores, another
    recomputes."""
    import kdgat.runtime

    measured = [first]
    monkeypatch.setattr(kdgat.runtime, measured_by, lambda *args, **kwargs: measured[0])
    _unrendered(monkeypatch)
    caplog.set_level("INFO", logger="kdgat")
    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)

    def evaluate() -> str:
        return _evaluated_after_a_group_failure(inputs, outputs, tmp_path / "stash", caplog)

    assert "committed results to the stash" in evaluate()
    assert "restored tiny/teacher (no seed) from the result stash" in evaluate()  # the same
    measured[0] = second
    log = evaluate()
    assert "evaluating tiny/teacher" in log and "restored" not in log
    assert len([entry for entry in (tmp_path / "stash").iterdir() if not entry.name.startswith(".")]) == 2


def test_the_scores_table_columns_docs_evaluation_md_and_meta_yaml_list_are_the_ones_written():
    """docs/evaluation.md said scores.parquet holds "every model's score and decision", but the fixed-α yardsticks
    are only in metrics.json: both docs list the table's columns, which must be the ones written."""
    val = _scored([0, 0, 1, 1], [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.8, 0.9], [0.1, 0.2, 0.8, 0.9])
    _, scores = evaluate_scored_splits(val, {"dos": val})
    (row,) = [
        line for line in (REPO / "docs/evaluation.md").read_text().splitlines() if "/scores.parquet`" in line
    ]
    meta = yaml.safe_load((REPO / "wrappers/evaluate_detector/meta.yaml").read_text())
    for text in (row.split("|")[2], meta["output"]["scores"]["description"]):
        assert re.findall(r"`(\w+)`", text) == list(scores.columns), text
        assert "fixed-α" in text and "metrics.json" in text  # where the yardsticks are instead


class _Section(dict):
    """snakemake.input/output/params as a wrapper reads them: by attribute, by name, and with get()."""

    def __getattr__(self, name):
        return self[name]


def _record_benchmark(path: Path, seconds: float, max_rss_mb: float) -> None:
    """The benchmark file Snakemake writes once a job succeeded (its own writer)."""
    from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

    record = BenchmarkRecord(running_time=seconds, max_rss=max_rss_mb, max_vms=max_rss_mb, max_uss=max_rss_mb)
    record.max_pss, record.data_collected, record.io_in, record.io_out = max_rss_mb, True, 0, 0
    record.cpu_time = record.cpu_usage = seconds
    path.parent.mkdir(parents=True, exist_ok=True)
    write_benchmark_records([record], str(path), False)


@pytest.mark.usefixtures("one_torch_thread")
def test_an_evaluation_restored_from_the_stash_teaches_learned_resources_neither_its_time_nor_its_memory(
    tmp_path, monkeypatch
):
    """The wrapper run as Snakemake runs it, twice: a computed evaluation, then the same one restored from the
    stash (its outputs deleted, as after a failed sibling of its group job). The restore copies five files, so its
    benchmark's seconds and max_rss are no evaluation's: learned from, they gave the next evaluation of these
    wildcards that computes (a retrained model) 5 minutes and 1.4 GB instead of what the computed run needed."""
    import kdgat.logs
    from resource_history import LearnedResourceSettings, ResourceHistory

    _unrendered(monkeypatch)
    monkeypatch.setattr(kdgat.logs, "configure", lambda log: None)  # leave pytest's log handlers alone
    benchmark = tmp_path / "benchmarks/evaluation/tiny/seed_1/teacher.tsv"
    outputs = _evaluation_outputs(tmp_path)
    snakemake = type("Snakemake", (), {})()
    snakemake.input = _Section(tiny_evaluation_inputs(tmp_path))
    snakemake.output = _Section({name: str(path) for name, path in outputs.items()})
    snakemake.params = _Section(
        dataset="tiny", variant="teacher", seed=1, device="cpu", speed=TINY_SPEED,
        stash_dir=str(tmp_path / "stash"), benchmark=str(benchmark),
    )  # fmt: skip
    snakemake.log, snakemake.threads = [str(tmp_path / "log")], 1
    snakemake.resources, snakemake.rule = _Section(), "rule"
    wrapper = REPO / "wrappers/evaluate_detector/wrapper.py"
    code = compile(wrapper.read_text(), str(wrapper), "exec")
    pattern = "benchmarks/evaluation/{dataset}/seed_{seed}/teacher.tsv"
    wildcards = {"dataset": "tiny", "seed": "1"}
    defaults = {"mem_mb": 8000, "runtime": 60}

    def estimates():
        history = ResourceHistory(LearnedResourceSettings(enabled=True), workdir=tmp_path)
        return {
            name: history.estimate(name, pattern, wildcards, default) for name, default in defaults.items()
        }

    exec(code, {"snakemake": snakemake})
    computed_seconds, computed_mb = 1800.0, 6000.0
    _record_benchmark(benchmark, computed_seconds, computed_mb)
    learned = estimates()
    assert all(estimate.learned for estimate in learned.values())
    for output in outputs.values():
        output.unlink()
    exec(code, {"snakemake": snakemake})
    assert json.loads(outputs["metrics"].read_text())["seed"] == 1  # restored
    _record_benchmark(benchmark, 1.5, 180.0)  # what Snakemake records of the restore
    after_restore = estimates()
    for name, estimate in after_restore.items():
        # nothing else to learn from: the configured value, not the restore's figures
        assert (estimate.value, estimate.learned) == (defaults[name], False), estimate.describe()
        assert "restored their outputs from earlier results" in estimate.explanation
    # A run that computes again (another stash key: a retrained model) is learned from as before.
    torch.manual_seed(1)
    save_model(GAT(num_ids=20), "gat", {"num_ids": 20}, tmp_path / "gat.pt")
    exec(code, {"snakemake": snakemake})
    _record_benchmark(benchmark, computed_seconds, computed_mb)
    assert {name: estimate.value for name, estimate in estimates().items()} == {
        name: estimate.value for name, estimate in learned.items()
    }


SCORED = _scored([0, 1], [1.0, 2.0], [0.2, 0.8], [0.2, 0.8])


@pytest.mark.parametrize(
    ("val", "tests", "message"),
    [
        (SCORED.iloc[:0], {"dos": SCORED}, "evaluate_scored_splits's val holds no scored window"),
        (SCORED, {"val": SCORED}, "evaluate_scored_splits's tests: a test scenario is named 'val'"),
        (
            SCORED,
            {"dos": SCORED, "test_pooled": SCORED},
            "evaluate_scored_splits's tests: a test scenario is named 'test_pooled'",
        ),
        (
            SCORED,
            {"dos": SCORED.iloc[:0]},
            "evaluate_scored_splits's tests['dos']: test scenario 'dos' has no graphs",
        ),
    ],
)
def test_evaluate_scored_splits_refuses_bad_splits_as_input_errors_naming_the_argument(val, tests, message):
    """An empty validation frame, a scenario named like a split and an empty scenario were plain ValueErrors: a
    direct caller's mistake read as a bug (a wrapper-style caller printed its traceback), naming no argument."""
    with pytest.raises(EvaluationSettingsError, match=re.escape(message)) as error:
        evaluate_scored_splits(val, tests)
    assert isinstance(error.value, InputError)


@pytest.mark.parametrize("reserved", ["val", "test_pooled"])
def test_evaluate_detector_refuses_a_scenario_named_like_a_split_before_scoring(reserved):
    """evaluate_detector scored validation and every scenario, then evaluate_scored_splits refused the name."""
    graphs = toy_graphs(4, num_ids=20, seed=1)
    scored = []

    def score(vgae, gat, dqn, graphs, batch_size, device):
        scored.append(len(graphs))
        return _scored([0, 1, 0, 1], [1.0, 2.0, 1.0, 2.0], [0.2, 0.8, 0.2, 0.8], [0.2, 0.8, 0.2, 0.8])

    message = (
        f"evaluate_detector's test_sets: a test scenario is named '{reserved}', which metrics.json keeps"
    )
    with pytest.raises(EvaluationSettingsError, match=re.escape(message)):
        evaluate_detector(None, None, None, graphs, {"dos": graphs, reserved: graphs}, score_fn=score)
    assert scored == []


def test_measure_inference_speed_without_graphs_is_an_input_error_naming_the_argument():
    """A plain ValueError("no graphs to measure inference speed on") named no argument and read as a bug."""
    with pytest.raises(EvaluationSettingsError, match=re.escape("measure_inference_speed's graphs is empty")):
        measure_inference_speed(_NodeModel(), _GraphModel(), torch.nn.Linear(2, 2), [], lambda *a, **k: None)


@pytest.mark.parametrize("roc", ["absent", None, ""])
def test_evaluate_files_refuses_an_output_without_a_path_as_a_rule_item_error(tmp_path, roc):
    """A missing output was a plain ValueError (a traceback in the wrapper), and one given as None or "" passed the
    check and failed on Path(None) or by writing the ROC curve to the current folder."""
    from kdgat.rule_items import RuleItemError

    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)
    outputs = {name: path for name, path in outputs.items() if name != "roc"}
    if roc != "absent":
        outputs["roc"] = roc
    message = "evaluate_files needs the outputs ['metrics', 'scores', 'roc', 'pr', 'confusion'], a path each"
    with pytest.raises(RuleItemError, match=re.escape(message) + r".*output\.<name>.*; missing \['roc'\]"):
        evaluate_files(
            **inputs, outputs=outputs, dataset="tiny", variant="teacher", device="cpu", speed=TINY_SPEED
        )
    assert isinstance(RuleItemError("x"), InputError)
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_metrics_json_records_the_hardware_and_torch_build_the_speed_was_measured_on(tmp_path, monkeypatch):
    """metrics.json recorded `device: cpu` or `cuda` only: its speed figures did not say which CPU or GPU (an H100
    and a V100 are both `cuda`) or which torch build timed them, though the stash key held both."""
    import kdgat.runtime

    monkeypatch.setattr(kdgat.runtime, "cpu_name", lambda *args: "Test CPU 9000")
    _unrendered(monkeypatch)
    outputs = _evaluation_outputs(tmp_path)
    document = evaluate_files(
        **tiny_evaluation_inputs(tmp_path), outputs=outputs, dataset="tiny", variant="teacher", device="cpu",
        threads=1, speed=TINY_SPEED,
    )  # fmt: skip
    written = json.loads(outputs["metrics"].read_text())
    for metrics in (document, written):
        assert metrics["device"] == "cpu"
        assert metrics["hardware"] == "Test CPU 9000, 1 threads"
        assert metrics["torch"] == f"torch {torch.__version__} CUDA {torch.version.cuda}"


def _labelled_graphs(labels):
    return [
        Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]), y=torch.tensor([y]))
        for y in labels
    ]


def _ranked_scores(vgae, gat, dqn, graphs, batch_size, device):
    """A score_fn that ranks the graphs in order (a detector stand-in for evaluate_detector)."""
    ranked = np.linspace(0.1, 0.9, len(graphs))
    return _scored([int(g.y) for g in graphs], ranked, ranked, ranked)


def test_evaluate_detector_called_directly_records_the_device_hardware_and_torch_build(monkeypatch):
    """Only evaluate_files added `device`, `hardware` and `torch` to the document: a library user who called
    evaluate_detector and wrote its document got a metrics.json whose speed figures said nothing of what measured
    them. The document records them itself: the device that ran it, and its hardware unless the caller names it."""
    import kdgat.runtime

    monkeypatch.setattr(kdgat.runtime, "cpu_name", lambda *args: "Test CPU 9000")
    graphs = _labelled_graphs([0, 1] * 4)
    models = (_NodeModel(), _GraphModel(), torch.nn.Linear(2, 2))
    speed = {"repeats": 1, "latency_runs": 1}
    build = f"torch {torch.__version__} CUDA {torch.version.cuda}"
    document, _ = evaluate_detector(*models, graphs, {"dos": graphs}, score_fn=_ranked_scores, speed=speed)
    threads = torch.get_num_threads()
    assert {key: document[key] for key in ("device", "hardware", "torch")} == {
        "device": "cpu",
        "hardware": f"Test CPU 9000, {threads} threads",
        "torch": build,
    }
    # beside each other and first, as in evaluate_files' metrics.json
    assert list(document)[:3] == ["device", "hardware", "torch"]
    named, _ = evaluate_detector(
        *models, graphs, {"dos": graphs}, score_fn=_ranked_scores, speed=speed, device=torch.device("cpu"),
        hardware="the lab's workstation",
    )  # fmt: skip
    assert (named["device"], named["hardware"], named["torch"]) == ("cpu", "the lab's workstation", build)


@pytest.mark.parametrize("hardware", [{"gpu": "NVIDIA H100"}, 9000, ["NVIDIA H100"], "", "  "])
def test_evaluate_detector_refuses_hardware_that_is_no_string_naming_the_argument_before_scoring(hardware):
    """A `hardware` a caller gave as a dict or a number was written into the document as is (and the summary showed
    its repr); it is refused as an input error naming the argument and what it takes, before any scoring."""
    graphs = _labelled_graphs([0, 1] * 4)
    scored = []

    def score(*args, **kwargs):
        scored.append(args)
        return _ranked_scores(*args, **kwargs)

    expected = "evaluate_detector's hardware must be a string naming what the speed is measured on"
    expected = re.escape(expected) + r".*got " + re.escape(repr(hardware))
    with pytest.raises(EvaluationSettingsError, match=expected):
        evaluate_detector(
            _NodeModel(), _GraphModel(), torch.nn.Linear(2, 2), graphs, {"dos": graphs}, score_fn=score,
            speed={"repeats": 1, "latency_runs": 1}, hardware=hardware,
        )  # fmt: skip
    assert scored == []
    assert isinstance(EvaluationSettingsError("x"), InputError)


@pytest.mark.usefixtures("one_torch_thread")
def test_an_evaluation_reads_each_graph_files_header_once_and_still_names_a_json_given_as_graphs(
    tmp_path, monkeypatch
):
    """The split check and the vocabulary check each read val.pt's and test.pt's header (memory-mapped): two reads
    of each file for two keys of one header. Both keys come from one read; a JSON given as the graphs is still
    refused with the unpickler's reason, naming the file."""
    _unrendered(monkeypatch)
    inputs, outputs = tiny_evaluation_inputs(tmp_path), _evaluation_outputs(tmp_path)
    settings = {"dataset": "tiny", "variant": "teacher", "device": "cpu", "speed": TINY_SPEED}
    reads = count_header_reads(monkeypatch)
    evaluate_files(**inputs, outputs=outputs, **settings)
    assert reads == {"val.pt": 1, "test.pt": 1}
    metadata = tmp_path / "metadata.json"
    metadata.write_text('{"num_ids": 20}')
    with pytest.raises(FileContentError) as error:
        evaluate_files(
            **(inputs | {"val": str(metadata)}), outputs=_evaluation_outputs(tmp_path / "2"), **settings
        )
    message = str(error.value)
    assert (
        message.startswith(f"{metadata}: not a readable kdgat graph file")
        and "Unsupported operand 123" in message
    )


def test_a_one_class_roc_or_pr_panel_draws_no_empty_legend_and_raises_no_warning(monkeypatch):
    """With one class on test and on validation the ROC and PR panels hold no curve: their legend, drawn anyway,
    raised matplotlib's "No artists with labels found to put in legend" warning. It is drawn only with curves."""
    import warnings

    figures = _drawn(monkeypatch)
    one_class = pd.concat(
        [_scored([0] * 6, *CURVE_SCORES.values()).assign(split=split) for split in ("val", "test")],
        ignore_index=True,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's warning fails the test
        plot_roc(one_class, "roc.svg")
        plot_pr(one_class, "pr.svg")
        plot_roc(_curve_frames(CURVE_LABELS), "roc.svg")
        plot_pr(_curve_frames(CURVE_LABELS), "pr.svg")
    assert [figure.axes[0].get_legend() is None for figure in figures] == [True, True, False, False]
    assert "undefined" in figures[0].axes[0].texts[0].get_text()
