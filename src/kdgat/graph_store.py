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

Each file also records ``split``: the split it holds (``train``, ``val``, ``test`` or a held-out one such as
``fusion``), since a train.pt and a val.pt look alike. :func:`check_graph_splits` refuses a file given as another
split than the one it records (train.pt and val.pt swapped); a file written before it was recorded has none
(unknown) and is not checked.

Both are the file's header: :func:`graph_header` reads them in one (memory-mapped) read, which a caller that checks
both hands to :func:`check_graph_splits` and ``kdgat.training.data.check_one_preprocess_run`` (``headers``).
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


def _header(vocabulary: str | None, split: str | None = None) -> dict:
    if split is not None and not (isinstance(split, str) and split):
        raise ValueError(
            f"split must be the name of a split (train, val, test, fusion) or None; got {split!r}"
        )
    return {
        **({} if vocabulary is None else {"vocabulary": str(vocabulary)}),
        **({} if split is None else {"split": split}),
    }


HEADER_KEYS = ("vocabulary", "split")


def graph_header(path: str | Path) -> dict[str, str | None]:
    """What a graph file (either format) records of its preprocess run, in one read: ``{"vocabulary": ...,
    "split": ...}``, each None for a file written before it was recorded."""
    # mapped: a header string of a graph file of gigabytes is read before the file itself is loaded
    payload = load_torch(
        Path(path), "a readable kdgat graph file (of the preprocess step; rebuild it)", mmap=True
    )
    found = {key: payload.get(key) if isinstance(payload, dict) else None for key in HEADER_KEYS}
    return {key: value if isinstance(value, str) else None for key, value in found.items()}


def graph_vocabulary(path: str | Path) -> str | None:
    """The vocabulary digest a graph file (either format) records; None for a file written before it was."""
    return graph_header(path)["vocabulary"]


def graph_split(path: str | Path) -> str | None:
    """The split (train, val, test, fusion) a graph file records; None (unknown) for a file written before it was."""
    return graph_header(path)["split"]


def check_graph_splits(
    given: Mapping[str, str | Path], headers: Mapping[str, Mapping[str, str | None]] | None = None
) -> None:
    """Refuse graph files given as another split than the one they record (``given``: ``{split: path}``), naming
    both files of a swap (train.pt given as val and val.pt as train) or the one file given in another's place,
    before anything is fitted or scored on them: graph files of two splits look alike and nothing else fails.
    Refused: a file of one of the splits given, or of the training split, given as another. A held-out split
    given as val (``fusion.pt`` to choose a threshold on other windows) is left to the caller, and a file that
    records no split (written before it was recorded) is not checked. ``headers``: ``{split: graph_header(path)}``
    the caller has read already (each file's header is read once); a split it lacks is read here."""
    headers = headers or {}
    recorded = {role: (headers.get(role) or graph_header(path))["split"] for role, path in given.items()}
    wrong = {
        role: found
        for role, found in recorded.items()
        if found is not None and found != role and (found in given or found == "train")
    }
    for role, found in wrong.items():
        if found in given and recorded[found] == role:
            raise FileContentError(
                f"{given[role]} and {given[found]} are swapped: {given[role]} holds the {found} split and is given "
                f"as {role}, {given[found]} holds the {role} split and is given as {found}; give each as its own split"
            )
    for role, found in wrong.items():
        raise FileContentError(
            f"{given[role]}: given as the {role} split, but it holds the {found} split (preprocess wrote it as "
            f"{found}.pt); give the {role}.pt of the same preprocess run"
        )


def save_graphs(graphs, path: str | Path, vocabulary: str | None = None, split: str | None = None) -> None:
    """Save a list of ``Data`` (or a :class:`GraphArrays`) atomically, with the vocabulary digest and the split
    (train, val, a held-out split) when given."""
    save_torch(
        {"format": GRAPHS_FORMAT, **_header(vocabulary, split), **_to_tensors(_as_arrays(graphs))}, path
    )


def load_graph_arrays(path: str | Path) -> GraphArrays:
    """The graphs of a :func:`save_graphs` file, still collated (fast path for bulk processing)."""
    return _from_tensors(_load(path, GRAPHS_FORMAT), Path(path))


def load_graphs(path: str | Path) -> list:
    """The graphs of a :func:`save_graphs` file as ``list[torch_geometric.data.Data]``."""
    return load_graph_arrays(path).to_data_list()


def save_graph_sets(
    mapping: Mapping[str, object], path: str | Path, vocabulary: str | None = None, split: str | None = None
) -> None:
    """Save ``{scenario: graphs}`` atomically (graphs: a list of ``Data`` or a :class:`GraphArrays`), with the
    vocabulary digest and the split (test) when given."""
    sets = {str(name): _to_tensors(_as_arrays(graphs)) for name, graphs in mapping.items()}
    header = _header(vocabulary, split)
    save_torch({"format": GRAPH_SETS_FORMAT, **header, "names": list(sets), "sets": sets}, path)


def load_graph_set_arrays(path: str | Path) -> dict[str, GraphArrays]:
    payload = _load(path, GRAPH_SETS_FORMAT)
    return {name: _from_tensors(payload["sets"][name], Path(path)) for name in payload["names"]}


def load_graph_sets(path: str | Path) -> dict[str, list]:
    """The ``{scenario: list[Data]}`` of a :func:`save_graph_sets` file, in the order they were saved."""
    return {name: arrays.to_data_list() for name, arrays in load_graph_set_arrays(path).items()}
