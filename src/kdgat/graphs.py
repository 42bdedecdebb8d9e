"""Windowing CAN messages and turning each window into a graph (KD-GAT construction).

Every message ``t`` of a log becomes a row ``(source = id_t, target = id_{t+1})``; the last message has no
successor and makes no row. Rows are cut into windows of ``window_size`` rows every ``stride`` rows
(``(M - W) // S + 1`` windows for ``M`` rows, at least one). In a window:

* **nodes** are the CAN IDs (vocabulary indices) among sources and targets, in ascending index order;
* **edges** are the distinct directed pairs (source -> target), self-loops included;
* **node features** (11): ``[id index, mean of each of the 8 payload bytes / 255 over the node's messages,
  occurrence count (min-max normalised over the window's nodes; 0 when all are equal), last position /
  (W - 1)]``. A node's messages are the rows where it is the source; a node that only appears as the target of
  the last row has count 0 and zero payload/position features;
* **edge feature** (1): ``[count]``, how many rows the edge stands for. The trivial baselines read it
  (messages per ID and window, kdgat.evaluation.baselines); no model does. The original's further edge features
  (intervals, first/last position, reverse edge, degrees) are not computed: an ablation found no gain from them
  (docs/models.md, "Edge features");
* **label** ``y = 1`` if any message (row) of the window is an attack.

Windows are built with numpy in blocks of many windows (sorting packed composite keys, direct lookup tables),
never per message or per window. The result is a :class:`GraphArrays`: collated arrays plus per-graph pointers,
which is also the on-disk layout.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from kdgat import compiled
from kdgat.chain import EDGE_FEATURES, NODE_FEATURES


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every (s, n), without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    shifts = np.repeat(np.asarray(starts, dtype=np.int64) - (np.cumsum(lengths) - lengths), lengths)
    return shifts + np.arange(total, dtype=np.int64)


def _sort_by_key_and_position(
    keys: np.ndarray, positions: np.ndarray, key_bound: int, position_bound: int
) -> tuple[np.ndarray, np.ndarray]:
    """``keys`` and ``positions`` (non-negative, below the bounds) sorted by (key, position). Key and position
    are packed into one integer and sorted as values (SIMD sort; uint32 when they fit, which halves the work),
    ~10x faster than a stable argsort of the keys."""
    position_bits = max(int(position_bound - 1).bit_length(), 1)
    bits = max(int(key_bound - 1).bit_length(), 1) + position_bits
    if bits > 63:
        order = np.lexsort((positions, keys))
        return keys[order], positions[order]
    packed = (keys << position_bits) | positions
    packed = np.sort(packed.astype(np.uint32) if bits <= 32 else packed).astype(np.int64, copy=False)
    return packed >> position_bits, packed & ((1 << position_bits) - 1)


@dataclass
class GraphArrays:
    """Many graphs stored collated: graph ``g`` owns nodes ``node_ptr[g]:node_ptr[g+1]`` and edges
    ``edge_ptr[g]:edge_ptr[g+1]``; ``edge_index`` holds node indices local to each graph."""

    x: np.ndarray  # float32 [num_nodes, 11]
    edge_index: np.ndarray  # int64 [2, num_edges]
    edge_attr: np.ndarray  # float32 [num_edges, EDGE_FEATURES]
    y: np.ndarray  # int64 [num_graphs]
    node_ptr: np.ndarray  # int64 [num_graphs + 1]
    edge_ptr: np.ndarray  # int64 [num_graphs + 1]

    def __len__(self) -> int:
        return len(self.y)

    @classmethod
    def empty(cls) -> GraphArrays:
        return cls(
            x=np.zeros((0, NODE_FEATURES), np.float32),
            edge_index=np.zeros((2, 0), np.int64),
            edge_attr=np.zeros((0, EDGE_FEATURES), np.float32),
            y=np.zeros(0, np.int64),
            node_ptr=np.zeros(1, np.int64),
            edge_ptr=np.zeros(1, np.int64),
        )

    @classmethod
    def concat(cls, parts: list[GraphArrays]) -> GraphArrays:
        parts = [part for part in parts if len(part)]
        if not parts:
            return cls.empty()
        if len(parts) == 1:  # nothing to join: no copy
            return parts[0]

        def pointers(name: str) -> np.ndarray:
            ptrs, offset = [np.zeros(1, np.int64)], 0
            for part in parts:
                ptr = getattr(part, name)
                ptrs.append(ptr[1:] + offset)
                offset += int(ptr[-1])
            return np.concatenate(ptrs)

        return cls(
            x=np.concatenate([p.x for p in parts]),
            edge_index=np.concatenate([p.edge_index for p in parts], axis=1),
            edge_attr=np.concatenate([p.edge_attr for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            node_ptr=pointers("node_ptr"),
            edge_ptr=pointers("edge_ptr"),
        )

    def take(self, indices: np.ndarray) -> GraphArrays:
        """The graphs at ``indices`` (in that order), still collated."""
        indices = np.asarray(indices, dtype=np.int64)
        node_counts = np.diff(self.node_ptr)[indices]
        edge_counts = np.diff(self.edge_ptr)[indices]
        nodes = _ranges(self.node_ptr[indices], node_counts)
        edges = _ranges(self.edge_ptr[indices], edge_counts)
        # np.take along an axis is several times faster than the equivalent fancy indexing of 2-D arrays.
        return GraphArrays(
            x=np.take(self.x, nodes, axis=0),
            edge_index=np.take(self.edge_index, edges, axis=1),
            edge_attr=np.take(self.edge_attr, edges, axis=0),
            y=self.y[indices],
            node_ptr=np.concatenate(([0], np.cumsum(node_counts))).astype(np.int64),
            edge_ptr=np.concatenate(([0], np.cumsum(edge_counts))).astype(np.int64),
        )

    def to_data_list(self) -> list:
        """One ``torch_geometric.data.Data`` per graph (x float32, edge_index long, edge_attr float32, y long [1])."""
        import torch
        from torch_geometric.data import Data

        x = torch.from_numpy(np.ascontiguousarray(self.x, dtype=np.float32))
        edge_index = torch.from_numpy(np.ascontiguousarray(self.edge_index, dtype=np.int64))
        edge_attr = torch.from_numpy(np.ascontiguousarray(self.edge_attr, dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(self.y, dtype=np.int64))
        node_ptr, edge_ptr = self.node_ptr.tolist(), self.edge_ptr.tolist()
        # Each graph gets its own storage (clone) so that saving one graph does not save the whole set.
        return [
            Data(
                x=x[node_ptr[g] : node_ptr[g + 1]].clone(),
                edge_index=edge_index[:, edge_ptr[g] : edge_ptr[g + 1]].clone(),
                edge_attr=edge_attr[edge_ptr[g] : edge_ptr[g + 1]].clone(),
                y=y[g : g + 1].clone(),
            )
            for g in range(len(self))
        ]

    @classmethod
    def from_data_list(cls, graphs: list) -> GraphArrays:
        if not graphs:
            return cls.empty()
        node_counts = [int(g.x.shape[0]) for g in graphs]
        edge_counts = [int(g.edge_index.shape[1]) for g in graphs]
        return cls(
            x=np.concatenate([g.x.detach().cpu().numpy() for g in graphs]).astype(np.float32),
            edge_index=np.concatenate([g.edge_index.detach().cpu().numpy() for g in graphs], axis=1).astype(
                np.int64
            ),
            edge_attr=np.concatenate([g.edge_attr.detach().cpu().numpy() for g in graphs]).astype(np.float32),
            y=np.concatenate([g.y.detach().cpu().numpy().reshape(-1)[:1] for g in graphs]).astype(np.int64),
            node_ptr=np.concatenate(([0], np.cumsum(node_counts))).astype(np.int64),
            edge_ptr=np.concatenate(([0], np.cumsum(edge_counts))).astype(np.int64),
        )


def window_count(num_messages: int, window_size: int, stride: int) -> int:
    """Number of windows a log of ``num_messages`` messages gives (0 if it has fewer than 2 messages)."""
    rows = num_messages - 1
    if rows < 1:
        return 0
    return max(1, (rows - min(window_size, rows)) // stride + 1)


# Rows per block of windows built together: the block's temporaries stay in the CPU caches and are reused from
# block to block, instead of log-sized arrays that are page-faulted in and freed once each.
_BLOCK_ROWS = 1 << 16
# Largest (window, id) table of a block looked up directly; larger vocabularies search sorted keys instead.
_DENSE_TABLE = 1 << 21


BACKENDS = ("auto", "numpy", "compiled")


def build_graphs(
    id_index: np.ndarray,
    payload: np.ndarray,
    label: np.ndarray,
    num_ids: int,
    window_size: int = 100,
    stride: int = 100,
    *,
    backend: str = "auto",
) -> GraphArrays:
    """Graphs of every window of one log. ``id_index`` are vocabulary indices in ``[0, num_ids)``.

    ``backend``: ``numpy``, ``compiled`` (:mod:`kdgat.compiled`, needs numba; same bits) or ``auto`` (the
    compiled one for logs of at least ``kdgat.compiled.MIN_MESSAGES`` messages when numba imports)."""
    if window_size < 1 or stride < 1:
        raise ValueError(f"window_size and stride must be >= 1, got {window_size} and {stride}")
    if backend not in BACKENDS:
        raise ValueError(f"build_graphs: backend must be one of {BACKENDS}, got {backend!r}")
    id_index = np.asarray(id_index, dtype=np.int64)
    rows_total = len(id_index) - 1
    num_windows = window_count(len(id_index), window_size, stride)
    if num_windows == 0:
        return GraphArrays.empty()
    width = min(window_size, rows_total)
    label = np.asarray(label)
    if backend == "compiled" or (backend == "auto" and len(id_index) >= compiled.MIN_MESSAGES):
        graphs = _build_compiled(id_index, payload, label, num_ids, num_windows, width, stride, window_size)
        if graphs is not None:
            return graphs
        if backend == "compiled":
            raise ValueError(
                "build_graphs: the compiled backend needs numba (a dependency of the library, pinned in its "
                "pyproject.toml), "
                f"uint8 payloads and labels and windows of at most 1024 rows; got payload {payload.dtype}, "
                f"label {label.dtype}, width {width}"
            )
    block = max(1, _BLOCK_ROWS // width)
    # The blocks' graphs are copied straight into arrays sized for the most nodes and edges there can be (a
    # window has at most width + 1 nodes and width edges), trimmed in place at the end: no second copy to join.
    most_nodes, most_edges = num_windows * (width + 1), num_windows * width
    x = np.empty((most_nodes, NODE_FEATURES), dtype=np.float32)
    edge_attr = np.empty((most_edges, EDGE_FEATURES), dtype=np.float32)
    edge_parts, y_parts, node_ptr_parts, edge_ptr_parts = (
        [],
        [],
        [np.zeros(1, np.int64)],
        [np.zeros(1, np.int64)],
    )
    nodes = edges = 0
    position = np.tile(np.arange(width, dtype=np.int64), min(block, num_windows))
    for first_window in range(0, num_windows, block):
        windows = min(block, num_windows - first_window)
        start = first_window * stride
        if stride == width:  # non-overlapping windows cover consecutive rows: views, no gathers
            rows = slice(start, start + windows * width)
            source, target = id_index[rows], id_index[start + 1 : start + windows * width + 1]
        else:
            rows = ((np.arange(windows, dtype=np.int64) * stride + start)[:, None] + np.arange(width)).ravel()
            source, target = id_index[rows], id_index[rows + 1]
        num_nodes, num_edges, edge_index, y, node_ptr, edge_ptr = _build_block(
            source,
            target,
            payload[rows],
            label[rows],
            num_ids,
            windows,
            width,
            window_size,
            position,
            x[nodes:],
            edge_attr[edges:],
        )
        edge_parts.append(edge_index)
        y_parts.append(y)
        node_ptr_parts.append(node_ptr[1:] + nodes)
        edge_ptr_parts.append(edge_ptr[1:] + edges)
        nodes += num_nodes
        edges += num_edges
    # Shrinking with resize reallocates in place (the unused tail was never touched, so never paged in).
    x.resize((nodes, NODE_FEATURES), refcheck=False)
    edge_attr.resize((edges, EDGE_FEATURES), refcheck=False)
    return GraphArrays(
        x=x,
        edge_index=np.concatenate(edge_parts, axis=1),
        edge_attr=edge_attr,
        y=np.concatenate(y_parts),
        node_ptr=np.concatenate(node_ptr_parts),
        edge_ptr=np.concatenate(edge_ptr_parts),
    )


def _build_compiled(
    id_index: np.ndarray,
    payload: np.ndarray,
    label: np.ndarray,
    num_ids: int,
    num_windows: int,
    width: int,
    stride: int,
    window_size: int,
) -> GraphArrays | None:
    """The compiled builder's graphs, or None when it cannot take this input (no numba, other dtypes)."""
    if label.dtype == np.bool_:
        label = label.view(np.uint8)
    if not (
        compiled.available()
        and sys.byteorder == "little"  # payload rows are read as little-endian int64 words
        and width <= compiled.MAX_WIDTH
        and payload.dtype == np.uint8
        and payload.ndim == 2
        and payload.shape[1] == 8
        and label.dtype == np.uint8
    ):
        return None
    x, edge_attr, edge_pairs, y, node_ptr, edge_ptr, nodes, edges = compiled.build_windows(
        id_index,
        np.ascontiguousarray(payload).view(np.int64).reshape(-1),
        label,
        num_ids,
        num_windows,
        width,
        stride,
        window_size,
    )
    most_edges = len(edge_attr)
    # Targets move down next to the sources (overlap-safe copy), then every array is trimmed in place.
    edge_pairs[edges : 2 * edges] = edge_pairs[most_edges : most_edges + edges]
    edge_pairs.resize(2 * edges, refcheck=False)
    x.resize((nodes, NODE_FEATURES), refcheck=False)
    edge_attr.resize((edges, EDGE_FEATURES), refcheck=False)
    return GraphArrays(
        x=x,
        edge_index=edge_pairs.reshape(2, edges),
        edge_attr=edge_attr,
        y=y,
        node_ptr=node_ptr,
        edge_ptr=edge_ptr,
    )


