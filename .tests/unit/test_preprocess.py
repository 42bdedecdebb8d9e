"""The whole preprocess step on tiny generated logs: outputs, vocabulary, split, metadata, bad rows."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import yaml
from testkit import REPO

from kdgat.can.messages import CanFormatError
from kdgat.can.writer import write_can_file
from kdgat.files import file_sha256
from kdgat.graph_store import graph_split, load_graph_sets, load_graphs
from kdgat.preprocess import (
    assign_windows,
    discover_layout,
    group_test_files,
    held_out_blocks,
    messages_after_last_window,
    preprocess_dataset,
    scenario_name,
    to_index,
)
from kdgat.synthetic import Vehicle, generate_dataset, generate_log

SYNTHETIC = {
    "seed": 9,
    "format": "hcrl_csv",
    "num_ids": 25,
    "burst_s": [0.02, 0.1],
    "gap_s": [0.1, 0.2],
    "files": [
        {"split": "train_01_attack_free", "name": "normal", "attack": "none", "duration_s": 0.8},
        {"split": "train_02_with_attacks", "name": "dos", "attack": "dos", "duration_s": 0.5},
        {"split": "test_01_dos", "name": "dos", "attack": "dos", "duration_s": 0.4},
        {"split": "test_02_fuzzy", "name": "fuzzy", "attack": "fuzzy", "duration_s": 0.4},
        {"split": "test_03_masquerade", "name": "masquerade", "attack": "gear", "duration_s": 0.2},
    ],
}


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(SYNTHETIC, root)
    return root


def test_layout_discovery_names_scenarios_and_excludes(dataset_dir):
    train, test = discover_layout(dataset_dir)
    assert [p.parent.name for p in train] == ["train_01_attack_free", "train_02_with_attacks"]
    assert list(test) == ["dos", "fuzzy"]  # masquerade files are excluded like in KD-GAT
    assert scenario_name("test_01_known_vehicle") == "known_vehicle" and scenario_name("holdout") == "holdout"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        discover_layout(dataset_dir / "missing")


def test_preprocess_outputs_follow_the_contract(dataset_dir, tmp_path):
    train_files, test_files = discover_layout(dataset_dir)
    meta = preprocess_dataset("synth", train_files, test_files, tmp_path, window_size=50, stride=50, seed=1)
    for name in ("train.pt", "val.pt", "test.pt", "vocab.json", "metadata.json"):
        assert (tmp_path / name).is_file()
    train, val = load_graphs(tmp_path / "train.pt"), load_graphs(tmp_path / "val.pt")
    test = load_graph_sets(tmp_path / "test.pt")
    on_disk = json.loads((tmp_path / "metadata.json").read_text())
    assert on_disk == meta
    assert meta["counts"] == {
        "train": len(train),
        "val": len(val),
        "test": {k: len(v) for k, v in test.items()},
    }
    # Validation is two of the ten time blocks of every training capture (val_fraction 0.2), not random windows.
    assert meta["split"]["method"] == "time blocks"
    for info in meta["split"]["per_file"].values():
        assert len(info["held_out_blocks"]["val"]) == 2 and info["purged_windows"] == 0
    assert len(train) + len(val) == sum(info["windows"] for info in meta["split"]["per_file"].values())
    assert meta["node_features"] == 11 and meta["edge_features"] == 1
    assert meta["window_size"] == meta["stride"] == 50
    assert meta["skipped_rows"] == {
        "per_file": {str(p): 0 for p in [*train_files, *sum(test_files.values(), [])]},
        "total": 0,
    }
    assert meta["wall_time_s"] > 0 and meta["peak_memory_mb"] > 10
    assert 0 < meta["attack_fraction"]["train"] < 1 and meta["attack_fraction"]["test"]["dos"] > 0

    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert vocab["num_ids"] == meta["num_ids"] == len(vocab["can_ids"]) + 1
    assert vocab["oov_index"] == vocab["num_ids"] - 1
    assert sorted(vocab["can_ids"].values()) == list(range(len(vocab["can_ids"])))
    # Fuzzy IDs never seen in training land on the OOV index.
    fuzzy_ids = np.concatenate([g.x[:, 0].numpy() for g in test["fuzzy"]])
    assert (fuzzy_ids == vocab["oov_index"]).any() and meta["oov_nodes"]["test"]["fuzzy"] > 0
    # The DoS ID 0x000 is in the training captures, but only in attack frames: not in the vocabulary, so the
    # training DoS windows carry the OOV node too.
    assert "0x000" not in vocab["can_ids"] and meta["oov_nodes"]["train"] > 0
    assert vocab["source"] == meta["vocabulary"]["source"] and "normal" in vocab["source"]
    assert meta["vocabulary"]["unseen_ids"]["test"]["dos"] >= 1  # 0x000 (and any rare benign ID)
    assert all(int(g.x[:, 0].max()) < vocab["num_ids"] for g in train)
    assert all(g.y.item() in (0, 1) for g in train)


def test_metadata_records_the_format_read_from_each_log_beside_the_configured_one(tmp_path):
    # With format auto, "format": "auto" alone does not say how each log was read.
    vehicle = Vehicle(9, 25)
    logs = {}
    for index, (name, fmt) in enumerate(
        (("normal", "hcrl_csv"), ("attack", "can_4col"), ("dos", "can_4col"))
    ):
        attack = "none" if name == "normal" else "dos"
        logs[name] = tmp_path / f"{name}.csv"
        write_can_file(
            generate_log(vehicle, 0.6, attack, SYNTHETIC, seed=9, file_index=index), logs[name], fmt
        )
    meta = preprocess_dataset(
        "v",
        [logs["normal"], logs["attack"]],
        {"dos": [logs["dos"]]},
        tmp_path / "out",
        window_size=50,
        stride=50,
    )
    assert meta["format"] == "auto"
    assert meta["format_read"] == {
        "per_file": {
            str(logs["normal"]): "hcrl_csv",
            str(logs["attack"]): "can_4col",
            str(logs["dos"]): "can_4col",
        }
    }
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["format_read"] == meta["format_read"]


def test_vocabulary_holds_only_normal_frames_of_the_training_blocks(tmp_path):
    """An ID seen only in attack frames, or only in a held-out block, is out of vocabulary."""
    vehicle = Vehicle(9, 25)
    normal = generate_log(vehicle, 1.0, "none", {**SYNTHETIC, "rare_ids_per_s": 0.0}, seed=9)
    attack = generate_log(vehicle, 1.0, "fuzzy", {**SYNTHETIC, "rare_ids_per_s": 0.0}, seed=9, file_index=2)
    # A benign ID that occurs only in the last tenth of the normal capture.
    late = normal.can_id.copy()
    late[-len(late) // 20 :: 7] = 0x7FE
    normal = dataclasses.replace(normal, can_id=late)
    paths = {}
    for name, messages in (("normal", normal), ("attack", attack)):
        paths[name] = tmp_path / f"{name}.csv"
        write_can_file(messages, paths[name], "can_4col")
    for seed in range(20):  # a seed whose draw holds the last block of the normal capture out
        meta = preprocess_dataset(
            "v",
            [paths["normal"], paths["attack"]],
            {},
            tmp_path / "out",
            window_size=50,
            stride=50,
            seed=seed,
        )
        blocks = meta["split"]["per_file"][str(paths["normal"])]["held_out_blocks"]["val"]
        if 9 in blocks:
            break
    assert 9 in blocks
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text())
    assert "0x7fe" not in vocab["can_ids"]
    assert set(vocab["can_ids"]) == {f"0x{i:03x}" for i in vehicle.ids}
    assert meta["vocabulary"]["unseen_ids"]["val"] >= 1


def test_time_blocks_further_held_out_splits_and_purged_overlaps(dataset_dir, tmp_path):
    train_files, test_files = discover_layout(dataset_dir)
    meta = preprocess_dataset(
        "h", train_files, test_files, tmp_path, window_size=50, stride=25, time_blocks=5,
        val_fraction=0.2, held_out={"fusion": 0.2}, seed=4,
    )  # fmt: skip
    fusion = load_graphs(tmp_path / "fusion.pt")
    assert len(fusion) == meta["counts"]["fusion"] > 0
    assert meta["split"]["held_out_blocks_per_capture"] == {"val": 1, "fusion": 1}
    for info in meta["split"]["per_file"].values():
        val_block, fusion_block = info["held_out_blocks"]["val"], info["held_out_blocks"]["fusion"]
        assert len(val_block) == len(fusion_block) == 1 and val_block != fusion_block
        # Windows overlap by half: one window at each boundary between blocks of different splits is dropped.
        assert 1 <= info["purged_windows"] <= 4
    total = sum(info["windows"] - info["purged_windows"] for info in meta["split"]["per_file"].values())
    assert meta["counts"]["train"] + meta["counts"]["val"] + meta["counts"]["fusion"] == total
    with pytest.raises(ValueError, match="at least one must stay for training"):
        preprocess_dataset("h", train_files, {}, tmp_path / "x", time_blocks=4, held_out={"fusion": 0.7})
    with pytest.raises(ValueError, match="reserved names"):
        preprocess_dataset("h", train_files, {}, tmp_path / "x", held_out={"test": 0.1})


def test_whole_captures_fill_a_held_out_split_and_add_nothing_to_the_vocabulary(dataset_dir, tmp_path):
    """A held-out split can hold whole captures: every window of each file, after the blocks (none with a share
    of 0); an ID only those captures use is out of vocabulary; a split named nowhere else, or left empty, is an
    error that names it."""
    train_files, test_files = discover_layout(dataset_dir)
    vehicle = Vehicle(SYNTHETIC["seed"], SYNTHETIC["num_ids"])
    capture = generate_log(vehicle, 0.4, "dos", SYNTHETIC, seed=SYNTHETIC["seed"], file_index=77)
    new_id = capture.can_id.copy()
    new_id[::9] = 0x7FD  # an ID no training capture has
    capture = dataclasses.replace(capture, can_id=new_id)
    path = tmp_path / "fusion_01_dos.csv"
    write_can_file(capture, path, "hcrl_csv")
    whole = load_graphs_of(path)
    for share, blocks in ((0.0, 0), (0.2, 1)):
        out = tmp_path / f"share-{share}"
        meta = preprocess_dataset(
            "h", train_files, test_files, out, window_size=50, stride=50, time_blocks=5,
            held_out={"fusion": share}, held_out_files={"fusion": [path]}, seed=4,
        )  # fmt: skip
        fusion = load_graphs(out / "fusion.pt")
        # Each graph file records the split it holds (graph files look alike: a swap is refused by it).
        assert {name: graph_split(out / f"{name}.pt") for name in ("train", "val", "fusion", "test")} == {
            name: name for name in ("train", "val", "fusion", "test")
        }
        assert meta["split"]["held_out_blocks_per_capture"]["fusion"] == blocks
        assert meta["split"]["whole_captures"] == {"fusion": [str(path)]}
        assert meta["files"]["fusion"] == [str(path)]
        from_blocks = sum(
            info["windows"]
            for info in meta["split"]["per_file"].values()
            if info["held_out_blocks"]["fusion"]
        )
        assert (from_blocks > 0) == (blocks > 0)
        # the capture's windows come last, all of them, labelled as the file says
        assert len(fusion) == meta["counts"]["fusion"] >= len(whole) > 0
        assert [int(g.y) for g in fusion[-len(whole) :]] == [int(g.y) for g in whole]
        vocab = json.loads((out / "vocab.json").read_text())
        assert "0x7fd" not in vocab["can_ids"] and meta["vocabulary"]["unseen_ids"]["fusion"] >= 1
        assert meta["counts"]["train"] + meta["counts"]["val"] > 0
    with pytest.raises(ValueError, match=r"held-out splits \['extra'\]"):
        preprocess_dataset("h", train_files, {}, tmp_path / "x", held_out_files={"extra": [path]})
    with pytest.raises(ValueError, match="no fusion graphs.*held_out.fusion takes no blocks"):
        preprocess_dataset("h", train_files, {}, tmp_path / "y", held_out={"fusion": 0.0})


def load_graphs_of(path) -> list:
    """The window graphs of one file by the library's own build (vocabulary: every ID of the file)."""
    from kdgat.can.reader import read_can_file
    from kdgat.graphs import build_graphs

    messages = read_can_file(path)
    ids = np.unique(messages.can_id)
    graphs = build_graphs(
        to_index(messages.can_id, ids), messages.payload, messages.label, len(ids) + 1, 50, 50
    )
    return graphs.to_data_list()


