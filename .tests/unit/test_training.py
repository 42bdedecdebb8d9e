"""Training loop: resume after a crash or a SIGKILL gives the same model as an uninterrupted run, early stopping,
device selection, the GPU memory record (null on the CPU), and clear errors on bad input."""

import copy
import json
import logging
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch, Data

from kdgat.files import FileContentError, save_torch
from kdgat.graph_store import save_graphs
from kdgat.models import GAT, VGAE, QNetwork
from kdgat.models.vgae import ERROR_TERMS, standardised_error, vgae_loss
from kdgat.runtime import restore_rng_state, rng_state, seed_everything, select_device
from kdgat.testing import TinyStage, toy_graphs
from kdgat.training import dqn as dqn_training
from kdgat.training import gat as gat_training
from kdgat.training import loop as training_loop
from kdgat.training import stage as training_stage
from kdgat.training import vgae as vgae_training
from kdgat.training.loop import KILL_AFTER_EPOCH_ENV
from kdgat.training.settings import SettingsError, StageSettings
from kdgat.training.stage import gpu_peak_mb, validation_metrics
from kdgat.training.vgae import graph_errors

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NUM_IDS = 20
TRAINING = {
    "epochs": 4,
    "batch_size": 16,
    "lr": 0.005,
    "weight_decay": 1e-4,
    "patience": 10,
    "grad_clip": 1.0,
}
CURRICULUM = {
    "enabled": True,
    "start_ratio": 1.0,
    "end_ratio": 3.0,
    "start_percentile": 0.0,
    "end_percentile": 50.0,
}
LOSS = {"id_weight": 0.1, "neighbour_weight": 0.05, "kl_weight": 0.01}


def settings(stage, training=None, variant="teacher", **section):
    """The settings of `stage` (of the teacher unless `variant` says) with the demo_student preset, curriculum off
    unless given."""
    config = {
        "teacher_preset": "demo_student",
        "student_preset": "demo_student",
        "seed": 5,
        "device": "cpu",
        "training": {stage: TRAINING | (training or {})},
        "curriculum": {"enabled": False},
    }
    return StageSettings.from_config(config | section, stage, variant)


@pytest.fixture(scope="module")
def graphs():
    return toy_graphs(120, num_ids=NUM_IDS, seed=1), toy_graphs(40, num_ids=NUM_IDS, seed=2)


@pytest.fixture(scope="module")
def trained_vgae(graphs):
    train, val = graphs
    model, *_ = vgae_training.train(train, val, NUM_IDS, settings("vgae", vgae_loss=LOSS))
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def losses(history):
    return [{k: v for k, v in row.items() if k not in {"seconds", "graphs_per_s"}} for row in history]


def crash_at(monkeypatch, stage_class, epoch_to_crash):
    original = stage_class.train_epoch

    def train_epoch(self, epoch):
        if epoch == epoch_to_crash:
            raise RuntimeError("simulated node failure")
        return original(self, epoch)

    monkeypatch.setattr(stage_class, "train_epoch", train_epoch)


def test_gat_resumes_after_a_crash_with_the_same_result(graphs, trained_vgae, tmp_path, monkeypatch):
    train, val = graphs
    gat_settings = settings("gat", curriculum=CURRICULUM)
    reference, reference_result, metrics, _ = gat_training.train(
        train, val, NUM_IDS, gat_settings, vgae=trained_vgae
    )
    assert metrics["gpu_peak_mem_mb"] is None  # trained on the CPU: no GPU peak recorded

    checkpoint = tmp_path / "last.pt"
    with monkeypatch.context() as patch:
        crash_at(patch, gat_training.GATStage, 2)  # dies during the third epoch
        with pytest.raises(RuntimeError, match="simulated"):
            gat_training.train(train, val, NUM_IDS, gat_settings, checkpoint, vgae=trained_vgae)
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1

    resumed, result, resumed_metrics, _ = gat_training.train(
        train, val, NUM_IDS, gat_settings, checkpoint, vgae=trained_vgae
    )
    assert result["resumed_from"] == 1
    assert (metrics["resumed_from_epoch"], resumed_metrics["resumed_from_epoch"]) == (None, 2)  # epochs done
    assert same_weights(resumed, reference)
    assert losses(result["history"]) == losses(reference_result["history"])


def test_gat_history_logs_each_epochs_curriculum_draw(graphs, trained_vgae):
    train, val = graphs
    _, result, *_ = gat_training.train(
        train, val, NUM_IDS, settings("gat", curriculum=CURRICULUM), vgae=trained_vgae
    )
    normals = sum(int(g.y) == 0 for g in train)
    attacks = len(train) - normals
    for epoch, row in enumerate(result["history"]):
        ratio, percentile = 1.0 + 2.0 * epoch / 3, 50.0 * epoch / 3  # CURRICULUM over TRAINING's 4 epochs
        assert row["curriculum_ratio"] == pytest.approx(ratio)
        assert row["curriculum_percentile"] == pytest.approx(percentile)
        assert row["curriculum_pool"] <= normals
        assert row["curriculum_normals"] == min(row["curriculum_pool"], round(ratio * attacks))
        assert row["train_attack_share"] == pytest.approx(attacks / (attacks + row["curriculum_normals"]))


def test_the_curriculum_draws_with_the_runs_seed(graphs, trained_vgae, monkeypatch):
    """kdgat.curriculum: each epoch's sample comes from a generator seeded by (kd_gat.seed, epoch): the same seed
    draws the same sample, another seed another one."""
    train, val = graphs
    samples = []
    original = gat_training.GATStage.epoch_sample

    def recorded(self, epoch):
        indices, draw = original(self, epoch)
        samples.append(sorted(indices.tolist()))
        return indices, draw

    monkeypatch.setattr(gat_training.GATStage, "epoch_sample", recorded)
    for seed in (5, 5, 6):
        half = CURRICULUM | {"start_ratio": 0.5, "end_ratio": 0.5}  # a draw from the pool, never all of it
        one_epoch = settings("gat", training={"epochs": 1}, curriculum=half, seed=seed)
        gat_training.train(train, val, NUM_IDS, one_epoch, vgae=trained_vgae)
    assert samples[0] == samples[1] and samples[0] != samples[2]


def test_vgae_anomaly_error_is_calibrated_on_normal_validation_windows(graphs, trained_vgae):
    _, val = graphs
    normal_val = [g for g in val if int(g.y) == 0]
    errors = graph_errors(trained_vgae, normal_val, 64, "cpu")
    for i, term in enumerate(ERROR_TERMS):  # each term's statistics over the normal validation windows
        assert float(trained_vgae.error_mean[i]) == pytest.approx(errors[term].mean(), rel=1e-4)
        assert float(trained_vgae.error_std[i]) == pytest.approx(errors[term].std(), rel=1e-3)


def test_the_vgae_learns_from_the_normal_training_graphs_alone(graphs):
    """kdgat.training.vgae: trained on the normal training graphs only; the attacks among them change nothing."""
    train, val = graphs
    normal = [g for g in train if int(g.y) == 0]
    assert len(normal) < len(train)
    two_epochs = settings("vgae", training={"epochs": 2}, vgae_loss=LOSS)
    from_all, _, metrics, _ = vgae_training.train(train, val, NUM_IDS, two_epochs)
    from_normal, *_ = vgae_training.train(normal, val, NUM_IDS, two_epochs)
    assert metrics["train_graphs"] == len(normal)
    assert same_weights(from_all, from_normal)  # incl. the calibration buffers


