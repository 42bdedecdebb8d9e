"""Readers for CAN-bus logs in the formats the public intrusion-detection datasets use.

Formats (``fmt``):

``hcrl_csv``
    HCRL Car-Hacking CSV, no header: ``Timestamp,CAN ID,DLC,DATA[0]..DATA[DLC-1],Flag`` with Flag ``R``
    (normal) or ``T`` (injected). Rows with DLC < 8 have fewer columns, so the flag shifts left.
``hcrl_txt``
    HCRL normal-run text: ``Timestamp: 1479121434.850202  ID: 0350  000  DLC: 8  05 28 84 66 6d 00 00 a2``.
    Every message is normal.
``can_4col``
    ``timestamp,arbitration_id,data_field,attack`` (optional header; hex ID, hex payload 2 characters per byte,
    attack 0/1).

Parsing is vectorised: the file is split into lines with numpy, the fields with pyarrow compute kernels, and hex
is decoded with a lookup table over the raw character buffers. Blank lines carry no message and are ignored; every
other line that is not a valid message is a *bad row*. With ``bad_rows="error"`` the first one raises
:class:`CanFormatError` naming the file, the line number and the problem; with ``bad_rows="skip"`` bad rows are
dropped, counted in :attr:`CanMessages.skipped_rows` and logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger(__name__)

FORMATS = ("hcrl_csv", "hcrl_txt", "can_4col")
BAD_ROW_MODES = ("error", "skip")
CAN_4COL_COLUMNS = ("timestamp", "arbitration_id", "data_field", "attack")

# Nibble value of every byte; -1 marks a character that is not a digit of the base.
_HEX_LUT = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX_LUT[_c] = 10 + _i
# Byte value of two hex characters read as one little-endian uint16 (first character in the low byte).
_HEX_PAIR_LUT = np.full(1 << 16, -1, dtype=np.int16)
_hex_chars = np.flatnonzero(_HEX_LUT >= 0)
_HEX_PAIR_LUT[(_hex_chars[:, None] | (_hex_chars[None, :] << 8)).ravel()] = (
    _HEX_LUT[_hex_chars][:, None] * 16 + _HEX_LUT[_hex_chars][None, :]
).ravel()
_DEC_LUT = np.full(256, -1, dtype=np.int16)
_DEC_LUT[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10)

_NUMBER_REGEX = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"

# Problems a row can have, in the order they are checked (the first one found is reported).
PROBLEMS = {
    1: "missing fields",
    2: "unexpected field layout",
    3: "timestamp is not a number",
    4: "CAN ID is not a hexadecimal number of 1 to 8 digits",
    5: "DLC is not a number from 0 to 8",
    6: "DLC does not match the number of data bytes",
    7: "data byte is not a 1-2 digit hexadecimal number",
    8: "data_field is not a hex string of 2 characters per byte (at most 8 bytes)",
    9: "flag is not R or T",
    10: "attack label is not 0 or 1",
}


class CanFormatError(ValueError):
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


# --------------------------------------------------------------------------------------------- lines


def _numpy(array: pa.Array, dtype=None) -> np.ndarray:
    """A pyarrow array as numpy. ``to_numpy`` is zero-copy for null-free numeric arrays, while
    ``np.asarray(array)`` costs ~50 ms per million values in pyarrow 26."""
    values = array.to_numpy(zero_copy_only=False)
    return values if dtype is None else values.astype(dtype, copy=False)


def _read_lines(path: Path) -> tuple[pa.StringArray, np.ndarray]:
    """All non-blank lines (without the line end, ``\\n`` or ``\\r\\n``) and their 1-based line numbers."""
    data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    newlines = np.flatnonzero(data == 10)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.concatenate((newlines, [len(data)]))
    if starts[-1] == len(data):  # the file ends with a line end (or is empty): there is no last line
        starts, ends = starts[:-1], ends[:-1]
    keep = np.ones(len(data), dtype=bool)
    keep[newlines] = False
    crlf = (ends > starts) & (data[np.maximum(ends - 1, 0)] == 13) if len(data) else ends > starts
    ends = ends - crlf
    keep[ends[crlf]] = False
    offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(ends - starts, out=offsets[1:])
    body = pa.py_buffer(data[keep].tobytes())
    lines = pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(offsets), body)
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid as error:
        raise CanFormatError(path, None, f"not a UTF-8 text file ({error})") from None
    lines = pc.utf8_trim_whitespace(lines)
    line_numbers = np.arange(1, len(starts) + 1, dtype=np.int64)
    nonblank = _numpy(pc.greater(pc.utf8_length(lines), 0), dtype=bool)
    if not nonblank.all():
        lines = lines.filter(pa.array(nonblank))
        line_numbers = line_numbers[nonblank]
    return lines, line_numbers


def _decode(
    strings: pa.Array, max_len: int, lut: np.ndarray, pad: str = "left", trimmed: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Integer value of each string (hex or decimal per ``lut``), or with ``pad='right'`` (hex only) the byte
    matrix ``[n, max_len // 2]`` of hex strings of 2 characters per byte; ``bad`` marks invalid strings."""
    if strings.null_count:
        strings = pc.fill_null(strings, "")
    original = strings
    n = len(strings)
    lengths = _numpy(pc.binary_length(strings), dtype=np.int64)
    bad = lengths > max_len
    pairs = lut is _HEX_LUT and max_len % 2 == 0
    if pad == "left":
        bad |= lengths == 0
        width = int(min(max(lengths.max(initial=1), 1), max_len))  # pad only to the longest string
        if width % 2 and pairs and (lengths == width).all():
            pairs = (
                False  # all strings equally long (like "316"): decode them as they are, one digit at a time
            )
        elif pairs:
            width += width % 2
    else:
        width = max_len
    if not (lengths == width).all():
        if bad.any():
            strings = pc.if_else(pa.array(bad), "", strings)
        # Byte-wise (ascii) padding: 3x faster than utf8_*pad, and it keeps every string exactly width bytes long.
        strings = (pc.ascii_lpad if pad == "left" else pc.ascii_rpad)(strings, width=width, padding="0")
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    offsets = np.frombuffer(strings.buffers()[1], dtype=offset_type)[strings.offset : strings.offset + n + 1]
    chars = np.frombuffer(strings.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[0] + n * width]
    if pairs:  # two hex characters -> one byte with a single lookup
        digits = _HEX_PAIR_LUT[chars.view(np.uint16).reshape(n, width // 2)]
    else:
        digits = lut[chars.reshape(n, width)]
    # One contiguous reduction in the common all-valid case; the per-row one only when something is wrong.
    invalid = digits.min(axis=1) < 0 if digits.size and digits.min() < 0 else np.zeros(n, dtype=bool)
    if invalid.any() and not trimmed:
        # Surrounding blanks are allowed: strip them and decode again (rare, so only on this slow path).
        return _decode(pc.utf8_trim_whitespace(original), max_len, lut, pad, trimmed=True)
    bad |= invalid
    if pad == "right":
        return digits, bad
    base = 256 if pairs else (16 if lut is _HEX_LUT else 10)
    # int32 when every value fits (up to 7 hex digits): half the memory traffic of int64.
    values = digits[:, 0].astype(np.int32 if base ** digits.shape[1] <= 1 << 31 else np.int64)
    for k in range(1, digits.shape[1]):  # Horner's rule: integer matmul has no BLAS and is ~10x slower
        values = values * base + digits[:, k]
    if bad.any():
        values[bad] = 0
    return values, bad


class _Fields:
    """Fields of every line after a split: ``get(j)`` is field j of each line (a row's first field where the
    line has fewer fields; such rows are flagged by the field-count checks, which come first)."""

    def __init__(self, split: pa.ListArray):
        self.offsets = _numpy(split.offsets, dtype=np.int64)
        self.values = split.values
        self.count = np.diff(self.offsets)

    def get(self, j: np.ndarray | int) -> pa.Array:
        j = np.asarray(j, dtype=np.int64)
        index = np.where(j < self.count, self.offsets[:-1] + j, self.offsets[:-1])
        return self.values.take(pa.array(index))


def _timestamps(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    if pa.types.is_floating(strings.type):  # parsed by the CSV reader (the fast path checked for nulls/NaN)
        values = _numpy(strings)
        return values, np.zeros(len(values), dtype=bool)
    try:  # fast path: every timestamp parses
        values = _numpy(pc.cast(strings, pa.float64()))
        if not np.isnan(values).any():
            return values, np.zeros(len(values), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    strings = pc.utf8_trim_whitespace(pc.fill_null(strings, ""))
    ok = _numpy(pc.match_substring_regex(strings, _NUMBER_REGEX), dtype=bool)
    cleaned = strings if ok.all() else pc.if_else(pa.array(ok), strings, "0")
    return _numpy(pc.cast(cleaned, pa.float64())), ~ok


# ------------------------------------------------------------------------------------------- parsers


def _parse_hcrl_csv(lines: pa.Array):
    fields = _Fields(pc.split_pattern(lines, ","))
    n = len(fields.count)
    problem = np.zeros(n, dtype=np.int8)
    ts, bad_ts = _timestamps(fields.get(0))
    can_id, bad_id = _decode(fields.get(1), 8, _HEX_LUT)
    dlc, bad_dlc = _decode(fields.get(2), 1, _DEC_LUT)
    bad_dlc |= dlc > 8
    dlc = np.where(bad_dlc, 0, dlc)
    payload = np.zeros((n, 8), dtype=np.uint8)
    bad_byte = np.zeros(n, dtype=bool)
    shape_ok = fields.count == dlc + 4
    for k in range(8):
        has_byte = shape_ok & (k < dlc)
        if not has_byte.any():
            continue
        values, bad = _decode(fields.get(np.where(has_byte, 3 + k, 0)), 2, _HEX_LUT)
        bad_byte |= has_byte & bad
        payload[:, k] = np.where(has_byte & ~bad, values, 0)
    flag = fields.get(np.maximum(fields.count - 1, 0))
    is_t = _numpy(pc.fill_null(pc.equal(flag, "T"), False), dtype=bool)
    is_r = _numpy(pc.fill_null(pc.equal(flag, "R"), False), dtype=bool)
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


def _parse_hcrl_txt(lines: pa.Array):
    fields = _Fields(pc.utf8_split_whitespace(lines))
    n = len(fields.count)
    problem = np.zeros(n, dtype=np.int8)
    layout_ok = np.ones(n, dtype=bool)
    for j, keyword in ((0, "Timestamp:"), (2, "ID:"), (5, "DLC:")):
        layout_ok &= _numpy(pc.fill_null(pc.equal(fields.get(j), keyword), False), dtype=bool)
    ts, bad_ts = _timestamps(fields.get(1))
    can_id, bad_id = _decode(fields.get(3), 8, _HEX_LUT)
    dlc, bad_dlc = _decode(fields.get(6), 1, _DEC_LUT)
    bad_dlc |= dlc > 8
    dlc = np.where(bad_dlc, 0, dlc)
    shape_ok = fields.count == dlc + 7
    payload = np.zeros((n, 8), dtype=np.uint8)
    bad_byte = np.zeros(n, dtype=bool)
    for k in range(8):
        has_byte = shape_ok & (k < dlc)
        if not has_byte.any():
            continue
        values, bad = _decode(fields.get(np.where(has_byte, 7 + k, 0)), 2, _HEX_LUT)
        bad_byte |= has_byte & bad
        payload[:, k] = np.where(has_byte & ~bad, values, 0)
    checks = [(1, fields.count < 7), (2, ~layout_ok), (3, bad_ts), (4, bad_id), (5, bad_dlc), (6, ~shape_ok)]
    checks.append((7, bad_byte))
    for code, bad in checks:
        problem[(problem == 0) & bad] = code
    return ts, can_id, dlc, payload, np.zeros(n, dtype=np.uint8), problem


def _parse_can_4col(lines: pa.Array, order: tuple[int, int, int, int] = (0, 1, 2, 3)):
    fields = _Fields(pc.split_pattern(lines, ","))
    columns = [fields.get(j) for j in order]
    problem = np.zeros(len(fields.count), dtype=np.int8)
    problem[fields.count < 4] = 1
    problem[(problem == 0) & (fields.count > 4)] = 2
    return _parse_can_4col_columns(*columns, problem)


def _parse_can_4col_columns(ts_strings, id_strings, data, attack, problem):
    ts, bad_ts = _timestamps(ts_strings)
    can_id, bad_id = _decode(id_strings, 8, _HEX_LUT)
    if bad_id.any():  # IDs written as 0x1A0 (rare, so only looked for when plain hex fails)
        can_id, bad_id = _decode(pc.replace_substring_regex(id_strings, r"^\s*0[xX]", ""), 8, _HEX_LUT)
    data_len = _numpy(pc.binary_length(data), dtype=np.int64)
    payload, bad_data = _decode(data, 16, _HEX_LUT, pad="right")
    if bad_data.any():  # blanks around the payload are allowed
        data = pc.utf8_trim_whitespace(data)
        data_len = _numpy(pc.binary_length(data), dtype=np.int64)
        payload, bad_data = _decode(data, 16, _HEX_LUT, pad="right")
    bad_data |= data_len % 2 == 1
    payload = payload.astype(np.uint8)
    if bad_data.any():
        payload[bad_data] = 0
    dlc = np.where(bad_data, 0, data_len // 2)
    flag = _one_character_codes(attack)
    if flag is not None:
        is_1, is_0 = flag == ord("1"), flag == ord("0")
    else:
        is_1 = _numpy(pc.equal(attack, "1"), dtype=bool)
        is_0 = _numpy(pc.equal(attack, "0"), dtype=bool)
    if not (is_0 | is_1).all():
        attack = pc.utf8_trim_whitespace(attack)
        is_1 = _numpy(pc.is_in(attack, pa.array(["1", "1.0", "True", "true"])), dtype=bool)
        is_0 = _numpy(pc.is_in(attack, pa.array(["0", "0.0", "False", "false"])), dtype=bool)
    checks = [(3, bad_ts), (4, bad_id), (8, bad_data), (10, ~(is_0 | is_1))]
    for code, bad in checks:
        problem[(problem == 0) & bad] = code
    return ts, can_id, dlc, payload, is_1.astype(np.uint8), problem


def _one_character_codes(strings: pa.Array) -> np.ndarray | None:
    """The byte of every string when all are exactly one byte long (read straight from the character buffer),
    else None."""
    if strings.null_count or not pa.types.is_string(strings.type):
        return None
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)[
        strings.offset : strings.offset + len(strings) + 1
    ]
    if len(offsets) == 0 or offsets[-1] - offsets[0] != len(strings):
        return None
    return np.frombuffer(strings.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]


def _fast_parse(path: Path, fmt: str, header: tuple[int, int, int, int] | None, skip_header: bool):
    """Parse with pyarrow's CSV reader (multi-MB/s, no per-line work in Python). Returns None when the file has
    structural problems; the caller then uses the exact line-by-line path, which also knows line numbers."""
    import pyarrow.csv as pcsv

    # One block for files up to 256 MB: the columns come as single chunks, so no copy is needed to combine them.
    block = int(min(max(path.stat().st_size + 1, 1 << 20), 256 << 20))
    no_quotes = dict(quote_char=False, double_quote=False, escape_char=False, newlines_in_values=False)
    try:
        if fmt == "can_4col":
            names = (
                list(CAN_4COL_COLUMNS)
                if header is None
                else [CAN_4COL_COLUMNS[header.index(j)] for j in range(4)]
            )
            table = pcsv.read_csv(
                path,
                read_options=pcsv.ReadOptions(
                    column_names=names, skip_rows=1 if skip_header else 0, block_size=block
                ),
                parse_options=pcsv.ParseOptions(delimiter=",", **no_quotes),
                # Timestamps are parsed by the reader (same string-to-double conversion as pc.cast, which the
                # exact path uses); an unparsable one raises and sends the file to the exact path.
                convert_options=pcsv.ConvertOptions(
                    column_types={**dict.fromkeys(names, pa.string()), "timestamp": pa.float64()}
                ),
            )
            columns = [table.column(name).combine_chunks() for name in CAN_4COL_COLUMNS]
            if columns[0].null_count or np.isnan(_numpy(columns[0])).any():
                return None  # empty or NaN timestamps: let the exact path name the line
            return _parse_can_4col_columns(*columns, np.zeros(table.num_rows, dtype=np.int8))
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(
                column_names=["line"], skip_rows=1 if skip_header else 0, block_size=block
            ),
            parse_options=pcsv.ParseOptions(delimiter="\x1f", **no_quotes),
            convert_options=pcsv.ConvertOptions(column_types={"line": pa.string()}),
        )
    except pa.ArrowInvalid:
        return None
    lines = table.column("line").combine_chunks()
    return _parse_hcrl_csv(lines) if fmt == "hcrl_csv" else _parse_hcrl_txt(lines)


# ---------------------------------------------------------------------------------------- detection


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_line(path: Path) -> tuple[int, str] | None:
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.decode("utf-8", errors="replace").strip()
            if text:
                return number, text
    return None


def _can_4col_header(text: str) -> tuple[int, int, int, int] | None:
    names = [name.strip().lower() for name in text.split(",")]
    if sorted(names) == sorted(CAN_4COL_COLUMNS):
        return tuple(names.index(column) for column in CAN_4COL_COLUMNS)
    return None


def detect_format(path: str | Path) -> str:
    """The format of a CAN log from its first non-blank line (raises :class:`CanFormatError` if unknown)."""
    path = Path(path)
    first = _first_line(path)
    if first is None:
        raise CanFormatError(path, None, "empty file (no CAN messages)")
    number, text = first
    if text.startswith("Timestamp:"):
        return "hcrl_txt"
    if _can_4col_header(text) is not None:
        return "can_4col"
    parts = [part.strip() for part in text.split(",")]
    if len(parts) >= 4 and _looks_numeric(parts[0]):
        if len(parts) == 4 and parts[3] in {"0", "1"} and len(parts[2]) % 2 == 0 and len(parts[2]) != 1:
            return "can_4col"
        if parts[2].isdigit() and int(parts[2]) <= 8 and parts[-1] in {"R", "T"}:
            return "hcrl_csv"
    raise CanFormatError(
        path,
        number,
        f"unknown CAN log format (expected one of {', '.join(FORMATS)}); the line starts with {text[:60]!r}",
    )


# ------------------------------------------------------------------------------------------- reader


def read_can_file(path: str | Path, fmt: str = "auto", bad_rows: str = "error") -> CanMessages:
    """Read one CAN log. ``fmt`` is one of :data:`FORMATS` or ``"auto"``; ``bad_rows`` is ``error`` or ``skip``."""
    path = Path(path)
    if bad_rows not in BAD_ROW_MODES:
        raise ValueError(f"preprocess.bad_rows must be one of {BAD_ROW_MODES}, got {bad_rows!r}")
    if not path.is_file():
        raise CanFormatError(path, None, "file not found")
    if fmt == "auto":
        fmt = detect_format(path)
    elif fmt not in FORMATS:
        raise CanFormatError(
            path, None, f"unknown format {fmt!r} (expected auto or one of {', '.join(FORMATS)})"
        )
    first_line = _first_line(path)
    if first_line is None:
        raise CanFormatError(path, None, "empty file (no CAN messages)")
    header = _can_4col_header(first_line[1]) if fmt == "can_4col" else None
    skip_header = header is not None or (fmt == "hcrl_csv" and first_line[1].lower().startswith("timestamp"))
    if first_line[0] == 1:
        parsed = _fast_parse(path, fmt, header, skip_header)
        if parsed is not None and len(parsed[0]) and not parsed[-1].any():
            ts, can_id, dlc, payload, label, _ = parsed
            if can_id.max() < 1 << 29:
                return _messages(path, fmt, ts, can_id, dlc, payload, label, 0, [])
    # Exact path: every line with its number (also used to report or skip the bad rows the fast path found).
    lines, line_numbers = _read_lines(path)

    order = (0, 1, 2, 3)
    first = lines[0].as_py()
    if fmt == "can_4col" and (header := _can_4col_header(first)) is not None:
        order, lines, line_numbers = header, lines[1:], line_numbers[1:]
    elif fmt == "hcrl_csv" and first.lower().startswith("timestamp"):
        lines, line_numbers = lines[1:], line_numbers[1:]  # a header some converted copies carry
    if len(lines) == 0:
        raise CanFormatError(path, None, "empty file (header only, no CAN messages)")

    if fmt == "hcrl_csv":
        ts, can_id, dlc, payload, label, problem = _parse_hcrl_csv(lines)
    elif fmt == "hcrl_txt":
        ts, can_id, dlc, payload, label, problem = _parse_hcrl_txt(lines)
    else:
        ts, can_id, dlc, payload, label, problem = _parse_can_4col(lines, order)
    # CAN IDs are 11-bit (standard) or 29-bit (extended).
    problem[(problem == 0) & (can_id >= 1 << 29)] = 4

    bad = np.flatnonzero(problem)
    examples = [
        f"{path}, line {line_numbers[i]}: {PROBLEMS[int(problem[i])]}: {lines[int(i)].as_py()[:120]!r}"
        for i in bad[:5]
    ]
    if len(bad) and bad_rows == "error":
        i = int(bad[0])
        more = (
            f" ({len(bad) - 1} more bad rows; set preprocess.bad_rows: skip to drop them)"
            if len(bad) > 1
            else ""
        )
        raise CanFormatError(
            path, int(line_numbers[i]), f"{PROBLEMS[int(problem[i])]}: {lines[i].as_py()[:120]!r}{more}"
        )
    if len(bad):
        log.warning(
            "%s: skipped %d bad rows of %d; first: %s", path, len(bad), len(lines), "; ".join(examples)
        )
        keep = problem == 0
        ts, can_id, dlc, payload, label = ts[keep], can_id[keep], dlc[keep], payload[keep], label[keep]
        if len(ts) == 0:
            raise CanFormatError(path, None, f"every one of the {len(bad)} rows is bad; first: {examples[0]}")
    return _messages(path, fmt, ts, can_id, dlc, payload, label, int(len(bad)), examples)


def _messages(path, fmt, ts, can_id, dlc, payload, label, skipped, examples) -> CanMessages:
    return CanMessages(
        timestamp=np.ascontiguousarray(ts, dtype=np.float64),
        can_id=can_id.astype(np.int32, copy=False),
        dlc=dlc.astype(np.uint8),
        payload=np.ascontiguousarray(payload, dtype=np.uint8),
        label=label.astype(np.uint8),
        path=str(path),
        fmt=fmt,
        skipped_rows=skipped,
        skipped_examples=examples,
    )
