"""Reading one CAN log in any registered format (kdgat.can.formats), with format detection and bad-row handling.

Parsing is vectorised (kdgat.can.decode). A file is first parsed on a fast path (pyarrow's CSV reader, no per-line
work in Python); a file with problems goes through the exact line-by-line path, which knows line numbers. Lines end
at ``\\n``, ``\\r\\n`` or a lone ``\\r`` on both paths. Blank lines carry no message and are ignored; every other
line that is not a valid message (a timestamp that is not a finite number included) is a *bad row*. With
``bad_rows="error"`` the first one raises :class:`CanFormatError` naming the file, the line number and the problem;
with ``bad_rows="skip"`` bad rows are dropped, counted in :attr:`CanMessages.skipped_rows` and logged. When every
one of the first 100 rows is bad, the error does not advise skipping them; under a forced format (not ``auto``) that
detection does not confirm, it says the format is likely wrong and names the one detection picks (so does the
warning of ``skip`` when later rows parse).

Timestamps must not decrease from one message to the next (equal ones are fine: several frames can share a clock
tick): windows follow file order, so an unsorted log would silently give wrong graphs. A decrease is an error in
both modes, naming the line, its timestamp and the previous message's; where there are few, it says to split the
file at them if its lines are in the order recorded (a logger restarted from 0, a wall clock stepped back: sorting
would interleave the parts), and to sort it only if not. A forward step of more than
:data:`GAP_FACTOR` times the median step (two captures joined) is read, with one warning per file naming the line
and the gap: windows count messages, so one window spans both captures. Compressed files (gzip, bzip2, xz, zstd,
zip) are refused with a message saying to decompress them first; the readers read plain text only. A last line
without a line end is read; where the format's last column, cut off, still reads as a valid value
(``CanFormat.cut_field``: a can_4col header putting ``data_field`` last), a warning names the file and line, since
the capture may have been cut off there.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from kdgat.can.decode import (
    count_line_ends,
    first_line,
    leading_lines,
    not_utf8_start,
    read_lines,
    read_lines_fast,
    unended_last_line,
)
from kdgat.can.formats import FORMATS, REGISTRY
from kdgat.can.messages import (
    BAD_ROW_MODES,
    ID_ABOVE_29_BITS,
    PROBLEMS,
    CanFormat,
    CanFormatError,
    CanMessages,
)
from kdgat.layout import PreprocessError, setting_key

log = logging.getLogger(__name__)

# Files from this size on give pyarrow's unused memory back after reading (see read_can_file).
_RELEASE_AFTER_BYTES = 128 << 20

# A forward step between two messages of more than this many times the median step is taken for two captures
# joined into one file (see _warn_of_gaps); the median is taken over at most _GAP_SAMPLE steps, evenly spread.
GAP_FACTOR = 10_000
_GAP_SAMPLE = 1 << 16

# A log with at most this many decreases in time may be one written in order whose clock went back (a logger
# restarted from 0): the error names where to split it, not only sorting it (see _check_order).
CLOCK_STEPS = 3

# When every one of a file's first rows (up to this many) is bad, skipping bad rows is no advice: under a forced
# format the format is likely wrong (see _all_bad).
_ALL_BAD_ROWS = 100


# Leading bytes of compressed files, with the command that decompresses them.
_COMPRESSED = (
    (b"\x1f\x8b", "gzip", "gunzip"),
    (b"BZh", "bzip2", "bunzip2"),
    (b"\xfd7zXZ\x00", "xz", "unxz"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd"),
    (b"PK\x03\x04", "zip", "unzip"),
)


def _refuse_compressed(path: Path) -> None:
    """Raise :class:`CanFormatError` when the file is compressed (its text would otherwise show as binary junk)."""
    with open(path, "rb") as handle:
        start = handle.read(6)
    for magic, kind, command in _COMPRESSED:
        if start.startswith(magic):
            raise CanFormatError(
                path,
                None,
                f"the file is {kind}-compressed; decompress it first (e.g. {command} {path.name}): "
                "CAN logs are read as plain text",
            )


def detect_format(path: str | Path) -> str:
    """The format of a CAN log from its first non-blank line, or from the line after it when that line is a header
    the format skips (``Timestamp,...`` of converted HCRL CSVs); raises :class:`CanFormatError` if unknown or
    compressed."""
    path = Path(path)
    _refuse_compressed(path)
    lines = leading_lines(path, 2)
    if not lines:
        raise CanFormatError(path, None, "empty file (no CAN messages)")
    number, text = lines[0]
    for name, spec in REGISTRY.items():
        if spec.sniff(text):
            return name
    for name, spec in REGISTRY.items():
        if spec.header(text) is not None:
            if len(lines) == 1:
                raise CanFormatError(path, None, "empty file (header only, no CAN messages)")
            if spec.sniff(lines[1][1]):
                return name
    not_utf8 = not_utf8_start(path)  # the lines were read leniently: say what is wrong, not "unknown format"
    if not_utf8 is not None:
        raise not_utf8
    # A comment line ("# exported by ...") is no format's: say so, rather than leave the reader to guess
    comment = (
        "; comment lines are not read: remove the lines that start with '#'" if text.startswith("#") else ""
    )
    # A line a format knows to be a near miss (candump's screen output) says what to do instead
    hint = next((said for spec in REGISTRY.values() if (said := spec.near_miss(text))), "")
    raise CanFormatError(
        path,
        number,
        f"unknown CAN log format (expected one of {', '.join(FORMATS)}); the line starts with {text[:60]!r}"
        + comment
        + hint,
    )


def _fast_parse(path: Path, spec: CanFormat, header):
    """The whole file on the fast path, or None when it has structural problems."""
    if spec.fast_parse is not None:
        return spec.fast_parse(path, header)
    lines = read_lines_fast(path, skip_header=header is not None)
    return None if lines is None else spec.parse(lines, header)


def read_can_file(path: str | Path, fmt: str = "auto", bad_rows: str = "error") -> CanMessages:
    """Read one CAN log. ``fmt`` is one of :data:`FORMATS` or ``"auto"``; ``bad_rows`` is ``error`` or ``skip``."""
    path = Path(path)
    try:
        return _read_can_file(path, fmt, bad_rows)
    finally:
        # pyarrow's allocator keeps the freed text columns mapped (~3x the file's size), where numpy cannot reuse
        # them: for large files hand them back to the system before the graphs are built (small ones keep them
        # for the next read, which then needs no fresh pages).
        if path.is_file() and path.stat().st_size >= _RELEASE_AFTER_BYTES:
            pa.default_memory_pool().release_unused()


def _read_can_file(path: Path, fmt: str, bad_rows: str) -> CanMessages:
    if bad_rows not in BAD_ROW_MODES:
        raise PreprocessError(f"{setting_key('bad_rows')} must be one of {BAD_ROW_MODES}, got {bad_rows!r}")
    if path.is_dir():  # e.g. a folder in datasets.<name>.files: it exists, so "file not found" would mislead
        raise CanFormatError(
            path, None, "a directory, not a CAN log file (a dataset folder goes in datasets.<name>.path)"
        )
    if not path.is_file():
        raise CanFormatError(path, None, "file not found")
    forced = fmt != "auto"
    if not forced:
        fmt = detect_format(path)
    elif fmt not in REGISTRY:
        raise CanFormatError(
            path, None, f"unknown format {fmt!r} (expected auto or one of {', '.join(FORMATS)})"
        )
    else:
        _refuse_compressed(path)
    spec = REGISTRY[fmt]
    first = first_line(path)
    if first is None:
        raise CanFormatError(path, None, "empty file (no CAN messages)")
    if first[0] == 1:
        parsed = _fast_parse(path, spec, spec.header(first[1]))
        if parsed is not None and len(parsed[0]) and not parsed[-1].any():
            ts, can_id, dlc, payload, label, _ = parsed
            # A decrease, or a gap to warn of, goes to the exact path, which knows its line number.
            steps = np.diff(ts)
            if can_id.max() < 1 << 29 and not (len(steps) and steps.min() < 0) and not len(_gaps(steps)[0]):
                _warn_if_cut_off(path, spec, spec.header(first[1]))
                return _messages(path, fmt, ts, can_id, dlc, payload, label, 0, [])
    # Exact path: every line with its number (also used to report or skip the bad rows the fast path found).
    lines, line_numbers = read_lines(path)
    header = spec.header(lines[0].as_py())
    if header is not None:
        lines, line_numbers = lines[1:], line_numbers[1:]
    if len(lines) == 0:
        raise CanFormatError(path, None, "empty file (header only, no CAN messages)")

    ts, can_id, dlc, payload, label, problem = spec.parse(lines, header)
    # CAN IDs are 11-bit (standard) or 29-bit (extended).
    problem[(problem == 0) & (can_id >= 1 << 29)] = ID_ABOVE_29_BITS

    bad = np.flatnonzero(problem)
    examples = [
        f"{path}, line {line_numbers[i]}: {PROBLEMS[int(problem[i])]}: {lines[int(i)].as_py()[:120]!r}"
        for i in bad[:5]
    ]
    first = problem[:_ALL_BAD_ROWS]
    all_bad = bool(len(first) and first.all())  # then skipping bad rows is no advice
    wrong = _wrong_format(path, fmt) if all_bad and forced else ""
    if len(bad) and bad_rows == "error":
        i = int(bad[0])
        more = f"{len(bad) - 1} more bad row{'s' if len(bad) > 2 else ''}"
        if all_bad:
            said = f"every one of the first {len(first)} rows is bad" + (
                f" as {fmt}: {wrong}" if wrong else ""
            )
            more = f" ({more}: {said})" if len(bad) > 1 else f" ({said})"
        else:
            more = f" ({more}; set {setting_key('bad_rows')}: skip to drop them)" if len(bad) > 1 else ""
        raise CanFormatError(
            path, int(line_numbers[i]), f"{PROBLEMS[int(problem[i])]}: {lines[i].as_py()[:120]!r}{more}"
        )
    if len(bad):
        # later rows that parse do not make a wrong forced format right: say so, as the error does
        said = f" (every one of the first {len(first)} rows is bad as {fmt}: {wrong})" if wrong else ""
        log.warning(
            "%s: skipped %d bad rows of %d%s; first: %s",
            path,
            len(bad),
            len(lines),
            said,
            "; ".join(examples),
        )
        keep = problem == 0
        ts, can_id, dlc, payload, label = ts[keep], can_id[keep], dlc[keep], payload[keep], label[keep]
        line_numbers = line_numbers[keep]
        if len(ts) == 0:
            hint = f" (as {fmt}: {wrong})" if wrong else ""
            raise CanFormatError(
                path, None, f"every one of the {len(bad)} rows is bad; first: {examples[0]}{hint}"
            )
    _check_order(path, ts, line_numbers)
    _warn_of_gaps(path, ts, line_numbers)
    _warn_if_cut_off(path, spec, header)
    return _messages(path, fmt, ts, can_id, dlc, payload, label, int(len(bad)), examples)


def _gaps(steps: np.ndarray) -> tuple[np.ndarray, float]:
    """The positions of the steps (``np.diff`` of the timestamps) above :data:`GAP_FACTOR` times the median
    positive step, and that median (0.0 when no step is positive). Vectorised; the median of a large file is taken
    over an even sample of its steps."""
    sample = steps[:: max(len(steps) // _GAP_SAMPLE, 1)]
    positive = sample[sample > 0]
    if len(positive) == 0:
        return np.empty(0, dtype=np.int64), 0.0
    median = float(np.median(positive))
    if not steps.max() > GAP_FACTOR * median:  # the common case: one reduction, no index array
        return np.empty(0, dtype=np.int64), median
    return np.flatnonzero(steps > GAP_FACTOR * median), median


def _warn_of_gaps(path: Path, ts: np.ndarray, line_numbers: np.ndarray) -> None:
    """Warn, once per file, of a forward jump in time many times the usual step between messages (two captures
    joined, ``cat dos.csv fuzzy.csv``): windows count messages, not time, so one window spans both. The gap is
    told in the timestamps' own unit, which no format says (seconds, or milliseconds in some captures)."""
    gaps, median = _gaps(np.diff(ts))
    if len(gaps) == 0:
        return
    i = int(gaps[0]) + 1
    gap = float(ts[i] - ts[i - 1])
    more = f" ({len(gaps) - 1} more such gaps after it)" if len(gaps) > 1 else ""
    log.warning(
        "%s, line %d: timestamp %r is %.6g time units (the log's own, seconds or not) after the one on line %d, "
        "%.3g times the median step between messages (%.3g units): two captures joined in one file?%s Windows count "
        "messages, not time, so the window "
        "across this gap holds messages of both (and time blocks take them as one capture): give each capture a "
        "file of its own if they are separate",
        path, int(line_numbers[i]), float(ts[i]), gap, int(line_numbers[i - 1]), gap / median, median, more,
    )  # fmt: skip


