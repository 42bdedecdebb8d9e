"""HCRL Car-Hacking CSV, no header: ``Timestamp,CAN ID,DLC,DATA[0]..DATA[DLC-1],Flag`` with Flag ``R`` (normal) or
``T`` (injected). Rows with DLC < 8 have fewer columns, so the flag shifts left. Some converted copies carry a
``Timestamp,...`` header line, which is skipped."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kdgat.can.decode import (
    HEX_LUT,
    Fields,
    decode,
    dlc_values,
    hex_byte_strings,
    looks_numeric,
    payload_bytes,
    timestamps,
    to_numpy,
)
from kdgat.can.messages import CanFormat, CanMessages


def sniff(first_line: str) -> bool:
    parts = [part.strip() for part in first_line.split(",")]
    return (
        len(parts) >= 4
        and looks_numeric(parts[0])
        and parts[2].isdigit()
        and int(parts[2]) <= 8
        and parts[-1] in {"R", "T"}
    )


def header(first_line: str):
    return () if first_line.lower().startswith("timestamp") else None


def parse(lines: pa.Array, header=None):
    fields = Fields(pc.split_pattern(lines, ","))
    n = len(fields.count)
    problem = np.zeros(n, dtype=np.int8)
    ts, bad_ts = timestamps(fields.get(0))
    can_id, bad_id = decode(fields.get(1), 8, HEX_LUT)
    dlc, bad_dlc = dlc_values(fields.get(2))
    shape_ok = fields.count == dlc + 4
    payload, bad_byte = payload_bytes(fields, dlc, shape_ok, first_column=3)
    flag = fields.get(np.maximum(fields.count - 1, 0))
    is_t = to_numpy(pc.fill_null(pc.equal(flag, "T"), False), dtype=bool)
    is_r = to_numpy(pc.fill_null(pc.equal(flag, "R"), False), dtype=bool)
    if not (is_t | is_r).all():  # blanks around the flag are allowed, as around every field
        flag = pc.utf8_trim_whitespace(pc.fill_null(flag, ""))
        is_t = to_numpy(pc.equal(flag, "T"), dtype=bool)
        is_r = to_numpy(pc.equal(flag, "R"), dtype=bool)
    checks = [
        (1, fields.count < 4),
        (3, bad_ts),
        (4, bad_id),
        (5, bad_dlc),
        (6, ~shape_ok),
        (7, bad_byte),
        (9, ~(is_t | is_r)),
    ]
    for code, bad in checks:
        problem[(problem == 0) & bad] = code
    return ts, can_id, dlc, payload, is_t.astype(np.uint8), problem


def write(messages: CanMessages) -> str:
    hex_bytes = hex_byte_strings()[messages.payload].tolist()
    stamps = [f"{t:.6f}" for t in messages.timestamp.tolist()]
    ids = [f"{i:04x}" for i in messages.can_id.tolist()]
    flags = np.where(messages.label.astype(bool), "T", "R").tolist()
    lines = [
        ",".join([stamp, cid, str(d), *row[:d], flag])
        for stamp, cid, d, row, flag in zip(stamps, ids, messages.dlc.tolist(), hex_bytes, flags, strict=True)
    ]
    return "\n".join(lines) + "\n"


FORMAT = CanFormat(name="hcrl_csv", sniff=sniff, header=header, parse=parse, write=write)
