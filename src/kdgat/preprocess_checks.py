"""Checks of the preprocess step's inputs that name what is wrong (:func:`kdgat.preprocess.preprocess_dataset`):
a log given twice, and why a split that takes blocks got no window."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from kdgat import layout
from kdgat.layout import PreprocessError


def refuse_repeated_logs(
    dataset: str,
    train_files: Sequence[str | Path],
    test_files: Mapping[str, Sequence[str | Path]],
    held_out_files: Mapping[str, Sequence[str | Path]],
) -> None:
    """A log given twice (the same file, however its path is written) is an error naming both places: in training
    and test it would put training windows in the test set, twice in one split it would count them twice."""
    seen: dict[str, str] = {}
    parts = [("train", train_files), *((f"test scenario {s!r}", f) for s, f in test_files.items())]
    parts += [(f"held-out split {name!r}", files) for name, files in held_out_files.items()]
    for part, files in parts:
        for path in files:
            key = os.path.realpath(path)
            if key in seen:
                raise PreprocessError(
                    f"dataset {dataset!r}: the log {str(path)!r} is given in {seen[key]} and again in {part}; "
                    "a log can play one part once (training, one test scenario or one held-out split)"
                )
            seen[key] = part


def too_few_windows(split_files: Mapping[str, dict], window_size: int, stride: int) -> str:
    """Why a split that takes blocks got no window: the captures' windows at the window settings, named."""
    counts = [f"{Path(path).name}: {info['windows']}" for path, info in split_files.items()]
    shown = ", ".join(counts[:3]) + (", ..." if len(counts) > 3 else "")
    return (
        f"; windows per capture at {layout.setting_key('window_size')}={window_size} and "
        f"{layout.setting_key('stride')}={stride}: {shown}, "
        "too few to give every split a block (a capture needs one window for each split it feeds, training "
        "included): use longer captures or a smaller window_size and stride"
    )
