"""Window graph construction, checked against features computed by hand, and the graph store."""

from __future__ import annotations

import numpy as np
import pytest
import testkit
import torch

from kdgat import compiled
from kdgat.files import save_torch
from kdgat.graph_store import (
    GRAPHS_FORMAT,
    graph_vocabulary,
    load_graph_sets,
    load_graphs,
    save_graph_sets,
    save_graphs,
    vocabulary_digest,
)
from kdgat.graphs import EDGE_FEATURES, GraphArrays, build_graphs, window_count


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
    # The one edge feature: how many rows each edge stands for.
    assert graphs.edge_attr.shape == (3, EDGE_FEATURES) == (3, 1) and graphs.edge_attr.dtype == np.float32
    assert graphs.edge_attr[:, 0].tolist() == [2, 1, 1]
    assert graphs.y.tolist() == [1]


def test_label_of_message_without_successor_is_not_in_a_window():
    ids, payload = hand_window()
    graphs = build_graphs(ids, payload, np.array([0, 0, 0, 0, 1]), num_ids=4, window_size=4, stride=4)
    assert graphs.y.tolist() == [0]


def test_self_loops_are_edges_that_count_their_rows():
    # Rows (ids 5 5 5 6 5 5): 5->5 at positions 0, 1 and 4, 5->6 at 2, 6->5 at 3.
    ids = np.array([5, 5, 5, 6, 5, 5])
    graphs = build_graphs(ids, np.zeros((6, 8), np.uint8), np.zeros(6), num_ids=7, window_size=5, stride=5)
    edges = {tuple(e): a for e, a in zip(graphs.edge_index.T.tolist(), graphs.edge_attr, strict=True)}
    assert {edge: float(attr[0]) for edge, attr in edges.items()} == {(0, 0): 3.0, (0, 1): 1.0, (1, 0): 1.0}


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_edge_counts_add_up_to_each_ids_messages_in_the_window(backend):
    """What the trivial baselines read (messages per CAN ID and window) from the edge feature, against the log."""
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 9, 1000)
    window, stride = 50, 30
    graphs = build_graphs(
        ids, rng.integers(0, 256, (1000, 8), dtype=np.uint8), np.zeros(1000, np.uint8), 9, window, stride,
        backend=backend,
    )  # fmt: skip
    for g in range(len(graphs)):
        nodes = graphs.x[graphs.node_ptr[g] : graphs.node_ptr[g + 1], 0].astype(int)
        edges = slice(graphs.edge_ptr[g], graphs.edge_ptr[g + 1])
        counts = np.zeros(9)
        np.add.at(counts, nodes[graphs.edge_index[0, edges]], graphs.edge_attr[edges, 0])
        sources = ids[g * stride : g * stride + window]
        np.testing.assert_array_equal(counts, np.bincount(sources, minlength=9))


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
        assert data.edge_attr.dtype == torch.float32
        assert data.edge_attr.shape == (data.edge_index.shape[1], EDGE_FEATURES)
        assert data.y.dtype == torch.long and data.y.shape == (1,)
        assert int(data.edge_index.max()) < data.x.shape[0]
        np.testing.assert_array_equal(data.x.numpy(), graphs.x[graphs.node_ptr[g] : graphs.node_ptr[g + 1]])
    # Saving a list of Data gives the same graphs back.
    save_graphs(loaded, tmp_path / "again.pt")
    again = load_graphs(tmp_path / "again.pt")
    assert graphs.y.any()  # labels of both kinds, so a lost label shows
    for a, b in zip(loaded, again, strict=True):
        for field in ("x", "edge_index", "edge_attr", "y"):
            assert torch.equal(getattr(a, field), getattr(b, field)), field

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


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_a_log_shorter_than_a_window_is_one_window_with_positions_over_window_size(backend):
    """A log of fewer rows than window_size makes one window of all its rows; positions are still divided by
    W - 1 (the feature means the same in every window), not by the rows the window has."""
    if backend == "compiled":
        testkit.require(compiled.available(), "numba", "pip install -e '.[dev]' (pyproject.toml pins it)")
    ids, payload = hand_window()  # 4 rows: last positions 2, 3 and none
    graphs = build_graphs(
        ids, payload, np.zeros(5, np.uint8), num_ids=4, window_size=10, stride=10, backend=backend
    )
    assert len(graphs) == 1 and graphs.edge_attr[:, 0].sum() == 4
    np.testing.assert_allclose(graphs.x[:, 10], [2 / 9, 3 / 9, 0.0], rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
@pytest.mark.parametrize("window_size", [257, 258, 300])
def test_byte_means_of_wide_windows_do_not_overflow(backend, window_size):
    """One ID sending 0xFF in every byte for a whole window: its byte means are exactly 1, also past the 257 rows
    that the builders' 16-bit lane sums can hold."""
    if backend == "compiled":
        testkit.require(compiled.available(), "numba", "pip install -e '.[dev]' (pyproject.toml pins it)")
    n = window_size + 1
    payload = np.full((n, 8), 0xFF, dtype=np.uint8)
    graphs = build_graphs(
        np.zeros(n, np.int64), payload, np.zeros(n, np.uint8), 2, window_size, window_size, backend=backend
    )
    assert len(graphs) == 1
    np.testing.assert_array_equal(graphs.x[:, 1:9], 1.0)


def test_a_graph_file_missing_an_array_names_it(tmp_path):
    save_torch({"format": GRAPHS_FORMAT, "x": torch.zeros(0, 11)}, tmp_path / "partial.pt")
    with pytest.raises(ValueError, match=r"partial.pt: not a kdgat graph file \(missing edge_index"):
        load_graphs(tmp_path / "partial.pt")


def test_the_vocabulary_digest_is_of_the_ids_in_index_order():
    """Node feature 0 is an index into the vocabulary: the same CAN IDs in another order map the indices to other
    IDs, so their digests differ; the same IDs in the same order agree whatever integer type holds them."""
    ids = [0x0A0, 0x1F1, 0x2B0]
    assert vocabulary_digest(ids) != vocabulary_digest(list(reversed(ids)))
    assert vocabulary_digest(ids) == vocabulary_digest(np.array(ids, dtype=np.int64))


def test_vocabularies_whose_ids_run_together_alike_have_different_digests():
    """Vocabularies of other IDs are other vocabularies, also where their decimal digits, written one after the
    other, read the same: IDs 1 and 23 against 12 and 3, 0x100 and 0x7 (256, 7) against 0x19 and 0x43 (25, 67)."""
    assert vocabulary_digest([1, 23]) != vocabulary_digest([12, 3])
    assert vocabulary_digest([0x100, 0x7]) != vocabulary_digest([0x19, 0x43])


def test_a_graph_file_records_its_vocabulary_digest_and_anything_else_there_reads_as_none(tmp_path):
    graphs = GraphArrays.empty()
    digest = vocabulary_digest([0x0A0, 0x1F1])
    save_graphs(graphs, tmp_path / "train.pt", vocabulary=digest)
    save_graph_sets({"dos": graphs}, tmp_path / "test.pt", vocabulary=digest)
    save_graphs(graphs, tmp_path / "older.pt")  # written before the digest was recorded
    assert graph_vocabulary(tmp_path / "train.pt") == graph_vocabulary(tmp_path / "test.pt") == digest
    assert graph_vocabulary(tmp_path / "older.pt") is None
    # Not a digest (a file some other tool wrote): no vocabulary to compare, not a value to compare against.
    save_torch({"format": GRAPHS_FORMAT, "vocabulary": 7}, tmp_path / "odd.pt")
    assert graph_vocabulary(tmp_path / "odd.pt") is None


@pytest.mark.parametrize("backend", ["numpy", "compiled"])
def test_the_count_feature_is_zero_for_every_node_of_a_window_whose_nodes_occur_alike(backend):
    """kdgat.graphs: the occurrence count is min-max normalised over the window's nodes, 0 when all are equal
    (no spread to divide by)."""
    if backend == "compiled":
        testkit.require(compiled.available(), "numba", "pip install -e '.[dev]' (pyproject.toml pins it)")
    # Messages 0 1 0 1 0 -> rows 0->1, 1->0, 0->1, 1->0: each of the two IDs is the source of 2 rows.
    ids = np.array([0, 1, 0, 1, 0])
    graphs = build_graphs(
        ids,
        np.zeros((5, 8), np.uint8),
        np.zeros(5, np.uint8),
        num_ids=3,
        window_size=4,
        stride=4,
        backend=backend,
    )
    assert graphs.x[:, 0].tolist() == [0, 1]
    assert graphs.x[:, 9].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(("window_size", "stride"), [(4, 0), (4, -1), (0, 4)])
def test_a_window_size_or_stride_below_one_is_refused_naming_both(window_size, stride):
    ids, payload = hand_window()
    with pytest.raises(
        ValueError, match=rf"window_size and stride must be >= 1, got {window_size} and {stride}"
    ):
        build_graphs(ids, payload, np.zeros(5), num_ids=4, window_size=window_size, stride=stride)


def test_a_vocabulary_too_large_to_pack_edge_keys_into_64_bits_gives_the_same_graphs():
    """The (window, source, target) edge keys and positions are packed into one int64 to be sorted; where that
    needs more than 63 bits (here 2**31 IDs: 62 bits of key, 2 of position) they are sorted apart instead of
    overflowing. The graphs are those of the same log in a small vocabulary, but for the ID index feature."""
    ids, payload = hand_window()
    label = np.array([0, 0, 0, 1, 0])
    small = build_graphs(ids, payload, label, num_ids=4, window_size=4, stride=4, backend="numpy")
    top = 2**31
    large = build_graphs(ids + top - 3, payload, label, num_ids=top, window_size=4, stride=4, backend="numpy")
    np.testing.assert_array_equal(large.x[:, 1:], small.x[:, 1:])
    np.testing.assert_array_equal(large.edge_index, small.edge_index)
    np.testing.assert_array_equal(large.edge_attr, small.edge_attr)
    assert large.y.tolist() == small.y.tolist() == [1]
    assert (large.node_ptr.tolist(), large.edge_ptr.tolist()) == (
        small.node_ptr.tolist(),
        small.edge_ptr.tolist(),
    )


def test_reading_a_graph_files_header_does_not_read_its_tensors(tmp_path):
    """kdgat.graph_store: the vocabulary and split checks read a header string of files of gigabytes before the
    files themselves are loaded; the tensors are mapped, not read (peak memory well under the file's size)."""
    import subprocess
    import sys

    big = tmp_path / "train.pt"
    save_torch(
        {"format": GRAPHS_FORMAT, "vocabulary": "v", "split": "train", "x": torch.ones(96 * 2**20)}, big
    )
    assert big.stat().st_size > 380 * 2**20
    # VmHWM: the peak resident memory of this process's own address space (ru_maxrss would start at the peak
    # of the pytest process that forked it)
    probe = (
        "import sys, torch\n"
        "from kdgat.graph_store import graph_split, graph_vocabulary\n"
        "def peak():\n"
        "    line = next(l for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
        "    return int(line.split()[1]) // 1024\n"
        "before = peak()\n"
        "found = graph_vocabulary(sys.argv[1]), graph_split(sys.argv[1])\n"
        "print(found, peak() - before)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe, str(big)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert shown[:2] == ["('v',", "'train')"]
    assert int(shown[2]) < 100, f"reading the header grew peak memory by {shown[2]} MiB for a 384 MiB file"
