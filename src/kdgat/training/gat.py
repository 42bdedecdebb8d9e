"""GAT stage: graph classifier trained with cross-entropy, a VGAE-driven curriculum and optional distillation.

Curriculum (kd_gat.curriculum, see kdgat.curriculum): the VGAE of the same variant scores every normal training
graph by difficulty (its anomaly error, see kdgat.models.vgae) once; each epoch draws a fresh sample and history.csv
records the draw (curriculum_ratio, curriculum_percentile, curriculum_pool, curriculum_normals). With a teacher (student_kd):
α·T²·KL(teacher ‖ student soft targets) + (1−α)·CE. Early stopping watches the cross-entropy on the full
validation split.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from kdgat.chain import DECISION_THRESHOLD
from kdgat.curriculum import Curriculum
from kdgat.distillation import gat_kd_loss
from kdgat.files import FileContentError
from kdgat.inference import evaluated, scoring_device
from kdgat.models import GAT
from kdgat.runtime import autocast, seed_everything
from kdgat.tracking import TrackingSettings
from kdgat.training.data import labels_of, make_loader
from kdgat.training.loop import LoopSettings, fingerprint, fit
from kdgat.training.settings import SettingsError, StageSettings, setting_key, settings_named
from kdgat.training.stage import (
    StageBase,
    base_metrics,
    frozen,
    resolve_device,
    run_graph_stage,
    validation_metrics,
)
from kdgat.training.vgae import graph_errors

log = logging.getLogger("kdgat.training")


def difficulty_scores(vgae, graphs, batch_size: int, device) -> np.ndarray:
    """How hard a graph is for the VGAE to reconstruct: its anomaly error, the two-sided standardised sum
    of its feature MSE, CAN-ID cross-entropy and neighbour-ID BCE (kdgat.models.vgae.standardised_error; no
    loss weights). The original used feature MSE + 0.1·CAN-ID cross-entropy. The caller's VGAE stays where it is
    (``evaluated``: scored itself when on ``device``, else a copy)."""
    with evaluated(scoring_device(device), vgae) as (scorer,):
        return graph_errors(scorer, graphs, batch_size, device)["anomaly_error"]


class GATStage(StageBase):
    def __init__(
        self,
        model,
        train_graphs,
        val_graphs,
        settings,
        device,
        teacher=None,
        curriculum=None,
        difficulty=None,
    ):
        super().__init__(model, settings, device)
        self.teacher = frozen(teacher, device) if teacher is not None else None
        self.distillation = settings.distillation
        self.batch_size = int(self.training.batch_size)
        self.train_graphs = list(train_graphs)
        self.train_labels = labels_of(self.train_graphs)
        self.val_graphs = list(val_graphs)
        self.val_labels = labels_of(self.val_graphs)
        classes = {int(label) for label in np.unique(self.train_labels)}
        if len(classes) < 2:  # allowed (a lab's own attack-free captures), but then no detector is trained
            log.warning(
                "gat[%s]: every training graph is %s: the classifier learns one class only and its validation "
                "ROC-AUC is undefined; give training captures with attacks",
                settings.variant,
                "an attack" if classes == {1} else "attack-free",
            )
        self.curriculum = curriculum
        self.difficulty = difficulty
        self.last_sample: np.ndarray | None = None

    def epoch_sample(self, epoch: int) -> tuple[np.ndarray, dict]:
        """(training-set indices of the epoch, what history.csv records about the draw)."""
        if self.curriculum is None:
            return np.arange(len(self.train_graphs)), {}
        draw = self.curriculum.draw(self.difficulty, self.train_labels, epoch)
        return draw.indices, draw.log_row()

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        indices, draw = self.epoch_sample(epoch)
        self.last_sample = indices
        graphs = [self.train_graphs[i] for i in indices]
        totals: dict[str, float] = {}
        seen = 0
        loader = make_loader(graphs, self.batch_size, shuffle=True, generator=self.loader_generator)
        for batch in self.observers.batches(loader):
            batch = batch.to(self.device)
            labels = batch.y.view(-1)
            with autocast(self.device):
                logits = self.model(batch.x, batch.edge_index, batch.batch)
                if self.teacher is not None:
                    with torch.no_grad():
                        teacher_logits = self.teacher(batch.x, batch.edge_index, batch.batch)
                    parts = gat_kd_loss(
                        logits,
                        teacher_logits,
                        labels,
                        temperature=float(self.distillation.temperature),
                        alpha=float(self.distillation.alpha),
                    )
                else:
                    parts = {"loss": F.cross_entropy(logits, labels)}
            self.step(parts["loss"])
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * batch.num_graphs
            seen += batch.num_graphs
        metrics = {f"train_{name}": value / seen for name, value in totals.items()}
        metrics["train_attack_share"] = float(self.train_labels[indices].mean())
        return metrics | draw | {"graphs": seen}

    @torch.no_grad()
    def predict(self, graphs) -> tuple[np.ndarray, float]:
        """(p(attack) per graph, mean cross-entropy)."""
        self.model.eval()
        probs, total, seen = [], 0.0, 0
        for batch in make_loader(graphs, max(self.batch_size, 256)):
            batch = batch.to(self.device)
            logits = self.model(batch.x, batch.edge_index, batch.batch).float()
            total += float(F.cross_entropy(logits, batch.y.view(-1), reduction="sum"))
            seen += batch.num_graphs
            probs.append(torch.softmax(logits, dim=1)[:, 1].cpu().numpy())
        return np.concatenate(probs), total / seen

    def validate(self) -> dict:
        probs, loss = self.predict(self.val_graphs)
        return {"val_loss": loss} | validation_metrics(
            self.val_labels, (probs > DECISION_THRESHOLD).astype(int), probs
        )


def train(
    train_graphs,
    val_graphs,
    num_ids: int,
    settings: StageSettings | Mapping,
    checkpoint=None,
    teacher: GAT | None = None,
    vgae=None,
    callbacks: Sequence = (),
):
    """Train a GAT; `vgae` (same variant) drives the curriculum when kd_gat.curriculum.enabled."""
    started = time.perf_counter()
    settings = StageSettings.from_dict(settings)
    seed_everything(int(settings.seed))
    device = resolve_device(settings)
    model_config = {"num_ids": num_ids, **settings.model}
    model = GAT(**model_config)
    curriculum, difficulty = None, None
    if settings.curriculum is not None and settings.curriculum.enabled:
        if vgae is None:
            raise SettingsError(
                f"the GAT curriculum ({setting_key('kd_gat.curriculum.enabled', 'curriculum.enabled')}) needs the "
                "trained VGAE of the same variant: give it as kdgat.training.gat.train's vgae, or disable the "
                "curriculum"
            )
        curriculum = Curriculum(
            epochs=int(settings.training.epochs), seed=int(settings.seed), **settings.curriculum.schedule()
        )
        difficulty = difficulty_scores(vgae, train_graphs, int(settings.training.batch_size), device)
        normal = difficulty[labels_of(train_graphs) == 0]
        if not np.isfinite(
            normal
        ).all():  # Curriculum.draw's refusal would come at the first epoch, naming no input
            raise FileContentError(
                f"the VGAE (the vgae input, which draws the curriculum: "
                f"{setting_key('kd_gat.curriculum', 'curriculum')}) gives "
                f"{int((~np.isfinite(normal)).sum())} of {len(normal)} normal training graphs a difficulty (anomaly "
                "error) that is not finite: its model.pt is a diverged run; train the VGAE again"
            )
    stage = GATStage(model, train_graphs, val_graphs, settings, device, teacher, curriculum, difficulty)
    loop = LoopSettings(
        epochs=int(settings.training.epochs),
        patience=int(settings.training.patience),
        checkpoint=checkpoint,
        name=f"gat[{settings.variant}]",
        callbacks=callbacks,
        divergence_fix=f"lower kd_gat.training.gat.lr ({float(settings.training.lr):g})",
    )
    # Resume only on the same graphs, teacher and (when it draws the curriculum) VGAE.
    inputs = {"train": train_graphs, "val": val_graphs, "teacher": teacher}
    inputs["vgae"] = vgae if curriculum is not None else None
    result = fit(stage, loop, fingerprint({**settings.as_dict(), "num_ids": num_ids}, **inputs))
    probs, loss = stage.predict(stage.val_graphs)
    metrics = base_metrics(settings, model, result, started, device)
    metrics |= {"val_loss": loss} | validation_metrics(
        stage.val_labels, (probs > DECISION_THRESHOLD).astype(int), probs
    )
    metrics["curriculum"] = curriculum is not None
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
    vgae: str | os.PathLike | None = None,
    teacher: str | os.PathLike | None = None,
    threads: int | None = None,
    tracking: TrackingSettings | Mapping | None = None,
    callbacks: Sequence = (),
) -> dict:
    """File-level entry point (the train_gat wrapper). ``vgae``: the same variant's VGAE model.pt (needed for the
    curriculum); ``teacher``: the teacher's GAT model.pt (student_kd)."""
    settings = StageSettings.from_dict(settings)  # parsed once here; run_graph_stage takes it as it is
    curriculum = settings.curriculum
    if vgae is None and curriculum is not None and curriculum.enabled:
        # Checked before the graphs are read: _train's own check comes after they are loaded, naming no input.
        raise SettingsError(
            f"the GAT curriculum ({setting_key('kd_gat.curriculum.enabled', 'curriculum.enabled')}) draws on the "
            "trained VGAE of the same variant: give its model.pt as vgae (the train_gat wrapper's input.vgae), or "
            "disable the curriculum"
        )
    return run_graph_stage(
        "gat", _train, train=train, val=val, metadata=metadata, settings=settings, outputs=outputs,
        checkpoint=checkpoint, models=((teacher, "gat"), (vgae, "vgae")), threads=threads, tracking=tracking, callbacks=callbacks,
    )  # fmt: skip
