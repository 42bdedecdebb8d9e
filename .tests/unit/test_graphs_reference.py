"""The vectorised graph builder (numpy and compiled) against a plain per-window reference written from the
documented definition."""

from __future__ import annotations

import numpy as np
import pytest
import testkit

from kdgat import compiled
from kdgat import graphs as graphs_module
from kdgat.graphs import EDGE_FEATURES, NODE_FEATURES, build_graphs, window_count


def reference_window(ids, payload, labels, window_size):
    """One window's (x, edge_index, edge_attr, y) from its rows, one message at a time."""
    rows = [(int(ids[t]), int(ids[t + 1])) for t in range(len(ids) - 1)]
    nodes = sorted({s for s, _ in rows} | {t for _, t in rows})
    local = {node: i for i, node in enumerate(nodes)}
    occurrences = {node: [p for p, (s, _) in enumerate(rows) if s == node] for node in nodes}
    counts = np.array([len(occurrences[n]) for n in nodes], dtype=np.float64)
    spread = counts.max() - counts.min()
    x = np.zeros((len(nodes), NODE_FEATURES))
    for i, node in enumerate(nodes):
        positions = occurrences[node]
        x[i, 0] = node
        if positions:
            x[i, 1:9] = payload[positions].astype(np.float64).mean(axis=0) / 255.0
            x[i, 10] = max(positions) / max(window_size - 1, 1)
        x[i, 9] = (counts[i] - counts.min()) / spread if spread > 0 else 0.0
    edges = sorted(set(rows))
    edge_attr = np.zeros((len(edges), EDGE_FEATURES))
    for e, edge in enumerate(edges):
        edge_attr[e] = [sum(1 for row in rows if row == edge)]
    edge_index = np.array([[local[s] for s, _ in edges], [local[t] for _, t in edges]], dtype=np.int64)
    return x, edge_index.reshape(2, -1), edge_attr, int(np.max(labels[: len(rows)]))


def random_log(seed):
    rng = np.random.default_rng(seed)
    num_ids = int(rng.integers(1, 25))
    count = int(rng.integers(2, 700))
    # Few IDs, repeats and runs: self-loops, reverse edges and repeated edges all occur.
    ids = rng.integers(0, num_ids, count)
    ids[rng.random(count) < 0.2] = ids[0]
    payload = rng.integers(0, 256, (count, 8)).astype(np.uint8)
    labels = (rng.random(count) < 0.05).astype(np.uint8)
    return ids, payload, labels, num_ids, int(rng.integers(1, 120)), int(rng.integers(1, 130))


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
@pytest.mark.parametrize("seed", range(8))
def test_builder_matches_the_per_window_reference(seed, backend):
    if backend == "compiled":
        testkit.require(compiled.available(), "numba", "pip install -e '.[dev]' (pyproject.toml pins it)")
    ids, payload, labels, num_ids, window_size, stride = random_log(seed)
    graphs = build_graphs(ids, payload, labels, num_ids, window_size, stride, backend=backend)
    windows = window_count(len(ids), window_size, stride)
    assert len(graphs) == windows > 0
    width = min(window_size, len(ids) - 1)
    for g in range(windows):
        start = g * stride
        x, edge_index, edge_attr, y = reference_window(
            ids[start : start + width + 1], payload[start : start + width], labels[start:], window_size
        )
        nodes = slice(graphs.node_ptr[g], graphs.node_ptr[g + 1])
        edges = slice(graphs.edge_ptr[g], graphs.edge_ptr[g + 1])
        np.testing.assert_allclose(graphs.x[nodes], x, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(graphs.edge_index[:, edges], edge_index)
        np.testing.assert_allclose(graphs.edge_attr[edges], edge_attr, rtol=1e-6, atol=1e-7)
        assert graphs.y[g] == y


@pytest.mark.parametrize("seed", range(4))
def test_blocks_and_fallback_paths_give_the_same_graphs(seed, monkeypatch):
    """Small blocks, the sorted-key lookups used for large vocabularies and the generic byte sums agree
    bit for bit with the default path."""
    ids, payload, labels, num_ids, window_size, stride = random_log(100 + seed)
    default = build_graphs(ids, payload, labels, num_ids, window_size, stride)
    monkeypatch.setattr(graphs_module, "_BLOCK_ROWS", 37)
    monkeypatch.setattr(graphs_module, "_DENSE_TABLE", 0)
    variants = [
        build_graphs(ids, payload, labels, num_ids, window_size, stride),
        build_graphs(ids, payload.astype(np.int64), labels, num_ids, window_size, stride),
    ]
    for variant in variants:
        for name in ("x", "edge_index", "edge_attr", "y", "node_ptr", "edge_ptr"):
            expected, actual = getattr(default, name), getattr(variant, name)
            assert actual.dtype == expected.dtype, name
            np.testing.assert_array_equal(actual, expected, err_msg=name)
