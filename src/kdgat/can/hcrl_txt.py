"""HCRL normal-run text: ``Timestamp: 1479121434.850202  ID: 0350  000  DLC: 8  05 28 84 66 6d 00 00 a2``.
Every message is normal. Every data byte is two hex digits, as HCRL writes them: a data byte is the last field of
a line, so a capture cut off inside its last line leaves a one-digit byte (``... 00 00 a``), which would otherwise
read as another value (0x0a for 0xa2); such a line is a bad row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kdgat.can.decode import HEX_LUT, Fields, decode, dlc_values, payload_bytes, timestamps, to_numpy
from kdgat.can.messages import CanFormat


def sniff(first_line: str) -> bool:
    return first_line.startswith("Timestamp:")


def parse(lines: pa.Array, header=None):
    fields = Fields(pc.utf8_split_whitespace(lines))
    n = len(fields.count)
    problem = np.zeros(n, dtype=np.int8)
    layout_ok = np.ones(n, dtype=bool)
    for j, keyword in ((0, "Timestamp:"), (2, "ID:"), (5, "DLC:")):
        layout_ok &= to_numpy(pc.fill_null(pc.equal(fields.get(j), keyword), False), dtype=bool)
    ts, bad_ts = timestamps(fields.get(1))
    can_id, bad_id = decode(fields.get(3), 8, HEX_LUT)
    dlc, bad_dlc = dlc_values(fields.get(6))
    shape_ok = fields.count == dlc + 7
    payload, bad_byte = payload_bytes(fields, dlc, shape_ok, first_column=7, two_digits=True)
    checks = [(1, fields.count < 7), (2, ~layout_ok), (3, bad_ts), (4, bad_id), (5, bad_dlc), (6, ~shape_ok)]
    checks.append((13, bad_byte))
    for code, bad in checks:
        problem[(problem == 0) & bad] = code
    return ts, can_id, dlc, payload, np.zeros(n, dtype=np.uint8), problem


FORMAT = CanFormat(name="hcrl_txt", sniff=sniff, parse=parse)
