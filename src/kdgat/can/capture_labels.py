"""Attack labels of CAN logs whose lines carry none (``candump``, ``CanFormat.labels_from_metadata``), from the
capture's entry in a ``capture_metadata.json`` file, as the ROAD dataset (ORNL, Verma et al. 2024) describes its
attacks: ``{"<capture>": {"injection_interval": [start_s, end_s], "injection_id": "0x0D0", "injection_data_str":
"XXXXXXXXXXXXFFFF", ...}}``, keyed by the log's name without its suffix (``fuzzing_attack_1`` for
``fuzzing_attack_1.log``).

A frame is an attack when it lies inside the injection interval (seconds from the capture's first time stamp, both
ends included, to the microsecond candump writes), has the injected ID (``"XXX"``: any ID, as ROAD's fuzzing captures
say) and matches the injected data pattern, hex digit by hex digit (``X``: any digit; a frame of fewer than 8
bytes is matched with the bytes it lacks as ``00``). Fuzzing is the same rule:
ROAD's fuzzing entry names no ID and the pattern ``FFFFFFFFFFFFFFFF``, so the frames in the interval with an
all-0xFF payload are the injected ones, and the vehicle's own frames in that interval stay normal. An entry without
any injection key is an attack-free capture (ROAD's ambient captures), unless the capture's name says ``attack``.
The capture's first time stamp is its first frame's, or, where ``bad_rows: skip`` dropped the first lines, the
first of those lines' whose ``(<seconds>)`` reads (a CAN FD or error frame is still part of the capture's time):
skipping a bad row does not shift the interval.

The metadata file is looked for beside the log, then in the folder above it (the dataset folder of a
``train_*/``/``test_NN_<scenario>/`` layout); given ``metadata_files`` (what a rule hands over: its
``input.capture_metadata``, retrieved from remote storage with the logs), only among those. A log without one, without an entry, or with an entry that does not fit
it (an interval past its end, no frame matching the injection) is refused, naming the log, the file and what to
add: a capture is never read as all normal for want of its labels.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kdgat.can.formats import REGISTRY
from kdgat.can.messages import CanFormatError, CanMessages
from kdgat.can.metadata_files import METADATA_FILE, metadata_file, metadata_places
from kdgat.can.reader import read_can_file

_TIME_STAMP = re.compile(r"\s*\(\s*(\d+(?:\.\d*)?)\)")  # candump's (<seconds>), as candump.sniff reads it
INJECTION_KEYS = ("injection_interval", "injection_id", "injection_data_str")
ANY_ID = "XXX"
EXPECTED = (
    '{"<capture>": {"injection_interval": [<start_s>, <end_s>] (seconds from the capture\'s first time stamp), '
    '"injection_id": "0x0D0" (hex; "XXX" for any ID, as in fuzzing), "injection_data_str": 16 hex digits of the '
    'injected payload with X for any digit (e.g. "FFFFFFFFFFFFFFFF")}}, or an entry without these keys for an '
    "attack-free capture"
)


def read_labelled_can_file(
    path: str | Path,
    fmt: str = "auto",
    bad_rows: str = "error",
    metadata_files: Iterable[str | Path] | None = None,
) -> CanMessages:
    """:func:`~kdgat.can.reader.read_can_file`, with the labels of a format whose lines carry none taken from the
    capture's metadata file (:func:`capture_entry`, :func:`label_frames`); other formats' labels as they read.
    ``metadata_files``: the metadata files to look among (None: look on disk)."""
    messages = read_can_file(path, fmt=fmt, bad_rows=bad_rows)
    if REGISTRY[messages.fmt].labels_from_metadata:
        metadata, entry = capture_entry(Path(path), messages.fmt, metadata_files)
        messages.label = label_frames(messages, entry, f"{metadata}, entry {Path(path).stem!r}")
    return messages


def capture_entry(
    path: Path, fmt: str = "candump", metadata_files: Iterable[str | Path] | None = None
) -> tuple[Path, dict]:
    """The metadata file of a log (among ``metadata_files`` if given) and the log's entry in it;
    :class:`CanFormatError` naming what is missing."""
    given = None if metadata_files is None else [str(file) for file in metadata_files]
    places, found = metadata_places(path), metadata_file(path, given)
    if found is None:
        among = "" if given is None else f" among the metadata files the rule gives ({given})"
        raise CanFormatError(
            path,
            None,
            f"a {fmt} log carries no attack labels, and there is no {METADATA_FILE} beside it or in the folder "
            f"above ({places[0]}, {places[1]}){among}: add one with an entry {path.stem!r} describing the "
            f"capture's injection, {EXPECTED} (ROAD ships it as attacks/{METADATA_FILE})",
        )
    try:
        metadata = json.loads(found.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CanFormatError(
            found, error.lineno, f"not valid JSON ({error.msg}); expected {EXPECTED}"
        ) from None
    except UnicodeDecodeError:
        raise CanFormatError(found, None, "not a UTF-8 text file; expected a JSON object") from None
    if not isinstance(metadata, dict):
        raise CanFormatError(
            found, None, f"expected a JSON object of captures, {EXPECTED}; got {type(metadata).__name__}"
        )
    entry = metadata.get(path.stem)
    if entry is None:
        close = difflib.get_close_matches(path.stem, [str(name) for name in metadata], n=3)
        near = f"; the closest are {close}" if close else f"; it has {len(metadata)} entries"
        raise CanFormatError(
            path,
            None,
            f"{found} has no entry {path.stem!r} for this log (entries are keyed by the log's name without its "
            f"suffix){near}: add one, {EXPECTED}",
        )
    if not isinstance(entry, dict):
        raise CanFormatError(
            found, None, f"entry {path.stem!r} is {type(entry).__name__}, expected an object: {EXPECTED}"
        )
    return found, entry


def label_frames(messages: CanMessages, entry: dict, where: str) -> np.ndarray:
    """1 for each frame the entry's injection describes (see the module docstring), else 0; ``where`` names the
    entry in messages. Refuses an entry that does not fit the capture."""
    given = [key for key in INJECTION_KEYS if key in entry]
    if not given:
        if "attack" in Path(messages.path).stem.lower():
            raise CanFormatError(
                messages.path,
                None,
                f"{where} has none of {list(INJECTION_KEYS)}, but the capture's name says it is an attack: add "
                f"them ({EXPECTED}), since an attack capture read without its injection would be all normal",
            )
        return np.zeros(len(messages), dtype=np.uint8)
    missing = [key for key in INJECTION_KEYS if key not in entry]
    if missing:
        raise CanFormatError(
            messages.path, None, f"{where} lacks {missing} (it has {given}): expected {EXPECTED}"
        )
    start, end = _interval(entry["injection_interval"], messages.path, where)
    target = _injected_id(entry["injection_id"], messages.path, where)
    pattern, mask = _data_pattern(entry["injection_data_str"], messages.path, where)

    elapsed = np.round(messages.timestamp - capture_start(messages), 6)
    inside = (elapsed >= start) & (elapsed <= end)
    if not inside.any():
        raise CanFormatError(
            messages.path,
            None,
            f"{where}: no frame lies in injection_interval [{start:g}, {end:g}] s (the capture spans "
            f"{float(elapsed[-1]):g} s from its first time stamp): the entry is not this capture's, or its interval "
            "is not in seconds from the capture's first time stamp",
        )
    # The payload's 16 hex digits, high nibble first, against the pattern's (mask 0: an X, any digit).
    digits = np.stack([messages.payload >> 4, messages.payload & 0xF], axis=2).reshape(len(messages), 16)
    label = inside & ((digits & mask) == (pattern & mask)).all(axis=1)
    if target is not None:
        label &= messages.can_id == target
    if not label.any():
        ids = ", ".join(f"0x{i:03X}" for i in np.unique(messages.can_id[inside])[:8])
        raise CanFormatError(
            messages.path,
            None,
            f"{where}: none of the {int(inside.sum())} frames in injection_interval [{start:g}, {end:g}] s has "
            f"injection_id {entry['injection_id']!r} and a payload matching injection_data_str "
            f"{entry['injection_data_str']!r} (IDs there include {ids}): the entry does not fit this capture",
        )
    return label.astype(np.uint8)


def capture_start(messages: CanMessages) -> float:
    """The capture's first time stamp: its first frame's; where bad rows were skipped, the first line's whose
    ``(<seconds>)`` reads, even a bad row's (its frame is dropped, not its place in the capture's time)."""
    if messages.skipped_rows:
        with open(messages.path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if stamp := _TIME_STAMP.match(line):
                    return float(stamp.group(1))
    return float(messages.timestamp[0])


def _interval(value, path: str, where: str) -> tuple[float, float]:
    numbers = isinstance(value, list) and len(value) == 2
    numbers = numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not numbers or not all(math.isfinite(v) for v in value) or not 0 <= value[0] <= value[1]:
        raise CanFormatError(
            path,
            None,
            f"{where}: injection_interval is {value!r}, expected [start_s, end_s]: two finite numbers of seconds "
            "from the capture's first time stamp, 0 <= start_s <= end_s",
        )
    return float(value[0]), float(value[1])


def _injected_id(value, path: str, where: str) -> int | None:
    """The injected CAN ID, or None for ``"XXX"`` (any ID)."""
    text = value.strip() if isinstance(value, str) else ""
    if text.upper() == ANY_ID:
        return None
    digits = text[2:] if text[:2].lower() == "0x" else text
    if not 1 <= len(digits) <= 8 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise CanFormatError(
            path,
            None,
            f'{where}: injection_id is {value!r}, expected a hex CAN ID as a string ("0x0D0" or "0D0") or '
            f'"{ANY_ID}" for any ID',
        )
    return int(digits, 16)


def _data_pattern(value, path: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The pattern's 16 hex digits and a mask (0xF where the digit must match, 0 for ``X``)."""
    text = value.strip().upper() if isinstance(value, str) else ""
    if len(text) != 16 or any(c not in "0123456789ABCDEFX" for c in text):
        raise CanFormatError(
            path,
            None,
            f"{where}: injection_data_str is {value!r}, expected 16 characters, a hex digit or X (any digit) for "
            'each of the payload\'s 16 hex digits (e.g. "XXXXXXXXXXXXFFFF")',
        )
    pattern = np.array([0 if c == "X" else int(c, 16) for c in text], dtype=np.uint8)
    mask = np.array([0 if c == "X" else 0xF for c in text], dtype=np.uint8)
    return pattern, mask