def test_the_vgae_stops_early_on_its_loss_over_the_normal_validation_graphs(graphs):
    """kdgat.training.vgae: early stopping watches the VGAE loss on normal validation graphs (attacks excluded)."""
    train, val = graphs
    one_batch = settings("vgae", training={"epochs": 1, "batch_size": 256}, vgae_loss=LOSS)
    model, result, *_ = vgae_training.train(train, val, NUM_IDS, one_batch)
    normal = Batch.from_data_list([g for g in val if int(g.y) == 0])
    assert normal.num_graphs < len(val)
    with torch.no_grad():
        out = model.eval()(normal.x, normal.edge_index)
        expected = float(vgae_loss(model, out, normal.x, normal.edge_index, **LOSS)["loss"])
    assert result["history"][0]["val_loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("val_normals", "source"), [(1, "training normals"), (2, "validation normals")])
def test_the_anomaly_error_statistics_come_from_the_training_normals_below_two_validation_normals(
    graphs, val_normals, source
):
    """kdgat.training.vgae: each term's mean and spread come from the normal validation graphs, or from the
    training normals when validation holds fewer than two (one graph has no spread)."""
    train, val = graphs
    few = [g for g in val if int(g.y) == 0][:val_normals] + [g for g in val if int(g.y) == 1]
    model, _, metrics, _ = vgae_training.train(train, few, NUM_IDS, settings("vgae", vgae_loss=LOSS))
    assert metrics["error_statistics_from"] == source
    normals = [g for g in (train if source == "training normals" else few) if int(g.y) == 0]
    errors = graph_errors(model, normals, 64, "cpu")
    for i, term in enumerate(ERROR_TERMS):
        assert float(model.error_mean[i]) == pytest.approx(errors[term].mean(), rel=1e-4)
        assert float(model.error_std[i]) == pytest.approx(errors[term].std(), rel=1e-3)


def test_identical_validation_normals_flag_a_real_difference_but_not_float_rounding(graphs):
    """kdgat.models.vgae.error_statistics and fit_threshold: validation normals that are one window repeated
    (periodic traffic with constant payloads) have no spread. Before 2026-12-07 each term's std was floored at 1e-8
    and the threshold at 1e-12, so a window whose errors differed by float rounding (relative 1e-7) scored ~10 and
    was an attack. Now the std is at least 1e-5 of the term's mean and a percentile threshold at least 1: rounding
    scores ~0.01 (normal), a 1% difference 1000 per term (an attack), and the copies themselves 0."""
    train, val = graphs
    normal = next(g for g in val if int(g.y) == 0)
    copies = [copy.deepcopy(normal) for _ in range(8)]
    model, _, metrics, _ = vgae_training.train(train, copies, NUM_IDS, settings("vgae", vgae_loss=LOSS))
    assert (metrics["error_statistics_from"], metrics["threshold_method"]) == (
        "validation normals",
        "normal_p95",
    )
    mean = model.error_mean.double()
    assert torch.allclose(model.error_std.double(), 1e-5 * mean.abs(), rtol=1e-6)
    threshold = metrics["anomaly_threshold"]
    assert threshold == 1.0
    assert (graph_errors(model, copies, 16, "cpu")["anomaly_error"] <= threshold).all()

    def scored(relative: float) -> float:
        shifted = {term: (mean[i] * (1 + relative)).float().reshape(1) for i, term in enumerate(ERROR_TERMS)}
        return float(model.anomaly_error(shifted))

    assert scored(1e-7) < 0.1 < threshold  # float32 rounding of the errors: normal
    assert scored(1e-2) == pytest.approx(3 * 1000, rel=1e-3)  # 1% on each term: 1000 floored stds each
    assert model.calibrated_anomaly(torch.tensor([scored(1e-2)])).item() > 0.5


def test_healthy_error_statistics_and_scores_are_those_of_the_plain_standard_deviation(graphs, trained_vgae):
    """The floor of 2026-12-07 (1e-5 × |mean|) lies far below a healthy term's spread, so healthy runs keep exactly
    the population std of the normal validation errors (as with the old floor of 1e-8) and so the same scores."""
    _, val = graphs
    errors = graph_errors(trained_vgae, [g for g in val if int(g.y) == 0], 16, "cpu")
    plain = [float(torch.as_tensor(errors[t], dtype=torch.float64).std(unbiased=False)) for t in ERROR_TERMS]
    assert all(std > 1e-3 * abs(float(m)) for std, m in zip(plain, trained_vgae.error_mean, strict=True))
    assert torch.equal(trained_vgae.error_std, torch.tensor([max(std, 1e-8) for std in plain]))
    scores = graph_errors(trained_vgae, val, 16, "cpu")
    expected = standardised_error(scores, trained_vgae.error_mean.numpy(), trained_vgae.error_std.numpy())
    assert np.array_equal(scores["anomaly_error"], expected.astype(np.float32))


def youden_j(labels: np.ndarray, predictions: np.ndarray) -> float:
    return predictions[labels == 1].mean() - predictions[labels == 0].mean()


@pytest.mark.parametrize(
    ("errors", "labels"),
    [
        ([0.1, 0.2, 0.3, 0.4, 0.15, 0.5], [0, 0, 1, 1, 0, 1]),  # separable
        ([0.1, 0.3, 0.2, 0.4, 0.25, 0.05], [0, 0, 1, 1, 1, 0]),  # overlapping
    ],
)
def test_the_youden_threshold_is_optimal_under_the_vgaes_own_rule_error_above_threshold(errors, labels):
    """The VGAE calls a window an attack when its anomaly error is above the threshold (calibrated anomaly > 0.5,
    the one fused-score rule). The threshold reaches the best Youden's J any cut of the validation errors reaches
    under that rule; sklearn's ROC threshold itself (meant for score >= t) lies on the lowest attack it counts,
    which the rule then calls normal."""
    errors, labels = np.array(errors, dtype=np.float32), np.array(labels)
    threshold, method = vgae_training.fit_threshold(errors, labels)
    assert method == "youden_j"
    cuts = np.concatenate([[errors.min() - 1], errors])
    best = max(youden_j(labels, (errors > cut).astype(float)) for cut in cuts)
    assert youden_j(labels, (errors > threshold).astype(float)) == pytest.approx(best)
    model = VGAE(NUM_IDS)
    model.anomaly_threshold.fill_(threshold)
    calibrated = model.calibrated_anomaly(torch.from_numpy(errors)).numpy()
    assert np.array_equal(calibrated > 0.5, errors > threshold)


def test_the_vgaes_youden_ties_go_to_the_higher_threshold_when_float_rounding_splits_them():
    """Cuts at errors 17 and 13 have the same J = 1/5 (3/10 − 1/10 and 5/10 − 3/10), which floats tell apart by an
    ulp: the higher cut (fewer false alarms) must win, as in the evaluation's youden_threshold."""
    errors = np.arange(20, 0, -1, dtype=np.float64)
    labels = np.array([0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    threshold, method = vgae_training.fit_threshold(errors, labels)
    assert method == "youden_j" and threshold == 16.5  # halfway between the cut 17 and the error below it


@pytest.mark.parametrize(
    ("errors", "labels"),
    [
        ([1.0, 5.0, 2.0, 4.0, 3.0, 2.5, 3.5], [0, 0, 0, 0, 0, 0, 0]),  # validation without attacks
        ([3.0, 4.0, 3.5, 5.0, 1.0, 2.0], [0, 0, 0, 0, 1, 1]),  # no cut flags attacks more than normals
    ],
)
def test_without_a_youden_cut_the_threshold_is_the_95th_percentile_of_the_normal_errors(errors, labels):
    errors, labels = np.array(errors), np.array(labels)
    threshold, method = vgae_training.fit_threshold(errors, labels)
    assert method == "normal_p95"
    assert threshold == pytest.approx(np.percentile(errors[labels == 0], 95))


def test_graph_errors_are_those_of_eval_mode_whatever_mode_the_model_is_in(graphs, trained_vgae):
    """kdgat.training.vgae.graph_errors: deterministic (z = μ, no dropout) and the model left in its mode."""
    _, val = graphs
    in_training = copy.deepcopy(trained_vgae).train()
    expected = graph_errors(copy.deepcopy(trained_vgae).eval(), val, 16, "cpu")
    errors = graph_errors(in_training, val, 16, "cpu")
    assert in_training.training
    for term in ERROR_TERMS:
        assert np.allclose(errors[term], expected[term], rtol=1e-5, atol=0)


def test_the_vgaes_per_epoch_val_auc_scores_the_anomaly_error_calibration_fits(graphs):
    """history.csv's val_auc of an epoch standardises the error terms by their statistics on the normal validation
    graphs, as the calibration after training does: after one epoch (the best) it is the final val_auc."""
    train, val = graphs
    one_epoch = settings("vgae", training={"epochs": 1}, vgae_loss=LOSS)
    _, result, metrics, _ = vgae_training.train(train, val, NUM_IDS, one_epoch)
    assert metrics["error_statistics_from"] == "validation normals"
    assert result["history"][0]["val_auc"] == pytest.approx(metrics["val_auc"], abs=1e-9)


def toy_fusion_inputs(n: int, generator: torch.Generator) -> dict:
    """Fusion inputs (kdgat.inference.fusion_inputs) of `n` made-up graphs: the GAT mostly right."""
    label = torch.randint(0, 2, (n,), generator=generator)
    p_attack = (label.float() * 0.6 + torch.rand(n, generator=generator) * 0.4).clamp(0, 1)
    anomaly = torch.rand(n, generator=generator)
    state = torch.cat([torch.rand(n, 13, generator=generator), anomaly[:, None], p_attack[:, None]], 1)
    return {"state": state, "anomaly": anomaly, "p_attack": p_attack, "label": label}


@pytest.fixture(scope="module")
def fusion_data():
    """(fit inputs, stop inputs) of a DQN."""
    generator = torch.Generator().manual_seed(0)
    return toy_fusion_inputs(300, generator), toy_fusion_inputs(100, generator)


# 4 updates per episode: a target sync every 5 falls mid-episode, so a resume must restore the update counter.
RL = {
    "buffer_size": 500,
    "batch_size": 32,
    "steps_per_episode": 64,
    "updates_per_episode": 4,
    "gamma": 0.2,
    "target_update": 5,
    "eps_start": 1.0,
    "eps_end": 0.1,
}


def test_dqn_resumes_after_a_crash_with_the_same_result(fusion_data, tmp_path, monkeypatch):
    train, val = fusion_data
    dqn_settings = settings("dqn", training={"epochs": 6, "lr": 0.001}, dqn=RL)
    reference, reference_result, metrics, _ = dqn_training.train(train, val, dqn_settings)
    assert metrics["gpu_peak_mem_mb"] is None  # trained on the CPU: no GPU peak recorded

    checkpoint = tmp_path / "dqn.pt"
    with monkeypatch.context() as patch:
        crash_at(patch, dqn_training.DQNStage, 3)
        with pytest.raises(RuntimeError):
            dqn_training.train(train, val, dqn_settings, checkpoint)
    resumed, result, *_ = dqn_training.train(train, val, dqn_settings, checkpoint)
    assert result["resumed_from"] == 2
    assert same_weights(resumed, reference)
    assert losses(result["history"]) == losses(reference_result["history"])


def test_checkpoint_of_other_settings_is_not_resumed(graphs, tmp_path, monkeypatch, caplog):
    """Set aside with a warning naming it and why (README: "a checkpoint of other settings ... is set aside with a
    warning"), and training starts afresh."""
    train, val = graphs
    checkpoint = tmp_path / "last.pt"
    with monkeypatch.context() as patch:
        crash_at(patch, gat_training.GATStage, 1)
        with pytest.raises(RuntimeError):
            gat_training.train(train, val, NUM_IDS, settings("gat"), checkpoint)
    other = settings("gat", training={"lr": 0.001})
    caplog.set_level(logging.WARNING)
    _, result, *_ = gat_training.train(train, val, NUM_IDS, other, checkpoint)
    assert result["resumed_from"] is None and len(result["history"]) == TRAINING["epochs"]
    # the setting that changed, as recorded and now: the line said only "other settings, inputs or formats"
    recorded = settings("gat").as_dict()["training"]["lr"]
    assert recorded != 0.001
    assert (
        f"ignoring checkpoint {checkpoint} (it belongs to other settings, inputs or formats: settings.training.lr "
        f"differs (recorded {recorded}, now 0.001)); training starts afresh" in caplog.text
    )


def test_early_stopping_stops_when_validation_loss_stalls(graphs):
    train, val = graphs
    frozen = settings("gat", training={"epochs": 10, "lr": 1e-12, "patience": 2})
    _, result, metrics, _ = gat_training.train(train, val, NUM_IDS, frozen)
    assert len(result["history"]) < 10
    assert metrics["epochs_run"] == len(result["history"])


def test_gat_validation_is_deterministic_the_loss_it_stops_on_is_the_one_reported(graphs):
    """The GAT validates in eval mode (no dropout): after one epoch (the best) the history's validation loss and
    AUC are metrics.json's."""
    train, val = graphs
    _, result, metrics, _ = gat_training.train(train, val, NUM_IDS, settings("gat", training={"epochs": 1}))
    for name in ("val_loss", "val_auc"):
        assert result["history"][0][name] == pytest.approx(metrics[name], rel=1e-6), name


def test_gat_validation_loss_is_the_mean_over_graphs_when_they_fill_several_batches(graphs):
    """The GAT's validation loss, which early stopping compares, is the mean cross-entropy over every validation
    graph, also when they take more than one batch (predict's batches hold at least 256 graphs: 300 here, so the
    last batch holds 44); a mean of the batch means would weigh the last batch's graphs 5.8 times as much."""
    train, _ = graphs
    val = toy_graphs(300, num_ids=NUM_IDS, seed=3)
    torch.manual_seed(0)
    model = GAT(NUM_IDS, **settings("gat").model)
    stage = gat_training.GATStage(model, train, val, settings("gat"), torch.device("cpu"))
    probs, loss = stage.predict(val)
    whole = Batch.from_data_list(val)
    with torch.no_grad():
        logits = model.eval()(whole.x, whole.edge_index, whole.batch).float()
    assert len(probs) == 300
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, whole.y.view(-1))), rel=1e-5)


@pytest.mark.parametrize(("setting", "value"), [("grad_clip", 1e-3), ("weight_decay", 0.5)])
def test_each_optimisation_setting_reaches_the_optimiser(graphs, setting, value):
    """kd_gat.training.<stage>.grad_clip and weight_decay change the training: another value, another model."""
    train, val = graphs
    one_epoch = settings("gat", training={"epochs": 1})
    reference, *_ = gat_training.train(train, val, NUM_IDS, one_epoch)
    other, *_ = gat_training.train(
        train, val, NUM_IDS, settings("gat", training={"epochs": 1, setting: value})
    )
    assert not same_weights(reference, other)


def test_the_training_batches_are_shuffled_by_the_seed(graphs):
    """The loader shuffles the training graphs with a generator of kd_gat.seed: from the same weights, one epoch
    on another seed's batches ends elsewhere, on the same seed's at the same weights."""
    train, val = graphs
    torch.manual_seed(0)
    model = GAT(NUM_IDS, **settings("gat").model)

    def one_epoch(seed):
        stage = gat_training.GATStage(
            copy.deepcopy(model), train, val, settings("gat", seed=seed), torch.device("cpu")
        )
        torch.manual_seed(0)  # the same dropout draws
        stage.train_epoch(0)
        return stage.model

    assert same_weights(one_epoch(5), one_epoch(5))
    assert not same_weights(one_epoch(5), one_epoch(6))


class ScriptedStage(TinyStage):
    """A stage whose validation losses are `val_losses`, one per epoch, and `untrained` (default: the first epoch's)
    before the first; epoch n (from 1) leaves every weight = n."""

    def __init__(self, val_losses, untrained=None):
        super().__init__()
        self.val_losses = [val_losses[0] if untrained is None else untrained, *val_losses]
        self.epochs_run = 0

    def train_epoch(self, epoch):
        self.epochs_run = epoch + 1
        with torch.no_grad():  # in place, as an optimiser step changes them
            for parameter in self.model.parameters():
                parameter.fill_(self.epochs_run)
        return {"graphs": 1}

    def validate(self):
        return {"val_loss": self.val_losses[self.epochs_run]}


@pytest.mark.parametrize(
    ("val_losses", "patience", "min_delta", "best"),
    [
        ([3.0, 1.0, 2.0, 1.5, 1.0, 0.5, 0.1], 3, 0.0, 2),  # no better loss in 3 epochs: stops after epoch 5
        ([3.0, 1.0, 1.0, 1.0, 0.1], 2, 0.0, 2),  # an equal loss is no improvement: stops after epoch 4
        ([3.0, 2.8, 2.6, 2.55, 1.0], 3, 0.5, 1),  # gains under min_delta do not count: stops after 4
    ],
)
def test_training_stops_patience_epochs_after_its_best_and_keeps_the_best_epochs_weights(
    val_losses, patience, min_delta, best
):
    """kdgat.training.loop.fit: an epoch improves when its validation loss is below the best by more than min_delta;
    after `patience` epochs without one training stops, and the model keeps the weights of its best epoch
    (best_epoch counts from 1, as history.csv's epoch)."""
    stage = ScriptedStage(val_losses)
    loop = training_loop.LoopSettings(epochs=len(val_losses), patience=patience, min_delta=min_delta)
    result = training_loop.fit(stage, loop, "fingerprint")
    assert [row["epoch"] for row in result["history"]] == list(range(1, best + patience + 1))
    assert (result["best_epoch"], result["best_val_loss"]) == (best, val_losses[best - 1])
    assert result["history"][best - 1]["val_loss"] == result["best_val_loss"]
    assert all(torch.all(parameter == best) for parameter in stage.model.parameters())


