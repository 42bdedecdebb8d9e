"""What every CAN format reads into and what a format is: :class:`CanMessages`, :class:`CanFormat`, the row
problems a reader reports and :class:`CanFormatError`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from wrapper_rules import InputError

BAD_ROW_MODES = ("error", "skip")

# Problems a row can have; each format checks its own in its own order and the first one found is reported.
PROBLEMS = {
    1: "missing fields",
    2: "unexpected field layout",
    3: "timestamp is not a finite number",
    4: "CAN ID is not a hexadecimal number of 1 to 8 digits",
    5: "DLC is not a number from 0 to 8",
    6: "DLC does not match the number of data bytes",
    7: "data byte is not a 1-2 digit hexadecimal number",
    8: "data_field is not a hex string of 2 characters per byte (at most 8 bytes)",
    9: "flag is not R or T",
    10: "attack label is not 0 or 1",
    11: "CAN ID is above 0x1FFFFFFF (IDs are 11-bit standard or 29-bit extended)",
    12: "too many fields (expected 4: timestamp, arbitration_id, data_field, attack)",
    13: "data byte is not 2 hexadecimal digits (a one-digit last byte is a line cut off, e.g. a capture's end)",
    14: "unexpected field layout (expected a candump log line: '(<seconds>) <interface> <ID>#<data>')",
    15: "CAN FD frame (<ID>##<flags><data>): its payload of up to 64 bytes does not fit the 8-byte messages read here",
    16: "data after '#' is neither hex of 2 characters per byte (at most 8 bytes) nor R with an optional length 0-8",
    17: "error frame (an 8-digit ID with the error flag 0x20000000 set), not a message on the bus",
}
# Checked by the reader after a format's parser (a hex number of up to 8 digits can exceed 29 bits).
ID_ABOVE_29_BITS = 11


class CanFormatError(ValueError, InputError):
    """A CAN log that cannot be read: names the file, the line (when there is one) and the problem."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


@dataclass
class CanMessages:
    """Messages of one log, in file order. ``payload`` is zero-padded to 8 bytes; ``label`` is 1 for attacks."""

    timestamp: np.ndarray  # float64 [N], seconds
    can_id: np.ndarray  # int32 [N]
    dlc: np.ndarray  # uint8 [N]
    payload: np.ndarray  # uint8 [N, 8]
    label: np.ndarray  # uint8 [N]
    path: str = ""
    fmt: str = ""
    skipped_rows: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.timestamp)


# A parser's result, one entry per line: timestamp (float64), CAN ID, DLC, payload [n, 8], label (0/1) and the
# number of the first problem of the line (0: none; see PROBLEMS).
Parsed = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class CanFormat:
    """One CAN log format: how to recognise it, read it (exactly, and fast) and write it.

    ``header(first_line)`` returns None when the first line is a message, else what the parser needs to know about
    the header (e.g. the column order); that line is then skipped. ``parse(lines, header)`` turns the non-blank
    lines (a pyarrow string array, header removed) into :data:`Parsed`. ``fast_parse(path, header)``, when given,
    parses the whole file in one go and returns None on any structural problem (the exact path then reports it
    with its line number); without it, the file's lines are read in bulk and handed to ``parse``. ``write``, when
    given, renders messages as the file's lines, each ended, after ``write_header`` (the file's first line, with its
    end; "" for a format without a header); a file is written a chunk of messages at a time, each rendered by its
    own call (formats without ``write`` can be read but not generated).
    ``cut_field(header)`` names the file's last column when a line cut off inside it still reads as a valid,
    shorter value (else None: the cut is a bad row); the reader then warns of a last line without a line end.
    ``near_miss(first_line)``, for a line no format detects, says what it looks like and how to get the format
    instead (candump's screen output: record with ``candump -l``), else None. ``labels_from_metadata``: the lines
    carry no attack label, so the frames are labelled from the capture's metadata file
    (:mod:`kdgat.can.capture_labels`), and a log without one is refused rather than read as all normal.
    """

    name: str
    sniff: Callable[[str], bool]
    parse: Callable[[pa.Array, Any], Parsed]
    header: Callable[[str], Any] = lambda first_line: None
    fast_parse: Callable[[Path, Any], Parsed | None] | None = None
    write: Callable[[CanMessages], str] | None = None
    write_header: str = ""
    cut_field: Callable[[Any], str | None] = lambda header: None
    near_miss: Callable[[str], str | None] = lambda first_line: None
    labels_from_metadata: bool = False