def test_assign_windows_purges_only_between_splits():
    split, drawn = assign_windows(20, {"val": 1}, 4, np.random.default_rng(0), window_size=30, stride=10)
    (block,) = drawn["val"]
    val = np.flatnonzero(split == "val")
    assert val.tolist() == list(range(5 * block, 5 * block + 5 - (2 if block < 3 else 0)))
    purged = np.flatnonzero(split == "")
    # Two windows reach into the next block when it belongs to another split; none inside a split.
    assert len(purged) == 2 * ((block > 0) + (block < 3))
    split, _ = assign_windows(20, {"val": 1}, 4, np.random.default_rng(0), window_size=10, stride=10)
    assert (split != "").all()


def test_a_capture_shorter_than_the_held_out_blocks_keeps_one_window_for_training():
    # 3 windows → 3 blocks of one window. val and fusion each take their share of them, 2 of 10 → 1 of 3 (at
    # least one): one block stays for training instead of all 3 (of the 4 requested) being held out.
    split, drawn = assign_windows(
        3, {"val": 2, "fusion": 2}, 10, np.random.default_rng(0), window_size=10, stride=10
    )
    assert (len(drawn["val"]), len(drawn["fusion"])) == (1, 1)
    assert sorted(split.tolist()) == ["fusion", "train", "val"]
    # 2 windows: one block for val, and fusion's share is capped so that the other stays for training.
    split, drawn = assign_windows(
        2, {"val": 2, "fusion": 2}, 10, np.random.default_rng(0), window_size=10, stride=10
    )
    assert (len(drawn["val"]), len(drawn["fusion"])) == (1, 0)
    assert sorted(split.tolist()) == ["train", "val"]


