"""Window graph construction, checked against features computed by hand, and the graph store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdgat.graph_store import load_graph_sets, load_graphs, save_graph_sets, save_graphs
from kdgat.graphs import GraphArrays, build_graphs, window_count


def hand_window():
    # Messages (vocabulary indices) 0, 1, 0, 1, 2 -> rows (0->1)@0, (1->0)@1, (0->1)@2, (1->2)@3.
    ids = np.array([0, 1, 0, 1, 2])
    payload = np.zeros((5, 8), dtype=np.uint8)
    payload[:, 0] = [10, 20, 30, 40, 50]
    payload[:, 7] = 255
    return ids, payload


def test_single_window_by_hand():
    ids, payload = hand_window()
    graphs = build_graphs(ids, payload, np.array([0, 0, 0, 1, 0]), num_ids=4, window_size=4, stride=4)
    assert len(graphs) == 1
    x = graphs.x
    assert x.shape == (3, 11) and x.dtype == np.float32
    assert x[:, 0].tolist() == [0, 1, 2]
    # Mean of byte 0 over each node's own messages (rows where it is the source), /255.
    np.testing.assert_allclose(x[:, 1], [20 / 255, 30 / 255, 0.0], rtol=1e-6)
    np.testing.assert_allclose(x[:, 8], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(x[:, 2:8], 0.0)
    # Occurrence counts 2, 2, 0 -> min-max 1, 1, 0; last positions 2, 3, none -> /(W-1).
    np.testing.assert_allclose(x[:, 9], [1.0, 1.0, 0.0])
    np.testing.assert_allclose(x[:, 10], [2 / 3, 1.0, 0.0], rtol=1e-6)

    # Edges sorted by (source, target): 0->1 (positions 0, 2), 1->0 (1), 1->2 (3).
    assert graphs.edge_index.tolist() == [[0, 1, 1], [1, 0, 2]]
    # Degrees over distinct edges (in + out): node0 2, node1 3, node2 1.
    expected = np.array(
        [
            [2, 0.5, 2, 0, 1, 0.0, 0.5, 0.5, 1, 6, 2 / 3],
            [1, 0.25, 0, 0, 1, 0.25, 0.25, 0.0, 1, 6, 1.5],
            [1, 0.25, 0, 0, 1, 0.75, 0.75, 0.0, 0, 3, 3.0],
        ]
    )
    np.testing.assert_allclose(graphs.edge_attr, expected, rtol=1e-6)
    assert graphs.y.tolist() == [1]


def test_label_of_message_without_successor_is_not_in_a_window():
    ids, payload = hand_window()
    graphs = build_graphs(ids, payload, np.array([0, 0, 0, 0, 1]), num_ids=4, window_size=4, stride=4)
    assert graphs.y.tolist() == [0]


def test_interval_statistics_and_self_loops():
    # Rows (ids 5 5 5 6 5 5): 5->5 at positions 0, 1 and 4; intervals 1 and 3 -> mean 2, std 1.
    ids = np.array([5, 5, 5, 6, 5, 5])
    graphs = build_graphs(ids, np.zeros((6, 8), np.uint8), np.zeros(6), num_ids=7, window_size=5, stride=5)
    edges = {tuple(e): a for e, a in zip(graphs.edge_index.T.tolist(), graphs.edge_attr, strict=True)}
    loop = edges[(0, 0)]
    assert loop[0] == 3
    np.testing.assert_allclose(loop[2:5], [2.0, 1.0, 0.5])
    assert loop[8] == 1  # a self-loop is its own reverse edge
    np.testing.assert_allclose(loop[5:8], [0.0, 4 / 5, 4 / 5])


@pytest.mark.parametrize(
    ("messages", "window", "stride", "expected"), [(11, 4, 4, 2), (11, 4, 2, 4), (3, 10, 10, 1), (1, 4, 4, 0)]
)
def test_window_counts(messages, window, stride, expected):
    assert window_count(messages, window, stride) == expected
    ids = np.arange(messages) % 3
    graphs = build_graphs(ids, np.zeros((messages, 8), np.uint8), np.zeros(messages), 4, window, stride)
    assert len(graphs) == expected


def test_windows_are_independent_and_match_a_one_window_build():
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 6, 401)
    payload = rng.integers(0, 256, (401, 8)).astype(np.uint8)
    labels = (rng.random(401) < 0.05).astype(np.uint8)
    all_windows = build_graphs(ids, payload, labels, num_ids=6, window_size=100, stride=100)
    assert len(all_windows) == 4
    for w in range(4):
        rows = slice(100 * w, 100 * w + 101)
        alone = build_graphs(ids[rows], payload[rows], labels[rows], num_ids=6, window_size=100, stride=100)
        one = all_windows.take([w])
        np.testing.assert_array_equal(one.x, alone.x)
        np.testing.assert_array_equal(one.edge_index, alone.edge_index)
        np.testing.assert_array_equal(one.edge_attr, alone.edge_attr)
        assert one.y.tolist() == alone.y.tolist()
        assert one.y[0] == labels[100 * w : 100 * w + 100].max()


def test_store_round_trip_and_contract(tmp_path):
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 9, 1001)
    graphs = build_graphs(
        ids, rng.integers(0, 256, (1001, 8)).astype(np.uint8), rng.random(1001) < 0.1, 10, 50, 50
    )
    save_graphs(graphs, tmp_path / "train.pt")
    loaded = load_graphs(tmp_path / "train.pt")
    assert len(loaded) == len(graphs) == 20
    for g, data in enumerate(loaded):
        assert data.x.dtype == torch.float32 and data.x.shape[1] == 11
        assert data.edge_index.dtype == torch.long and data.edge_index.shape[0] == 2
        assert data.edge_attr.dtype == torch.float32 and data.edge_attr.shape == (
            data.edge_index.shape[1],
            11,
        )
        assert data.y.dtype == torch.long and data.y.shape == (1,)
        assert int(data.edge_index.max()) < data.x.shape[0]
        np.testing.assert_array_equal(data.x.numpy(), graphs.x[graphs.node_ptr[g] : graphs.node_ptr[g + 1]])
    # Saving a list of Data gives the same graphs back.
    save_graphs(loaded, tmp_path / "again.pt")
    again = load_graphs(tmp_path / "again.pt")
    assert all(torch.equal(a.edge_attr, b.edge_attr) for a, b in zip(loaded, again, strict=True))

    save_graph_sets(
        {"dos": graphs.take([0, 1]), "gear": loaded[5:8], "empty": GraphArrays.empty()}, tmp_path / "test.pt"
    )
    sets = load_graph_sets(tmp_path / "test.pt")
    assert list(sets) == ["dos", "gear", "empty"]
    assert [len(v) for v in sets.values()] == [2, 3, 0]
    assert torch.equal(sets["gear"][0].x, loaded[5].x)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_loading_the_wrong_kind_of_file_is_a_clear_error(tmp_path):
    save_graph_sets({"a": GraphArrays.empty()}, tmp_path / "sets.pt")
    with pytest.raises(ValueError, match="expected a 'kdgat-graphs/1' file"):
        load_graphs(tmp_path / "sets.pt")
