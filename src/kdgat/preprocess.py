"""The preprocess step of one dataset: CAN logs -> ID vocabulary -> graphs -> train/val split -> files.

Outputs (the data contract the training and evaluation modules read):

* ``train.pt`` / ``val.pt``: graph lists (:func:`kdgat.graph_store.load_graphs`), a seeded split of the graphs of
  every training file (attack-free and with attacks);
* ``test.pt``: ``{scenario: graphs}`` (:func:`kdgat.graph_store.load_graph_sets`);
* ``vocab.json``: ``{"can_ids": {"0x316": 0, ...}, "oov_index": k, "num_ids": k + 1}`` built from the training
  files; IDs never seen in training map to the OOV index (the last one);
* ``metadata.json``: sizes, counts per split and scenario, attack fractions, skipped bad rows per file, wall time
  and peak memory of the step.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from kdgat.can.messages import CanMessages
from kdgat.can.reader import read_can_file
from kdgat.files import write_json
from kdgat.graph_store import save_graph_sets, save_graphs
from kdgat.graphs import EDGE_FEATURES, NODE_FEATURES, GraphArrays, build_graphs
from kdgat.layout import DEFAULT_EXCLUDE, LOG_SUFFIXES, discover_layout, scenario_name  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

# CAN IDs below this bound (all 11-bit ones) are counted and looked up in tables instead of sorted/searched.
_ID_TABLE = 1 << 20


def _distinct_ids(can_ids: np.ndarray) -> np.ndarray:
    if len(can_ids) and 0 <= can_ids.min() and can_ids.max() < _ID_TABLE:
        return np.flatnonzero(np.bincount(can_ids)).astype(can_ids.dtype)
    return np.unique(can_ids)


def build_vocabulary(messages: Iterable[CanMessages]) -> np.ndarray:
    """Sorted distinct CAN IDs of the training logs (the OOV index is ``len(ids)``)."""
    ids = [_distinct_ids(m.can_id) for m in messages]
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int32)


def to_index(can_ids: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """Vocabulary index of every CAN ID; IDs outside the vocabulary get the OOV index ``len(vocabulary)``."""
    if len(vocabulary) == 0:
        return np.zeros(len(can_ids), dtype=np.int64)
    if len(can_ids) and 0 <= vocabulary[0] and vocabulary[-1] < _ID_TABLE and 0 <= can_ids.min():
        table = np.full(int(vocabulary[-1]) + 2, len(vocabulary), dtype=np.int64)
        table[vocabulary] = np.arange(len(vocabulary))
        # IDs above the largest known one land on the last entry, which is the OOV index.
        return table[np.minimum(can_ids, int(vocabulary[-1]) + 1)]
    slot = np.searchsorted(vocabulary, can_ids)
    clipped = np.minimum(slot, len(vocabulary) - 1)
    return np.where(vocabulary[clipped] == can_ids, clipped, len(vocabulary)).astype(np.int64)


def _peak_memory_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def _attack_fraction(graphs: GraphArrays) -> float:
    return round(float(graphs.y.mean()), 6) if len(graphs) else 0.0


def group_test_files(
    test_files: Mapping[str, Sequence[str | Path]] | Iterable[tuple[str, str | Path]],
) -> dict[str, list[str | Path]]:
    """``{scenario: [files]}`` from either that mapping or ``(scenario, file)`` pairs (scenarios in first-seen
    order, files in the order given)."""
    if isinstance(test_files, Mapping):
        return {str(scenario): list(files) for scenario, files in test_files.items()}
    grouped: dict[str, list[str | Path]] = {}
    for entry in test_files:
        if not (isinstance(entry, tuple | list) and len(entry) == 2):
            raise ValueError(f"test files must be (scenario, file) pairs; got {entry!r}")
        scenario, path = entry
        grouped.setdefault(str(scenario), []).append(path)
    return grouped


def preprocess_dataset(
    dataset: str,
    train_files: Sequence[str | Path],
    test_files: Mapping[str, Sequence[str | Path]] | Iterable[tuple[str, str | Path]],
    out_dir: str | Path | None = None,
    *,
    fmt: str = "auto",
    bad_rows: str = "error",
    window_size: int = 100,
    stride: int = 100,
    val_fraction: float = 0.2,
    seed: int = 42,
    outputs: Mapping[str, str | Path] | None = None,
) -> dict:
    """Run the whole step; returns the metadata (also written to ``metadata.json``).

    ``test_files`` is ``{scenario: [files]}`` or ``[(scenario, file), ...]`` (what a Snakemake rule hands over:
    its inputs in order, with each one's scenario). ``outputs`` names each file (keys ``train, val, test, vocab,
    metadata``); a key it lacks goes to ``out_dir/<key>.pt|json``.
    """
    started = time.perf_counter()
    test_files = group_test_files(test_files)
    if not train_files:
        raise ValueError(f"dataset {dataset!r}: no training files")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"preprocess.val_fraction must be in [0, 1), got {val_fraction}")
    defaults = {"train": "train.pt", "val": "val.pt", "test": "test.pt", "vocab": "vocab.json"}
    defaults["metadata"] = "metadata.json"
    outputs = dict(outputs or {})
    missing = [key for key in defaults if not outputs.get(key)]
    if missing and out_dir is None:
        raise ValueError(f"preprocess_dataset: no path for the outputs {missing} (give outputs or out_dir)")
    paths = {
        key: Path(outputs[key]) if outputs.get(key) else Path(out_dir) / name
        for key, name in defaults.items()
    }

    skipped: dict[str, int] = {}
    message_counts: dict[str, int] = {}

    def read(path) -> CanMessages:
        messages = read_can_file(path, fmt=fmt, bad_rows=bad_rows)
        skipped[str(path)] = messages.skipped_rows
        message_counts[str(path)] = len(messages)
        log.info(
            "%s: %d messages (%s), %d bad rows skipped",
            path,
            len(messages),
            messages.fmt,
            messages.skipped_rows,
        )
        return messages

    train_messages = [read(path) for path in train_files]
    vocabulary = build_vocabulary(train_messages)
    num_ids = len(vocabulary) + 1

    def graphs_of(messages: CanMessages) -> GraphArrays:
        return build_graphs(
            to_index(messages.can_id, vocabulary),
            messages.payload,
            messages.label,
            num_ids,
            window_size,
            stride,
        )

    all_train = GraphArrays.concat([graphs_of(m) for m in train_messages])
    del train_messages
    if len(all_train) < 2:
        raise ValueError(
            f"dataset {dataset!r}: the training files give {len(all_train)} graphs, need at least 2"
        )
    order = np.random.default_rng(seed).permutation(len(all_train))
    num_val = int(round(val_fraction * len(all_train)))
    val, train = all_train.take(order[:num_val]), all_train.take(order[num_val:])

    test: dict[str, GraphArrays] = {}
    oov_nodes: dict[str, int] = {}
    for scenario, files in test_files.items():
        parts = []
        for path in files:
            messages = read(path)
            parts.append(graphs_of(messages))
        test[scenario] = GraphArrays.concat(parts)
        oov_nodes[scenario] = int((test[scenario].x[:, 0] == num_ids - 1).sum())

    save_graphs(train, paths["train"])
    save_graphs(val, paths["val"])
    save_graph_sets(test, paths["test"])
    vocab = {
        "can_ids": {f"0x{int(i):03x}": index for index, i in enumerate(vocabulary.tolist())},
        "oov_index": num_ids - 1,
        "num_ids": num_ids,
    }
    write_json(vocab, paths["vocab"], indent=1)

    metadata = {
        "dataset": dataset,
        "num_ids": num_ids,
        "node_features": NODE_FEATURES,
        "edge_features": EDGE_FEATURES,
        "window_size": window_size,
        "stride": stride,
        "val_fraction": val_fraction,
        "seed": seed,
        "format": fmt,
        "bad_rows": bad_rows,
        "counts": {"train": len(train), "val": len(val), "test": {name: len(g) for name, g in test.items()}},
        "attack_fraction": {
            "train": _attack_fraction(train),
            "val": _attack_fraction(val),
            "test": {name: _attack_fraction(g) for name, g in test.items()},
        },
        "oov_nodes": {"test": oov_nodes},
        "files": {
            "train": [str(p) for p in train_files],
            "test": {name: [str(p) for p in files] for name, files in test_files.items()},
        },
        "messages": {"per_file": message_counts, "total": int(sum(message_counts.values()))},
        "skipped_rows": {"per_file": skipped, "total": int(sum(skipped.values()))},
        "wall_time_s": round(time.perf_counter() - started, 3),
        "peak_memory_mb": _peak_memory_mb(),
    }
    write_json(metadata, paths["metadata"], indent=1)
    log.info(
        "%s: %d train, %d val graphs, test %s; %d IDs; %d bad rows skipped; %.2f s",
        dataset,
        len(train),
        len(val),
        metadata["counts"]["test"],
        num_ids,
        metadata["skipped_rows"]["total"],
        metadata["wall_time_s"],
    )
    return metadata