@pytest.mark.parametrize("stage", ["vgae", "gat"])
def test_a_diverged_training_stops_naming_the_stage_epoch_and_learning_rate(stage, graphs, tmp_path):
    """Weights gone to NaN (a learning rate far too high: at the first epoch here) stop the job at that epoch,
    naming the setting to change, instead of with sklearn's bare "Input contains NaN."; no checkpoint is written
    of NaN weights."""
    train, val = graphs
    loss = {"vgae_loss": LOSS} if stage == "vgae" else {}
    diverging = settings(stage, training={"lr": 1e8, "grad_clip": 1e30}, **loss)
    module = vgae_training if stage == "vgae" else gat_training
    checkpoint = tmp_path / "last.pt"
    with pytest.raises(ValueError, match=rf"{stage}\[teacher\] epoch 1: the validation loss is nan: training "
                       rf"diverged; lower kd_gat\.training\.{stage}\.lr \(1e\+08\)"):  # fmt: skip
        module.train(train, val, NUM_IDS, diverging, checkpoint)
    assert not checkpoint.exists()


@pytest.mark.parametrize("stage", ["vgae", "gat", "dqn"])
def test_a_training_exploded_to_finite_losses_stops_naming_the_stage_epoch_loss_and_learning_rate(
    stage, graphs, fusion_data
):
    """At learning rate 1e3 the weights explode but stay finite (the GAT's validation loss ~1e14, its AUC 0.5):
    the check of a loss that is not finite never fired, and the model was returned, saved and scored. The best
    validation loss more than DIVERGENCE_FACTOR times the untrained model's (the DQN's: its Q-values more than that
    times the largest return, its loss being minus a bounded reward) stops the run, naming the setting to change."""
    exploding = {"lr": 1e3} | ({"epochs": 4} if stage == "dqn" else {})
    loss = {"vgae_loss": LOSS} if stage == "vgae" else {"dqn": RL} if stage == "dqn" else {}
    diverging = settings(stage, training=exploding, **loss)
    why = (
        r"the largest \|Q-value\| on the stop graphs is [0-9.e+]+, more than 10 times the largest return an "
        r"episode can give \(1\.25\)"
        if stage == "dqn"
        else r"the best validation loss is [0-9.e+]+, more than 10 times the untrained model's \([0-9.]+\)"
    )
    fix = rf"lower kd_gat\.training\.{stage}\.lr \(1000\)"
    pattern = rf"{stage}\[teacher\] epoch \d \(the best\): {why}: training diverged; {fix}"
    with pytest.raises(ValueError, match=pattern) as raised:
        if stage == "dqn":
            dqn_training.train(*fusion_data, diverging)
        else:
            (vgae_training if stage == "vgae" else gat_training).train(*graphs, NUM_IDS, diverging)
    size = float(re.search(r"is ([0-9.e+]+), more", str(raised.value)).group(1))
    assert math.isfinite(size) and size > 100  # finite: the check of a loss that is not finite never fired


def test_the_gat_job_of_an_exploded_training_writes_no_model(graphs, tmp_path):
    """The hunt's case end to end: train_gat's library call at learning rate 1e3 wrote model.pt, metrics.json
    (val_auc 0.5) and history.csv of a diverged model; it stops before any output."""
    train, val = graphs
    inputs = {name: tmp_path / f"{name}.pt" for name in ("train", "val")}
    save_graphs(train, inputs["train"])
    save_graphs(val, inputs["val"])
    (tmp_path / "metadata.json").write_text(json.dumps({"num_ids": NUM_IDS}))
    outputs = {name: tmp_path / "out" / f"{name}.x" for name in ("model", "metrics", "history")}
    with pytest.raises(
        ValueError, match=r"gat\[teacher\] epoch \d \(the best\): the best validation loss is"
    ):
        gat_training.run(
            **inputs,
            metadata=tmp_path / "metadata.json",
            outputs=outputs,
            settings=settings("gat", training={"lr": 1e3}),
        )
    assert not any(path.exists() for path in outputs.values())


@pytest.mark.parametrize(
    ("val_losses", "untrained", "diverged_at"),
    [
        ([50.0, 30.0, 40.0], 2.0, 2),  # best 30 > 10 × 2: diverged, the best epoch named
        ([50.0, 19.9, 40.0], 2.0, None),  # best 19.9 within 10 × 2: kept (generous), though worse than none
        ([0.5, 0.2, 0.3], 0.0, None),  # an untrained loss of 0 (or below) gives no scale: nothing judged
    ],
)
def test_a_run_diverged_when_its_best_validation_loss_is_more_than_the_factor_times_the_untrained_ones(
    val_losses, untrained, diverged_at, tmp_path, monkeypatch
):
    """kdgat.training.loop.fit takes the untrained model's validation loss before the first epoch; after the last
    one, a best loss more than DIVERGENCE_FACTOR times that stops the run before fit returns its weights. A run
    resumed from its checkpoint judges by the untrained loss the checkpoint kept."""
    assert training_loop.DIVERGENCE_FACTOR == 10
    loop = training_loop.LoopSettings(epochs=3, patience=5, divergence_fix="lower x.lr (5)")
    if diverged_at is None:
        result = training_loop.fit(ScriptedStage(val_losses, untrained), loop, "fingerprint")
        assert result["untrained_val_loss"] == untrained
        return
    expected = (
        rf"train epoch {diverged_at} \(the best\): the best validation loss is {min(val_losses):g}, more than "
        rf"10 times the untrained model's \({untrained:g}\): training diverged; lower x\.lr \(5\)"
    )
    with pytest.raises(ValueError, match=expected):
        training_loop.fit(ScriptedStage(val_losses, untrained), loop, "fingerprint")
    checkpointed = training_loop.LoopSettings(epochs=3, patience=5, checkpoint=tmp_path / "last.pt")
    with monkeypatch.context() as patch:
        crash_at(patch, ScriptedStage, 2)  # dies during the third epoch
        with pytest.raises(RuntimeError, match="simulated"):
            training_loop.fit(ScriptedStage(val_losses, untrained), checkpointed, "fingerprint")
    resumed = ScriptedStage(val_losses, untrained)
    resumed.epochs_run = 2  # no longer untrained: asked again, it answers epoch 2's loss and the run passes
    with pytest.raises(ValueError, match=rf"the untrained model's \({untrained:g}\)"):
        training_loop.fit(resumed, checkpointed, "fingerprint")


class DrawingStage(ScriptedStage):
    """A scripted stage whose validation and epochs draw from the global and the loader's RNGs, as a real stage's
    dropout and shuffling would: an epoch's loss records what it drew."""

    def train_epoch(self, epoch):
        super().train_epoch(epoch)
        self.drawn = (
            float(torch.rand(1)) + float(torch.rand(1, generator=self.loader_generator)) + random.random()
        )
        return {"graphs": 1, "drawn": self.drawn}

    def validate(self):
        torch.rand(3), torch.rand(3, generator=self.loader_generator), np.random.rand(), random.random()  # noqa: NPY002
        return {"val_loss": 1.0 + self.epochs_run}


def test_taking_the_untrained_loss_changes_nothing_the_training_draws():
    """The untrained model's validation before the first epoch puts every RNG back: a healthy run trains exactly
    as before the rule (the demo's figures do not move)."""
    histories = []
    for loss_diverges in (True, False):  # False: no untrained validation, as before the rule
        seed_everything(3)
        loop = training_loop.LoopSettings(epochs=3, patience=5, loss_diverges=loss_diverges)
        result = training_loop.fit(DrawingStage([1.0, 1.0, 1.0]), loop, "fingerprint")
        histories.append([row["drawn"] for row in result["history"]])
    assert histories[0] == histories[1]


def test_a_vgae_without_normal_validation_graphs_stops_on_the_training_normals_not_on_attacks(graphs, caplog):
    """With validation of attack graphs alone, early stopping watched their loss: the epoch that reconstructs
    attacks best, the one that tells them from normal traffic worst. It watches the training normals' loss (the
    loss a validation of exactly those normals gives), says so in a warning and in metrics.json."""
    train, val = graphs
    attacks = [graph for graph in val if int(graph.y) == 1]
    normals = [graph for graph in train if int(graph.y) == 0]
    two_epochs = settings("vgae", training={"epochs": 2}, vgae_loss=LOSS)
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        _, result, metrics, _ = vgae_training.train(train, attacks, NUM_IDS, two_epochs)
    assert "hold no normal (y = 0) graph: early stopping watches the loss of the" in caplog.text
    assert metrics["val_loss_on"] == "training normals"
    _, reference, reference_metrics, _ = vgae_training.train(train, attacks + normals, NUM_IDS, two_epochs)
    assert reference_metrics["val_loss_on"] == "validation normals"
    assert [row["val_loss"] for row in result["history"]] == [row["val_loss"] for row in reference["history"]]


def single_id_window(can_id: int = 1) -> Data:
    """A normal window whose messages all carry one CAN ID: a graph of one node (its self-loop the only edge)."""
    x = torch.tensor([[float(can_id), *[0.0] * 8, 1.0, 1.0]])
    edge_index = torch.tensor([[0], [0]])
    return Data(x=x, edge_index=edge_index, edge_attr=torch.zeros(1, 1), y=torch.tensor([0]))


def test_a_vgae_batch_of_one_node_is_left_out_and_only_such_batches_are_refused_naming_the_stage(
    graphs, caplog
):
    """Batch norm cannot train on one node: a batch of one single-ID window stopped the VGAE with torch's bare
    "Expected more than 1 value per channel when training". Such a batch is left out with a warning; a training
    set of nothing else is refused naming the stage, the epoch and what to change."""
    train, val = graphs
    normals = [graph for graph in train if int(graph.y) == 0][:6]
    one_per_batch = settings("vgae", training={"epochs": 1, "batch_size": 1}, vgae_loss=LOSS)
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        _, result, _, _ = vgae_training.train([*normals, single_id_window()], val, NUM_IDS, one_per_batch)
    assert (
        "vgae[teacher] epoch 1: a training batch of one node (a window of a single CAN ID) is left out"
        in (caplog.text)
    )
    assert result["history"][0]["graphs"] == len(normals)
    with pytest.raises(
        FileContentError, match=r"vgae\[teacher\] epoch 1: every training batch holds one node"
    ):
        vgae_training.train([single_id_window()], val, NUM_IDS, one_per_batch)


def test_gat_training_on_attack_free_graphs_only_warns_that_it_learns_one_class(graphs, caplog):
    train, val = graphs
    normal = [graph for graph in train if int(graph.y) == 0]
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        gat_training.train(normal, val, NUM_IDS, settings("gat", training={"epochs": 1}))
    assert "every training graph is attack-free: the classifier learns one class only" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        gat_training.train(train, val, NUM_IDS, settings("gat", training={"epochs": 1}))
    assert "learns one class only" not in caplog.text


def test_validation_f1_without_an_attack_window_or_a_predicted_one_is_undefined_not_zero(graphs):
    """F1 is 0/0 on a validation split without attack windows where nothing is flagged: NaN (null in metrics.json),
    as the evaluation leaves it undefined, not the 0 of a model that missed every attack; a false alarm there makes
    it a defined 0, and a split with attacks gives the number."""
    assert math.isnan(validation_metrics([0, 0, 0], [0, 0, 0])["val_f1"])
    assert validation_metrics([0, 0, 0], [0, 1, 0])["val_f1"] == 0.0
    assert validation_metrics([0, 1, 1], [0, 1, 0])["val_f1"] == pytest.approx(2 / 3)
    train, val = graphs
    normal_val = [graph for graph in val if int(graph.y) == 0]
    _, result, metrics, _ = gat_training.train(
        train, normal_val, NUM_IDS, settings("gat", training={"epochs": 1})
    )
    assert metrics["val_acc"] == 1.0  # no false alarm on these normals: F1 is 0/0
    assert math.isnan(metrics["val_f1"]) and math.isnan(result["history"][0]["val_f1"])