@pytest.mark.parametrize(("num_windows", "time_blocks"), [(32, 100_000), (40, 100), (5, 10)])
def test_a_capture_of_fewer_windows_than_time_blocks_gives_each_split_its_share(num_windows, time_blocks):
    """preprocess.time_blocks has no maximum, and a capture with fewer windows is cut into one block per window.
    The held-out splits' counts of time_blocks were taken as counts of those: the first split (val) took every
    block but one and the next (fusion) none, so build_graphs failed with "the training files give no fusion
    graphs" for time_blocks 100000 over captures of 32 windows, and took 20 + 19 of 40 windows (training kept 1)
    for time_blocks 100. Each split now takes its share, val_fraction 0.2 and fusion 0.3, of the blocks there
    are."""
    counts = held_out_blocks({"val": 0.2, "fusion": 0.3}, time_blocks)
    split, drawn = assign_windows(
        num_windows, counts, time_blocks, np.random.default_rng(0), window_size=10, stride=10
    )
    for name, share in (("val", 0.2), ("fusion", 0.3)):
        assert len(drawn[name]) == max(1, round(share * num_windows)), (name, drawn)
        assert (split == name).sum() == len(drawn[name])
    assert (split == "train").sum() == num_windows - len(drawn["val"]) - len(drawn["fusion"]) > 0


def test_split_is_seeded(dataset_dir, tmp_path):
    train_files, test_files = discover_layout(dataset_dir)
    runs = {}
    for run, seed in (("a", 1), ("b", 1), ("c", 2)):
        preprocess_dataset("s", train_files, test_files, tmp_path / run, window_size=50, stride=50, seed=seed)
        runs[run] = [g.x.sum().item() for g in load_graphs(tmp_path / run / "val.pt")]
    assert runs["a"] == runs["b"] and runs["a"] != runs["c"]


def test_the_same_logs_give_byte_identical_graph_files_from_any_working_directory(
    dataset_dir, tmp_path, monkeypatch
):
    """Graph files are compared by their SHA-256 (a model's ``trained_on``, the evaluation stash's key): the same
    logs and settings must give the same bytes. torch.save named the zip's inner folder after the random temporary
    file it wrote, so two runs gave equal tensors in different bytes. The logs given by relative paths from
    another working directory give the same bytes too (metadata.json records the paths as given, so not it)."""
    train_files, test_files = discover_layout(dataset_dir)
    settings = {"window_size": 50, "stride": 50, "held_out": {"fusion": 0.3}, "seed": 3}
    preprocess_dataset("s", train_files, test_files, tmp_path / "a", **settings)
    preprocess_dataset("s", train_files, test_files, tmp_path / "b", **settings)
    monkeypatch.chdir(dataset_dir)
    relative = {name: [p.relative_to(dataset_dir) for p in files] for name, files in test_files.items()}
    preprocess_dataset(
        "s", [p.relative_to(dataset_dir) for p in train_files], relative, tmp_path / "c", **settings
    )
    written = sorted(p.name for p in (tmp_path / "a").iterdir() if p.name != "metadata.json")
    assert written == ["fusion.pt", "test.pt", "train.pt", "val.pt", "vocab.json"]
    for name in written:
        digests = {run: file_sha256(tmp_path / run / name) for run in ("a", "b", "c")}
        assert len(set(digests.values())) == 1, (name, digests)


def test_the_held_out_blocks_follow_the_training_files_order_as_the_seeds_description_says(
    dataset_dir, tmp_path
):
    """preprocess.seed was described as the seed of each capture's draw alone, but a capture draws with the seed
    and its place in the list of training files: the same files in another order hold out other blocks (the
    shipped splits are those of the listed order, so the draw stays; the description says so). A folder's files
    are taken sorted by path, so a folder gives one order."""
    train_files, test_files = discover_layout(dataset_dir)
    assert train_files == sorted(train_files)
    blocks = {}
    for name, files in (("listed", train_files), ("again", train_files), ("reversed", train_files[::-1])):
        meta = preprocess_dataset("s", files, test_files, tmp_path / name, window_size=10, stride=10, seed=4)
        blocks[name] = {path: split["held_out_blocks"] for path, split in meta["split"]["per_file"].items()}
    assert blocks["listed"] == blocks["again"] and blocks["listed"] != blocks["reversed"]
    schema = yaml.safe_load((REPO / "workflow/modules/preprocess/schemas/config.schema.yaml").read_text())
    seed = " ".join(schema["properties"]["preprocess"]["properties"]["seed"]["description"].split())
    assert "its place among the dataset's training files" in seed and "another order" in seed
    assert "place among the training files" in " ".join((REPO / "docs" / "science.md").read_text().split())


