"""``timestamp,arbitration_id,data_field,attack`` (can-train-and-test and similar): optional header naming the
columns in any order, hex ID (``0x`` allowed), hex payload 2 characters per byte, attack 0 or 1 (nothing else:
``True`` or ``1.0`` is a bad row, since a label column in another encoding needs a look, not a guess). Under a
header whose last column is not ``attack``, a capture cut off inside its last line can leave a shorter value that
still reads as valid: the reader warns of a last line without a line end then (:func:`cut_field`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kdgat import compiled
from kdgat.can.decode import (
    HEX_LUT,
    NO_QUOTES,
    Fields,
    block_size,
    decode,
    hex_byte_strings,
    looks_numeric,
    one_character_codes,
    timestamps,
    to_numpy,
)
from kdgat.can.messages import CanFormat, CanMessages

COLUMNS = ("timestamp", "arbitration_id", "data_field", "attack")
FILE_ORDER = (0, 1, 2, 3)
# Files of about kdgat.compiled.MIN_MESSAGES messages and more (a can_4col line takes 30-45 bytes).
_COMPILED_MIN_BYTES = compiled.MIN_MESSAGES * 32


def header(first_line: str) -> tuple[int, ...] | None:
    """The position of each of :data:`COLUMNS` when the line is a header naming them, else None."""
    names = [name.strip().lower() for name in first_line.split(",")]
    if sorted(names) == sorted(COLUMNS):
        return tuple(names.index(column) for column in COLUMNS)
    return None


def sniff(first_line: str) -> bool:
    if header(first_line) is not None:
        return True
    parts = [part.strip() for part in first_line.split(",")]
    return (
        len(parts) == 4
        and looks_numeric(parts[0])
        and parts[3] in {"0", "1"}
        and len(parts[2]) % 2 == 0
        and len(parts[2]) != 1
    )


def parse(lines: pa.Array, header: tuple[int, ...] | None = None):
    fields = Fields(pc.split_pattern(lines, ","))
    columns = [fields.get(j) for j in (header or FILE_ORDER)]
    problem = np.zeros(len(fields.count), dtype=np.int8)
    problem[fields.count < 4] = 1
    problem[(problem == 0) & (fields.count > 4)] = 12
    return parse_columns(*columns, problem)


def _plain_hex(id_strings, data):
    """Large logs whose IDs and payloads are all plain hex: one compiled pass (same values); else None."""
    return compiled.decode_hex_columns(id_strings, data) if len(id_strings) >= compiled.MIN_MESSAGES else None


def parse_columns(ts_strings, id_strings, data, attack, problem, plain=None):
    """``plain``: :func:`_plain_hex` of the ID and payload columns when the caller has it already."""
    ts, bad_ts = timestamps(ts_strings)
    plain = plain if plain is not None else _plain_hex(id_strings, data)
    if plain is not None:
        can_id, payload, dlc = plain
        bad_id = bad_data = np.zeros(len(problem), dtype=bool)
    else:
        can_id, bad_id, payload, bad_data, dlc = _decode_id_and_data(id_strings, data)
    flag = one_character_codes(attack)
    if flag is not None:
        is_1, is_0 = flag == ord("1"), flag == ord("0")
    else:
        is_1 = to_numpy(pc.equal(attack, "1"), dtype=bool)
        is_0 = to_numpy(pc.equal(attack, "0"), dtype=bool)
    if not (is_0 | is_1).all():  # blanks around the label are allowed
        attack = pc.utf8_trim_whitespace(attack)
        is_1 = to_numpy(pc.fill_null(pc.equal(attack, "1"), False), dtype=bool)
        is_0 = to_numpy(pc.fill_null(pc.equal(attack, "0"), False), dtype=bool)
    checks = [(3, bad_ts), (4, bad_id), (8, bad_data), (10, ~(is_0 | is_1))]
    for code, bad in checks:
        problem[(problem == 0) & bad] = code
    return ts, can_id, dlc, payload, is_1.astype(np.uint8), problem


def _decode_id_and_data(id_strings, data):
    can_id, bad_id = decode(id_strings, 8, HEX_LUT)
    if bad_id.any():  # IDs written as 0x1A0 (rare, so only looked for when plain hex fails)
        can_id, bad_id = decode(pc.replace_substring_regex(id_strings, r"^\s*0[xX]", ""), 8, HEX_LUT)
    data_len = to_numpy(pc.binary_length(data), dtype=np.int64)
    # trimmed=True: no retry inside decode, since the DLC must come from the length without the blanks.
    payload, bad_data = decode(data, 16, HEX_LUT, pad="right", trimmed=True)
    if bad_data.any():  # blanks around the payload are allowed
        data = pc.utf8_trim_whitespace(data)
        data_len = to_numpy(pc.binary_length(data), dtype=np.int64)
        payload, bad_data = decode(data, 16, HEX_LUT, pad="right", trimmed=True)
    bad_data |= data_len % 2 == 1
    payload = payload.astype(np.uint8)
    if bad_data.any():
        payload[bad_data] = 0
    return can_id, bad_id, payload, bad_data, np.where(bad_data, 0, data_len // 2)


def fast_parse(path: Path, header: tuple[int, ...] | None):
    """The four columns straight from pyarrow's CSV reader; None sends the file to the exact path."""
    import pyarrow.csv as pcsv

    # Large files in the default column order: one compiled pass over the bytes when every row is plain.
    if path.stat().st_size >= _COMPILED_MIN_BYTES and (
        header is None or (header == FILE_ORDER and _header_ends_at_newline(path))
    ):
        parsed = compiled.parse_can_4col(path, skip_first_line=header is not None)
        if parsed is not None:
            return (*parsed, np.zeros(len(parsed[0]), dtype=np.int8))
    names = list(COLUMNS) if header is None else [COLUMNS[header.index(j)] for j in range(4)]
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(
                column_names=names, skip_rows=0 if header is None else 1, block_size=block_size(path)
            ),
            parse_options=pcsv.ParseOptions(delimiter=",", **NO_QUOTES),
            # Timestamps are parsed by the reader (same string-to-double conversion as pc.cast, which the exact
            # path uses); an unparsable one raises and sends the file to the exact path. UTF-8 is checked below,
            # only where the columns are not already known to be ASCII (a sixth of the read's time).
            convert_options=pcsv.ConvertOptions(
                column_types={**dict.fromkeys(names, pa.string()), "timestamp": pa.float64()},
                check_utf8=False,
            ),
        )
    except pa.ArrowInvalid:
        return None
    columns = [table.column(name).combine_chunks() for name in COLUMNS]
    if columns[0].null_count or not np.isfinite(to_numpy(columns[0])).all():
        return None  # empty, NaN or infinite timestamps: let the exact path name the line
    plain = _plain_hex(columns[1], columns[2])
    flags = one_character_codes(columns[3])
    if plain is None or flags is None or not ((flags == ord("0")) | (flags == ord("1"))).all():
        try:  # not all hex digits and 0/1 flags: the text must be valid UTF-8 for the string kernels
            for column in columns[1:]:
                column.validate(full=True)
        except pa.ArrowInvalid:
            return None  # the exact path reports the file as not UTF-8
    return parse_columns(*columns, np.zeros(table.num_rows, dtype=np.int8), plain=plain)