KILLED_RUN = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from kdgat.testing import TinyStage, toy_graphs
    from kdgat.training import gat
    from kdgat.training.settings import StageSettings
    checkpoint, out = sys.argv[1], sys.argv[2]
    training = {"epochs": 5, "batch_size": 16, "lr": 0.005, "weight_decay": 1e-4, "patience": 10, "grad_clip": 1.0}
    config = {"teacher_preset": "demo_student", "seed": 3, "device": "cpu", "training": {"gat": training},
              "curriculum": {"enabled": False}}
    settings = StageSettings.from_config(config, "gat", "teacher")
    model, result, _, _ = gat.train(toy_graphs(100, 20, seed=1), toy_graphs(30, 20, seed=2), 20, settings,
                                    checkpoint if checkpoint != "-" else None)
    torch.save({"state": model.state_dict(), "history": result["history"],
                "resumed_from": result["resumed_from"]}, out)
    """
)


def test_killed_training_process_resumes_from_its_last_epoch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILLED_RUN)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = [sys.executable, str(script)]
    subprocess.run([*run, "-", str(tmp_path / "reference.pt")], check=True, env=env, timeout=300)

    checkpoint = tmp_path / "ckpt" / "last.pt"
    killed = subprocess.run(
        [*run, str(checkpoint), str(tmp_path / "never.pt")],
        env={**env, KILL_AFTER_EPOCH_ENV: "2"},
        timeout=300,
    )
    assert killed.returncode == -9  # SIGKILL right after the checkpoint of epoch 2
    assert not (tmp_path / "never.pt").exists()
    subprocess.run([*run, str(checkpoint), str(tmp_path / "resumed.pt")], check=True, env=env, timeout=300)

    reference = torch.load(tmp_path / "reference.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=False)
    assert resumed["resumed_from"] == 1  # 0-based: epochs 1 and 2 were done, it went on with epoch 3
    assert all(torch.equal(reference["state"][k], resumed["state"][k]) for k in reference["state"])
    assert losses(resumed["history"]) == losses(reference["history"])


HELD_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from kdgat.training import vgae
    from kdgat.training.settings import StageSettings
    data, out = Path(sys.argv[1]), Path(sys.argv[2])

    class HoldAfterFirstEpoch:  # keeps the job running until the test says go
        def epoch_ended(self, row, epochs, stopped_early):
            if row["epoch"] == 1:
                (data / "started").write_text("")
                deadline = time.monotonic() + 120
                while not (data / "go").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)

    training = {"epochs": 3, "batch_size": 16, "lr": 0.005, "weight_decay": 1e-4, "patience": 10, "grad_clip": 1.0}
    config = {"teacher_preset": "demo_student", "seed": 3, "device": "cpu", "training": {"vgae": training},
              "curriculum": {"enabled": False}}
    vgae.run(train=data / "train.pt", val=data / "val.pt", metadata=data / "metadata.json",
             settings=StageSettings.from_config(config, "vgae", "teacher"),
             outputs={"model": out / "model.pt", "metrics": out / "metrics.json", "history": out / "history.csv"},
             checkpoint=out / "last.pt", callbacks=(HoldAfterFirstEpoch(),))
    """
)


def test_a_second_run_on_the_same_output_stops_at_once_and_the_first_finishes_intact(graphs, tmp_path):
    """Two real processes, as when a user runs `kdgat train` by hand on the output a workflow job is writing: the
    second fails while the first is still training, naming the output, the first's PID and host; the first ends
    with whole outputs and no checkpoint or lock file left."""
    import socket

    from kdgat.model_store import load_model

    data, out = tmp_path / "data", tmp_path / "out"
    save_graphs(graphs[0], data / "train.pt")
    save_graphs(graphs[1], data / "val.pt")
    (data / "metadata.json").write_text(json.dumps({"num_ids": NUM_IDS}))
    (tmp_path / "held.py").write_text(HELD_RUN)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    first = subprocess.Popen([sys.executable, str(tmp_path / "held.py"), str(data), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not (data / "started").exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        # The first holds the output, mid-training.
        assert (data / "started").exists() and first.poll() is None
        second = subprocess.run(
            [sys.executable, "-m", "kdgat", "train", "vgae", "--data", str(data), "--out", str(out),
             "--device", "cpu", "--preset", "demo_student", "--epochs", "1", "--set", "curriculum.enabled=false",
             "--progress", "lines"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert first.poll() is None  # the second has ended while the first still trains: it did not wait
        assert second.returncode == 1, second.stderr
        assert (
            f"{out / 'model.pt'}: another process (pid {first.pid} on host {socket.gethostname()}) is writing "
            "this training output now" in second.stderr
        )
        assert "Traceback" not in second.stderr
    finally:
        (data / "go").write_text("")
        first.wait(timeout=120)
    assert first.returncode == 0
    assert sorted(path.name for path in out.iterdir()) == ["history.csv", "metrics.json", "model.pt"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3 and metrics["resumed_from_epoch"] is None  # the first's own, whole run
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 3
    load_model(out / "model.pt")


@pytest.mark.parametrize("stage", ["vgae", "gat", "dqn"])
def test_every_stage_refuses_an_output_or_checkpoint_another_job_holds_before_reading_inputs(stage, tmp_path):
    from kdgat.files import OutputInUse, output_lock

    module = {"vgae": vgae_training, "gat": gat_training, "dqn": dqn_training}[stage]
    missing = str(tmp_path / "missing.pt")  # read only after the locks: never reached
    read = (
        {"fit": missing, "vgae": missing, "gat": missing}
        if stage == "dqn"
        else {"train": missing, "val": missing}
    )
    inputs = {"metadata": missing} | read
    outputs = {name: tmp_path / "out" / f"{name}.x" for name in ("model", "metrics", "history")}
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    for held in (outputs["model"], checkpoint):
        with output_lock(held), pytest.raises(OutputInUse, match=re.escape(f"{held}: another process")):
            module.run(**inputs, settings=settings(stage), outputs=outputs, checkpoint=checkpoint)
    with pytest.raises(FileNotFoundError):  # and free, the same call goes on to read them
        module.run(**inputs, settings=settings(stage), outputs=outputs, checkpoint=checkpoint)


def test_a_stage_removes_the_temporary_files_a_killed_job_left_beside_its_model_and_checkpoint(tmp_path):
    """A job killed by SIGKILL (the OOM killer, a node failure) while writing model.pt or its checkpoint leaves the
    `.<name>.<12 hex>.tmp` atomic_write made, as big as a model; the next job, once it holds both locks, removes
    them (only a holder of those locks writes them), and nothing else of the folders."""
    outputs = {name: tmp_path / "out" / f"{name}.x" for name in ("model", "metrics", "history")}
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    left = [
        tmp_path / "out" / ".model.x.0123456789ab.tmp",
        tmp_path / "checkpoints" / ".last.pt.ba9876543210.tmp",
    ]
    kept = [tmp_path / "out" / ".metrics.x.0123456789ab.tmp", tmp_path / "checkpoints" / "notes.tmp"]
    for path in left + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a model")
    missing = str(tmp_path / "missing.pt")  # read after the locks: the job stops there
    with pytest.raises(FileNotFoundError):
        vgae_training.run(
            train=missing, val=missing, metadata=missing, settings=settings("vgae"), outputs=outputs,
            checkpoint=checkpoint,
        )  # fmt: skip
    assert [path.exists() for path in left] == [False, False]
    assert [path.exists() for path in kept] == [True, True]


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="kd_gat.device"):
            select_device("cuda")


def test_job_on_the_cpu_writes_a_null_gpu_peak(graphs, tmp_path):
    train, val = graphs
    inputs = {
        "train": tmp_path / "train.pt",
        "val": tmp_path / "val.pt",
        "metadata": tmp_path / "metadata.json",
    }
    save_graphs(train, inputs["train"])
    save_graphs(val, inputs["val"])
    inputs["metadata"].write_text(json.dumps({"num_ids": NUM_IDS}))
    outputs = {
        name: tmp_path / f"{name}.{ext}"
        for name, ext in (("model", "pt"), ("metrics", "json"), ("history", "csv"))
    }
    one_epoch = settings("vgae", training={"epochs": 1}, vgae_loss=LOSS)
    vgae_training.run(**inputs, outputs=outputs, settings=one_epoch)
    written = json.loads(outputs["metrics"].read_text())
    assert written["device"] == "cpu"
    assert "gpu_peak_mem_mb" in written and written["gpu_peak_mem_mb"] is None  # null, never a made-up number


def test_gpu_peak_is_read_from_the_cuda_allocator_only(monkeypatch):
    """The CUDA branch cannot run here (no GPU): its contract is that only a CUDA device asks the caching
    allocator for its reserved peak, converted from bytes to MB; every other device measures nothing."""
    asked = []

    def max_memory_reserved(device):
        asked.append(device)
        return 3 * 2**30 + 2**19  # 3 GiB and half a MiB, in bytes

    monkeypatch.setattr(torch.cuda, "max_memory_reserved", max_memory_reserved)
    assert gpu_peak_mb(torch.device("cpu")) is None and gpu_peak_mb(torch.device("meta")) is None
    assert asked == []
    assert gpu_peak_mb(torch.device("cuda", 1)) == 3072.5
    assert asked == [torch.device("cuda", 1)]


def test_bad_preprocess_files_give_clear_errors(tmp_path):
    outputs = {k: str(tmp_path / f"out.{k}") for k in ("model", "metrics", "history")}
    inputs = {name: tmp_path / file for name, file in (("train", "train.pt"), ("val", "val.pt"))}
    inputs["metadata"] = tmp_path / "metadata.json"

    def run():
        vgae_training.run(**inputs, outputs=outputs, settings=settings("vgae", vgae_loss=LOSS))

    with pytest.raises(FileNotFoundError, match="metadata.json"):
        run()
    (tmp_path / "metadata.json").write_text(json.dumps({"num_ids": "many"}))
    with pytest.raises(FileContentError, match="num_ids"):
        run()
    (tmp_path / "metadata.json").write_text(json.dumps({"num_ids": 5}))
    with pytest.raises(FileNotFoundError, match="train.pt"):
        run()
    with pytest.raises(ValueError, match="settings for the gat stage were given to the vgae stage"):
        vgae_training.run(**inputs, outputs=outputs, settings=settings("gat"))
    without_history = {name: path for name, path in outputs.items() if name != "history"}
    with pytest.raises(ValueError, match=r"the vgae stage needs the outputs .*; missing \['history'\]"):
        vgae_training.run(**inputs, outputs=without_history, settings=settings("vgae", vgae_loss=LOSS))


@pytest.mark.parametrize("missing", ["metadata", "train", "val"])
def test_a_missing_training_input_is_the_users_mistake_named_with_its_path(tmp_path, missing):
    """A bare FileNotFoundError made the training wrappers print a traceback for a path the user got wrong."""
    from kdgat.training.data import load_training_data
    from wrapper_rules import InputError

    files = {
        "train": tmp_path / "train.pt",
        "val": tmp_path / "val.pt",
        "metadata": tmp_path / "metadata.json",
    }
    save_graphs(toy_graphs(4, num_ids=NUM_IDS, seed=0), files["train"])
    save_graphs(toy_graphs(4, num_ids=NUM_IDS, seed=1), files["val"])
    files["metadata"].write_text(json.dumps({"num_ids": NUM_IDS}))
    files[missing].unlink()
    with pytest.raises(InputError) as error:
        load_training_data(files["train"], files["val"], files["metadata"])
    assert isinstance(error.value, FileNotFoundError)  # code catching that still does
    assert str(error.value).startswith(
        f"input {missing!r} of the training job does not exist: {files[missing]} ("
    )


def test_a_missing_dqn_input_is_the_users_mistake_named_with_its_path(tmp_path):
    from wrapper_rules import InputError

    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"num_ids": NUM_IDS}))
    inputs = {name: str(tmp_path / f"{name}.pt") for name in ("fit", "vgae", "gat")}
    outputs = {name: tmp_path / "out" / f"{name}.x" for name in ("model", "metrics", "history")}
    with pytest.raises(
        InputError, match=rf"^input 'vgae' of the training job does not exist: {inputs['vgae']} \("
    ):
        dqn_training.run(**inputs, metadata=metadata, settings=settings("dqn"), outputs=outputs)


def test_graphs_breaking_the_contract_are_rejected():
    from kdgat.training.data import check_graphs

    graphs = toy_graphs(3, num_ids=20, seed=0)
    with pytest.raises(ValueError, match=r"train.pt: graph 0 has a CAN-ID index >= num_ids=10"):
        check_graphs(graphs, 10, "train.pt")
    graphs[1].x = graphs[1].x[:, :5]
    with pytest.raises(ValueError, match=r"graph 1 has x of shape .* expected \[N, 11\]"):
        check_graphs(graphs, 20, "train.pt")
    # A label other than 0/1: the VGAE took it for an attack, silently; the GAT crashed on an IndexError.
    graphs = toy_graphs(3, num_ids=20, seed=0)
    graphs[2].y = torch.tensor([2])
    with pytest.raises(
        ValueError, match=r"val.pt: graph 2 has the label y=2, expected 0 \(normal\) or 1 \(attack\)"
    ):
        check_graphs(graphs, 20, "val.pt")
    # A NaN feature made every loss NaN: the job then blamed the learning rate (a diverged run).
    graphs = toy_graphs(3, num_ids=20, seed=0)
    graphs[1].x[0, 4] = float("nan")
    with pytest.raises(
        ValueError, match=r"train.pt: graph 1 has node features that are not finite \(NaN or inf\)"
    ):
        check_graphs(graphs, 20, "train.pt")


def test_graphs_breaking_the_contract_are_refused_as_the_users_file_naming_it_not_as_a_bug():
    """check_graphs: a graph file of another tool or run is the user's mistake, a FileContentError (an InputError:
    the wrappers print one line, no traceback) naming the file and the graph; a negative CAN-ID index too (the
    embedding refused it with an IndexError)."""
    from kdgat.files import FileContentError
    from kdgat.training.data import check_graphs
    from wrapper_rules import InputError

    graphs = toy_graphs(3, num_ids=20, seed=0)
    graphs[2].y = torch.tensor([2])
    with pytest.raises(FileContentError, match=r"^val.pt: graph 2 has the label y=2, expected 0") as raised:
        check_graphs(graphs, 20, "val.pt")
    assert isinstance(raised.value, InputError)
    graphs = toy_graphs(3, num_ids=20, seed=0)
    graphs[1].x[0, 0] = -3
    with pytest.raises(
        FileContentError,
        match=r"^train.pt: graph 1 has a negative CAN-ID index -3, expected 0 to num_ids - 1 = 19 \(metadata.json\)$",
    ):
        check_graphs(graphs, 20, "train.pt")
    for broken in ("shape", "nan", "id", "label"):
        graphs = toy_graphs(3, num_ids=20, seed=0)
        if broken == "shape":
            graphs[0].x = graphs[0].x[:, :5]
        elif broken == "nan":
            graphs[0].x[0, 4] = float("nan")
        elif broken == "label":
            graphs[0].y = None
        with pytest.raises(FileContentError, match=r"^train.pt: graph 0 "):
            check_graphs(graphs, 10 if broken == "id" else 20, "train.pt")


def test_a_can_id_index_is_accepted_below_num_ids_and_refused_from_num_ids_on():
    """The vocabulary holds num_ids indices, 0 to num_ids - 1 (the OOV index included)."""
    from kdgat.training.data import check_graphs

    graphs = toy_graphs(3, num_ids=20, seed=0)
    highest = max(int(graph.x[:, 0].max()) for graph in graphs)
    check_graphs(graphs, highest + 1, "train.pt")
    with pytest.raises(ValueError, match=rf"has a CAN-ID index >= num_ids={highest}"):
        check_graphs(graphs, highest, "train.pt")


def test_a_training_job_checks_its_validation_graphs_and_refuses_an_empty_graph_file(tmp_path):
    from kdgat.training.data import load_training_data

    files = {name: tmp_path / f"{name}.pt" for name in ("train", "val")}
    save_graphs(toy_graphs(4, num_ids=NUM_IDS, seed=0), files["train"])
    val = toy_graphs(4, num_ids=NUM_IDS, seed=1)
    val[3].y = torch.tensor([2])
    save_graphs(val, files["val"])
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"num_ids": NUM_IDS}))
    with pytest.raises(ValueError, match=rf"{files['val']}: graph 3 has the label y=2"):
        load_training_data(files["train"], files["val"], metadata)
    save_graphs([], files["val"])
    with pytest.raises(
        FileContentError, match=rf"{files['val']}: contains no graphs"
    ):  # the user's, no traceback
        load_training_data(files["train"], files["val"], metadata)


