"""GAT stage: graph classifier trained with cross-entropy, a VGAE-driven curriculum and optional distillation.

Curriculum (kd_gat.curriculum, see kdgat.curriculum): the VGAE of the same variant scores every normal training
graph by difficulty (feature MSE + 0.1·ID CE) once; each epoch draws a fresh sample. With a teacher (student_kd):
α·T²·KL(teacher ‖ student soft targets) + (1−α)·CE. Early stopping watches the cross-entropy on the full
validation split.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F

from kdgat.curriculum import Curriculum
from kdgat.distillation import freeze, gat_kd_loss
from kdgat.model_store import load_model
from kdgat.models import GAT
from kdgat.runtime import autocast, seed_everything
from kdgat.training.common import (
    StageBase,
    base_metrics,
    check_graphs,
    labels_of,
    load_num_ids,
    load_split,
    make_loader,
    prepare_settings,
    resolve_device,
    validation_metrics,
    write_outputs,
)
from kdgat.training.loop import LoopSettings, fingerprint, fit
from kdgat.training.vgae import graph_errors

log = logging.getLogger("kdgat.training")


def difficulty_scores(vgae, graphs, batch_size: int, device) -> np.ndarray:
    """How hard a graph is for the VGAE to reconstruct: feature MSE + 0.1·CAN-ID cross-entropy."""
    errors = graph_errors(vgae.to(device), graphs, batch_size, device)
    return errors["feature_mse"] + 0.1 * errors["id_ce"]


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
        self.teacher = freeze(teacher.to(device)) if teacher is not None else None
        self.distillation = settings.get("distillation")
        self.batch_size = int(self.training["batch_size"])
        self.train_graphs = list(train_graphs)
        self.train_labels = labels_of(self.train_graphs)
        self.val_graphs = list(val_graphs)
        self.val_labels = labels_of(self.val_graphs)
        self.curriculum = curriculum
        self.difficulty = difficulty
        self.last_sample: np.ndarray | None = None

    def epoch_sample(self, epoch: int) -> np.ndarray:
        if self.curriculum is None:
            return np.arange(len(self.train_graphs))
        return self.curriculum.sample(self.difficulty, self.train_labels, epoch)

    def train_epoch(self, epoch: int) -> dict:
        self.model.train()
        indices = self.epoch_sample(epoch)
        self.last_sample = indices
        graphs = [self.train_graphs[i] for i in indices]
        totals: dict[str, float] = {}
        seen = 0
        for batch in make_loader(graphs, self.batch_size, shuffle=True, generator=self.loader_generator):
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
                        temperature=float(self.distillation["temperature"]),
                        alpha=float(self.distillation["alpha"]),
                    )
                else:
                    parts = {"loss": F.cross_entropy(logits, labels)}
            self.step(parts["loss"])
            for name, value in parts.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) * batch.num_graphs
            seen += batch.num_graphs
        metrics = {f"train_{name}": value / seen for name, value in totals.items()}
        metrics["train_attack_share"] = float(self.train_labels[indices].mean())
        return metrics | {"graphs": seen}

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
        return {"val_loss": loss} | validation_metrics(self.val_labels, (probs > 0.5).astype(int), probs)


def train(
    train_graphs,
    val_graphs,
    num_ids: int,
    settings: dict,
    checkpoint=None,
    teacher: GAT | None = None,
    vgae=None,
):
    """Train a GAT; `vgae` (same variant) drives the curriculum when kd_gat.curriculum.enabled."""
    started = time.perf_counter()
    seed_everything(int(settings["seed"]))
    device = resolve_device(settings)
    model_config = {"num_ids": num_ids, **settings["model"]}
    model = GAT(**model_config)
    curriculum, difficulty = None, None
    curriculum_settings = settings.get("curriculum") or {}
    if curriculum_settings.get("enabled", False):
        if vgae is None:
            raise ValueError("the GAT curriculum needs the trained VGAE of the same variant")
        options = {k: v for k, v in curriculum_settings.items() if k != "enabled"}
        curriculum = Curriculum(
            epochs=int(settings["training"]["epochs"]), seed=int(settings["seed"]), **options
        )
        difficulty = difficulty_scores(vgae, train_graphs, int(settings["training"]["batch_size"]), device)
    stage = GATStage(model, train_graphs, val_graphs, settings, device, teacher, curriculum, difficulty)
    loop = LoopSettings(
        epochs=int(settings["training"]["epochs"]),
        patience=int(settings["training"]["patience"]),
        checkpoint=checkpoint,
        name=f"gat[{settings.get('variant', '?')}]",
    )
    result = fit(stage, loop, fingerprint({"stage": "gat", **settings, "num_ids": num_ids}))
    probs, loss = stage.predict(stage.val_graphs)
    metrics = base_metrics("gat", settings, model, result, started, device)
    metrics |= {"val_loss": loss} | validation_metrics(stage.val_labels, (probs > 0.5).astype(int), probs)
    metrics["curriculum"] = curriculum is not None
    return model.cpu(), result, metrics, model_config


def run(
    graph_dir, outputs: dict, settings: dict, vgae_model=None, teacher_model=None, threads: int | None = None
) -> dict:
    """File-level entry point for the train_gat wrapper."""
    settings = prepare_settings(settings, "gat", threads)
    num_ids = load_num_ids(graph_dir)
    train_graphs, val_graphs = load_split(graph_dir, "train"), load_split(graph_dir, "val")
    check_graphs(train_graphs, num_ids, f"{graph_dir}/train.pt")
    check_graphs(val_graphs, num_ids, f"{graph_dir}/val.pt")
    vgae = load_model(vgae_model) if vgae_model else None
    teacher = load_model(teacher_model) if teacher_model else None
    model, result, metrics, model_config = train(
        train_graphs, val_graphs, num_ids, settings, outputs.get("checkpoint"), teacher, vgae
    )
    write_outputs(outputs, model, "gat", model_config, result, metrics, variant=settings.get("variant"))
    return metrics
