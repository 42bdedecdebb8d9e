"""VGAE stage: learns to reconstruct *normal* graphs; its calibrated reconstruction error is the anomaly score.

Trained on the normal training graphs only (an attack the model never saw reconstructs badly, which is the point).
Early stopping watches the VGAE loss on normal validation graphs (the training normals', with a warning, when
validation holds none: metrics' ``val_loss_on``). Afterwards the anomaly error is calibrated on the
validation split: each reconstruction term's mean and standard deviation on its normal graphs (the training
normals when validation holds fewer than two; see kdgat.models.vgae), then the threshold: Youden's J on the ROC of
the graph anomaly error when validation has both classes, else the 95th percentile of the normal validation errors
(of the training normals' when validation holds none: ``threshold_method`` ``training_normal_p95``). It is stored
in the model (buffer `anomaly_threshold`).
With a teacher (student_kd): α·(½·MSE(proj(μ_s), μ_t) + ½·MSE(recon_s, recon_t)) + (1−α)·VGAE loss, on the latent
means μ (kdgat.distillation.vgae_kd_loss).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from sklearn.metrics import roc_curve

from kdgat.distillation import LatentProjection, vgae_kd_loss
from kdgat.evaluation.thresholds import youden_best_index
from kdgat.files import FileContentError
from kdgat.models import VGAE
from kdgat.models.vgae import ERROR_TERMS, error_statistics, standardised_error, vgae_loss
from kdgat.runtime import autocast, seed_everything
from kdgat.tracking import TrackingSettings
from kdgat.training.data import labels_of, make_loader
from kdgat.training.loop import LoopSettings, fingerprint, fit
from kdgat.training.settings import StageSettings, settings_named
from kdgat.training.stage import (
    StageBase,
    auc_or_nan,
    base_metrics,
    frozen,
    resolve_device,
    run_graph_stage,
    validation_metrics,
)

log = logging.getLogger("kdgat.training")

# The least threshold the 95th percentile of normal errors gives, in the anomaly error's units (standard deviations
# of the normal windows, summed over the terms): identical normal windows (all errors 0) would else call any window
# an attack whose errors differ from theirs by float rounding. A window within one standard deviation of normal
# (summed) is not called an attack by a percentile; healthy runs' 95th percentiles are several units.
MIN_PERCENTILE_THRESHOLD = 1.0


@torch.no_grad()
def graph_errors(model: VGAE, graphs, batch_size: int, device) -> dict[str, np.ndarray]:
    """Per-graph reconstruction terms in eval mode (deterministic: z = μ)."""
    was_training = model.training
    model.eval()
    parts: dict[str, list] = {}
    for batch in make_loader(graphs, batch_size):
        batch = batch.to(device)
        for name, value in model.graph_errors(
            batch.x, batch.edge_index, batch.batch, batch.num_graphs
        ).items():
            parts.setdefault(name, []).append(value.float().cpu().numpy())
    model.train(was_training)
    return {name: np.concatenate(values) for name, values in parts.items()}


def fit_threshold(
    errors: np.ndarray, labels: np.ndarray, training_normal_errors: np.ndarray | None = None
) -> tuple[float, str]:
    """Validation threshold on the reconstruction error (see module docstring). The VGAE calls an error above the
    threshold an attack (calibrated anomaly > 0.5); sklearn's ROC threshold t counts errors >= t, so the threshold
    lies halfway between t and the highest error below it. Without a normal validation error the 95th percentile
    is of ``training_normal_errors`` ("training_normal_p95"): that of the attacks' errors called 95% of them
    normal. A percentile threshold is at least MIN_PERCENTILE_THRESHOLD."""
    if len(np.unique(labels)) == 2:
        fpr, tpr, thresholds = roc_curve(labels, errors)
        best = youden_best_index(labels, fpr, tpr)  # ties to the higher threshold, as the evaluation's
        cut = float(thresholds[best])
        below = errors[errors < cut]
        if np.isfinite(cut) and below.size:  # J > 0: some normal error lies below the cut
            threshold = (cut + float(below.max())) / 2
            if threshold > 0:
                return threshold, "youden_j"
    if (labels == 0).any():
        return max(float(np.percentile(errors[labels == 0], 95)), MIN_PERCENTILE_THRESHOLD), "normal_p95"
    if training_normal_errors is None or not len(training_normal_errors):
        raise ValueError(
            "the VGAE threshold needs normal errors: the validation split holds none, give the training's"
        )
    return max(
        float(np.percentile(training_normal_errors, 95)), MIN_PERCENTILE_THRESHOLD
    ), "training_normal_p95"


class VGAEStage(StageBase):
    def __init__(self, model, train_graphs, val_graphs, settings, device, teacher=None):
        self.teacher = frozen(teacher, device) if teacher is not None else None
        self.projection = None
        if self.teacher is not None:
            self.projection = LatentProjection(model.latent_dim, self.teacher.latent_dim).to(device)
        extra = list(self.projection.parameters()) if self.projection is not None else []
        super().__init__(model, settings, device, extra_parameters=extra)
        self.loss_weights = dataclasses.asdict(settings.loss)
        self.distillation = settings.distillation
        self.batch_size = int(self.training.batch_size)
        self.train_graphs = [g for g in train_graphs if int(g.y.view(-1)[0]) == 0]
        if not self.train_graphs:
            raise FileContentError(
                "the training graphs (the train input, train.pt) hold no normal (y = 0) graph: the VGAE learns "
                "what normal traffic looks like; give training captures with attack-free windows"
            )
        self.val_graphs = list(val_graphs)
        self.val_normal = [g for g in self.val_graphs if int(g.y.view(-1)[0]) == 0]
        self.val_loss_on = "validation normals"
        if not self.val_normal:
            # The loss of attack graphs would pick the epoch that reconstructs attacks best, the one that tells them
            # from normal traffic worst: with no normal to stop on, the training normals' loss (in eval mode).
            self.val_normal, self.val_loss_on = self.train_graphs, "training normals"
            log.warning(
                "vgae[%s]: the validation graphs (the val input, val.pt) hold no normal (y = 0) graph: early stopping "
                "watches the loss of the %d training normals instead (it falls with training, so training runs its "
                "epochs); give validation blocks with attack-free windows",
                settings.variant,
                len(self.train_graphs),
            )
        self.val_labels = labels_of(self.val_graphs)
        self.name, self.warned_one_node = f"vgae[{settings.variant}]", False

    def extra_state(self):
        return {"projection": self.projection.state_dict()} if self.projection is not None else {}

    def load_extra_state(self, state):
        if self.projection is not None:
            self.projection.load_state_dict(state["projection"])

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        totals: dict[str, float] = {}
        seen = 0
        loader = make_loader(
            self.train_graphs, self.batch_size, shuffle=True, generator=self.loader_generator
        )
        for batch in self.observers.batches(loader):
            if batch.num_nodes < 2:
                # Batch norm cannot train on one node (a batch of one window of a single CAN ID, e.g. the last of
                # an epoch): torch's "Expected more than 1 value per channel". That batch is left out.
                if not self.warned_one_node:
                    log.warning(
                        "%s epoch %d: a training batch of one node (a window of a single CAN ID) is left out: the "
                        "VGAE's batch norm needs at least 2 nodes to train on",
                        self.name,
                        epoch + 1,
                    )
                    self.warned_one_node = True
                continue
            batch = batch.to(self.device)
            with autocast(self.device):
                out = self.model(batch.x, batch.edge_index)
                parts = vgae_loss(self.model, out, batch.x, batch.edge_index, **self.loss_weights)
                if self.teacher is not None:
                    with torch.no_grad():
                        target = self.teacher(batch.x, batch.edge_index)
                    kd = vgae_kd_loss(
                        self.projection(out["mean"]),
                        target["mean"],
                        out["features"],
                        target["features"],
                        parts["loss"],
                        alpha=float(self.distillation.alpha),
                    )
                    parts = {**parts, "task_loss": parts["loss"], "kd": kd["kd"], "loss": kd["loss"]}
            self.step(parts["loss"])
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * batch.num_graphs
            seen += batch.num_graphs
        if not seen:
            raise FileContentError(
                f"{self.name} epoch {epoch + 1}: every training batch holds one node (the {len(self.train_graphs)} "
                "normal training windows are each of a single CAN ID): the VGAE's batch norm needs at least 2 nodes "
                "a batch; raise kd_gat.training.vgae.batch_size or give windows of several IDs"
            )
        return {f"train_{name}": value / seen for name, value in totals.items()} | {"graphs": seen}

    @torch.no_grad()
    def validate(self) -> dict:
        self.model.eval()
        total, seen = 0.0, 0
        for batch in make_loader(self.val_normal, self.batch_size):
            batch = batch.to(self.device)
            out = self.model(batch.x, batch.edge_index)
            total += float(
                vgae_loss(self.model, out, batch.x, batch.edge_index, **self.loss_weights)["loss"]
            ) * (batch.num_graphs)
            seen += batch.num_graphs
        # The anomaly error with this epoch's statistics of the normal validation graphs (what calibration will fit).
        errors = graph_errors(self.model, self.val_graphs, self.batch_size, self.device)
        normal = self.val_labels == 0
        mean, std = error_statistics({k: v[normal] if normal.any() else v for k, v in errors.items()})
        score = standardised_error(errors, mean, std)
        return {"val_loss": total / seen, "val_auc": auc_or_nan(self.val_labels, score)}


def train(
    train_graphs,
    val_graphs,
    num_ids: int,
    settings: StageSettings | Mapping,
    checkpoint=None,
    teacher: VGAE | None = None,
    callbacks: Sequence = (),
):
    """Train a VGAE and calibrate its threshold; returns (model, fit result, metrics, model arguments)."""
    started = time.perf_counter()
    settings = StageSettings.from_dict(settings)
    seed_everything(int(settings.seed))
    device = resolve_device(settings)
    model_config = {"num_ids": num_ids, **settings.model}
    model = VGAE(**model_config)
    stage = VGAEStage(model, train_graphs, val_graphs, settings, device, teacher=teacher)
    loop = LoopSettings(
        epochs=int(settings.training.epochs),
        patience=int(settings.training.patience),
        checkpoint=checkpoint,
        name=f"vgae[{settings.variant}]",
        callbacks=callbacks,
        divergence_fix=f"lower kd_gat.training.vgae.lr ({float(settings.training.lr):g})",
    )
    # Resume only on the same graphs and teacher.
    inputs = {"train": train_graphs, "val": val_graphs, "teacher": teacher}
    result = fit(stage, loop, fingerprint({**settings.as_dict(), "num_ids": num_ids}, **inputs))

    normals = [g for g in stage.val_graphs if int(g.y.view(-1)[0]) == 0]
    statistics_from = "validation normals"
    if len(normals) < 2:
        normals, statistics_from = [g for g in train_graphs if int(g.y.view(-1)[0]) == 0], "training normals"
    model.fit_error_statistics(graph_errors(model, normals, stage.batch_size, device))
    val_errors = graph_errors(model, stage.val_graphs, stage.batch_size, device)
    errors = val_errors["anomaly_error"]
    training_normal_errors = None
    if not (stage.val_labels == 0).any():
        training_normal_errors = graph_errors(model, stage.train_graphs, stage.batch_size, device)[
            "anomaly_error"
        ]
    threshold, method = fit_threshold(errors, stage.val_labels, training_normal_errors)
    model.anomaly_threshold.fill_(threshold)
    threshold = float(model.anomaly_threshold)  # the float32 value the model decides with
    predictions = (errors > threshold).astype(int)
    metrics = base_metrics(settings, model, result, started, device)
    metrics |= validation_metrics(stage.val_labels, predictions, errors)
    metrics |= {
        "anomaly_threshold": threshold,
        "threshold_method": method,
        "train_graphs": len(stage.train_graphs),
        "error_mean": dict(zip(ERROR_TERMS, model.error_mean.tolist(), strict=True)),
        "error_std": dict(zip(ERROR_TERMS, model.error_std.tolist(), strict=True)),
        "error_statistics_from": statistics_from,
        "val_loss_on": stage.val_loss_on,
    }
    # Each term's validation AUC alone, next to the combined score's val_auc (which term carries the signal).
    metrics |= {f"val_auc_{term}": auc_or_nan(stage.val_labels, val_errors[term]) for term in ERROR_TERMS}
    log.info("vgae: threshold %.6g (%s), val AUC %.4f", threshold, method, metrics["val_auc"])
    return model.cpu(), result, metrics, model_config


_train = train  # run() has a keyword argument named `train` (the train.pt file)


@settings_named
def run(
    *,
    train: str | os.PathLike,
    val: str | os.PathLike,
    metadata: str | os.PathLike,
    settings: StageSettings | Mapping,
    outputs: Mapping[str, str | os.PathLike],
    checkpoint: str | os.PathLike | None = None,
    teacher: str | os.PathLike | None = None,
    threads: int | None = None,
    tracking: TrackingSettings | Mapping | None = None,
    callbacks: Sequence = (),
) -> dict:
    """File-level entry point (the train_vgae wrapper): the preprocess files in, ``outputs`` model, metrics and
    history out. ``teacher``: the teacher's VGAE model.pt (student_kd); ``checkpoint``: where to resume from."""
    return run_graph_stage(
        "vgae", _train, train=train, val=val, metadata=metadata, settings=settings, outputs=outputs,
        checkpoint=checkpoint, models=((teacher, "vgae"),), threads=threads, tracking=tracking, callbacks=callbacks,
    )  # fmt: skip
