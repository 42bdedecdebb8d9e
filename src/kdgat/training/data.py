"""What a training job reads: the preprocess outputs (graph files and metadata), checked, and mini-batch loaders."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.loader import DataLoader

from kdgat.chain import NODE_FEATURES
from kdgat.files import FileContentError, MissingInputError, file_sha256, load_json
from kdgat.graph_store import graph_header, load_graphs
from kdgat.model_store import recorded, trained_on
from kdgat.training.settings import given_by_wrapper

log = logging.getLogger("kdgat.training")
GRAPH_FILE = "a graph file of the preprocess step; kd_gat.data_prefix points at its outputs"


def existing_input(path: str | os.PathLike, name: str, what: str) -> Path:
    """``path`` (the training job's input ``name``, ``what`` it should be) when it is a file; refused naming both
    otherwise, as the user's mistake (a wrapper prints one line, no traceback)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"input {name!r} of the training job does not exist: {path} ({what})")
    return path


def load_graph_file(path: str | os.PathLike, name: str = "graphs") -> list:
    """The graphs of one preprocess split file (input ``name``: train.pt or val.pt, see kdgat.graph_store); never
    empty."""
    path = existing_input(path, name, GRAPH_FILE)
    graphs = load_graphs(path)
    if not graphs:
        raise FileContentError(f"{path}: contains no graphs")
    return graphs


def refuse_vocab_as_metadata(path: str | os.PathLike, document: Any) -> None:
    """Refuse the preprocess vocab.json given as the metadata input: it holds num_ids too, so its vocabulary size
    was read, and only a warning said the vocabulary digest (which metadata.json records) could not be checked."""
    if isinstance(document, Mapping) and "can_ids" in document and "vocabulary" not in document:
        raise FileContentError(
            f"{path}: this is a preprocess vocab.json (CAN ID -> index), given as metadata; expected the preprocess "
            "run's metadata.json (dataset, num_ids, vocabulary digest, splits), written beside it"
        )


def load_num_ids(metadata: str | os.PathLike) -> int:
    """The CAN-ID vocabulary size (incl. the out-of-vocabulary index) from the preprocess metadata.json."""
    path = existing_input(metadata, "metadata", "the preprocess metadata.json with 'num_ids'")
    document = load_json(path)  # a truncated copy: ValueError naming the file
    refuse_vocab_as_metadata(path, document)
    try:
        return int(document["num_ids"])
    except (KeyError, ValueError, TypeError) as error:
        raise FileContentError(
            f"{path}: expected an integer 'num_ids' (vocabulary size incl. OOV)"
        ) from error


def refuse_training_graphs(graph_files: Mapping[str, Any], models: Mapping[str, Any]) -> None:
    """Refuse a graph file (``{role: path}``, e.g. the DQN's fit and stop graphs) that is the file one of
    ``models`` (``{name: model.pt}``) was trained on: outputs on a model's own training graphs are near perfect,
    and a fusion learnt from them copies that model (the kd_gat module gives held-out graphs: kd_gat.dqn.fit_split).
    This also covers a direct library call or ``kdgat train dqn --fit``, which no schema checks.
    Models that record no training file (older files) are not compared. A refusal is a FileContentError naming
    both files, the user's mistake (a wrapper prints one line, no traceback)."""
    recorded = {
        name: trained_on(existing_input(path, name, "a model.pt")) for name, path in models.items() if path
    }
    for role, path in graph_files.items():
        if not path:
            continue
        digest = file_sha256(existing_input(path, role, GRAPH_FILE))
        trained = [f"{name} ({models[name]})" for name, seen in recorded.items() if seen == digest]
        if trained:
            raise FileContentError(
                f"{path}: the {role} graphs are the graphs {' and '.join(trained)} trained on; the DQN must learn "
                "from graphs its base models did not train on ("
                + (
                    f"input.{role}: held-out graphs such as fusion.pt or val.pt, never train.pt"
                    if given_by_wrapper()
                    else "kd_gat.dqn.fit_split: fusion or val, never train"
                )
                + ")"
            )


def refuse_stop_graphs_that_are_the_fit_graphs(
    fit: str | os.PathLike, stop: str | os.PathLike | None
) -> None:
    """The DQN's early stopping and its keep-or-fall-back judgement on the graphs it learnt from (``--stop`` the
    ``--fit`` file or a copy) gave a wrong agent and exit 0, as a VGAE or GAT ``val.pt`` that is its ``train.pt``
    would (refused by their stage); the settings refuse ``fit_split == stop_split`` for the same reason. A
    FileContentError names both files."""
    if stop and file_sha256(existing_input(stop, "stop", GRAPH_FILE)) == file_sha256(
        existing_input(fit, "fit", GRAPH_FILE)
    ):
        raise FileContentError(
            f"{stop}: the stop graphs are the fit graphs {fit}; give another split (kd_gat.dqn.stop_split) or "
            "none, to stop on blocks held out of the fit graphs"
        )


def _metadata_vocabulary(path) -> str | None:
    try:
        found = load_json(path).get("vocabulary", {}).get("digest")
    except (OSError, ValueError, AttributeError):
        return None  # a missing or bad metadata.json is named by the job when it reads num_ids
    return found if isinstance(found, str) else None


def check_one_preprocess_run(
    graphs: Mapping[str, Any],
    models: Mapping[str, Any] = {},  # noqa: B006 - read only
    metadata: str | os.PathLike | None = None,
    train: str | os.PathLike | None = None,
    headers: Mapping[str, Mapping[str, str | None]] = {},  # noqa: B006 - read only
) -> None:
    """Refuse inputs of different preprocess runs (another dataset, or the dataset preprocessed again), before any
    training: node feature 0 is an index into the run's CAN-ID vocabulary, so graphs of another run, or a model
    trained on them, mean other IDs under the same indices and nothing fails. ``graphs`` and ``models`` map a role
    (e.g. ``--fit``) to a file; the vocabulary digest each records (kdgat.graph_store.vocabulary_digest; a VGAE/GAT
    model.pt records its training graphs') and ``metadata``'s ``vocabulary.digest`` must agree. With ``train`` (the
    job's training graphs) every model that records ``trained_on`` must have been trained on that very file, and
    models that record it must agree with each other; a refusal is a FileContentError naming both files. Files
    written before these were recorded cannot be checked: a warning names them. ``headers``: ``{role:
    kdgat.graph_store.graph_header(path)}`` of ``graphs`` the caller has read already (each file's header is read
    once); a role it lacks is read here."""
    seen: list[tuple[str, str, str]] = []  # (digest, role, path)
    unchecked = []

    def compare(role: str, path, digest: str | None) -> None:
        if digest is None:
            unchecked.append(f"{role} {path}")
            return
        for first, first_role, first_path in seen:
            if first != digest:
                raise FileContentError(
                    f"{path} ({role}) and {first_path} ({first_role}) are of different preprocess runs (another "
                    f"dataset or the dataset preprocessed again): their CAN-ID vocabularies differ (digest "
                    f"{digest[:12]} against {first[:12]}), so the same ID index means another CAN ID in each; give "
                    "the files of one preprocess run"
                )
        seen.append((digest, role, str(path)))

    if metadata and Path(metadata).is_file():
        compare("metadata", metadata, _metadata_vocabulary(metadata))
    for role, path in graphs.items():
        if path and Path(path).is_file():  # a missing file is named where the job reads it
            compare(role, path, (headers.get(role) or graph_header(path))["vocabulary"])
    present = {role: path for role, path in models.items() if path and Path(path).is_file()}
    # role -> (path, SHA-256 of the train.pt it was trained on, vocabulary digest)
    records = {
        role: (path, recorded(path, "trained_on"), recorded(path, "vocabulary"))
        for role, path in present.items()
    }
    learnt = {
        role: (path, learnt_on) for role, (path, learnt_on, _) in records.items() if learnt_on is not None
    }
    expected = file_sha256(train) if train and Path(train).is_file() and learnt else None
    for role, (path, learnt_on) in learnt.items():
        if expected is not None and learnt_on != expected:
            raise FileContentError(
                f"{path} ({role}) was trained on another train.pt than this job's {train} (another dataset or "
                "preprocess run): its ID embeddings mean another vocabulary's IDs; give the model trained on "
                "these graphs, or the graphs it was trained on"
            )
        first_role, (first_path, first) = next(iter(learnt.items()))
        if learnt_on != first:
            raise FileContentError(
                f"{path} ({role}) and {first_path} ({first_role}) were trained on different train.pt files "
                "(another dataset or preprocess run); give models trained on one preprocess run"
            )
    for role, (path, learnt_on, vocabulary) in records.items():
        if vocabulary is not None or learnt_on is None:  # an older VGAE/GAT is still checked by trained_on
            compare(role, path, vocabulary)
    if unchecked:
        log.warning(
            "not checked to be of one preprocess run (they record no CAN-ID vocabulary digest: written before "
            "graph files, metadata.json and models recorded it, or not a preprocess output; preprocess and train "
            "again to have them checked): %s",
            ", ".join(unchecked),
        )


def labels_of(graphs) -> np.ndarray:
    return np.array([int(g.y.view(-1)[0]) for g in graphs], dtype=np.int64)


def check_graphs(graphs, num_ids: int, where: str) -> None:
    """Fail early and clearly on graphs that do not follow the preprocess contract: a FileContentError naming
    ``where`` (the graph file) and the graph, as the user's mistake (a file of another tool or run), not a bug."""
    for index, graph in enumerate(graphs):
        if graph.x.dim() != 2 or graph.x.size(1) != NODE_FEATURES:
            raise FileContentError(
                f"{where}: graph {index} has x of shape {tuple(graph.x.shape)}, expected [N, {NODE_FEATURES}]"
            )
        if not torch.isfinite(graph.x).all():  # one NaN makes every loss NaN, which reads as a diverged run
            raise FileContentError(
                f"{where}: graph {index} has node features that are not finite (NaN or inf)"
            )
        if graph.x.size(0) and int(graph.x[:, 0].max()) >= num_ids:
            raise FileContentError(
                f"{where}: graph {index} has a CAN-ID index >= num_ids={num_ids} (metadata.json)"
            )
        if (
            graph.x.size(0) and int(graph.x[:, 0].min()) < 0
        ):  # an index the embedding refuses with a traceback
            raise FileContentError(
                f"{where}: graph {index} has a negative CAN-ID index {int(graph.x[:, 0].min())}, expected 0 to "
                f"num_ids - 1 = {num_ids - 1} (metadata.json)"
            )
        if graph.y is None or graph.y.numel() != 1:
            raise FileContentError(f"{where}: graph {index} needs a graph label y of shape [1]")
        if int(graph.y.view(-1)[0]) not in (0, 1):
            raise FileContentError(
                f"{where}: graph {index} has the label y={int(graph.y.view(-1)[0])}, expected 0 (normal) or 1 "
                "(attack)"
            )


def load_training_data(train, val, metadata, check: bool = True) -> tuple[list, list, int]:
    """(train graphs, validation graphs, num_ids) from the three preprocess files a training job declares."""
    num_ids = load_num_ids(metadata)
    train_graphs, val_graphs = load_graph_file(train, "train"), load_graph_file(val, "val")
    if check:
        check_graphs(train_graphs, num_ids, str(train))
        check_graphs(val_graphs, num_ids, str(val))
    return train_graphs, val_graphs, num_ids


def make_loader(graphs, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
    return DataLoader(list(graphs), batch_size=batch_size, shuffle=shuffle, generator=generator)
