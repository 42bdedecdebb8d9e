"""What a training job reads: the preprocess outputs (graph files and metadata), checked, and mini-batch loaders."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from kdgat.chain import NODE_FEATURES
from kdgat.files import file_sha256, load_json
from kdgat.graph_store import load_graphs
from kdgat.model_store import trained_on


def load_graph_file(path: str | os.PathLike) -> list:
    """The graphs of one preprocess split file (train.pt or val.pt, see kdgat.graph_store); never empty."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: missing graph file (kd_gat.data_prefix points at the preprocess outputs)"
        )
    graphs = load_graphs(path)
    if not graphs:
        raise ValueError(f"{path}: contains no graphs")
    return graphs


def load_num_ids(metadata: str | os.PathLike) -> int:
    """The CAN-ID vocabulary size (incl. the out-of-vocabulary index) from the preprocess metadata.json."""
    path = Path(metadata)
    try:
        document = load_json(path)  # a truncated copy: ValueError naming the file
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{path}: missing (expected preprocess metadata with 'num_ids')") from error
    try:
        return int(document["num_ids"])
    except (KeyError, ValueError, TypeError) as error:
        raise ValueError(f"{path}: expected an integer 'num_ids' (vocabulary size incl. OOV)") from error


def refuse_training_graphs(graph_files: Mapping[str, Any], models: Mapping[str, Any]) -> None:
    """Refuse a graph file (``{role: path}``, e.g. the DQN's fit and stop graphs) that is the file one of
    ``models`` (``{name: model.pt}``) was trained on: outputs on a model's own training graphs are near perfect,
    and a fusion learnt from them copies that model (the kd_gat module gives held-out graphs: kd_gat.dqn.fit_split).
    This also covers a direct library call or ``kdgat train dqn --fit``, which no schema checks.
    Models that record no training file (older files) are not compared."""
    recorded = {name: trained_on(path) for name, path in models.items() if path}
    for role, path in graph_files.items():
        if not path:
            continue
        digest = file_sha256(path)
        trained = [f"{name} ({models[name]})" for name, seen in recorded.items() if seen == digest]
        if trained:
            raise ValueError(
                f"{path}: the {role} graphs are the graphs {' and '.join(trained)} trained on; the DQN must learn "
                "from graphs its base models did not train on (kd_gat.dqn.fit_split: fusion or val, never train)"
            )


def labels_of(graphs) -> np.ndarray:
    return np.array([int(g.y.view(-1)[0]) for g in graphs], dtype=np.int64)


def check_graphs(graphs, num_ids: int, where: str) -> None:
    """Fail early and clearly on graphs that do not follow the preprocess contract."""
    for index, graph in enumerate(graphs):
        if graph.x.dim() != 2 or graph.x.size(1) != NODE_FEATURES:
            raise ValueError(
                f"{where}: graph {index} has x of shape {tuple(graph.x.shape)}, expected [N, {NODE_FEATURES}]"
            )
        if not torch.isfinite(graph.x).all():  # one NaN makes every loss NaN, which reads as a diverged run
            raise ValueError(f"{where}: graph {index} has node features that are not finite (NaN or inf)")
        if graph.x.size(0) and int(graph.x[:, 0].max()) >= num_ids:
            raise ValueError(
                f"{where}: graph {index} has a CAN-ID index >= num_ids={num_ids} (metadata.json)"
            )
        if graph.y is None or graph.y.numel() != 1:
            raise ValueError(f"{where}: graph {index} needs a graph label y of shape [1]")
        if int(graph.y.view(-1)[0]) not in (0, 1):
            raise ValueError(
                f"{where}: graph {index} has the label y={int(graph.y.view(-1)[0])}, expected 0 (normal) or 1 "
                "(attack)"
            )


def load_training_data(train, val, metadata, check: bool = True) -> tuple[list, list, int]:
    """(train graphs, validation graphs, num_ids) from the three preprocess files a training job declares."""
    num_ids = load_num_ids(metadata)
    train_graphs, val_graphs = load_graph_file(train), load_graph_file(val)
    if check:
        check_graphs(train_graphs, num_ids, str(train))
        check_graphs(val_graphs, num_ids, str(val))
    return train_graphs, val_graphs, num_ids


def make_loader(graphs, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
    return DataLoader(list(graphs), batch_size=batch_size, shuffle=shuffle, generator=generator)