def test_bad_rows_error_or_counted_skip(dataset_dir, tmp_path, caplog):
    train_files, _ = discover_layout(dataset_dir)
    broken = tmp_path / "broken.csv"
    lines = train_files[0].read_text().splitlines()
    lines[3] = lines[3].replace(",", ";", 1)
    lines[7] = "garbage"
    broken.write_text("\n".join(lines) + "\n")
    with pytest.raises(CanFormatError) as error:
        preprocess_dataset("b", [broken, train_files[1]], {}, tmp_path / "out", window_size=50, stride=50)
    assert f"{broken}, line 4" in str(error.value)
    with caplog.at_level("INFO", logger="kdgat.preprocess"):
        meta = preprocess_dataset(
            "b",
            [broken, train_files[1]],
            {},
            tmp_path / "out",
            window_size=50,
            stride=50,
            bad_rows="skip",
            fmt="hcrl_csv",
        )
    # The job's log says, per file, how many rows were skipped and how many no window reaches.
    tail = messages_after_last_window(len(lines) - 2, 50, 50)
    assert (
        f"{broken}: {len(lines) - 2} messages (hcrl_csv), 2 bad rows skipped, {tail} after the last"
        in caplog.text
    )
    assert meta["skipped_rows"]["per_file"][str(broken)] == 2
    assert meta["skipped_rows"]["total"] == 2
    assert meta["messages"]["per_file"][str(broken)] == len(lines) - 2


def test_to_index_maps_unknown_ids_to_oov():
    assert to_index(np.array([5, 7, 9, 1]), np.array([1, 5, 9])).tolist() == [1, 3, 2, 0]


def test_test_files_as_scenario_file_pairs_are_grouped_in_order():
    """What a Snakemake rule hands over: its inputs in order, each with its scenario."""
    pairs = [("dos", "a.csv"), ("fuzzy", "b.csv"), ("dos", "c.csv")]
    assert group_test_files(pairs) == {"dos": ["a.csv", "c.csv"], "fuzzy": ["b.csv"]}
    assert list(group_test_files(pairs)) == ["dos", "fuzzy"]
    assert group_test_files({"dos": ("a.csv",)}) == {"dos": ["a.csv"]}
    with pytest.raises(ValueError, match="must be \\(scenario, file\\) pairs"):
        group_test_files(["a.csv"])
    with pytest.raises(ValueError, match="no path for the outputs"):
        preprocess_dataset("d", ["a.csv"], pairs, outputs={"train": "t.pt"})


def _one_id_capture(num_messages: int, unique_at: int | None = None):
    from kdgat.can.messages import CanMessages

    can_id = np.full(num_messages, 0x100, dtype=np.int32)
    can_id[1::2] = 0x200
    if unique_at is not None:
        can_id[unique_at] = 0x7FE
    return CanMessages(
        timestamp=np.arange(num_messages) * 0.001,
        can_id=can_id,
        dlc=np.full(num_messages, 8, dtype=np.uint8),
        payload=np.zeros((num_messages, 8), dtype=np.uint8),
        label=np.zeros(num_messages, dtype=np.uint8),
    )


# One time block per window: 1001 messages make 10 windows of 100 and 10 blocks, 2 of them held out for validation.
ONE_BLOCK_PER_WINDOW = dict(window_size=100, stride=100, time_blocks=10, val_fraction=0.2, seed=1)


def _preprocess_blocks(tmp_path, train_capture, test_capture, out: str) -> dict:
    """The metadata of preprocess_dataset over one training and one test capture, ONE_BLOCK_PER_WINDOW."""
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    write_can_file(train_capture, train, "hcrl_csv")
    write_can_file(test_capture, test, "hcrl_csv")
    return preprocess_dataset("s", [train], {"t": [test]}, tmp_path / out, **ONE_BLOCK_PER_WINDOW)


def _validation_blocks(meta: dict) -> list[int]:
    (blocks,) = [info["held_out_blocks"]["val"] for info in meta["split"]["per_file"].values()]
    return blocks


def test_a_message_shared_with_a_held_out_window_adds_no_id_to_the_vocabulary(tmp_path):
    """With stride = window_size a training window's last message is the first of the next window: when that
    window is held out, an ID only there is held out's (unseen in validation), not the vocabulary's."""
    first = _preprocess_blocks(tmp_path, _one_id_capture(1001), _one_id_capture(300), "first")
    blocks = _validation_blocks(first)
    after_training = [b for b in blocks if b > 0 and b - 1 not in blocks]
    assert after_training  # the case exists for this seed: a validation block right after a training one
    boundary = after_training[0] * 100
    meta = _preprocess_blocks(
        tmp_path, _one_id_capture(1001, unique_at=boundary), _one_id_capture(300), "second"
    )
    vocab = json.loads((tmp_path / "second" / "vocab.json").read_text())["can_ids"]
    assert "0x7fe" not in vocab and set(vocab) == {"0x100", "0x200"}
    assert meta["vocabulary"]["unseen_ids"]["val"] == 1


def test_a_held_out_splits_unseen_ids_are_those_of_its_own_windows(tmp_path):
    """metadata.json's vocabulary.unseen_ids.<split> counts the IDs outside the vocabulary in that split's windows
    only: an attack ID in a training block is out of the vocabulary but not validation's, and one in a
    validation block is."""
    first = _preprocess_blocks(tmp_path, _one_id_capture(1001), _one_id_capture(300), "first")
    blocks = _validation_blocks(first)
    assert first["vocabulary"]["unseen_ids"]["val"] == 0
    # An injected frame mid-block stays inside its window.
    for block, unseen in ((next(b for b in range(10) if b not in blocks), 0), (blocks[0], 1)):
        capture = _one_id_capture(1001)
        capture.can_id[block * 100 + 50], capture.label[block * 100 + 50] = 0x7FD, 1
        meta = _preprocess_blocks(tmp_path, capture, _one_id_capture(300), f"block_{block}")
        assert _validation_blocks(meta) == blocks
        vocab = json.loads((tmp_path / f"block_{block}" / "vocab.json").read_text())["can_ids"]
        assert set(vocab) == {"0x100", "0x200"}
        assert meta["vocabulary"]["unseen_ids"]["val"] == unseen, block