def _warn_if_cut_off(path: Path, spec: CanFormat, header) -> None:
    """Warn of a last line without a line end where the format's last column, cut off, still reads as a valid
    value (``spec.cut_field``): a capture cut off there cannot be told from a whole file saved without a final
    newline, so the line is read, and named."""
    column = spec.cut_field(header)
    if column is None:
        return
    last = unended_last_line(path)
    if last is None:
        return
    log.warning(
        "%s, line %d: the last line has no line end, so it may be cut off (a capture's end); a cut inside its last "
        "column, %s, leaves a shorter value that still reads as valid: %r. Check it against the source, and end the "
        "file with a line end if the line is whole",
        path,
        count_line_ends(path) + 1,
        column,
        last[:120],
    )


def _wrong_format(path: Path, fmt: str) -> str:
    """For a forced format under which every one of the first rows is bad: that the format is likely wrong and
    which one detection picks, or "" when detection picks the same one or none."""
    try:
        detected = detect_format(path)
    except CanFormatError:  # not a known format either: the rows' problems say more than a guess
        return ""
    if detected == fmt:
        return ""
    return (
        f"the format is likely wrong; format detection reads this file as {detected}: set the format to auto or "
        f"{detected} (datasets.<name>.format; kdgat preprocess --format)"
    )