def test_the_dqn_refuses_graphs_a_base_model_was_trained_on(tmp_path):
    """kdgat.training.data.refuse_training_graphs: a fit or stop graph file that is one a base model recorded as
    its training file is refused, naming both; other files, and models that record none, pass."""
    from kdgat.files import file_sha256
    from kdgat.model_store import save_model
    from kdgat.training.data import refuse_training_graphs

    train, held_out = tmp_path / "train.pt", tmp_path / "fusion.pt"
    save_graphs(toy_graphs(4, num_ids=NUM_IDS, seed=0), train)
    save_graphs(toy_graphs(4, num_ids=NUM_IDS, seed=1), held_out)
    gat, older = tmp_path / "gat.pt", tmp_path / "older.pt"
    save_model(GAT(NUM_IDS), "gat", {"num_ids": NUM_IDS}, gat, trained_on=file_sha256(train))
    save_model(GAT(NUM_IDS), "gat", {"num_ids": NUM_IDS}, older)  # records no training file
    refuse_training_graphs({"fit": held_out, "stop": None}, {"gat": gat, "vgae": older, "teacher_gat": None})
    with pytest.raises(
        ValueError, match=rf"{train}: the stop graphs are the graphs gat \({gat}\) trained on"
    ):
        refuse_training_graphs({"fit": held_out, "stop": train}, {"gat": gat, "vgae": older})


def test_a_model_of_another_stage_given_in_its_place_is_refused_naming_the_file_and_both_kinds(tmp_path):
    """`kdgat train dqn --vgae <gat model.pt> --gat <vgae model.pt>` (two files swapped) failed deep inside the
    fusion inputs with "AttributeError: 'GAT' object has no attribute 'graph_errors'" and a traceback."""
    from kdgat.model_store import save_model

    fit, metadata, gat = tmp_path / "fusion.pt", tmp_path / "metadata.json", tmp_path / "gat.pt"
    save_graphs(toy_graphs(8, num_ids=NUM_IDS, seed=0), fit)
    metadata.write_text(json.dumps({"num_ids": NUM_IDS}))
    save_model(GAT(NUM_IDS), "gat", {"num_ids": NUM_IDS}, gat)
    outputs = {name: tmp_path / "out" / f"{name}.x" for name in ("model", "metrics", "history")}
    wrong = rf"{gat}: a kd_gat gat model, given where the vgae model is expected"
    with pytest.raises(ValueError, match=wrong):
        dqn_training.run(
            fit=fit, metadata=metadata, vgae=gat, gat=gat, settings=settings("dqn"), outputs=outputs
        )
    with pytest.raises(ValueError, match=wrong):  # the GAT stage's curriculum VGAE
        gat_training.run(
            train=fit, val=fit, metadata=metadata, vgae=gat, settings=settings("gat"), outputs=outputs
        )
    with pytest.raises(
        ValueError, match=rf"{gat}: a kd_gat gat model, given where the vgae model is expected"
    ):
        # student_kd: the variant that takes a teacher (any other refuses one before its kind is looked at)
        vgae_training.run(train=fit, val=fit, metadata=metadata, teacher=gat,
                          settings=settings("vgae", variant="student_kd"), outputs=outputs)  # fmt: skip
    assert not (tmp_path / "out").exists()


# -- resuming: what must survive a crash, and checkpoints that must not be resumed ------------------------------
@pytest.fixture
def global_rng():
    """The test may reseed the global random streams: later tests get them back as they were."""
    before = rng_state()
    yield
    restore_rng_state(before)


def draws(loader_generator: torch.Generator) -> dict:
    """One number from each random stream a training run, or code it calls, may draw from."""
    return {
        "python": random.random(),
        "numpy": np.random.random(),  # noqa: NPY002 (the legacy global state third-party code uses)
        "torch": torch.rand(1).item(),
        "loader": torch.rand(1, generator=loader_generator).item(),
    }


def test_seed_everything_seeds_every_global_random_stream(global_rng):
    seed = 1234
    seed_everything(seed)
    drawn = draws(torch.Generator())
    assert drawn["python"] == random.Random(seed).random()
    assert drawn["numpy"] == np.random.RandomState(seed).random_sample()  # noqa: NPY002
    assert drawn["torch"] == torch.rand(1, generator=torch.Generator().manual_seed(seed)).item()


def test_a_checkpoints_rng_state_resumes_every_random_stream(global_rng, tmp_path):
    seed_everything(3)  # the interrupted run
    loader = torch.Generator().manual_seed(3)
    checkpoint = save_torch({"rng": rng_state(loader)}, tmp_path / "last.pt")  # as fit() saves it each epoch
    expected = draws(loader)
    seed_everything(99)  # the resumed process: every stream elsewhere
    loader.manual_seed(99)
    restore_rng_state(training_loop.read_checkpoint(checkpoint, "gat")["rng"], loader)
    assert draws(loader) == expected


@pytest.mark.parametrize(("saved_gpus", "seen_gpus"), [(2, 1), (4, 2), (1, 2)])
def test_a_checkpoint_from_a_process_that_saw_another_number_of_gpus_restores_those_both_saw(
    global_rng, monkeypatch, tmp_path, saved_gpus, seen_gpus
):
    """restore_rng_state called torch.cuda.set_rng_state_all with the checkpoint's per-GPU states: written by a
    process that saw more GPUs than the resuming one, the first state beyond them raised (torch's
    default_generators[index]) and the checkpoint was set aside as "does not fit the model", losing the run's
    epochs. torch.cuda is faked here: each GPU's state is set through set_rng_state, which fails as torch's does
    for a GPU the process does not see."""
    restored = {}

    def set_rng_state(new_state, device="cuda"):
        index = torch.device(device).index if not isinstance(device, int) else device
        if index >= seen_gpus:
            raise IndexError("tuple index out of range")  # torch.cuda.default_generators[index]
        restored[index] = new_state

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: seen_gpus)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.full((8,), 99, dtype=torch.uint8)])
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)  # what set_rng_state_all calls
    gpu_states = [torch.full((8,), index, dtype=torch.uint8) for index in range(saved_gpus)]
    stage = TinyStage()
    saved = {
        "stage": stage.state_dict(),
        **dict.fromkeys(("epoch", "best_val", "best_epoch", "bad_epochs", "untrained_val"), 1),
        "best_weights": stage.state_dict(),
        "history": [],
        "rng": {**rng_state(stage.loader_generator), "cuda": gpu_states},
    }
    assert training_loop.restore(stage, saved, tmp_path / "last.pt", "gat")  # resumed, not set aside
    both = min(saved_gpus, seen_gpus)
    assert sorted(restored) == list(range(both))
    for index in range(both):
        assert torch.equal(restored[index], gpu_states[index])


@pytest.fixture(scope="module")
def teachers(graphs, trained_vgae):
    """A VGAE, GAT and DQN to distil from (the GAT and DQN untrained: any teacher gives a distillation term)."""
    torch.manual_seed(0)
    gat = GAT(NUM_IDS, **settings("gat").model).eval()
    q_network = QNetwork(**settings("dqn", dqn=RL).model).eval()
    generator = torch.Generator().manual_seed(1)
    fusion = toy_fusion_inputs(300, generator), toy_fusion_inputs(100, generator)  # the teacher's own inputs
    return {"vgae": trained_vgae, "gat": gat, "dqn": q_network, "fusion": fusion}