def test_metadata_counts_the_nodes_at_the_oov_index_per_split_and_test_scenario(tmp_path):
    """metadata.json's oov_nodes are the nodes whose ID is out of the vocabulary (index num_ids - 1), per split
    and per test scenario: here the one test window that holds an ID never seen in training."""
    meta = _preprocess_blocks(tmp_path, _one_id_capture(1001), _one_id_capture(300, unique_at=150), "out")
    oov = meta["num_ids"] - 1
    graphs = {name: load_graphs(tmp_path / "out" / f"{name}.pt") for name in ("train", "val")}
    graphs |= {"t": load_graph_sets(tmp_path / "out" / "test.pt")["t"]}
    counted = {name: sum(int((g.x[:, 0] == oov).sum()) for g in found) for name, found in graphs.items()}
    assert counted == {"train": 0, "val": 0, "t": 1}
    assert meta["oov_nodes"] == {"train": 0, "val": 0, "test": {"t": 1}}


@pytest.mark.parametrize(
    ("messages", "window_size", "stride", "left_out"),
    [(1199, 100, 100, 98), (1001, 100, 100, 0), (50, 100, 100, 0), (1, 100, 100, 1), (260, 100, 50, 9)],
)
def test_the_messages_no_window_reaches_are_counted(messages, window_size, stride, left_out):
    # Window w covers messages w * stride .. w * stride + width (width = min(window_size, messages - 1)).
    assert messages_after_last_window(messages, window_size, stride) == left_out


def test_the_shipped_split_holds_out_2_of_10_blocks_for_validation_and_3_for_the_fusion():
    """docs/science.md, "Split": the shipped preprocess settings cut every training capture into 10 time blocks, 2
    for validation, 3 for the fusion split and the other 5 for the VGAE and GAT, in windows of 100 rows."""
    from pathlib import Path

    import yaml

    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "config.yaml").read_text())
    settings = shipped["preprocess"]
    blocks = held_out_blocks(
        {"val": settings["val_fraction"], **settings["held_out"]}, settings["time_blocks"]
    )
    assert settings["time_blocks"] == 10 and blocks == {"val": 2, "fusion": 3}
    assert settings["time_blocks"] - sum(blocks.values()) == 5
    assert settings["window_size"] == settings["stride"] == 100


def test_a_small_positive_fraction_still_holds_out_a_block_and_each_capture_draws_its_own(tmp_path):
    assert held_out_blocks({"val": 0.01, "fusion": 0.0}, 10) == {"val": 1, "fusion": 0}
    captures = [tmp_path / f"train_{index}.csv" for index in range(4)]
    for path in captures:
        write_can_file(_one_id_capture(1001), path, "hcrl_csv")
    test = tmp_path / "test.csv"
    write_can_file(_one_id_capture(300), test, "hcrl_csv")
    meta = preprocess_dataset(
        "s", captures, {"t": [test]}, tmp_path / "out", window_size=100, stride=100, seed=3
    )
    draws = {tuple(info["held_out_blocks"]["val"]) for info in meta["split"]["per_file"].values()}
    assert len(draws) > 1  # four captures of one length: not one draw repeated


def test_log_roles_name_each_part_relative_to_the_logs_folder(tmp_path):
    """The preprocess rule's cache-key param: a log moved from training to test changes it, the same layout in
    another folder does not (so the cache is still shared there)."""
    from kdgat.layout import log_roles

    def roles(root, train, test):
        return log_roles([root / "train_01" / train], {"dos": [root / "test_01_dos" / test]}, {})

    first = roles(tmp_path / "a", "x.csv", "y.csv")
    assert first == {"train": ["train_01/x.csv"], "test": {"dos": ["test_01_dos/y.csv"]}}
    assert roles(tmp_path / "elsewhere" / "b", "x.csv", "y.csv") == first
    assert roles(tmp_path / "a", "y.csv", "x.csv") != first
    fusion = log_roles(
        ["r/train_01/x.csv"], {"dos": ["r/test_01_dos/y.csv"]}, {"fusion": ["r/fusion_01/z.csv"]}
    )
    assert fusion["fusion"] == ["fusion_01/z.csv"]


