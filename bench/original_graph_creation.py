"""The original DQN-Fusion preprocessing (its ``graph_creation`` on one CSV), as a baseline for the benchmark.

This is a clean-room re-implementation of the original's *algorithm and cost structure*, written from a description
of it; it is not the original's code. It exists so that ``bench/bench_preprocess.py`` can measure the original's
throughput on the very file it measures ours on, instead of quoting an old figure. What it keeps, step for step:

* a first pass over the whole file for the ID vocabulary: ``pandas.read_csv``, the ID columns concatenated,
  their distinct values, each converted to an integer on its own (a Python call per distinct ID), sorted, with
  an out-of-vocabulary index after the last;
* a second ``pandas.read_csv`` of the file, columns renamed to ``Timestamp, CAN ID, data_field, attack``;
* the DLC as ``len(data_field) // 2`` and the split of each payload into 2-character bytes by a row-wise
  ``.apply``, then ``Data1``..``Data8`` built by one row-wise ``.apply`` each (``'00'`` beyond the payload);
* ``Source`` = ``CAN ID``, ``Target`` = ``CAN ID`` shifted by -1, and padding by DLC (``'00'`` where the byte
  index is at or past the DLC);
* every hex column (``CAN ID``, ``Data1``..``Data8``, ``Source``, ``Target``) converted by a row-wise ``.apply``
  that checks each character is a hex digit before ``int(x, 16)``;
* the three ID columns mapped through the vocabulary dict by a row-wise ``.apply`` (OOV index when missing);
* the last row dropped (no target), ``label`` = ``attack``, payload columns divided by 255, ``to_numpy()``;
* per window (same ``window_size`` and ``stride`` as ours, ``max(1, (rows - W) // S + 1)`` windows), one
  ``torch_geometric.data.Data``: ``np.unique`` of the (source, target) pairs with counts, ``np.unique`` of the
  nodes, a node -> position dict applied with ``np.vectorize``, then a Python loop over the distinct edges that
  computes, from boolean masks over the whole window, 23 edge features (count, relative count, mean / std of the
  intervals between positions, regularity, first / last / spread, mean and std of each of the first 4 payload
  bytes, a crude entropy of those bytes, mean / std of the payload change, reverse edge present, degree product
  and ratio, attack ratio), and a Python loop over the nodes with a mask each for the 11 node features (mean of
  the ID index and the 8 bytes over the node's rows, count min-max normalised, last position), ``y`` = any label.

It reads the file with pandas' default type inference except that the ID and payload columns are read as text:
inferred as numbers, an ID such as ``040`` would become 40 and then be read back as hex 0x40. Its graphs are not
bit-identical to ours (other edge features, float64 maths), but have the same windows and the same node sets,
which ``.tests/integration/test_benchmarks.py`` checks so that a broken baseline fails.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import Data

PAYLOAD_BYTES = 8
OOV = "OOV"
_HEX = frozenset(string.hexdigits)
_PAYLOAD = [f"Data{k + 1}" for k in range(PAYLOAD_BYTES)]
_ID_COLUMNS = ["CAN ID", "Source", "Target"]
# Columns of the array handed to the window loop: ID index, 8 bytes, source, target, label.
_SOURCE, _TARGET, _LABEL = 9, 10, 11


def hex_to_int(value) -> int | None:
    """One cell's hex text as an integer (None for a missing cell or one with a non-hex character)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    if text and all(character in _HEX for character in text):
        return int(text, 16)
    return None


def _read(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={1: str, 2: str}, keep_default_na=False)
    frame.columns = ["Timestamp", "CAN ID", "data_field", "attack"]
    return frame


def build_id_mapping(paths: list[Path]) -> dict:
    """The vocabulary pass: every distinct ID of every file, converted one by one, sorted; OOV after them."""
    ids = pd.concat([_read(path)["CAN ID"] for path in paths], ignore_index=True)
    converted = {hex_to_int(value) for value in ids.unique()} - {None}
    mapping: dict = {can_id: index for index, can_id in enumerate(sorted(converted))}
    mapping[OOV] = len(mapping)
    return mapping


