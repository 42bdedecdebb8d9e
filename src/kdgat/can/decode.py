"""Vectorised text decoding shared by the CAN formats: lines of a file, fields of a line, hex and decimal numbers,
timestamps. numpy splits the file into lines, pyarrow compute kernels split the fields, and hex is decoded with a
lookup table over the raw character buffers, so no Python code runs per message."""

from __future__ import annotations

import codecs
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from kdgat.can.messages import CanFormatError

# Nibble value of every byte; -1 marks a character that is not a digit of the base.
HEX_LUT = np.full(256, -1, dtype=np.int16)
for _i, _c in enumerate(b"0123456789abcdef"):
    HEX_LUT[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    HEX_LUT[_c] = 10 + _i
# Byte value of two hex characters read as one little-endian uint16 (first character in the low byte).
_HEX_PAIR_LUT = np.full(1 << 16, -1, dtype=np.int16)
_hex_chars = np.flatnonzero(HEX_LUT >= 0)
_HEX_PAIR_LUT[(_hex_chars[:, None] | (_hex_chars[None, :] << 8)).ravel()] = (
    HEX_LUT[_hex_chars][:, None] * 16 + HEX_LUT[_hex_chars][None, :]
).ravel()
DEC_LUT = np.full(256, -1, dtype=np.int16)
DEC_LUT[np.frombuffer(b"0123456789", dtype=np.uint8)] = np.arange(10)

_NUMBER_REGEX = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"


def to_numpy(array: pa.Array, dtype=None) -> np.ndarray:
    """A pyarrow array as numpy. ``to_numpy`` is zero-copy for null-free numeric arrays, while
    ``np.asarray(array)`` costs ~50 ms per million values in pyarrow 26."""
    values = array.to_numpy(zero_copy_only=False)
    return values if dtype is None else values.astype(dtype, copy=False)


# A UTF-8 byte-order mark, which editors such as Excel put in front of a CSV file's first line.
UTF8_BOM = b"\xef\xbb\xbf"


def read_lines(path: Path) -> tuple[pa.StringArray, np.ndarray]:
    """All non-blank lines (without the line end and without a leading UTF-8 byte-order mark, which pyarrow's CSV
    reader on the fast path drops too) and their 1-based line numbers. A line ends at ``\\n``, ``\\r\\n`` or a
    lone ``\\r`` (old Mac files), as in pyarrow's CSV reader and :func:`leading_lines`, so both paths count the
    same lines."""
    raw = path.read_bytes()
    data = np.frombuffer(raw[len(UTF8_BOM) :] if raw.startswith(UTF8_BOM) else raw, dtype=np.uint8)
    newlines = line_ends(data)
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
    except pa.ArrowInvalid:
        raise _not_utf8(path, data, newlines) from None
    lines = pc.utf8_trim_whitespace(lines)
    line_numbers = np.arange(1, len(starts) + 1, dtype=np.int64)
    nonblank = to_numpy(pc.greater(pc.utf8_length(lines), 0), dtype=bool)
    if not nonblank.all():
        lines = lines.filter(pa.array(nonblank))
        line_numbers = line_numbers[nonblank]
    return lines, line_numbers


def line_ends(data: np.ndarray) -> np.ndarray:
    """Positions of the bytes that end a line: every ``\\n`` and every ``\\r`` not followed by one."""
    newlines = np.flatnonzero(data == 10)
    returns = np.flatnonzero(data == 13)
    if len(returns):
        following = returns + 1
        lone = following >= len(data)
        lone[~lone] = data[following[~lone]] != 10
        if lone.any():
            newlines = np.union1d(newlines, returns[lone])
    return newlines


def unended_last_line(path: Path) -> str | None:
    """The file's last line (stripped) when the file does not end with a line end and that line is not blank (a
    capture cut off, or a file saved without a final newline), else None. Reads the file's last 4 KiB only."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        handle.seek(max(size - 4096, 0))
        tail = handle.read()
    if not tail or tail[-1:] in (b"\n", b"\r"):
        return None
    last = tail[max(tail.rfind(b"\n"), tail.rfind(b"\r")) + 1 :].decode("utf-8", "replace").strip()
    return last or None


def count_line_ends(path: Path, chunk_size: int = 1 << 24) -> int:
    """The number of line ends in the file (``\\n``, ``\\r\\n`` or a lone ``\\r``, each once, as
    :func:`line_ends` counts them), read in chunks of ``chunk_size`` bytes."""
    count, after_return = 0, False
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            data = np.frombuffer(chunk, dtype=np.uint8)
            pairs = np.count_nonzero((data[:-1] == 13) & (data[1:] == 10))
            count += np.count_nonzero(data == 10) + np.count_nonzero(data == 13) - pairs
            count -= after_return and data[0] == 10  # a \r\n split between chunks: counted twice
            after_return = bool(data[-1] == 13)
    return int(count)


def _not_utf8(path: Path, data: np.ndarray, newlines: np.ndarray) -> CanFormatError:
    """The error for a file that is not UTF-8, naming the line and column of its first invalid byte."""
    try:
        codecs.utf_8_decode(data, "strict", True)  # only on this error path: it finds the first invalid byte
    except UnicodeDecodeError as error:
        line = int(np.searchsorted(newlines, error.start))  # line ends before the byte: its 0-based line
        column = error.start - (int(newlines[line - 1]) + 1 if line else 0) + 1
        return CanFormatError(
            path,
            line + 1,
            f"not a UTF-8 text file: byte 0x{int(data[error.start]):02x} in column {column} is not valid UTF-8 "
            "(save the file as UTF-8)",
        )
    return CanFormatError(path, None, "not a UTF-8 text file")


def not_utf8_start(path: Path) -> CanFormatError | None:
    """The error of :func:`read_lines` for a file whose first 64 KiB are not UTF-8 (a UTF-16 export, say), else
    None: format detection reads the first lines leniently and would otherwise call such a file unknown."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    head = head[len(UTF8_BOM) :] if head.startswith(UTF8_BOM) else head
    try:
        codecs.utf_8_decode(head, "strict", False)  # not final: a character cut at the 64 KiB is no error
    except UnicodeDecodeError:
        data = np.frombuffer(head, dtype=np.uint8)
        return _not_utf8(path, data, line_ends(data))
    return None


def decode(
    strings: pa.Array, max_len: int, lut: np.ndarray, pad: str = "left", trimmed: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Integer value of each string (hex or decimal per ``lut``), or with ``pad='right'`` (hex only) the byte
    matrix ``[n, max_len // 2]`` of hex strings of 2 characters per byte; ``bad`` marks invalid strings."""
    if strings.null_count:
        strings = pc.fill_null(strings, "")
    original = strings
    n = len(strings)
    lengths = to_numpy(pc.binary_length(strings), dtype=np.int64)
    bad = lengths > max_len
    pairs = lut is HEX_LUT and max_len % 2 == 0
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
    if (invalid.any() or bad.any()) and not trimmed:
        # Surrounding blanks are allowed (they may also make a field too long): strip them and decode again
        # (rare, so only on this slow path).
        return decode(pc.utf8_trim_whitespace(original), max_len, lut, pad, trimmed=True)
    bad |= invalid
    if pad == "right":
        return digits, bad
    base = 256 if pairs else (16 if lut is HEX_LUT else 10)
    # int32 when every value fits (up to 7 hex digits): half the memory traffic of int64.
    values = digits[:, 0].astype(np.int32 if base ** digits.shape[1] <= 1 << 31 else np.int64)
    for k in range(1, digits.shape[1]):  # Horner's rule: integer matmul has no BLAS and is ~10x slower
        values = values * base + digits[:, k]
    if bad.any():
        values[bad] = 0
    return values, bad


class Fields:
    """Fields of every line after a split: ``get(j)`` is field j of each line (a row's first field where the
    line has fewer fields; such rows are flagged by the field-count checks, which come first)."""

    def __init__(self, split: pa.ListArray):
        self.offsets = to_numpy(split.offsets, dtype=np.int64)
        self.values = split.values
        self.count = np.diff(self.offsets)

    def get(self, j: np.ndarray | int) -> pa.Array:
        j = np.asarray(j, dtype=np.int64)
        index = np.where(j < self.count, self.offsets[:-1] + j, self.offsets[:-1])
        return self.values.take(pa.array(index))


def dlc_values(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Data length codes (0-8) and where a field is not one (those rows get 0)."""
    dlc, bad = decode(strings, 1, DEC_LUT)
    bad |= dlc > 8
    return np.where(bad, 0, dlc), bad


def payload_bytes(
    fields: Fields, dlc: np.ndarray, shape_ok: np.ndarray, first_column: int, two_digits: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Payload ``[n, 8]`` from one hex field per byte starting at ``first_column`` (rows whose field count fits
    their DLC), and the rows with a byte that is not 1-2 hex digits (``two_digits``: not exactly 2, for a format
    whose writer always writes two, where a one-digit byte is a line cut off, not a value)."""
    n = len(dlc)
    payload = np.zeros((n, 8), dtype=np.uint8)
    bad_byte = np.zeros(n, dtype=bool)
    for k in range(8):
        # Only the rows that have byte k: other rows' stand-in fields would look bad and cost a second decode.
        rows = np.flatnonzero(shape_ok & (k < dlc))
        if not len(rows):
            continue
        strings = fields.values.take(pa.array(fields.offsets[rows] + first_column + k))
        values, bad = decode(strings, 2, HEX_LUT)
        if two_digits:
            bad |= to_numpy(pc.binary_length(strings), dtype=np.int64) != 2
        bad_byte[rows] |= bad
        payload[rows, k] = values
    return payload, bad_byte


def timestamps(strings: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Seconds of each timestamp (strings, or a column the CSV reader parsed already) and where one is not a
    finite number (those rows get 0): ``inf``, ``-inf`` and ``1e400`` parse, but are no time."""
    if pa.types.is_floating(strings.type):  # parsed by the CSV reader (the fast path checked for nulls/NaN)
        values = to_numpy(strings)
        return _finite(values, ~np.isfinite(values))
    try:  # fast path: every timestamp parses
        values = to_numpy(pc.cast(strings, pa.float64()))
        if not np.isnan(values).any():
            return _finite(values, ~np.isfinite(values))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    strings = pc.utf8_trim_whitespace(pc.fill_null(strings, ""))
    ok = to_numpy(pc.match_substring_regex(strings, _NUMBER_REGEX), dtype=bool)
    cleaned = strings if ok.all() else pc.if_else(pa.array(ok), strings, "0")
    values = to_numpy(pc.cast(cleaned, pa.float64()))
    return _finite(values, ~(ok & np.isfinite(values)))


def _finite(values: np.ndarray, bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.where(bad, 0.0, values) if bad.any() else values), bad


def one_character_codes(strings: pa.Array) -> np.ndarray | None:
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


def looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def first_line(path: Path) -> tuple[int, str] | None:
    """The first non-blank line (number, text), or None when there is none."""
    lines = leading_lines(path, 1)
    return lines[0] if lines else None


def leading_lines(path: Path, count: int) -> list[tuple[int, str]]:
    """The first ``count`` non-blank lines (number, text), without a leading UTF-8 byte-order mark. Lines end as in
    :func:`read_lines` (Python's universal newlines: ``\\n``, ``\\r\\n`` or a lone ``\\r``)."""
    found: list[tuple[int, str]] = []
    with open(path, encoding="utf-8-sig", errors="replace", newline=None) as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.strip()
            if text:
                found.append((number, text))
                if len(found) == count:
                    break
    return found


def read_lines_fast(path: Path, skip_header: bool) -> pa.Array | None:
    """Every line of the file as one string column through pyarrow's CSV reader (multi-MB/s); None when the
    file has structural problems, which the exact path (:func:`read_lines`) then reports with line numbers."""
    import pyarrow.csv as pcsv

    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(
                column_names=["line"], skip_rows=1 if skip_header else 0, block_size=block_size(path)
            ),
            parse_options=pcsv.ParseOptions(delimiter="\x1f", **NO_QUOTES),
            convert_options=pcsv.ConvertOptions(column_types={"line": pa.string()}),
        )
    except pa.ArrowInvalid:
        return None
    return table.column("line").combine_chunks()


# Plain CSV for the fast path: no quoting, escaping or multi-line values in CAN logs.
NO_QUOTES = dict(quote_char=False, double_quote=False, escape_char=False, newlines_in_values=False)


def block_size(path: Path) -> int:
    """One block for files up to 256 MB: the columns come as single chunks, so no copy is needed to combine them."""
    return int(min(max(path.stat().st_size + 1, 1 << 20), 256 << 20))


def hex_byte_strings() -> np.ndarray:
    """``"00"`` .. ``"ff"``: index with a payload array to get its bytes as two-character hex strings."""
    return np.array([f"{i:02x}" for i in range(256)], dtype=object)
