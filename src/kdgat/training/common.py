"""Pieces the three stages share: data loading, loaders, optimisation step, metrics, output writing."""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score, roc_auc_score
from torch_geometric.loader import DataLoader

from kdgat.files import write_json, write_table
from kdgat.model_store import save_model
from kdgat.models import count_parameters
from kdgat.presets import resolve_preset
from kdgat.runtime import grad_scaler, select_device
from kdgat.training.loop import discard_checkpoint

log = logging.getLogger("kdgat.training")


def load_split(graph_dir, split: str) -> list:
    """Graphs of train/val from the preprocess output directory (see kdgat.graph_store)."""
    from kdgat.graph_store import load_graphs  # engineer A's module; imported late so models work without it

    path = Path(graph_dir) / f"{split}.pt"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: missing graph file (kd_gat.data_prefix points at the preprocess outputs)"
        )
    graphs = load_graphs(path)
    if not graphs:
        raise ValueError(f"{path}: contains no graphs")
    return graphs


def load_num_ids(graph_dir) -> int:
    path = Path(graph_dir) / "metadata.json"
    try:
        metadata = json.loads(path.read_text())
        return int(metadata["num_ids"])
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path}: missing (expected preprocess metadata with 'num_ids')") from error
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: expected an integer 'num_ids' (vocabulary size incl. OOV)") from error


def labels_of(graphs) -> np.ndarray:
    return np.array([int(g.y.view(-1)[0]) for g in graphs], dtype=np.int64)


def check_graphs(graphs, num_ids: int, where: str) -> None:
    """Fail early and clearly on graphs that do not follow the preprocess contract."""
    for index, graph in enumerate(graphs):
        if graph.x.dim() != 2 or graph.x.size(1) != 11:
            raise ValueError(
                f"{where}: graph {index} has x of shape {tuple(graph.x.shape)}, expected [N, 11]"
            )
        if graph.x.size(0) and int(graph.x[:, 0].max()) >= num_ids:
            raise ValueError(
                f"{where}: graph {index} has a CAN-ID index >= num_ids={num_ids} (metadata.json)"
            )
        if graph.y is None or graph.y.numel() != 1:
            raise ValueError(f"{where}: graph {index} needs a graph label y of shape [1]")


def make_loader(graphs, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
    return DataLoader(list(graphs), batch_size=batch_size, shuffle=shuffle, generator=generator)


def make_optimizer(parameters, training: dict) -> torch.optim.Optimizer:
    return torch.optim.Adam(
        parameters, lr=float(training["lr"]), weight_decay=float(training["weight_decay"])
    )


def optimisation_step(optimizer, scaler, loss, parameters, grad_clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def validation_metrics(labels, predictions, scores=None, prefix: str = "val_") -> dict:
    """The few scores logged per epoch (accuracy, F1, AUC); the full set is kdgat.evaluation.binary_metrics."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    metrics = {
        f"{prefix}acc": float((labels == predictions).mean()) if len(labels) else float("nan"),
        f"{prefix}f1": float(f1_score(labels, predictions, zero_division=0)),
    }
    if scores is not None:
        metrics[f"{prefix}auc"] = auc_or_nan(labels, scores)
    return metrics


def auc_or_nan(labels, scores) -> float:
    """ROC AUC, or NaN (null in metrics.json) when the split has a single class."""
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else float("nan")


class StageBase:
    """Model + optimiser + AMP scaler + the loader's generator: what a checkpoint must carry for a stage."""

    def __init__(self, model, settings: dict, device: torch.device, extra_parameters=()):
        self.device = device
        self.model = model.to(device)
        self.training = settings["training"]
        self.trainable = [p for p in self.model.parameters() if p.requires_grad] + list(extra_parameters)
        self.optimizer = make_optimizer(self.trainable, self.training)
        self.scaler = grad_scaler(device)
        self.loader_generator = torch.Generator().manual_seed(int(settings["seed"]))

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state)

    def step(self, loss) -> None:
        optimisation_step(
            self.optimizer, self.scaler, loss, self.trainable, float(self.training["grad_clip"])
        )


# Sweep columns (config/params.tsv) with these names override training settings; any other column is a model
# (architecture) argument of the stage's preset.
TRAINING_KEYS = {"epochs", "batch_size", "lr", "weight_decay", "patience", "grad_clip"}


def prepare_settings(settings: dict, stage: str, threads: int | None = None) -> dict:
    """Settings as the wrapper passes them → as the train functions take them.

    Resolves settings["preset"] (with custom settings["presets"]) into settings["model"] and applies
    settings["overrides"] (one sweep row) to the model or training section; sets torch's thread count.
    """
    settings = copy.deepcopy(dict(settings))
    if "model" not in settings:
        settings["model"] = resolve_preset(settings["preset"], stage, settings.get("presets"))
    for key, value in (settings.pop("overrides", None) or {}).items():
        value = value.item() if hasattr(value, "item") else value  # Paramspace rows hold numpy scalars
        section = "training" if key in TRAINING_KEYS else "model"
        if section == "model" and key not in settings["model"]:
            raise KeyError(f"sweep column {key!r} is neither a training setting nor a {stage} model argument")
        settings[section][key] = value
    if threads:
        torch.set_num_threads(int(threads))
    return settings


def resolve_device(settings: dict) -> torch.device:
    device = select_device(settings.get("device", "auto"))
    log.info("device: %s", device)
    return device


def write_outputs(
    outputs: dict, model, kind: str, model_config: dict, result: dict, metrics: dict, **extra
) -> None:
    """model.pt, metrics.json and history.csv, each atomically; then drop the resume checkpoint."""
    save_model(model, kind, model_config, outputs["model"], **extra)
    write_json(metrics, outputs["metrics"], sort_keys=True)
    write_table(pd.DataFrame(result["history"]), outputs["history"])
    discard_checkpoint(outputs.get("checkpoint"))


def base_metrics(stage: str, settings: dict, model, result: dict, started: float, device) -> dict:
    return {
        "stage": stage,
        "variant": settings.get("variant"),
        "preset": settings.get("preset"),
        "num_parameters": count_parameters(model),
        "epochs_run": len(result["history"]),
        "best_epoch": result["best_epoch"],
        "best_val_loss": result["best_val_loss"],
        "resumed_from_epoch": None if result["resumed_from"] is None else result["resumed_from"] + 1,
        "train_seconds": time.perf_counter() - started,
        "device": str(device),
        "knowledge_distillation": settings.get("distillation") is not None,
    }