def message_table(path: Path, mapping: dict) -> np.ndarray:
    """One file as the original's table: ``[ID index, Data1..8 / 255, source index, target index, label]``."""
    frame = _read(path)
    frame["DLC"] = frame["data_field"].apply(lambda field: len(field) // 2)
    pieces = frame["data_field"].apply(lambda field: [field[i : i + 2] for i in range(0, len(field), 2)])
    for k, column in enumerate(_PAYLOAD):
        frame[column] = pieces.apply(lambda parts, k=k: parts[k] if k < len(parts) else "00")
    frame["Source"] = frame["CAN ID"]
    frame["Target"] = frame["CAN ID"].shift(-1)
    for k, column in enumerate(_PAYLOAD):  # padding by DLC
        frame.loc[frame["DLC"] <= k, column] = "00"
    for column in ["CAN ID", *_PAYLOAD, "Source", "Target"]:
        frame[column] = frame[column].apply(hex_to_int)
    oov = mapping[OOV]
    for column in _ID_COLUMNS:
        frame[column] = frame[column].apply(lambda can_id: mapping.get(can_id, oov))
    frame = frame.iloc[:-1].copy()
    frame["label"] = frame["attack"].astype(int)
    for column in _PAYLOAD:
        frame[column] = frame[column] / 255.0
    return frame[["CAN ID", *_PAYLOAD, "Source", "Target", "label"]].to_numpy(dtype=np.float64)


def _edge_features(window: np.ndarray, source, target, edge, count, positions) -> list[float]:
    width = len(window)
    src, tgt = edge
    mask = (source == src) & (target == tgt)
    where = positions[mask]
    intervals = np.diff(where)
    interval_mean = float(intervals.mean()) if len(intervals) else 0.0
    interval_std = float(intervals.std()) if len(intervals) else 0.0
    regularity = 1.0 / (1.0 + interval_std) if len(intervals) else 0.0
    first, last = where[0] / width, where[-1] / width
    payload = window[mask][:, 1:5]
    byte_values = np.round(payload * 255).astype(np.int64).ravel()
    _, value_counts = np.unique(byte_values, return_counts=True)
    shares = value_counts / value_counts.sum()
    entropy = float(-(shares * np.log2(shares)).sum())
    change = np.abs(np.diff(payload, axis=0)).mean(axis=1) if len(payload) > 1 else np.zeros(1)
    reverse = 1.0 if np.logical_and(source == tgt, target == src).any() else 0.0
    # Degrees as the original counts them: rows of the window that touch the node, one full mask per node.
    src_degree, tgt_degree = (
        np.count_nonzero(np.logical_or(source == node, target == node)) for node in edge
    )
    return [
        float(count),
        count / width,
        interval_mean,
        interval_std,
        regularity,
        first,
        last,
        last - first,
        *payload.mean(axis=0).tolist(),
        *payload.std(axis=0).tolist(),
        entropy,
        float(change.mean()),
        float(change.std()),
        reverse,
        float(src_degree * tgt_degree),
        src_degree / tgt_degree,  # the target touches at least this edge's row
        float(window[mask][:, _LABEL].mean()),
    ]


def _node_features(window: np.ndarray, source: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    features = np.zeros((len(nodes), 11))
    positions = np.arange(len(window))
    for i, node in enumerate(nodes):
        mask = source == node
        if mask.any():
            features[i, :9] = window[mask][:, :9].mean(axis=0)
            features[i, 9] = mask.sum()
            features[i, 10] = positions[mask][-1] / max(len(window) - 1, 1)
        else:  # only the target of the window's last row
            features[i, 0] = node
    spread = np.ptp(features[:, 9])
    if spread > 0:
        features[:, 9] = (features[:, 9] - features[:, 9].min()) / spread
    return features


def window_graph(window: np.ndarray) -> Data:
    source, target = window[:, _SOURCE], window[:, _TARGET]
    edges, counts = np.unique(np.column_stack((source, target)), axis=0, return_counts=True)
    nodes = np.unique(np.concatenate((source, target)))
    position_of = {node: index for index, node in enumerate(nodes)}
    edge_index = np.vectorize(position_of.get)(edges).T
    positions = np.arange(len(window))
    edge_attr = [
        _edge_features(window, source, target, edge, count, positions)
        for edge, count in zip(edges, counts, strict=True)
    ]
    return Data(
        x=torch.tensor(_node_features(window, source, nodes), dtype=torch.float),
        edge_index=torch.tensor(edge_index, dtype=torch.long),
        edge_attr=torch.tensor(np.array(edge_attr), dtype=torch.float),
        y=torch.tensor(int(np.any(window[:, _LABEL] == 1)), dtype=torch.long),
    )


def graph_creation(paths: list[Path], window_size: int = 100, stride: int = 100) -> tuple[list[Data], dict]:
    """Every file's window graphs and the ID mapping, the original's way (one core, files in order)."""
    mapping = build_id_mapping(paths)
    graphs = []
    for path in paths:
        table = message_table(path, mapping)
        windows = max(1, (len(table) - window_size) // stride + 1)
        graphs += [
            window_graph(table[start : start + window_size]) for start in range(0, windows * stride, stride)
        ]
    return graphs, mapping
