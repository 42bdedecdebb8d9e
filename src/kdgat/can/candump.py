"""candump log files of Linux can-utils (``candump -l``, ``candump -L``), as the ROAD dataset (ORNL) and many
real-vehicle captures ship them: one frame a line, ``(1602165123.123456) can0 0C1#0102030405060708``.

* ``<ID>`` is hex: 3 digits for an 11-bit standard ID, 8 for a 29-bit extended one (1 to 8 digits are read);
* ``<data>`` is hex, 2 characters per byte, 0 to 8 bytes, optionally followed by ``_<digit>`` (can-utils' raw DLC
  9-15 of an 8-byte frame, which changes nothing here);
* ``<ID>#R`` and ``<ID>#R<n>`` are remote frames: read with DLC ``n`` (0 without it) and no data;
* ``<ID>##<flags><data>`` is a CAN FD frame (up to 64 bytes): a bad row, as the messages read here hold 8 bytes;
* an 8-digit ID with the error flag 0x20000000 is an error frame, not traffic: a bad row.

The lines carry no attack label: each capture's frames are labelled from its entry in ``capture_metadata.json``
(:mod:`kdgat.can.capture_labels`). candump's screen output (``can0  0C1   [8]  01 02 ...``, what ``candump can0``
prints) is not read: its columns change with candump's options (``-t``, ``-a``, ``-x``), and without ``-t`` it has no
time; detection names it and says to record with ``candump -l``. There is no writer: a log written here would lose
the labels.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kdgat.can.decode import HEX_LUT, Fields, decode, timestamps, to_numpy
from kdgat.can.messages import CanFormat

_LOG_LINE = re.compile(r"^\(\s*\d+(\.\d*)?\)\s+\S+\s+[0-9A-Fa-f]{1,8}#")
_SCREEN_LINE = re.compile(r"^(\(\s*[\d.:\- ]+\)\s+)?\S+\s+[0-9A-Fa-f]{1,8}\s+\[\d{1,2}\]")
ERROR_FLAG = 0x20000000


def sniff(first_line: str) -> bool:
    return _LOG_LINE.match(first_line) is not None


def near_miss(first_line: str) -> str | None:
    if _SCREEN_LINE.match(first_line.strip()) is None:
        return None
    return (
        "; this looks like candump's screen output (candump can0), which is not read (its columns change with "
        "candump's options, and without -t it has no time): record the log with candump -l (it writes "
        "candump-<date>.log) or candump -L > capture.log, which write '(<seconds>) can0 0C1#0102...' lines"
    )


def _flag(array: pa.Array) -> np.ndarray:
    return to_numpy(pc.fill_null(array, False), dtype=bool)


def parse(lines: pa.Array, header=None):
    fields = Fields(pc.utf8_split_whitespace(lines))
    n = len(fields.count)
    problem = np.zeros(n, dtype=np.int8)
    stamp = fields.get(0)
    framed = _flag(pc.starts_with(stamp, "(")) & _flag(pc.ends_with(stamp, ")"))
    ts, bad_ts = timestamps(pc.utf8_slice_codeunits(stamp, 1, -1))

    frame = Fields(pc.split_pattern(fields.get(2), "#"))
    id_strings, data = frame.get(0), frame.get(1)
    is_fd = (frame.count == 3) & _flag(pc.equal(data, ""))
    frame_ok = (frame.count == 2) | is_fd
    can_id, bad_id = decode(id_strings, 8, HEX_LUT)
    id_digits = to_numpy(pc.binary_length(pc.fill_null(id_strings, "")), dtype=np.int64)
    error_frame = ~bad_id & (id_digits == 8) & ((can_id & ERROR_FLAG) != 0)

    data = pc.replace_substring_regex(pc.fill_null(data, ""), r"_[0-9A-Fa-f]$", "")  # raw DLC of 8 bytes
    remote = _flag(pc.starts_with(data, "R"))
    remote_dlc, bad_remote = decode(pc.utf8_slice_codeunits(data, 1), 1, HEX_LUT)
    remote_empty = to_numpy(pc.binary_length(data), dtype=np.int64) == 1
    remote_dlc = np.where(remote_empty, 0, remote_dlc)
    bad_remote = remote & ~remote_empty & (bad_remote | (remote_dlc > 8))

    hex_data = pc.if_else(pa.array(remote), "", data)
    data_len = to_numpy(pc.binary_length(hex_data), dtype=np.int64)
    payload, bad_data = decode(hex_data, 16, HEX_LUT, pad="right", trimmed=True)
    bad_data = (bad_data | (data_len % 2 == 1)) & ~remote
    payload = np.where(bad_data[:, None], 0, payload).astype(np.uint8)
    dlc = np.where(remote, np.where(bad_remote, 0, remote_dlc), np.where(bad_data, 0, data_len // 2))

    checks = [
        (1, fields.count < 3),
        (14, (fields.count > 3) | ~framed | ~frame_ok),
        (3, bad_ts),
        (4, bad_id),
        (17, error_frame),
        (15, is_fd),
        (16, bad_data | bad_remote),
    ]
    for code, bad in checks:
        problem[(problem == 0) & bad] = code
    return ts, can_id, dlc, payload, np.zeros(n, dtype=np.uint8), problem


def cut_field(header) -> str:
    """A line cut off inside its data at a byte boundary (``0C1#0102030405`` of ``0C1#0102030405060708``) still
    reads as a shorter frame: the reader warns of a last line without a line end."""
    return "data"


FORMAT = CanFormat(
    name="candump",
    sniff=sniff,
    parse=parse,
    cut_field=cut_field,
    near_miss=near_miss,
    labels_from_metadata=True,
)
