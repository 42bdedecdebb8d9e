"""The preprocess step of one dataset: CAN logs -> time-block split -> ID vocabulary -> graphs -> files.

The split is made in time, never by random windows: every training capture is cut into ``time_blocks``
consecutive blocks of windows, and a seeded draw of whole blocks per capture is held out (``val_fraction`` of the
blocks for validation, and any further held-out split named in ``held_out``, e.g. ``{"fusion": 0.2}`` for a model
that must be fitted on outputs of models that never saw those windows). With overlapping windows
(``stride < window_size``) a window that shares messages with a window of another split is dropped ("purged").
Not purged: a window's last message (the target of its last edge) is the first message of the window ``window_size
/ stride`` later, so with ``stride = window_size`` (the default) a window next to a held-out block shares that one
message with it. Its ID counts as held out's, not the vocabulary's; purging those windows too would change the
shipped data and every figure measured on it, so it is left as it is (recorded in docs/science.md).

The CAN-ID vocabulary comes from the frames labelled normal in the *training* blocks only (attack frames and
held-out blocks never add an ID, like the original's ``build_id_mapping_from_normal``): an ID an attacker
invents, or one seen only in held-out or test traffic, maps to the out-of-vocabulary index. Training files with
no normal frame in their training blocks are refused (the vocabulary would be empty).

Outputs (the data contract the training and evaluation modules read):

* ``train.pt``, ``val.pt`` and one ``<name>.pt`` per further held-out split: graph lists
  (:func:`kdgat.graph_store.load_graphs`), in capture order and time order inside a capture;
* ``test.pt``: ``{scenario: graphs}`` (:func:`kdgat.graph_store.load_graph_sets`);
* ``vocab.json``: ``{"can_ids": {"0x316": 0, ...}, "oov_index": k, "num_ids": k + 1, "source": ...}``;
* ``metadata.json``: sizes, counts per split and scenario, attack fractions, the split (blocks held out per
  capture, purged windows), the vocabulary's source and the unseen IDs per split, the format as configured
  (``format``, e.g. ``auto``) and the one each log was read in (``format_read.per_file``), skipped bad rows per
  file, wall time and peak memory of the step.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from kdgat import layout
from kdgat.can.capture_labels import read_labelled_can_file
from kdgat.can.messages import CanMessages
from kdgat.files import write_json
from kdgat.graph_store import save_graph_sets, save_graphs, vocabulary_digest
from kdgat.graphs import EDGE_FEATURES, NODE_FEATURES, GraphArrays, build_graphs, window_count
from kdgat.layout import DEFAULT_EXCLUDE, LOG_SUFFIXES, VAL, discover_layout, held_out_blocks, scenario_name  # noqa: F401 (re-exported)
from kdgat.layout import PreprocessError as PreprocessError
from kdgat.preprocess_checks import refuse_repeated_logs, too_few_windows

log = logging.getLogger(__name__)

# CAN IDs below this bound (all 11-bit ones) are counted and looked up in tables instead of sorted/searched.
_ID_TABLE = 1 << 20


def _distinct_ids(can_ids: np.ndarray) -> np.ndarray:
    if len(can_ids) and 0 <= can_ids.min() and can_ids.max() < _ID_TABLE:
        return np.flatnonzero(np.bincount(can_ids)).astype(can_ids.dtype)
    return np.unique(can_ids)


def build_vocabulary(
    messages: Iterable[CanMessages], masks: Iterable[np.ndarray] | None = None
) -> np.ndarray:
    """Sorted distinct CAN IDs of the frames labelled normal in the logs (and, with ``masks``, only where the mask
    of that log is true: its training blocks). The OOV index is ``len(ids)``."""
    messages = list(messages)
    masks = [None] * len(messages) if masks is None else list(masks)
    ids = []
    for log_messages, mask in zip(messages, masks, strict=True):
        keep = log_messages.label == 0
        if mask is not None:
            keep &= mask
        ids.append(_distinct_ids(log_messages.can_id[keep]))
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


TRAIN = "train"
PURGED = ""


def messages_after_last_window(num_messages: int, window_size: int, stride: int) -> int:
    """Messages of a log that no window reaches: those after the last whole window (all of a log too short for
    one)."""
    windows = window_count(num_messages, window_size, stride)
    if windows == 0:
        return num_messages
    width = min(window_size, num_messages - 1)
    return num_messages - ((windows - 1) * stride + width + 1)


def assign_windows(
    num_windows: int,
    blocks_per_split: Mapping[str, int],
    time_blocks: int,
    rng: np.random.Generator,
    window_size: int,
    stride: int,
) -> tuple[np.ndarray, dict[str, list[int]]]:
    """The split of each window of one capture (``TRAIN``, a held-out name, or ``PURGED``) and the blocks drawn
    for each held-out split.

    Windows are cut into ``time_blocks`` consecutive blocks of (nearly) equal size (fewer blocks when the capture
    has fewer windows, of which each split takes its share); whole blocks are drawn for the held-out splits. A
    window whose messages reach into the next block of another split is purged (see the module docstring).
    """
    blocks = min(time_blocks, num_windows)
    # counts of time_blocks, as shares of fewer blocks: as counts, val took all blocks but one and fusion none
    blocks_per_split = {
        name: max(1, round(n * blocks / time_blocks)) if n else 0 for name, n in blocks_per_split.items()
    }
    block_of = (np.arange(num_windows) * blocks) // max(num_windows, 1)
    roles = np.full(blocks, TRAIN, dtype=object)  # split names of any length
    order = rng.permutation(blocks)
    drawn: dict[str, list[int]] = {}
    taken = 0
    for name, count in blocks_per_split.items():
        # A capture with fewer windows than blocks keeps at least one block for training.
        count = min(count, max(blocks - 1 - taken, 0))
        drawn[name] = sorted(int(b) for b in order[taken : taken + count])
        roles[order[taken : taken + count]] = name
        taken += count
    split = roles[block_of].astype(object)
    # Window w covers messages [w * stride, w * stride + window_size]; it overlaps the next ceil(W / S) - 1
    # windows, which may lie in the next block.
    overlap = -(-window_size // stride) - 1
    if overlap > 0 and num_windows > 1:
        for shift in range(1, overlap + 1):
            later = np.minimum(np.arange(num_windows) + shift, num_windows - 1)
            crosses = (block_of[later] != block_of) & (roles[block_of[later]] != roles[block_of])
            split[crosses] = PURGED
    return split, drawn


def _window_rows_mask(num_messages: int, starts: np.ndarray, width: int) -> np.ndarray:
    """Messages used by the windows starting at ``starts`` (rows start..start + width, the last as a target)."""
    mask = np.zeros(num_messages, dtype=bool)
    if len(starts):
        edges = np.zeros(num_messages + 1, dtype=np.int64)
        np.add.at(edges, starts, 1)
        np.add.at(edges, np.minimum(starts + width + 1, num_messages), -1)
        mask = np.cumsum(edges[:-1]) > 0
    return mask


def _unseen_ids(messages: CanMessages, vocabulary: np.ndarray, mask: np.ndarray | None = None) -> set[int]:
    ids = _distinct_ids(messages.can_id if mask is None else messages.can_id[mask])
    return set(np.setdiff1d(ids, vocabulary).tolist())


@layout.settings_named
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
    time_blocks: int = 10,
    held_out: Mapping[str, float] | None = None,
    held_out_files: Mapping[str, Sequence[str | Path]] | None = None,
    seed: int = 42,
    outputs: Mapping[str, str | Path] | None = None,
    metadata_files: Sequence[str | Path] | None = None,
) -> dict:
    """Run the whole step; returns the metadata (also written to ``metadata.json``).

    ``test_files`` is ``{scenario: [files]}`` or ``[(scenario, file), ...]`` (what a Snakemake rule hands over:
    its inputs in order, with each one's scenario). ``held_out`` names further held-out splits and their share of
    each capture (``{"fusion": 0.2}`` writes ``fusion.pt``; a share of 0 takes no blocks). ``held_out_files``
    gives such a split whole captures besides (or instead of) its blocks: ``{"fusion": [files]}``, every window of
    those files, which add nothing to the vocabulary (like test files). ``outputs`` names each file (keys ``train,
    val, test, vocab, metadata`` and the further held-out names); a key it lacks goes to ``out_dir/<key>.pt|json``.
    ``metadata_files``: the capture_metadata.json files that label candump logs, as a rule hands them over
    (:mod:`kdgat.can.capture_labels`); None: each is looked for beside its log and in the folder above.
    """
    started = time.perf_counter()
    held_out_key = layout.setting_key("held_out")  # preprocess.held_out, or the wrapper's params.held_out
    # Checked before any log is read (the schema's bounds; the kdgat command and library callers bypass it).
    for key, value, least in (("window_size", window_size, 2), ("stride", stride, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
            raise PreprocessError(f"{layout.setting_key(key)} must be an integer >= {least}, got {value!r}")
    if held_out is not None and not isinstance(held_out, Mapping):
        raise PreprocessError(
            f"{held_out_key} must map each further held-out split to its share (e.g. {{fusion: 0.3}}), got "
            f"{held_out!r}"
        )
    test_files = group_test_files(test_files)
    if not train_files:
        raise PreprocessError(f"dataset {dataset!r}: no training files")
    held_out = {
        name: share for name, share in (held_out or {}).items() if share is not None
    }  # null: no split
    clash = sorted({TRAIN, VAL, "test", "vocab", "metadata"} & set(held_out))
    if clash:
        raise PreprocessError(f"{held_out_key}: {clash} are reserved names (the other outputs use them)")
    held_out_files = {name: list(files) for name, files in (held_out_files or {}).items() if files}
    unknown = sorted(set(held_out_files) - set(held_out))
    if unknown:
        raise PreprocessError(
            f"dataset {dataset!r}: whole captures are given for the held-out splits {unknown}, which "
            f"{held_out_key} does not name (it names {sorted(held_out)}; a share of 0 takes whole captures only)"
        )
    blocks_per_split = held_out_blocks({VAL: val_fraction, **held_out}, time_blocks)
    graph_splits = [TRAIN, VAL, *held_out]
    defaults = {name: f"{name}.pt" for name in graph_splits}
    defaults |= {"test": "test.pt", "vocab": "vocab.json", "metadata": "metadata.json"}
    outputs = dict(outputs or {})
    # A path for a split held_out does not name was never written: the rule that declared it (build_graphs'
    # output.fusion without params.held_out) failed only after the whole run, on Snakemake's missing output.
    unnamed = sorted(key for key, path in outputs.items() if path and key not in defaults)
    if unnamed:
        raise PreprocessError(
            f"dataset {dataset!r}: a path is given for the outputs {unnamed}, which are no split "
            f"{held_out_key} names (it names {sorted(held_out)}): give each a share there (0 takes whole "
            "captures only) or leave the output out"
        )
    missing = [key for key in defaults if not outputs.get(key)]
    if missing and out_dir is None:
        raise PreprocessError(layout.outputs_without_a_path(missing, held_out, outputs))
    paths = {
        key: Path(outputs[key]) if outputs.get(key) else Path(out_dir) / name
        for key, name in defaults.items()
    }

    refuse_repeated_logs(dataset, train_files, test_files, held_out_files)
    skipped: dict[str, int] = {}
    message_counts: dict[str, int] = {}
    formats_read: dict[str, str] = {}  # with fmt "auto", the format detected for each log

    def read(path) -> CanMessages:
        # candump: labels from metadata
        messages = read_labelled_can_file(path, fmt=fmt, bad_rows=bad_rows, metadata_files=metadata_files)
        formats_read[str(path)] = messages.fmt
        skipped[str(path)] = messages.skipped_rows
        message_counts[str(path)] = len(messages)
        log.info(
            "%s: %d messages (%s), %d bad rows skipped, %d after the last whole window left out",
            path,
            len(messages),
            messages.fmt,
            messages.skipped_rows,
            messages_after_last_window(len(messages), window_size, stride),
        )
        return messages

    train_messages = [read(path) for path in train_files]
    # The split first (it depends only on each capture's length), then the vocabulary from its training part.
    assignments, split_files = [], {}
    for index, (path, messages) in enumerate(zip(train_files, train_messages, strict=True)):
        num_windows = window_count(len(messages), window_size, stride)
        split, drawn = assign_windows(
            num_windows,
            {name: blocks_per_split[name] for name in graph_splits[1:]},
            time_blocks,
            np.random.default_rng([seed, index]),
            window_size,
            stride,
        )
        assignments.append(split)
        split_files[str(path)] = {
            "windows": num_windows,
            "held_out_blocks": drawn,
            "purged_windows": int((split == PURGED).sum()),
        }
    widths = [min(window_size, max(len(m) - 1, 1)) for m in train_messages]
    # A window's last message (the target of its last edge) is the first of the next window, which may be held
    # out: such a shared message is held out's, so that held-out blocks never add an ID to the vocabulary.
    in_training = [
        _window_rows_mask(len(m), np.flatnonzero(split == TRAIN) * stride, width)
        & ~_window_rows_mask(len(m), np.flatnonzero((split != TRAIN) & (split != PURGED)) * stride, width)
        for m, split, width in zip(train_messages, assignments, widths, strict=True)
    ]
    vocabulary = build_vocabulary(train_messages, in_training)
    if len(vocabulary) == 0:
        # Every node would be the OOV index: graphs that tell no ID from another, trained on without a word.
        raise PreprocessError(
            f"dataset {dataset!r}: no frame in the training blocks of the training files is labelled normal "
            f"({[str(p) for p in train_files]}), so the CAN-ID vocabulary, which comes from normal frames only, "
            "would be empty; add an attack-free capture to the training files, or check their attack labels"
        )
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

    parts: dict[str, list[GraphArrays]] = {name: [] for name in graph_splits}
    unseen: dict[str, set[int]] = {name: set() for name in graph_splits[1:]}
    for messages, split, width in zip(train_messages, assignments, widths, strict=True):
        graphs = graphs_of(messages)
        for name in graph_splits:
            chosen = np.flatnonzero(split == name)
            parts[name].append(graphs.take(chosen))
            if name != TRAIN and len(chosen):
                rows = _window_rows_mask(len(messages), chosen * stride, width)
                unseen[name] |= _unseen_ids(messages, vocabulary, rows)
    del train_messages, in_training
    for name, files in held_out_files.items():  # whole captures: every window, after the captures' blocks
        for path in files:
            messages = read(path)
            parts[name].append(graphs_of(messages))
            unseen[name] |= _unseen_ids(messages, vocabulary)
    splits = {name: GraphArrays.concat(graphs) for name, graphs in parts.items()}
    for name in graph_splits:
        # an empty split is an error, except validation when val_fraction asks for no blocks
        if len(splits[name]) == 0 and (name != VAL or blocks_per_split[VAL] > 0):
            source = "the training files" + (
                f" and the whole {name} captures" if name in held_out_files else ""
            )
            raise PreprocessError(
                f"dataset {dataset!r}: {source} give no {name} graphs "
                f"({sum(f['windows'] for f in split_files.values())} training windows in all"
                + (
                    too_few_windows(split_files, window_size, stride)
                    if blocks_per_split.get(name, 1)
                    else f"; {held_out_key}.{name} takes no blocks"
                )
                + ")"
            )

    test: dict[str, GraphArrays] = {}
    oov_nodes: dict[str, int] = {}
    unseen_in_test: dict[str, set[int]] = {}
    for scenario, files in test_files.items():
        scenario_parts = []
        unseen_in_test[scenario] = set()
        for path in files:
            messages = read(path)
            scenario_parts.append(graphs_of(messages))
            unseen_in_test[scenario] |= _unseen_ids(messages, vocabulary)
        test[scenario] = GraphArrays.concat(scenario_parts)
        if len(test[scenario]) == 0:
            # Else every model would be trained, and only its evaluation fail on the empty scenario.
            sizes = {str(path): message_counts[str(path)] for path in files}
            raise PreprocessError(
                f"dataset {dataset!r}: test scenario {scenario!r} gives no graphs: its logs {sizes or '(none)'} "
                "(messages per log) hold no window (a window needs at least 2 messages)"
            )
        oov_nodes[scenario] = int((test[scenario].x[:, 0] == num_ids - 1).sum())

    digest = vocabulary_digest(
        vocabulary
    )  # recorded by every graph file, so that runs are never mixed unsaid
    for name in graph_splits:
        save_graphs(splits[name], paths[name], vocabulary=digest, split=name)
    save_graph_sets(test, paths["test"], vocabulary=digest, split="test")
    vocabulary_source = "frames labelled normal in the training blocks of the training captures"
    vocab = {
        "can_ids": {f"0x{int(i):03x}": index for index, i in enumerate(vocabulary.tolist())},
        "oov_index": num_ids - 1,
        "num_ids": num_ids,
        "source": vocabulary_source,
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
        "format": fmt,  # as configured (auto or a format's name); format_read says how each log was read
        "format_read": {"per_file": formats_read},
        "bad_rows": bad_rows,
        "split": {
            "method": "time blocks",
            "time_blocks": time_blocks,
            "held_out_blocks_per_capture": {name: blocks_per_split[name] for name in graph_splits[1:]},
            "per_file": split_files,
            # held-out splits that also hold whole captures (every window of each file)
            "whole_captures": {name: [str(p) for p in files] for name, files in held_out_files.items()},
        },
        "vocabulary": {
            "source": vocabulary_source,
            "size": len(vocabulary),
            "digest": digest,
            "oov_index": num_ids - 1,
            # distinct CAN IDs of each split that are not in the vocabulary (all map to the OOV index)
            "unseen_ids": {
                **{name: len(ids) for name, ids in unseen.items()},
                "test": {name: len(ids) for name, ids in unseen_in_test.items()},
            },
        },
        "counts": {
            **{name: len(splits[name]) for name in graph_splits},
            "test": {name: len(g) for name, g in test.items()},
        },
        "attack_fraction": {
            **{name: _attack_fraction(splits[name]) for name in graph_splits},
            "test": {name: _attack_fraction(g) for name, g in test.items()},
        },
        "oov_nodes": {
            **{name: int((splits[name].x[:, 0] == num_ids - 1).sum()) for name in graph_splits},
            "test": oov_nodes,
        },
        "files": {
            "train": [str(p) for p in train_files],
            **{name: [str(p) for p in files] for name, files in held_out_files.items()},
            "test": {name: [str(p) for p in files] for name, files in test_files.items()},
        },
        "messages": {"per_file": message_counts, "total": int(sum(message_counts.values()))},
        "skipped_rows": {"per_file": skipped, "total": int(sum(skipped.values()))},
        "wall_time_s": round(time.perf_counter() - started, 3),
        "peak_memory_mb": _peak_memory_mb(),
    }
    write_json(metadata, paths["metadata"], indent=1)
    log.info(
        "%s: %s graphs (time blocks), test %s; %d IDs from normal training frames; %d bad rows skipped; %.2f s",
        dataset,
        {name: len(splits[name]) for name in graph_splits},
        metadata["counts"]["test"],
        num_ids,
        metadata["skipped_rows"]["total"],
        metadata["wall_time_s"],
    )
    return metadata