def kdgat_modules_outside(
    wrapper: str, code: tuple[str, ...], observers: tuple[str, ...] = ()
) -> tuple[list[str], set[str]]:
    """The kdgat modules (but logging, and ``observers``: packages that only watch the job) that
    ``wrappers/<wrapper>/wrapper.py``'s kdgat imports load, in a fresh interpreter, whose files are not among
    ``code`` (names of files and folders of the kdgat package, as in kdgat.layout); and every kdgat module loaded."""
    import importlib
    import subprocess
    import sys
    from pathlib import Path

    import kdgat

    source = (Path(__file__).parents[2] / "wrappers" / wrapper / "wrapper.py").read_text()
    imports = "\n".join(
        line for line in source.splitlines() if line.startswith(("from kdgat", "import kdgat"))
    )
    listed = subprocess.run(
        [sys.executable, "-c", f"{imports}\nimport sys\nprint(*sorted(m for m in sys.modules if m.startswith('kdgat')))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    package = Path(kdgat.__file__).parent
    covered = {(package / name) for name in code}
    outside = []
    for module in sorted(set(listed) - {"kdgat", "kdgat.logs"}):
        if module.split(".")[:2] in [["kdgat", name] for name in observers]:
            continue
        file = Path(importlib.import_module(module).__file__)
        if not (file in covered or file.parent in covered):
            outside.append(f"{module} ({file})")
    return outside, set(listed)


def kdgat_copy(tmp_path):
    import shutil
    from pathlib import Path

    import kdgat

    package = Path(kdgat.__file__).parent
    copy = tmp_path / "kdgat"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return package, copy


def test_the_preprocess_code_digest_covers_every_module_build_graphs_runs_and_follows_their_code(tmp_path):
    """The preprocess rule's other cache-key param: every kdgat module the build_graphs wrapper imports (but
    logging) is in kdgat.layout.PREPROCESS_CODE (a module added to the chain and left out would let a cache serve
    graphs of older code), and a change to one of their files changes the digest, a change elsewhere does not."""
    from kdgat.layout import PREPROCESS_CODE, preprocess_code_digest

    outside, listed = kdgat_modules_outside("build_graphs", PREPROCESS_CODE)
    assert not outside, f"not in PREPROCESS_CODE: {outside}"
    assert {"kdgat.graphs", "kdgat.can.reader", "kdgat.preprocess"} <= listed

    package, copy = kdgat_copy(tmp_path)
    before = preprocess_code_digest(copy)
    assert before == preprocess_code_digest(package) == preprocess_code_digest()
    (copy / "training" / "dqn.py").write_text("# not preprocessing\n", encoding="utf-8")
    assert preprocess_code_digest(copy) == before
    for changed in ("graphs.py", "can/hcrl_csv.py"):
        path = copy / changed
        original = path.read_bytes()
        path.write_bytes(original + b"\n# a fix\n")
        assert preprocess_code_digest(copy) != before, changed
        path.write_bytes(original)
    assert preprocess_code_digest(copy) == before


def test_the_synthetic_code_digest_covers_every_module_generate_can_runs_and_follows_their_code(tmp_path):
    """generate_can's cache-key param: every kdgat module its wrapper imports (but logging) is in
    kdgat.layout.SYNTHETIC_CODE, and a change to the generator changes the digest, one to the graph builder not."""
    from kdgat.layout import SYNTHETIC_CODE, synthetic_code_digest

    outside, listed = kdgat_modules_outside("generate_can", SYNTHETIC_CODE)
    assert not outside, f"not in SYNTHETIC_CODE: {outside}"
    assert {"kdgat.synthetic", "kdgat.can.writer"} <= listed

    package, copy = kdgat_copy(tmp_path)
    before = synthetic_code_digest(copy)
    assert before == synthetic_code_digest(package) == synthetic_code_digest()
    (copy / "graphs.py").write_text("# not generating\n", encoding="utf-8")
    assert synthetic_code_digest(copy) == before
    path = copy / "synthetic.py"
    path.write_bytes(path.read_bytes() + b"\n# a fix\n")
    assert synthetic_code_digest(copy) != before


@pytest.mark.parametrize(
    ("code", "changed", "elsewhere"),
    [
        ("PREPROCESS_CODE", "can/hcrl_csv.py", "training/dqn.py"),
        ("SYNTHETIC_CODE", "synthetic.py", "graphs.py"),
    ],
)
def test_the_library_code_param_names_each_file_so_a_change_shows_which(tmp_path, code, changed, elsewhere):
    """The preprocess rules' library_code param (kdgat.layout.preprocess_code_digests, synthetic_code_digests):
    {file: digest} of every file the single digest covers, sorted and plain JSON, so that Snakemake's "Params have
    changed" reason, which shows the param before and now, shows which file changed (it showed two hex digests).
    The same code gives the same mapping wherever it is installed (nothing reruns); a change to a listed file
    changes its entry alone, a file added to a listed folder adds one, a file elsewhere changes nothing."""
    import json

    import kdgat.layout

    listed = getattr(kdgat.layout, code)
    digests = getattr(kdgat.layout, f"{code.split('_')[0].lower()}_code_digests")
    package, copy = kdgat_copy(tmp_path)
    before = digests(copy)
    assert before == digests(package) == digests()
    assert list(before) == sorted(before) and json.loads(json.dumps(before)) == before
    # a folder of the list stands for its .py files
    folders = [package / name for name in listed if (package / name).is_dir()]
    files = {name for name in listed if not (package / name).is_dir()}
    files |= {path.relative_to(package).as_posix() for folder in folders for path in folder.glob("*.py")}
    assert set(before) == files and {"can/reader.py", "files.py"} <= files
    assert all(isinstance(digest, str) and len(digest) >= 12 for digest in before.values())
    (copy / elsewhere).write_text("# not this rule's code\n", encoding="utf-8")
    assert digests(copy) == before
    path = copy / changed
    path.write_bytes(path.read_bytes() + b"\n# a fix\n")
    now = digests(copy)
    assert [name for name in before if now[name] != before[name]] == [changed] and set(now) == set(before)
    (copy / "can" / "new_format.py").write_text("# a reader added\n", encoding="utf-8")
    assert set(digests(copy)) == set(before) | {"can/new_format.py"}


@pytest.mark.parametrize("wrapper", ["train_vgae", "train_gat", "train_dqn"])
def test_the_training_code_digest_covers_every_module_a_training_wrapper_runs(wrapper):
    """A resume checkpoint is keyed on kdgat.layout.training_code_digests (kdgat.training.loop.fingerprint): every
    kdgat module a training wrapper imports (but logging, and tracking, an observer of the epoch loop that never
    changes what is trained) is in TRAINING_CODE, or an upgrade of, say, the device choice (runtime.py), the
    chain's feature counts (chain.py) or the model file's reader (model_store.py) would finish an old checkpoint's
    weights with new code."""
    from kdgat.layout import TRAINING_CODE

    outside, listed = kdgat_modules_outside(wrapper, TRAINING_CODE, observers=("tracking",))
    assert not outside, f"not in TRAINING_CODE: {outside}"
    assert {
        "kdgat.runtime",
        "kdgat.model_store",
        "kdgat.training.loop",
        f"kdgat.training.{wrapper[6:]}",
    } <= listed


def test_the_training_code_digest_follows_the_training_code_and_nothing_else(tmp_path):
    """A change to a file the training code runs changes the digest; one to the CAN readers or the evaluation's
    report, which training never imports, does not (a checkpoint survives an upgrade of those)."""
    from kdgat.layout import training_code_digests

    package, copy = kdgat_copy(tmp_path)
    before = training_code_digests(copy)
    assert before == training_code_digests(package) == training_code_digests()
    for elsewhere in ("can/hcrl_csv.py", "evaluation/summary.py", "tracking/runs.py"):
        (copy / elsewhere).write_text("# not training\n", encoding="utf-8")
    assert training_code_digests(copy) == before
    for changed in (
        "runtime.py",
        "chain.py",
        "model_store.py",
        "training/loop.py",
        "evaluation/thresholds.py",
    ):
        path = copy / changed
        original = path.read_bytes()
        path.write_bytes(original + b"\n# a fix\n")
        assert training_code_digests(copy) != before, changed
        path.write_bytes(original)
    assert training_code_digests(copy) == before


def test_the_vocabulary_reaches_the_last_message_of_the_last_window_and_no_further(tmp_path):
    """Window w covers messages w * stride .. w * stride + window_size: the last one, the target of the window's
    last edge, is a node of the graph, so its ID is in the vocabulary; an ID after the last whole window, which no
    graph holds, is not."""
    messages = _one_id_capture(1050, unique_at=1000)  # 10 windows of 100 rows: messages 0..1000
    messages.can_id[1030] = 0x7FC
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    write_can_file(messages, train, "hcrl_csv")
    write_can_file(_one_id_capture(300), test, "hcrl_csv")
    meta = preprocess_dataset(
        "s", [train], {"t": [test]}, tmp_path / "out", window_size=100, stride=100, val_fraction=0.0
    )
    assert meta["counts"]["train"] == 10 and meta["counts"]["val"] == 0
    vocab = json.loads((tmp_path / "out" / "vocab.json").read_text())["can_ids"]
    assert set(vocab) == {"0x100", "0x200", "0x7fe"}


@pytest.mark.parametrize(("window_size", "stride"), [(25, 10), (30, 10), (10, 10), (7, 3), (5, 7)])
def test_no_two_windows_of_different_splits_share_more_than_one_message(window_size, stride):
    """Purging, checked window pair by window pair: windows a < b (window w holds messages w * stride .. w * stride
    + window_size) of two different splits share at most the one message that ends a, unless one is purged."""
    for seed in range(5):
        split, drawn = assign_windows(
            40, {"val": 2, "fusion": 1}, 8, np.random.default_rng(seed), window_size, stride
        )
        role = np.full(40, "train", dtype=object)  # each window's split before purging: its block's
        for name, blocks in drawn.items():
            role[np.isin(np.arange(40) * 8 // 40, blocks)] = name
        assert ((split == role) | (split == "")).all()
        for a in range(40):
            for b in range(a + 1, 40):
                shared = a * stride + window_size - b * stride + 1  # messages both windows hold
                if role[a] != role[b] and shared > 1:
                    assert "" in (split[a], split[b]), (seed, a, b, role[a], role[b])
        # Purging removes only what it must: a purged window shares more than one message with a later window
        # of another split.
        for a in np.flatnonzero(split == ""):
            assert any(
                role[b] != role[a] and a * stride + window_size - b * stride + 1 > 1 for b in range(a + 1, 40)
            ), (seed, a)


@pytest.mark.parametrize(
    ("test_files", "held_out_files", "words"),
    [
        ({"dos": ["train.csv"]}, {}, "given in train and again in test scenario 'dos'"),
        (
            {"dos": ["test.csv"], "gear": ["./sub/../test.csv"]},
            {},
            "in test scenario 'dos' and again in test scenario 'gear'",
        ),
        ({"dos": ["test.csv"]}, {"fusion": ["train.csv"]}, "in train and again in held-out split 'fusion'"),
        ({"dos": ["test.csv", "test.csv"]}, {}, "in test scenario 'dos' and again in test scenario 'dos'"),
    ],
)
def test_a_log_given_twice_is_refused_before_anything_is_read(
    tmp_path, monkeypatch, test_files, held_out_files, words
):
    """A training log among the test logs would score the model on windows it was trained on."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for name in ("train.csv", "test.csv"):
        write_can_file(_one_id_capture(300), tmp_path / name, "hcrl_csv")
    with pytest.raises(ValueError, match="a log can play one part once") as error:
        preprocess_dataset(
            "d",
            ["train.csv"],
            test_files,
            tmp_path / "out",
            held_out={"fusion": 0.0} if held_out_files else None,
            held_out_files=held_out_files,
        )
    assert words in str(error.value) and "dataset 'd'" in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("fractions", "time_blocks", "message"),
    [
        ({"val": 1.0}, 10, "preprocess.val_fraction must be in [0, 1), got 1.0"),
        ({"val": -0.1}, 10, "preprocess.val_fraction must be in [0, 1), got -0.1"),
        ({"val": 0.2, "fusion": 1.0}, 10, "preprocess.held_out.fusion must be in [0, 1), got 1.0"),
        ({"val": 0.2}, 1, "preprocess.time_blocks must be >= 2, got 1"),
        (
            {"val": 0.5, "fusion": 0.5},
            10,
            "preprocess.val_fraction=0.5 + preprocess.held_out.fusion=0.5 (sum 1) take 5 + 5 = 10 of "
            "preprocess.time_blocks=10 blocks of every training capture (each positive share at least one); at "
            "least one must stay for training",
        ),
        (  # shares below 1 whose blocks, one at least each, leave none
            {"val": 0.2, "fusion": 0.0, "other": 0.1},
            2,
            "preprocess.val_fraction=0.2 + preprocess.held_out.other=0.1 (sum 0.3) take 1 + 1 = 2 of "
            "preprocess.time_blocks=2 blocks",
        ),
    ],
)
def test_held_out_shares_outside_the_schemas_bounds_name_their_key(fractions, time_blocks, message):
    # The schema bounds these for the workflow; the kdgat command and library callers reach this check.
    with pytest.raises(ValueError, match=re.escape(message)):
        held_out_blocks(fractions, time_blocks)


def test_the_wrappers_empty_fusion_captures_need_no_fusion_split(tmp_path):
    """The build_graphs wrapper always passes held_out_files={"fusion": [...]}, empty when the rule has no fusion
    captures: that is no whole capture, and no error when preprocess.held_out names no fusion split."""
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    write_can_file(_one_id_capture(1001), train, "hcrl_csv")
    write_can_file(_one_id_capture(300), test, "hcrl_csv")
    meta = preprocess_dataset("s", [train], {"t": [test]}, tmp_path / "out", held_out_files={"fusion": []})
    assert meta["split"]["whole_captures"] == {} and "fusion" not in meta["counts"]


def test_two_synthetic_entries_of_one_file_are_refused_naming_both():
    """Two synthetic.files entries with the same split and name would write one file: the workflow generated only
    the first and fed it to build_graphs twice, the second attack silently lost."""
    from kdgat.layout import LayoutError, dataset_logs

    files = [
        {"split": "train_01_attack_free", "name": "normal", "attack": "none", "duration_s": 1},
        {"split": "test_01_dos", "name": "dos", "attack": "dos", "duration_s": 1},
        {"split": "test_01_dos", "name": "dos", "attack": "fuzzy", "duration_s": 1},
    ]
    with pytest.raises(LayoutError) as error:
        dataset_logs("lab", {"synthetic": {"files": files}})
    assert str(error.value).startswith("datasets.lab.synthetic.files[2]: split 'test_01_dos' and name 'dos'")
    assert "files[1]" in str(error.value)
    files[2]["name"] = "fuzzy"
    assert dataset_logs("lab", {"synthetic": {"files": files}})[1] == {
        "dos": [
            "resources/preprocess/lab/test_01_dos/dos.csv",
            "resources/preprocess/lab/test_01_dos/fuzzy.csv",
        ]
    }


def test_training_files_without_a_normal_frame_are_refused_instead_of_an_empty_vocabulary(tmp_path):
    """The vocabulary comes from normal frames only: training captures that hold none (every frame an attack, or
    a label column read the wrong way round) would map every node to the OOV index, and train on it silently."""
    attacks = dataclasses.replace(_one_id_capture(1001), label=np.ones(1001, dtype=np.uint8))
    train = tmp_path / "all_attacks.csv"
    write_can_file(attacks, train, "can_4col")
    with pytest.raises(ValueError, match=r"dataset 'a': no frame .* is labelled normal .*all_attacks\.csv"):
        preprocess_dataset("a", [train], {}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("test_logs", [["one_message.csv"], []], ids=["one-message log", "no log"])
def test_a_test_scenario_without_a_window_is_refused_before_training(tmp_path, test_logs):
    """A scenario whose logs hold no window (fewer than 2 messages, or none given) used to be written as an empty
    scenario of test.pt: every model was trained, and only its evaluation failed."""
    train = tmp_path / "train.csv"
    write_can_file(_one_id_capture(1001), train, "hcrl_csv")
    write_can_file(_one_id_capture(300), tmp_path / "fine.csv", "hcrl_csv")
    write_can_file(_one_id_capture(1), tmp_path / "one_message.csv", "hcrl_csv")
    logs = [tmp_path / name for name in test_logs]
    with pytest.raises(
        ValueError, match=r"dataset 's': test scenario 'dos' gives no graphs: its logs"
    ) as error:
        preprocess_dataset("s", [train], {"fine": [tmp_path / "fine.csv"], "dos": logs}, tmp_path / "out")
    assert all(f"'{log}': 1" in str(error.value) for log in logs)
    assert not (tmp_path / "out").exists()


def test_a_window_longer_than_every_capture_names_the_window_settings(tmp_path):
    """window_size larger than the captures: each gives one window, which training keeps, so validation gets none;
    the message named only the count of windows, not the settings that made it or what to change."""
    train = tmp_path / "short.csv"
    write_can_file(_one_id_capture(500), train, "hcrl_csv")
    message = (
        r"give no val graphs \(1 training windows in all; windows per capture at preprocess.window_size=1000 and "
        r"preprocess.stride=1000: short.csv: 1, too few to give every split a block .* smaller window_size and stride"
    )
    with pytest.raises(ValueError, match=message):
        preprocess_dataset("w", [train], {}, tmp_path / "out", window_size=1000, stride=1000)


def test_log_fingerprints_follow_contents_not_paths_and_read_only_the_ends_of_a_long_log(
    tmp_path, monkeypatch
):
    """roles_of_logs' contents (kdgat.layout.log_roles(contents=True)): two logs whose contents swap places under
    the same paths change the cache key, the same logs in another folder do not, a log not on disk yet is ""; a log
    longer than twice FINGERPRINT_BYTES is read at its two ends only (its size and both ends decide)."""
    import kdgat.layout as layout

    def roles(root, train_text, test_text):
        for folder, text in (("train_01", train_text), ("test_01_dos", test_text)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / "log.csv").write_text(text)
        return layout.log_roles(
            [root / "train_01" / "log.csv"], {"dos": [root / "test_01_dos" / "log.csv"]}, {}, contents=True
        )

    first = roles(tmp_path / "a", "1.0,0316,1,05,R\n", "1.0,0316,1,06,T\n")
    assert set(first["contents"]) == {"train_01/log.csv", "test_01_dos/log.csv"}
    assert first["contents"]["train_01/log.csv"].startswith("16:")
    assert roles(tmp_path / "elsewhere" / "b", "1.0,0316,1,05,R\n", "1.0,0316,1,06,T\n") == first
    swapped = roles(tmp_path / "a", "1.0,0316,1,06,T\n", "1.0,0316,1,05,R\n")
    assert {key: value for key, value in swapped.items() if key != "contents"} == layout.log_roles(
        [tmp_path / "a" / "train_01" / "log.csv"], {"dos": [tmp_path / "a" / "test_01_dos" / "log.csv"]}, {}
    )
    assert swapped["contents"] != first["contents"]
    assert layout.log_fingerprint(tmp_path / "not_yet.csv") == ""
    monkeypatch.setattr(layout, "FINGERPRINT_BYTES", 4)
    log = tmp_path / "long.csv"
    log.write_bytes(b"head" + b"middle" + b"tail")
    fingerprint = layout.log_fingerprint(log)
    log.write_bytes(b"head" + b"MIDDLE" + b"tail")
    assert layout.log_fingerprint(log) == fingerprint
    for changed in (
        b"HEAD" + b"middle" + b"tail",
        b"head" + b"middle" + b"TAIL",
        b"head" + b"middle!" + b"tail",
    ):
        log.write_bytes(changed)
        assert layout.log_fingerprint(log) != fingerprint, changed
