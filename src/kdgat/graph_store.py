"""Saving and loading graph sets (the preprocess step's ``train.pt``, ``val.pt`` and ``test.pt``).

A file holds collated tensors plus per-graph pointers (see :class:`kdgat.graphs.GraphArrays`), not pickled
``Data`` objects, so thousands of graphs save and load in milliseconds and load with ``weights_only=True``.
Writes are atomic and honour the umask (kdgat.files).

``train.pt``/``val.pt``: one graph list (:func:`save_graphs`, :func:`load_graphs`).
``test.pt``: scenario name -> graph list (:func:`save_graph_sets`, :func:`load_graph_sets`).

Each file of one preprocess run records ``vocabulary``: the digest of its CAN-ID vocabulary
(:func:`vocabulary_digest`), since node feature 0 is an index into it and graphs of two runs look alike. Readers
compare it (:func:`graph_vocabulary`) before mixing files; a file written before it was recorded has none (None),
and is read as before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from kdgat.files import FileContentError, load_torch, save_torch
from kdgat.graphs import GraphArrays

GRAPHS_FORMAT = "kdgat-graphs/1"
GRAPH_SETS_FORMAT = "kdgat-graph-sets/1"
_FIELDS = ("x", "edge_index", "edge_attr", "y", "node_ptr", "edge_ptr")


def _as_arrays(graphs) -> GraphArrays:
    return graphs if isinstance(graphs, GraphArrays) else GraphArrays.from_data_list(list(graphs))


def _to_tensors(arrays: GraphArrays) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.ascontiguousarray(getattr(arrays, name))) for name in _FIELDS}


def _from_tensors(tensors: Mapping[str, torch.Tensor], path: Path) -> GraphArrays:
    missing = [name for name in _FIELDS if name not in tensors]
    if missing:
        raise FileContentError(f"{path}: not a kdgat graph file (missing {', '.join(missing)})")
    return GraphArrays(**{name: tensors[name].numpy() for name in _FIELDS})


def _load(path: str | Path, expected: str) -> dict:
    path = Path(path)
    payload = load_torch(
        path, f"a readable kdgat graph file (a {expected!r} file of the preprocess step; rebuild it)"
    )
    if not isinstance(payload, dict) or payload.get("format") != expected:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise FileContentError(f"{path}: expected a {expected!r} file, found {found!r}")
    return payload


def vocabulary_digest(can_ids) -> str:
    """The digest of a CAN-ID vocabulary (its IDs in index order) that graph files and models record."""
    return hashlib.sha256(",".join(str(int(i)) for i in can_ids).encode()).hexdigest()


def _header(vocabulary: str | None) -> dict:
    return {} if vocabulary is None else {"vocabulary": str(vocabulary)}


def graph_vocabulary(path: str | Path) -> str | None:
    """The vocabulary digest a graph file (either format) records; None for a file written before it was."""
    payload = load_torch(Path(path), "a readable kdgat graph file (of the preprocess step; rebuild it)")
    found = payload.get("vocabulary") if isinstance(payload, dict) else None
    return found if isinstance(found, str) else None


def save_graphs(graphs, path: str | Path, vocabulary: str | None = None) -> None:
    """Save a list of ``Data`` (or a :class:`GraphArrays`) atomically, with the vocabulary digest when given."""
    save_torch({"format": GRAPHS_FORMAT, **_header(vocabulary), **_to_tensors(_as_arrays(graphs))}, path)


def load_graph_arrays(path: str | Path) -> GraphArrays:
    """The graphs of a :func:`save_graphs` file, still collated (fast path for bulk processing)."""
    return _from_tensors(_load(path, GRAPHS_FORMAT), Path(path))


def load_graphs(path: str | Path) -> list:
    """The graphs of a :func:`save_graphs` file as ``list[torch_geometric.data.Data]``."""
    return load_graph_arrays(path).to_data_list()


def save_graph_sets(mapping: Mapping[str, object], path: str | Path, vocabulary: str | None = None) -> None:
    """Save ``{scenario: graphs}`` atomically (graphs: a list of ``Data`` or a :class:`GraphArrays`)."""
    sets = {str(name): _to_tensors(_as_arrays(graphs)) for name, graphs in mapping.items()}
    save_torch({"format": GRAPH_SETS_FORMAT, **_header(vocabulary), "names": list(sets), "sets": sets}, path)


def load_graph_set_arrays(path: str | Path) -> dict[str, GraphArrays]:
    payload = _load(path, GRAPH_SETS_FORMAT)
    return {name: _from_tensors(payload["sets"][name], Path(path)) for name in payload["names"]}


def load_graph_sets(path: str | Path) -> dict[str, list]:
    """The ``{scenario: list[Data]}`` of a :func:`save_graph_sets` file, in the order they were saved."""
    return {name: arrays.to_data_list() for name, arrays in load_graph_set_arrays(path).items()}