def _check_order(path: Path, ts: np.ndarray, line_numbers: np.ndarray) -> None:
    """Raise :class:`CanFormatError` at the first message whose timestamp is lower than the one before it. Where
    there are at most :data:`CLOCK_STEPS` decreases, it may be the capture's clock that went back (a logger
    restarted from 0, a wall clock stepped back) in a log written in order: sorting would interleave the parts,
    so the message names the lines to split the file at, and sorting only for a log that is out of order."""
    back = np.flatnonzero(ts[1:] < ts[:-1])
    if len(back) == 0:
        return
    i = int(back[0]) + 1
    more = f" ({len(back) - 1} more decreases after it)" if len(back) > 1 else ""
    advice = "sort the log by timestamp first"
    if len(back) <= CLOCK_STEPS:
        lines = ", ".join(str(int(line_numbers[j + 1])) for j in back)
        advice = (
            "if its lines are in the order they were recorded, the capture's clock went back (its logger restarted "
            f"from 0, or its wall clock was stepped back): split the file before line{'s' if len(back) > 1 else ''} "
            f"{lines}, each part a capture of its own (sorting would interleave them); if not (a merged or "
            "shuffled log), sort the log by timestamp"
        )
    raise CanFormatError(
        path,
        int(line_numbers[i]),
        f"timestamp {float(ts[i])!r} is lower than {float(ts[i - 1])!r} on line {int(line_numbers[i - 1])}{more}; "
        f"timestamps must not decrease (windows follow file order): {advice}",
    )


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