def nudged(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` with one weight changed a little: another teacher or VGAE."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3
    return other


@pytest.mark.parametrize("variant", ["teacher", "student_kd"])
def test_vgae_resumes_after_a_crash_with_the_same_result(graphs, teachers, variant, tmp_path, monkeypatch):
    train, val = graphs
    vgae_settings = settings("vgae", variant=variant, vgae_loss=LOSS)
    teacher = teachers["vgae"] if variant == "student_kd" else None
    reference, reference_result, *_ = vgae_training.train(train, val, NUM_IDS, vgae_settings, teacher=teacher)

    checkpoint = tmp_path / "last.pt"
    with monkeypatch.context() as patch:
        crash_at(patch, vgae_training.VGAEStage, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            vgae_training.train(train, val, NUM_IDS, vgae_settings, checkpoint, teacher=teacher)
    resumed, result, *_ = vgae_training.train(train, val, NUM_IDS, vgae_settings, checkpoint, teacher=teacher)
    assert result["resumed_from"] == 1
    assert same_weights(resumed, reference)  # incl. the calibration buffers fitted after training
    assert losses(result["history"]) == losses(reference_result["history"])


def test_early_stopping_carries_across_a_resume(graphs, tmp_path, monkeypatch):
    """The best weights, best validation loss and epochs without improvement of the checkpoint decide when the
    resumed run stops and what it keeps."""
    train, val = graphs
    quick = settings("gat", training={"epochs": 15, "lr": 0.2, "patience": 3})
    reference, reference_result, *_ = gat_training.train(train, val, NUM_IDS, quick)
    best, stopped = reference_result["best_epoch"], len(reference_result["history"])
    crash = best + 1  # 0-based: the run dies one epoch after its best one
    assert crash < stopped < 15  # the best epoch before the crash, the early stop after it

    checkpoint = tmp_path / "last.pt"
    with monkeypatch.context() as patch:
        crash_at(patch, gat_training.GATStage, crash)
        with pytest.raises(RuntimeError, match="simulated"):
            gat_training.train(train, val, NUM_IDS, quick, checkpoint)
    resumed, result, *_ = gat_training.train(train, val, NUM_IDS, quick, checkpoint)
    assert result["resumed_from"] == crash - 1
    assert (result["best_epoch"], len(result["history"])) == (best, stopped)
    assert result["best_val_loss"] == reference_result["best_val_loss"]
    assert same_weights(resumed, reference)  # the best epoch's weights, written before the crash


def test_a_job_killed_after_its_early_stop_does_not_train_on_when_resumed(graphs, tmp_path):
    """Killed after the checkpoint of the epoch that stopped it early (e.g. while writing its outputs), the rerun
    resumes into a stopped run: no further epoch, the same model."""
    train, val = graphs
    quick = settings("gat", training={"epochs": 15, "lr": 0.2, "patience": 3})
    checkpoint = tmp_path / "last.pt"
    stopped_model, stopped, *_ = gat_training.train(train, val, NUM_IDS, quick, checkpoint)
    epochs = len(stopped["history"])
    assert (
        epochs < 15 and checkpoint.exists()
    )  # train() leaves the checkpoint; run() drops it after the outputs
    resumed_model, resumed, *_ = gat_training.train(train, val, NUM_IDS, quick, checkpoint)
    assert resumed["resumed_from"] == epochs - 1 and len(resumed["history"]) == epochs
    assert same_weights(resumed_model, stopped_model)


def crashed_checkpoint(monkeypatch, stage_class, run, tmp_path, name="last.pt"):
    """The checkpoint `run(checkpoint)` leaves when it dies during its third epoch."""
    checkpoint = tmp_path / name
    with monkeypatch.context() as patch:
        crash_at(patch, stage_class, 2)
        with pytest.raises(RuntimeError, match="simulated"):
            run(checkpoint)
    return checkpoint


def changed(value):
    """`value` with one number changed a little: other graphs, fusion inputs, teacher or VGAE."""
    if isinstance(value, torch.nn.Module):
        return nudged(value)
    if isinstance(value, dict):  # fusion inputs
        state = value["state"].clone()
        state[0, 0] += 1e-3
        return value | {"state": state}
    graphs = [graph.clone() for graph in value]
    graphs[0].x[0, 1] += 1e-3
    return graphs


@pytest.mark.parametrize(
    ("stage", "changing"),
    [("vgae", "train"), ("vgae", "val"), ("vgae", "teacher"), ("gat", "train"), ("gat", "val")]
    + [("gat", "teacher"), ("gat", "vgae"), ("dqn", "train"), ("dqn", "val"), ("dqn", "teacher")]
    + [("dqn", "teacher_inputs")],
)
def test_a_checkpoint_is_resumed_only_on_the_inputs_it_was_written_on(
    graphs, fusion_data, teachers, stage, changing, tmp_path, monkeypatch, caplog
):
    """Other graphs (fusion inputs for the DQN), another teacher (or the teacher's own fusion inputs), or another
    VGAE drawing the GAT's curriculum: training starts afresh; the inputs the checkpoint was written on: it
    resumes."""
    variant = "student_kd" if changing in ("teacher", "teacher_inputs") else "teacher"
    train, val = fusion_data if stage == "dqn" else graphs
    inputs = {"train": train, "val": val, "teacher": teachers[stage] if variant == "student_kd" else None}
    if stage == "vgae":
        stage_class, stage_settings = (
            vgae_training.VGAEStage,
            settings("vgae", variant=variant, vgae_loss=LOSS),
        )

        def run(checkpoint, train, val, teacher):
            return vgae_training.train(train, val, NUM_IDS, stage_settings, checkpoint, teacher=teacher)
    elif stage == "gat":
        curriculum = CURRICULUM if changing == "vgae" else {"enabled": False}
        stage_class, stage_settings = (
            gat_training.GATStage,
            settings("gat", variant=variant, curriculum=curriculum),
        )
        inputs["vgae"] = teachers["vgae"]

        def run(checkpoint, train, val, teacher, vgae):
            return gat_training.train(train, val, NUM_IDS, stage_settings, checkpoint, teacher, vgae)
    else:
        stage_class, stage_settings = (
            dqn_training.DQNStage,
            settings("dqn", variant=variant, dqn=RL | {"keep_folds": 0}),
        )
        inputs["teacher_inputs"] = teachers["fusion"][0] if variant == "student_kd" else None

        def run(checkpoint, train, val, teacher, teacher_inputs):
            return dqn_training.train(train, val, stage_settings, checkpoint, teacher, teacher_inputs)

    checkpoint = crashed_checkpoint(monkeypatch, stage_class, lambda c: run(c, **inputs), tmp_path)
    copied = tmp_path / "copy.pt"
    copied.write_bytes(checkpoint.read_bytes())
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        _, elsewhere, *_ = run(copied, **(inputs | {changing: changed(inputs[changing])}))
    assert elsewhere["resumed_from"] is None and len(elsewhere["history"]) == TRAINING["epochs"]
    # the input that changed, with its recorded and present digests (12 hex digits each)
    assert re.search(
        rf"ignoring checkpoint {re.escape(str(copied))} \(it belongs to other settings, inputs or formats: "
        rf"inputs\.{changing} differs \(recorded [0-9a-f]{{12}}, now [0-9a-f]{{12}}\)\)",
        caplog.text,
    ), caplog.text
    _, again, *_ = run(checkpoint, **inputs)
    assert again["resumed_from"] == 1  # the same inputs: resumed


def test_a_gat_without_curriculum_resumes_whatever_vgae_it_is_given(graphs, teachers, tmp_path, monkeypatch):
    """The VGAE draws only the curriculum: a GAT trained without one resumes its checkpoint when the VGAE was
    retrained meanwhile (the workflow gives every GAT job its VGAE), instead of starting again."""
    train, val = graphs
    stage_settings = settings("gat", variant="teacher", curriculum={"enabled": False})

    def run(checkpoint, vgae):
        return gat_training.train(train, val, NUM_IDS, stage_settings, checkpoint, None, vgae)

    checkpoint = crashed_checkpoint(
        monkeypatch, gat_training.GATStage, lambda c: run(c, teachers["vgae"]), tmp_path
    )
    _, resumed, *_ = run(checkpoint, changed(teachers["vgae"]))
    assert resumed["resumed_from"] == 1


@pytest.mark.parametrize(
    ("format_name", "other"),
    [("MODEL_FORMAT", "kdgat-model/99"), ("CHECKPOINT_FORMAT", "kdgat-checkpoint/99")],
)
def test_a_checkpoint_of_another_model_or_checkpoint_format_is_not_resumed(
    graphs, format_name, other, tmp_path, monkeypatch, caplog
):
    train, val = graphs
    gat_settings = settings("gat")

    def run(checkpoint):
        return gat_training.train(train, val, NUM_IDS, gat_settings, checkpoint)

    checkpoint = crashed_checkpoint(monkeypatch, gat_training.GATStage, run, tmp_path)
    monkeypatch.setattr(training_loop, format_name, other)  # the layout changed since
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        _, result, *_ = run(checkpoint)
    assert result["resumed_from"] is None and len(result["history"]) == TRAINING["epochs"]
    assert f"ignoring checkpoint {checkpoint} (it belongs to other" in caplog.text


def test_a_checkpoint_of_other_training_code_is_not_resumed_and_the_log_says_why(
    graphs, tmp_path, monkeypatch, caplog
):
    """A job killed mid-training and rerun after an upgrade of the training or model code (a loss, a layer) starts
    afresh, saying why in one line, instead of finishing the old code's weights with the new code."""
    train, val = graphs
    gat_settings = settings("gat")

    def run(checkpoint):
        return gat_training.train(train, val, NUM_IDS, gat_settings, checkpoint)

    checkpoint = crashed_checkpoint(monkeypatch, gat_training.GATStage, run, tmp_path)
    # the code changed since: one file of it, which the line names (it said only "other ... code")
    digests = training_loop.training_code_digests()
    recorded = digests["training/gat.py"]
    monkeypatch.setattr(
        training_loop, "training_code_digests", lambda: digests | {"training/gat.py": "0123456789abcdef"}
    )
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        _, result, *_ = run(checkpoint)
    assert result["resumed_from"] is None and [row["epoch"] for row in result["history"]] == list(
        range(1, TRAINING["epochs"] + 1)
    )
    ignored = [
        record.getMessage() for record in caplog.records if "ignoring checkpoint" in record.getMessage()
    ]
    assert ignored == [
        f"gat[teacher]: ignoring checkpoint {checkpoint} (it was written by other kdgat training or model "
        f"code: kdgat/training/gat.py differs (recorded {recorded}, now 0123456789ab)); training starts afresh"
    ]


def rename_a_model_weight(state):
    model = state["stage"]["model"]
    model["renamed." + next(iter(model))] = model.pop(next(iter(model)))


def shrink_an_optimiser_group(
    state,
):  # the model loads, then the optimiser does not: nothing must stay loaded
    state["stage"]["optimizer"]["param_groups"][0]["params"].pop()


def drop_the_epochs_without_improvement(state):
    del state["bad_epochs"]


@pytest.mark.parametrize(
    "damage", [rename_a_model_weight, shrink_an_optimiser_group, drop_the_epochs_without_improvement]
)
def test_a_checkpoint_that_does_not_fit_the_model_is_set_aside(graphs, damage, tmp_path, monkeypatch, caplog):
    """E.g. a model whose layout changed without a format bump: warned about by name, training starts afresh
    from exactly where an uninterrupted run starts, and the next epoch's checkpoint replaces it."""
    train, val = graphs
    gat_settings = settings("gat")
    reference, reference_result, *_ = gat_training.train(train, val, NUM_IDS, gat_settings)

    def run(checkpoint):
        return gat_training.train(train, val, NUM_IDS, gat_settings, checkpoint)

    checkpoint = crashed_checkpoint(monkeypatch, gat_training.GATStage, run, tmp_path)
    state = torch.load(checkpoint, weights_only=False)
    damage(state)
    torch.save(state, checkpoint)
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        model, result, *_ = run(checkpoint)
    assert f"ignoring checkpoint {checkpoint} (it does not fit the model: " in caplog.text
    assert "training starts afresh" in caplog.text
    assert result["resumed_from"] is None
    assert same_weights(model, reference)
    assert losses(result["history"]) == losses(reference_result["history"])
    assert torch.load(checkpoint, weights_only=False)["epoch"] == TRAINING["epochs"] - 1  # written afresh


def test_a_cpu_checkpoint_resumes_where_the_gradient_scaler_is_enabled(graphs, tmp_path, monkeypatch, caplog):
    """A CPU run's disabled scaler saves {}; resumed where `device: auto` picks CUDA the scaler is enabled (an
    enabled CPU scaler stands in for CUDA's) and starts afresh instead of refusing the empty state."""
    train, val = graphs
    gat_settings = settings("gat")

    def run(checkpoint):
        return gat_training.train(train, val, NUM_IDS, gat_settings, checkpoint)

    checkpoint = crashed_checkpoint(monkeypatch, gat_training.GATStage, run, tmp_path)
    assert torch.load(checkpoint, weights_only=False)["stage"]["scaler"] == {}
    monkeypatch.setattr(training_stage, "grad_scaler", lambda device: torch.amp.GradScaler("cpu"))
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        _, result, *_ = run(checkpoint)
    assert result["resumed_from"] == 1 and "ignoring" not in caplog.text
    assert torch.load(checkpoint, weights_only=False)["stage"]["scaler"]["scale"] > 0  # the enabled one's own


# -- distillation trains the student: the logged loss is the documented mix, the VGAE's projection learns --------
TASK_LOSS = {"vgae": "train_task_loss", "gat": "train_ce", "dqn": "train_td"}  # history columns


def train_student(stage, graphs, fusion_data, teachers, alpha=0.7, temperature=2.0):
    """A student_kd `stage` distilled from `teachers` with weight `alpha` (and `temperature`): (model, fit result,
    ...)."""
    train, val = graphs
    distillation = {"alpha": alpha, "temperature": temperature}
    if stage == "vgae":
        student = settings("vgae", variant="student_kd", vgae_loss=LOSS, distillation=distillation)
        return vgae_training.train(train, val, NUM_IDS, student, teacher=teachers["vgae"])
    if stage == "gat":
        student = settings("gat", variant="student_kd", distillation=distillation)
        return gat_training.train(train, val, NUM_IDS, student, teacher=teachers["gat"])
    rl = RL | {"keep_folds": 0, "kd_weighting": "uniform"}  # every row distils
    student = settings("dqn", variant="student_kd", dqn=rl, distillation=distillation)
    return dqn_training.train(*fusion_data, student, None, teachers["dqn"], teachers["fusion"][0])


@pytest.mark.parametrize("stage", ["vgae", "gat", "dqn"])
def test_a_distilled_student_is_trained_on_alpha_kd_plus_one_minus_alpha_task_loss(
    stage, graphs, fusion_data, teachers
):
    student, result, *_ = train_student(stage, graphs, fusion_data, teachers, alpha=0.7)
    for row in result["history"]:
        assert row["train_kd"] > 0
        assert row["train_loss"] == pytest.approx(
            0.7 * row["train_kd"] + 0.3 * row[TASK_LOSS[stage]], rel=1e-5
        )
    # The optimiser follows that loss: without the distillation term (alpha 0) the student ends elsewhere.
    task_only, *_ = train_student(stage, graphs, fusion_data, teachers, alpha=0.0)
    assert not same_weights(student, task_only)


def test_the_vgae_students_latent_projection_learns_with_it(graphs, fusion_data, teachers, monkeypatch):
    stages = []

    class RecordedStage(vgae_training.VGAEStage):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stages.append((self, copy.deepcopy(self.projection.state_dict())))

    monkeypatch.setattr(vgae_training, "VGAEStage", RecordedStage)
    train_student("vgae", graphs, fusion_data, teachers)
    [(stage, initial)] = stages
    for name, value in stage.projection.state_dict().items():
        assert not torch.equal(value, initial[name]), name


@pytest.mark.parametrize("stage", ["vgae", "gat", "dqn"])
def test_a_teacher_handed_over_in_training_mode_is_frozen_in_eval_mode(stage, graphs, fusion_data, teachers):
    """kdgat.distillation.freeze, at all three stages: the teacher only gives targets, in eval mode and without
    gradients. A teacher still in training mode (dropout on; the VGAE samples z and updates its batch-norm
    statistics) gives the student exactly the targets of the same teacher in eval mode, and comes out unchanged:
    its weights, its mode and its gradients (the stage freezes a copy of a caller's model, stage.frozen)."""
    in_training = copy.deepcopy(teachers[stage]).train().requires_grad_(True)
    weights = copy.deepcopy(in_training.state_dict())
    in_eval = copy.deepcopy(in_training).eval()
    from_eval, *_ = train_student(stage, graphs, fusion_data, teachers | {stage: in_eval})
    from_training, *_ = train_student(stage, graphs, fusion_data, teachers | {stage: in_training})
    assert all(module.training for module in in_training.modules())
    assert all(parameter.requires_grad for parameter in in_training.parameters())
    assert all(torch.equal(value, weights[name]) for name, value in in_training.state_dict().items())
    assert same_weights(from_training, from_eval)


def test_the_gat_student_learns_from_soft_targets_at_the_configured_temperature(
    graphs, fusion_data, teachers
):
    """kd_gat.distillation.temperature reaches the GAT's distillation loss: another temperature, another student."""
    reference, *_ = train_student("gat", graphs, fusion_data, teachers, temperature=2.0)
    hotter, *_ = train_student("gat", graphs, fusion_data, teachers, temperature=8.0)
    assert not same_weights(reference, hotter)


# -- settings a job would fail on later: refused up front, naming the config key --------------------------------
@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"seed": "x"},
            r"kd_gat\.seed \(the workflow sets it from kd_gat\.seeds\) must be an integer .*got 'x'",
        ),
        ({"seed": 1.7}, r"kd_gat\.seed .* got 1\.7"),  # not truncated to 1
        ({"seed": True}, r"kd_gat\.seed .* got True"),
        ({"seed": -1}, r"must be an integer in \[0, 2\*\*32 - 1\], got -1"),  # numpy refuses it
        ({"seed": 2**32}, r"kd_gat\.seed .* got 4294967296"),
        ({"training": {"gat": {"epochs": True}}}, r"kd_gat\.training\.gat\.epochs: expected int, got True"),
        ({"vgae_loss": {"kl_weight": -0.1}}, r"kd_gat\.vgae_loss\.kl_weight must be >= 0, got -0\.1"),
        (
            {"curriculum": {"end_ratio": 0}},
            r"kd_gat\.curriculum\.end_ratio must be a finite number > 0, got 0",
        ),
        (
            {"curriculum": {"start_percentile": 101}},
            r"kd_gat\.curriculum\.start_percentile must be in \[0, 100\]",
        ),
    ],
)
def test_out_of_range_settings_name_their_config_key(section, message):
    stage = "vgae" if "vgae_loss" in section else "gat"
    with pytest.raises(SettingsError, match=message):
        StageSettings.from_config(section, stage, "teacher")


def test_a_seed_may_be_any_integer_numpy_included():
    assert StageSettings.from_config({"seed": np.int64(7)}, "gat", "teacher").seed == 7
    assert type(StageSettings.from_config({"seed": np.int64(7)}, "gat", "teacher").seed) is int
    with pytest.raises(SettingsError, match=r"^params\.settings\.seed .* got 3\.0$"):
        StageSettings.from_dict(settings("gat").as_dict() | {"seed": 3.0})


def test_the_vgae_student_distils_on_the_latent_means_not_sampled_latents(graphs, trained_vgae, monkeypatch):
    """vgae_kd_loss's latent term compares proj(μ_student) with μ_teacher: in training mode the student's z is a
    sample around μ, which would add noise to what it is asked to match."""
    from kdgat.distillation import LatentProjection

    train, val = graphs
    forwards, projected = [], []
    vgae_forward, projection_forward = VGAE.forward, LatentProjection.forward

    def recording_forward(self, *args, **kwargs):
        out = vgae_forward(self, *args, **kwargs)
        forwards.append((self.training, out))
        return out

    def recording_projection(self, latent):
        projected.append(latent)
        return projection_forward(self, latent)

    monkeypatch.setattr(VGAE, "forward", recording_forward)
    monkeypatch.setattr(LatentProjection, "forward", recording_projection)
    one_epoch = settings("vgae", {"epochs": 1}, variant="student_kd", vgae_loss=LOSS)
    vgae_training.train(train, val, NUM_IDS, one_epoch, teacher=copy.deepcopy(trained_vgae))
    student_outputs = [out for training, out in forwards if training]
    assert projected and len(projected) == len(student_outputs)
    for latent, out in zip(projected, student_outputs, strict=True):
        assert latent is out["mean"] and not torch.equal(out["z"], out["mean"])


def test_more_threads_than_cpus_are_capped_with_a_warning_not_a_crash(monkeypatch, caplog):
    """`kdgat train vgae --threads 10000` ended in a segmentation fault inside torch.set_num_threads; the job now
    uses the CPUs it may use and says so."""
    asked = []
    monkeypatch.setattr(training_stage.torch, "set_num_threads", asked.append)
    caplog.set_level(logging.WARNING)
    settings = StageSettings.from_config({"device": "cpu"}, "vgae", "teacher")
    outputs = {name: f"o/{name}" for name in training_stage.OUTPUTS}
    available = len(os.sched_getaffinity(0))
    training_stage.prepare_job(settings, "vgae", outputs, 10_000)
    assert asked == [available]
    assert f"threads=10000 is more than the {available} CPUs this job may use; using them" in caplog.text
    training_stage.prepare_job(settings, "vgae", outputs, 1)
    assert asked == [available, 1]
    caplog.clear()
    training_stage.prepare_job(settings, "vgae", outputs, available)  # as many as it may use: nothing to say
    assert asked == [available, 1, available] and "CPUs this job may use" not in caplog.text


def test_validation_graphs_that_are_the_training_graphs_are_refused(tmp_path):
    """`kdgat train vgae --val <data>/train.pt` early-stopped (and set the VGAE's anomaly threshold) on the graphs it
    trained on, and exited 0; the stage refuses it before training."""
    save_graphs(toy_graphs(6, num_ids=NUM_IDS), tmp_path / "train.pt")
    (tmp_path / "metadata.json").write_text(json.dumps({"num_ids": NUM_IDS}))
    outputs = {name: tmp_path / "out" / f"{name}.x" for name in ("model", "metrics", "history")}
    train = tmp_path / "train.pt"
    with pytest.raises(ValueError, match=rf"{train}: the validation graphs are the training graphs {train}"):
        vgae_training.run(train=train, val=train, metadata=tmp_path / "metadata.json",
                          settings=settings("vgae", vgae_loss=LOSS), outputs=outputs)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_graph_stage_refuses_val_of_another_preprocess_run_and_records_its_training_vocabulary(
    graphs, tmp_path
):
    """Validation graphs of another preprocess run (other CAN IDs under the same indices) early-stopped the model
    without an error; refused naming both files. The model.pt a stage writes records its training graphs'
    vocabulary digest, which the later stages compare with their graphs."""
    from kdgat.graph_store import vocabulary_digest
    from kdgat.model_store import recorded

    train, val = graphs
    ours, theirs = vocabulary_digest(range(NUM_IDS)), vocabulary_digest(reversed(range(NUM_IDS)))
    inputs = {name: tmp_path / f"{name}.pt" for name in ("train", "val")} | {
        "metadata": tmp_path / "metadata.json"
    }
    inputs["metadata"].write_text(json.dumps({"num_ids": NUM_IDS, "vocabulary": {"digest": ours}}))
    save_graphs(train, inputs["train"], vocabulary=ours)
    save_graphs(val, inputs["val"], vocabulary=theirs)
    outputs = {name: tmp_path / "out" / f"{name}.x" for name in ("model", "metrics", "history")}
    one_epoch = settings("vgae", training={"epochs": 1}, vgae_loss=LOSS)
    message = rf"{inputs['val']} \(val\) and .* are of different preprocess runs"
    with pytest.raises(ValueError, match=message):
        vgae_training.run(**inputs, outputs=outputs, settings=one_epoch)
    assert not (tmp_path / "out").exists()
    save_graphs(val, inputs["val"], vocabulary=ours)
    vgae_training.run(**inputs, outputs=outputs, settings=one_epoch)
    assert recorded(outputs["model"], "vocabulary") == ours


def test_models_trained_on_different_graphs_are_refused_and_unrecorded_ones_named(tmp_path, caplog):
    """Without the job's train.pt (the DQN stage), a VGAE and a GAT that record different training graphs are still
    refused, naming both; a model that records neither its training graphs nor a vocabulary cannot be checked,
    and the warning names it."""
    from kdgat.model_store import save_model
    from kdgat.training.data import check_one_preprocess_run

    models = {name: tmp_path / f"{name}.pt" for name in ("vgae", "gat", "older")}
    save_model(VGAE(NUM_IDS), "vgae", {"num_ids": NUM_IDS}, models["vgae"], trained_on="a" * 64)
    save_model(GAT(NUM_IDS), "gat", {"num_ids": NUM_IDS}, models["gat"], trained_on="b" * 64)
    save_model(VGAE(NUM_IDS), "vgae", {"num_ids": NUM_IDS}, models["older"])
    message = rf"{models['gat']} \(--gat\) and {models['vgae']} \(--vgae\) were trained on different train.pt"
    with pytest.raises(ValueError, match=message):
        check_one_preprocess_run({}, {"--vgae": models["vgae"], "--gat": models["gat"]})
    caplog.set_level(logging.WARNING)
    check_one_preprocess_run({}, {"--vgae": models["vgae"], "--older": models["older"]})
    assert (
        "not checked to be of one preprocess run" in caplog.text
        and f"--older {models['older']}" in caplog.text
    )


class FailingAtEveryEpoch:
    def __init__(self):
        self.calls = 0

    def epoch_ended(self, row, epochs, stopped_early):
        self.calls += 1
        raise RuntimeError("observer bug")


def test_an_observer_that_raises_is_warned_about_once_and_never_called_again(caplog):
    """kdgat.training.loop: an observer that raises is logged once and dropped, and training goes on."""
    observer = FailingAtEveryEpoch()
    stage = ScriptedStage([3.0, 2.0, 1.0])
    loop = training_loop.LoopSettings(epochs=3, patience=5, callbacks=[observer])
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        result = training_loop.fit(stage, loop, "fingerprint")
    assert [row["epoch"] for row in result["history"]] == [1, 2, 3]
    assert observer.calls == 1
    failures = [r for r in caplog.records if "FailingAtEveryEpoch.epoch_ended failed" in r.getMessage()]
    assert len(failures) == 1 and "training goes on without it" in failures[0].getMessage()


def test_a_checkpoint_file_that_holds_no_training_checkpoint_is_set_aside_and_overwritten(tmp_path, caplog):
    """A file torch reads but that is not the loop's dict (another tool's list, here) is warned about by name and
    training starts afresh, replacing it after the first epoch."""
    checkpoint = tmp_path / "last.pt"
    torch.save([1, 2, 3], checkpoint)
    loop = training_loop.LoopSettings(epochs=2, patience=5, checkpoint=checkpoint)
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        result = training_loop.fit(ScriptedStage([3.0, 2.0]), loop, "fingerprint")
    assert (
        f"ignoring checkpoint {checkpoint} (not a training checkpoint); training starts afresh" in caplog.text
    )
    assert result["resumed_from"] is None and len(result["history"]) == 2
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 1


class RunsCodeWhenUnpickled:
    """A pickle that calls a function when it is loaded (here ``open(marker, "w")``; a planted one: ``os.system``)."""

    def __init__(self, marker: os.PathLike) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_file_that_would_run_code_when_loaded_is_set_aside_without_running_it(tmp_path, caplog):
    """A checkpoint path lies in a results folder the project group may write, or holds a file a researcher copied
    from elsewhere: it was read with ``torch.load(weights_only=False)``, so a pickle planted there ran its code as
    the user who trains (at the check before training and again at the resume). Now it is read as tensors, numbers
    and the RNG state alone: such a file is set aside, its code never run, and the loop's own checkpoints (the numpy
    RNG state included) still load."""
    checkpoint, marker = tmp_path / "last.pt", tmp_path / "code-ran"
    torch.save(RunsCodeWhenUnpickled(marker), checkpoint)
    training_loop.refuse_checkpoint_over_files(checkpoint, {})
    assert not marker.exists()
    loop = training_loop.LoopSettings(epochs=2, patience=5, checkpoint=checkpoint)
    with caplog.at_level(logging.WARNING, logger="kdgat.training"):
        result = training_loop.fit(ScriptedStage([3.0, 2.0]), loop, "fingerprint")
    assert not marker.exists()
    assert (
        f"ignoring unreadable checkpoint {checkpoint} (UnpicklingError: Unsupported global: GLOBAL"
        in caplog.text
    )
    assert "GLOBAL io.open was not an allowed global by default); training starts afresh" in caplog.text
    assert result["resumed_from"] is None and len(result["history"]) == 2
    saved = training_loop.load_checkpoint(checkpoint)  # the loop's own checkpoint, written over it
    assert saved["epoch"] == 1 and saved["rng"]["numpy"][0] == "MT19937"


def test_the_content_digest_tells_tensors_of_the_same_bytes_apart_by_shape_and_dtype():
    """kdgat.training.loop.content_digest hashes a tensor's dtype, shape and bytes: a checkpoint written on
    inputs of another shape or dtype, whatever their bytes, is not resumed."""
    flat = torch.arange(6, dtype=torch.int32)
    same_bytes = [flat, flat.view(2, 3), flat.view(3, 2), flat.view(torch.float32)]
    assert len({training_loop.content_digest(tensor) for tensor in same_bytes}) == len(same_bytes)
    again = torch.arange(6, dtype=torch.int32).view(2, 3)
    assert training_loop.content_digest(again) == training_loop.content_digest(flat.view(2, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_the_auc_of_scores_that_are_not_finite_is_nan_not_an_error(bad):
    """kdgat.training.stage.auc_or_nan: NaN (null in metrics.json) where a score is not finite (a diverged model)
    or the split holds one class; else the ROC AUC."""
    assert np.isnan(training_stage.auc_or_nan([0, 1, 0, 1], [0.1, bad, 0.2, 0.3]))
    assert np.isnan(training_stage.auc_or_nan([1, 1, 1], [0.1, 0.2, 0.3]))
    assert training_stage.auc_or_nan([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.7]) == 1.0


def test_a_validation_split_of_attacks_only_takes_the_threshold_from_the_training_normals_errors():
    """kdgat.training.vgae.fit_threshold: without normal validation errors (and so no ROC) the 95th percentile is
    of the training normals' errors. Before 2026-12-07 it was over the attacks' errors: 95% of the validation
    attacks fell below it, called normal, under the name "normal_p95"."""
    errors, labels = np.array([20.0, 90.0, 40.0, 70.0, 30.0]), np.ones(5, dtype=int)
    normal_errors = np.array([1.0, 2.0, 3.0, 5.0])
    threshold, method = vgae_training.fit_threshold(errors, labels, normal_errors)
    assert method == "training_normal_p95"
    assert threshold == pytest.approx(np.percentile(normal_errors, 95))
    assert (errors > threshold).all()


def test_a_vgae_validated_on_attacks_only_early_stops_on_the_training_normals_and_calibrates_on_them(
    graphs,
):
    """kdgat.training.vgae: without normal validation graphs, early stopping watches the VGAE loss over the
    training normals (not the attacks', before 2026-12-07), and the error statistics come from the training
    normals."""
    train, val = graphs
    attacks = [g for g in val if int(g.y) == 1]
    one_batch = settings("vgae", training={"epochs": 1, "batch_size": 256}, vgae_loss=LOSS)
    model, result, metrics, _ = vgae_training.train(train, attacks, NUM_IDS, one_batch)
    batch = Batch.from_data_list([g for g in train if int(g.y) == 0])
    with torch.no_grad():
        out = model.eval()(batch.x, batch.edge_index)
        expected = float(vgae_loss(model, out, batch.x, batch.edge_index, **LOSS)["loss"])
    assert result["history"][0]["val_loss"] == pytest.approx(expected, rel=1e-5)
    assert (metrics["error_statistics_from"], metrics["threshold_method"]) == (
        "training normals",
        "training_normal_p95",
    )
    normal_errors = graph_errors(model, [g for g in train if int(g.y) == 0], 256, "cpu")["anomaly_error"]
    assert metrics["anomaly_threshold"] == pytest.approx(np.percentile(normal_errors, 95), rel=1e-6)


class EditingTheRow:
    def epoch_ended(self, row, epochs, stopped_early):
        row["val_loss"] = -1.0
        row.pop("graphs")


def test_an_observer_that_edits_the_row_it_is_shown_leaves_the_history_as_it_was():
    """kdgat.training.loop: observers only observe; each is shown a copy of the epoch's history.csv row."""
    result = training_loop.fit(
        ScriptedStage([3.0, 2.0]),
        training_loop.LoopSettings(epochs=2, patience=5, callbacks=[EditingTheRow()]),
        "fp",
    )
    assert [(row["val_loss"], row["graphs"]) for row in result["history"]] == [(3.0, 1), (2.0, 1)]
    assert result["best_val_loss"] == 2.0


def test_training_leaves_the_callers_teachers_and_curriculum_vgae_as_they_came(graphs, fusion_data, teachers):
    """The stages froze the caller's teacher in place (eval mode and no gradients: a teacher its caller goes on
    training stopped learning, silently) and moved it to the training device, and the GAT curriculum moved the
    caller's VGAE there and set each of its modules to the model's mode. The job's own models (run(): loaded on
    the device and frozen) are used as they are; a caller's are left as they came."""
    train, val = graphs
    given = {stage: copy.deepcopy(teachers[stage]).train() for stage in ("vgae", "gat", "dqn")}
    curriculum_vgae = copy.deepcopy(teachers["vgae"]).train()
    curriculum_vgae.encoder_norms.eval()  # batch-norm statistics the caller keeps fixed

    def state(model):
        return [module.training for module in model.modules()], [p.requires_grad for p in model.parameters()]

    before = {name: state(model) for name, model in (*given.items(), ("curriculum", curriculum_vgae))}
    one = {"epochs": 1}
    vgae_training.train(
        train, val, NUM_IDS, settings("vgae", one, "student_kd", vgae_loss=LOSS), teacher=given["vgae"]
    )
    gat_settings = settings("gat", one, "student_kd", curriculum=CURRICULUM)
    gat_training.train(train, val, NUM_IDS, gat_settings, teacher=given["gat"], vgae=curriculum_vgae)
    dqn_settings = settings("dqn", one, "student_kd", dqn=RL)
    teacher_fusion = {"teacher_inputs": teachers["fusion"][0], "teacher_val_inputs": teachers["fusion"][1]}
    dqn_training.train(*fusion_data, dqn_settings, teacher=given["dqn"], **teacher_fusion)
    after = {name: state(model) for name, model in (*given.items(), ("curriculum", curriculum_vgae))}
    assert after == before

    device = torch.device("cpu")
    job_teacher = training_stage.frozen(copy.deepcopy(teachers["gat"]), device)  # as run() loads it
    assert training_stage.frozen(job_teacher, device) is job_teacher


def test_training_graphs_without_a_normal_one_and_a_diverged_curriculum_vgae_are_input_errors(
    graphs, trained_vgae
):
    """Both were plain ValueErrors (a traceback in the train_vgae and train_gat wrappers' logs): training graphs
    holding attacks only (the VGAE learns normal traffic), and a VGAE whose difficulty is not finite for the GAT
    curriculum, refused only at the first epoch, naming no input. Now typed, naming the input, before any epoch."""
    from wrapper_rules import InputError

    train, val = graphs
    attacks = [graph for graph in train if int(graph.y.view(-1)[0]) == 1]
    with pytest.raises(FileContentError) as error:
        vgae_training.train(attacks, val, NUM_IDS, settings("vgae", vgae_loss=LOSS))
    assert str(error.value) == (
        "the training graphs (the train input, train.pt) hold no normal (y = 0) graph: the VGAE learns what normal "
        "traffic looks like; give training captures with attack-free windows"
    )
    diverged = copy.deepcopy(trained_vgae)
    with torch.no_grad():
        diverged.mean_head.weight.fill_(float("nan"))
    with pytest.raises(FileContentError) as error:
        gat_training.train(train, val, NUM_IDS, settings("gat", curriculum=CURRICULUM), vgae=diverged)
    normals = sum(int(graph.y.view(-1)[0]) == 0 for graph in train)
    assert isinstance(error.value, InputError) and str(error.value) == (
        "the VGAE (the vgae input, which draws the curriculum: kd_gat.curriculum) gives "
        f"{normals} of {normals} normal training graphs a difficulty (anomaly error) that is not finite: its "
        "model.pt is a diverged run; train the VGAE again"
    )


def test_train_dqn_logs_its_device_once_however_many_out_of_fold_copies_it_trains(
    tmp_path, monkeypatch, caplog
):
    """dqn.run logged "device: cpu" for the job and dqn.train again for the agent it trains: one job, one device,
    one line (the out-of-fold copies of keep_folds train on the agent's device and log none)."""
    from kdgat.files import file_sha256
    from kdgat.model_store import save_model

    generator = torch.Generator().manual_seed(0)
    save_graphs(toy_graphs(4, num_ids=NUM_IDS, seed=0), tmp_path / "train.pt", vocabulary="ours")
    save_graphs(toy_graphs(40, num_ids=NUM_IDS, seed=1), tmp_path / "val.pt", vocabulary="ours")
    (tmp_path / "metadata.json").write_text(
        json.dumps({"num_ids": NUM_IDS, "vocabulary": {"digest": "ours"}})
    )
    trained = {"trained_on": file_sha256(tmp_path / "train.pt"), "vocabulary": "ours"}
    save_model(VGAE(NUM_IDS), "vgae", {"num_ids": NUM_IDS}, tmp_path / "vgae.pt", **trained)
    save_model(GAT(NUM_IDS), "gat", {"num_ids": NUM_IDS}, tmp_path / "gat.pt", **trained)
    # the models' scores made up (an untrained VGAE has no threshold): only the logging is under test
    monkeypatch.setattr(
        dqn_training, "fusion_inputs", lambda *args, **kwargs: toy_fusion_inputs(40, generator)
    )
    dqn_settings = settings("dqn", training={"epochs": 2, "lr": 0.001}, dqn=RL)
    assert dqn_settings.dqn.keep_folds == 5  # five copies trained besides the agent
    outputs = {name: tmp_path / "out" / f"{name}.x" for name in ("model", "metrics", "history")}
    with caplog.at_level(logging.INFO, logger="kdgat.training"):
        dqn_training.run(
            fit=tmp_path / "val.pt",
            metadata=tmp_path / "metadata.json",
            vgae=tmp_path / "vgae.pt",
            gat=tmp_path / "gat.pt",
            settings=dqn_settings,
            outputs=outputs,
        )
    assert [record.getMessage() for record in caplog.records if record.getMessage().startswith("device")] == [
        "device: cpu"
    ]


def test_a_sigterm_while_the_run_is_tracked_after_the_outputs_keeps_the_checkpoint_for_the_rerun(
    graphs, tmp_path, monkeypatch
):
    """The outputs are written, then the tracker logs them and ends its run (seconds with a remote MLflow server).
    A SIGTERM then fails the job and Snakemake deletes the outputs; the checkpoint had already been dropped, so the
    rerun trained from the first epoch although the job's last line said it resumes from the checkpoint."""
    from kdgat.logs import Terminated, termination_as_exit
    from kdgat.tracking.runs import NullTracker

    data, out, checkpoint = tmp_path / "data", tmp_path / "out", tmp_path / "checkpoints" / "last.pt"
    save_graphs(graphs[0], data / "train.pt")
    save_graphs(graphs[1], data / "val.pt")
    (data / "metadata.json").write_text(json.dumps({"num_ids": NUM_IDS}))
    outputs = {name: out / f"{name}.{suffix}" for name, suffix in (("model", "pt"), ("metrics", "json"),
                                                                   ("history", "csv"))}  # fmt: skip
    job = {"train": data / "train.pt", "val": data / "val.pt", "metadata": data / "metadata.json",
           "settings": settings("vgae"), "outputs": outputs, "checkpoint": checkpoint}  # fmt: skip
    with monkeypatch.context() as patched:
        patched.setattr(NullTracker, "log_outputs", lambda *args: os.kill(os.getpid(), signal.SIGTERM))
        with pytest.raises(Terminated), termination_as_exit():
            vgae_training.run(**job)
    assert checkpoint.exists()
    for path in outputs.values():  # Snakemake removes the outputs of the failed job
        path.unlink()
    metrics = vgae_training.run(**job)
    assert metrics["resumed_from_epoch"] == metrics["epochs_run"]  # every epoch resumed, none trained again
    assert not checkpoint.exists()