def _build_block(
    source: np.ndarray,
    target: np.ndarray,
    payload: np.ndarray,
    label: np.ndarray,
    num_ids: int,
    num_windows: int,
    width: int,
    window_size: int,
    position: np.ndarray,
    x_out: np.ndarray,
    edge_attr_out: np.ndarray,
) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Graphs of ``num_windows`` windows of ``width`` rows each, given as consecutive rows. Node and edge
    features go to the first rows of ``x_out`` and ``edge_attr_out``; returns the node and edge counts,
    ``edge_index``, ``y``, ``node_ptr`` and ``edge_ptr`` of the block. ``position`` holds each row's position
    in its window (at least ``num_windows * width`` entries)."""
    total = num_windows * width
    vocab = np.int64(num_ids)
    window = np.repeat(np.arange(num_windows, dtype=np.int64), width)
    last_rows = np.arange(width - 1, total, width)

    # Nodes: distinct (window, id) keys in ascending order, so each window's nodes are contiguous and ordered by
    # id. Inside a window the target of a row is the source of the next row, so the only extra keys are the
    # targets of each window's last row.
    source_key = window * vocab + source
    target_key = window * vocab + target
    key_bound = num_windows * num_ids
    if key_bound <= _DENSE_TABLE:
        present = np.zeros(key_bound, dtype=bool)
        present[source_key] = True
        present[target_key[last_rows]] = True
        node_key = np.flatnonzero(present)
        node_of_key = np.cumsum(present, dtype=np.int64) - 1

        def node_of(keys: np.ndarray) -> np.ndarray:
            return node_of_key[keys]
    else:
        node_key = np.unique(np.concatenate((source_key, target_key[last_rows])))

        def node_of(keys: np.ndarray) -> np.ndarray:
            return np.searchsorted(node_key, keys)

    num_nodes = len(node_key)
    source_node = node_of(source_key)
    node_window = node_key // vocab
    node_ptr = np.searchsorted(node_window, np.arange(num_windows + 1, dtype=np.int64))

    # Edges: group the rows by (window, source, target); a stable sort keeps positions ascending per edge.
    row_edge_key = source_key * vocab + target
    # Positions are distinct inside a window, so sorting by (key, position) is the stable sort by key.
    sorted_key, sorted_position = _sort_by_key_and_position(
        row_edge_key, position[:total], key_bound * num_ids, width
    )
    is_first = np.empty(total, dtype=bool)
    is_first[0] = True
    np.not_equal(sorted_key[1:], sorted_key[:-1], out=is_first[1:])
    edge_start = np.flatnonzero(is_first)
    edge_key = sorted_key[edge_start]
    num_edges = len(edge_key)
    edge_end = np.empty(num_edges, dtype=np.int64)
    edge_end[:-1] = edge_start[1:]
    edge_end[-1] = total
    count = (edge_end - edge_start).astype(np.float64)

    edge_source_key = edge_key // vocab  # window * vocab + source id
    edge_target = edge_key - edge_source_key * vocab
    edge_window = edge_source_key // vocab
    source_global = node_of(edge_source_key)
    target_global = node_of(edge_window * vocab + edge_target)

    # Node features. Sorted rows are grouped by source node too (edges of one source are adjacent).
    occurrences = np.bincount(source_node, minlength=num_nodes).astype(np.float64)
    seen = occurrences > 0
    new_source = np.empty(num_edges, dtype=bool)
    new_source[0] = True
    np.not_equal(source_global[1:], source_global[:-1], out=new_source[1:])
    source_edges = np.flatnonzero(new_source)
    # Byte means = sums / occurrences / 255 in float64 (then float32, as the features are stored); a node
    # without messages has zero sums, divided by 1 instead of 0 so that its means are 0.
    x = x_out[:num_nodes]
    divisor = np.where(seen, occurrences, 1.0)[:, None]
    if payload.dtype == np.uint8 and width <= 257:
        # Per-node sums of all 8 bytes with two integer scatter-adds: the bytes of a row, read as one
        # little-endian int64, are split into even and odd bytes in 16-bit lanes; a lane's sum over at most
        # 257 rows of bytes <= 255 cannot carry into the next lane.
        packed_row = np.ascontiguousarray(payload).view("<i8").reshape(-1)
        lane_mask = np.int64(0x00FF00FF00FF00FF)
        lane_shifts = np.arange(0, 64, 16, dtype=np.int64)
        for odd in (0, 1):
            lanes = np.zeros(num_nodes, dtype=np.int64)
            np.add.at(lanes, source_node, (packed_row >> (8 * odd)) & lane_mask)
            x[:, 1 + odd : 9 : 2] = ((lanes[:, None] >> lane_shifts) & 0xFFFF) / divisor / 255.0
    else:
        byte_sums = np.empty((num_nodes, 8), dtype=np.float64)
        for b in range(8):
            byte_sums[:, b] = np.bincount(source_node, weights=payload[:, b], minlength=num_nodes)
        x[:, 1:9] = byte_sums / divisor / 255.0
    last_position = np.zeros(num_nodes, dtype=np.int64)
    last_position[source_global[source_edges]] = np.maximum.reduceat(
        sorted_position[edge_end - 1], source_edges
    )
    lowest = np.minimum.reduceat(occurrences, node_ptr[:-1])[node_window]
    highest = np.maximum.reduceat(occurrences, node_ptr[:-1])[node_window]
    spread = highest - lowest
    count_norm = np.divide(occurrences - lowest, spread, out=np.zeros(num_nodes), where=spread > 0)

    x[:, 0] = node_key - node_window * vocab
    x[:, 9] = count_norm
    x[:, 10] = last_position / max(window_size - 1, 1)

    edge_attr_out[:num_edges, 0] = count

    window_node_start = node_ptr[edge_window]
    edge_index = np.empty((2, num_edges), dtype=np.int64)
    np.subtract(source_global, window_node_start, out=edge_index[0])
    np.subtract(target_global, window_node_start, out=edge_index[1])
    edge_ptr = np.searchsorted(edge_window, np.arange(num_windows + 1, dtype=np.int64))
    y = label.reshape(num_windows, width).max(axis=1).astype(np.int64)
    return num_nodes, num_edges, edge_index, y, node_ptr, edge_ptr