def _header_ends_at_newline(path: Path) -> bool:
    """Whether the header line ends at a ``\\n``: the compiled parser skips the header up to the first one, which in
    a file with lone ``\\r`` line ends would skip rows too."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    newline = head.find(b"\n")
    return newline >= 0 and b"\r" not in head[: max(newline - 1, 0)]


def cut_field(header: tuple[int, ...] | None) -> str | None:
    """The file's last column when a line cut off inside it reads as a valid, shorter value: a timestamp, an ID or
    a payload of whole bytes (``00112233445566`` of ``0011223344556677``). The attack label, last in the default
    order, cannot be cut into one (an empty label is a bad row)."""
    last = COLUMNS[(header or FILE_ORDER).index(3)]
    return None if last == "attack" else last


def write(messages: CanMessages) -> str:
    hex_bytes = hex_byte_strings()[messages.payload].tolist()
    stamps = [f"{t:.6f}" for t in messages.timestamp.tolist()]
    ids = [f"{i:03x}" for i in messages.can_id.tolist()]
    data = ["".join(row[:d]) for row, d in zip(hex_bytes, messages.dlc.tolist(), strict=True)]
    lines = [
        f"{s},{i},{d},{a}" for s, i, d, a in zip(stamps, ids, data, messages.label.tolist(), strict=True)
    ]
    return "\n".join(lines) + "\n"


FORMAT = CanFormat(
    name="can_4col",
    sniff=sniff,
    header=header,
    parse=parse,
    fast_parse=fast_parse,
    write=write,
    write_header=",".join(COLUMNS) + "\n",
    cut_field=cut_field,
)
