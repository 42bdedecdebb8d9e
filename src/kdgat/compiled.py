"""Compiled (numba) versions of the hot loops of preprocessing, for large logs: reading a can_4col file straight
from its bytes (:func:`parse_can_4col`), decoding hex ID and payload columns that pyarrow's reader produced
(:func:`decode_hex_columns`; files the first one does not take) and building the window graphs
(:func:`build_windows`, used by :mod:`kdgat.graphs`).

The readers only take input that is plainly valid (no blanks, no ``0x``, no bad digits) and otherwise
hand back None, so pyarrow's reader and the numpy decoders keep handling, and reporting, everything else. The graph builder computes every feature with the same float64 operations in the same order as the numpy builder, so the two
give the same bits (``.tests/unit/test_graphs_reference.py`` checks both against each other and against a
per-window reference). Per window it needs only small scratch tables (IDs present, one slot per (source, target)
pair of the window's nodes), reset entry by entry, so a window costs its rows, not the vocabulary.

numba is a dependency of the library (pinned in pyproject.toml), but the code also runs without it; it is
imported only when a log is large enough (:data:`MIN_MESSAGES`); :func:`available` says whether it imports
(``KDGAT_COMPILED=0`` in the environment switches it off). Compiled code is cached next to this file (or
in numba's user cache when that is read-only), so only the first process of an installation pays the compilation.
"""

from __future__ import annotations

import functools
import os

import numpy as np

# Logs of at least this many messages use the compiled loops when numba is installed. A process pays ~0.6-0.8 s
# of CPU once to import numba and load the cached machine code, and the loops save ~0.1 s per million messages, so
# smaller logs (tests, demos) stay on numpy; HCRL-sized captures (millions of messages per file) gain.
MIN_MESSAGES = 1_000_000
# Widest window the kernel handles: its (source, target) slot table has (width + 1)^2 entries.
MAX_WIDTH = 1024


@functools.cache
def _numba():
    if os.environ.get("KDGAT_COMPILED", "1") == "0":  # switched off: everything runs on numpy
        return None
    try:
        import numba
    except ImportError:  # the numpy code does the same work without it
        return None
    return numba


def available() -> bool:
    """Whether numba imports (the compiled loops can run)."""
    return _numba() is not None


@functools.cache
def _compiled(function):
    # error_model="numpy": no zero-division checks in the loops (every division is guarded).
    return _numba().njit(cache=True, nogil=True, error_model="numpy")(function)


# Nibble value of every byte; -1 for a byte that is not a hex digit.
_HEX_NIBBLE = np.full(256, -1, dtype=np.int64)
for _value, _char in enumerate(b"0123456789abcdef"):
    _HEX_NIBBLE[_char] = _value
for _value, _char in enumerate(b"ABCDEF"):
    _HEX_NIBBLE[_char] = 10 + _value


def _decode_hex_columns(id_offsets, id_chars, data_offsets, data_chars, nibble, can_id, payload, dlc):
    """IDs (1-8 hex digits) into ``can_id``, payloads (0-8 bytes of 2 hex digits) into ``payload``/``dlc``
    (``payload`` zero-filled). Returns the longest ID in digits, or -1 at the first value that is not plain."""
    longest = 0
    for i in range(len(can_id)):
        begin = id_offsets[i]
        end = id_offsets[i + 1]
        if end - begin < 1 or end - begin > 8:
            return -1
        longest = max(longest, end - begin)
        value = 0
        for j in range(begin, end):
            digit = nibble[id_chars[j]]
            if digit < 0:
                return -1
            value = value * 16 + digit
        can_id[i] = value
        begin = data_offsets[i]
        length = data_offsets[i + 1] - begin
        if length > 16 or length % 2:
            return -1
        for k in range(length // 2):
            high = nibble[data_chars[begin + 2 * k]]
            low = nibble[data_chars[begin + 2 * k + 1]]
            if high < 0 or low < 0:
                return -1
            payload[i, k] = high * 16 + low
        dlc[i] = length // 2
    return longest


def _string_buffers(strings) -> tuple[np.ndarray, np.ndarray] | None:
    import pyarrow as pa

    if strings.null_count or not (pa.types.is_string(strings.type) or pa.types.is_large_string(strings.type)):
        return None
    offset_type = np.int64 if pa.types.is_large_string(strings.type) else np.int32
    buffers = strings.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[strings.offset : strings.offset + len(strings) + 1]
    chars = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(1, np.uint8)
    return offsets, chars


def decode_hex_columns(id_strings, data_strings):
    """``(can_id, payload [n, 8] uint8, dlc int64)`` of plainly valid hex ID and payload columns (pyarrow string
    arrays), as :func:`kdgat.can.decode.decode` gives them (values and dtypes); None when
    numba is missing or any value needs the general decoder."""
    if not available():
        return None
    ids, data = _string_buffers(id_strings), _string_buffers(data_strings)
    if ids is None or data is None:
        return None
    n = len(id_strings)
    can_id = np.empty(n, dtype=np.int64)
    payload = np.zeros((n, 8), dtype=np.uint8)
    dlc = np.empty(n, dtype=np.int64)
    longest = _compiled(_decode_hex_columns)(*ids, *data, _HEX_NIBBLE, can_id, payload, dlc)
    if longest < 0:
        return None
    # decode's dtype: int32 when its digits (in pairs, unless all IDs have the same odd length) fit in 31 bits.
    fits = longest <= 6 or (longest == 7 and bool((np.diff(ids[0]) == 7).all()))
    return (can_id.astype(np.int32) if fits else can_id), payload, dlc


# Exact powers of ten up to 1e22 (the largest one a double holds exactly).
_POWERS_OF_TEN = np.array([10.0**k for k in range(23)])
_BIGGEST_EXACT_INTEGER = 1 << 53


def _parse_can_4col(text, begin, nibble, powers, timestamp, can_id, payload, dlc, label):
    """Rows of a can_4col file from byte ``begin`` on, in the file's own column order, into the output arrays;
    returns the number of rows, or -1 at the first thing that is not plain (which pyarrow's reader and the
    general decoders then handle). Plain: ``digits[.digits]`` timestamps of at most 18 digits that make an integer
    below 2^53 (so at most 17 decimals, each power of ten exact), 1-8 hex digit IDs, 0-16 hex digit payloads of
    whole bytes, flags 0 or 1, ``\n`` or ``\r\n`` line ends, empty lines (skipped, as pyarrow's reader does)."""
    end = len(text)
    i = begin
    rows = 0
    while i < end:
        c = text[i]
        if c == 10:
            i += 1
            continue
        if c == 13 and i + 1 < end and text[i + 1] == 10:
            i += 2
            continue
        if rows == len(label):
            return -1
        # Timestamp: the digits as one integer, divided by a power of ten: both exact, so the one division
        # rounds correctly, as pyarrow's string-to-double conversion does.
        mantissa = 0
        digits = 0
        decimals = 0
        while i < end and 48 <= text[i] <= 57 and digits < 18:
            mantissa = mantissa * 10 + (text[i] - 48)
            digits += 1
            i += 1
        if digits == 0:
            return -1
        if i < end and text[i] == 46:
            i += 1
            while i < end and 48 <= text[i] <= 57 and digits < 18:
                mantissa = mantissa * 10 + (text[i] - 48)
                digits += 1
                decimals += 1
                i += 1
            if decimals == 0:
                return -1
        if i >= end or text[i] != 44 or mantissa >= _BIGGEST_EXACT_INTEGER:
            return -1
        timestamp[rows] = float(mantissa) / powers[decimals]
        i += 1
        value = 0
        length = 0
        while i < end and text[i] != 44:
            digit = nibble[text[i]]
            if digit < 0 or length == 8:
                return -1
            value = value * 16 + digit
            length += 1
            i += 1
        if length == 0 or i >= end:
            return -1
        can_id[rows] = value
        i += 1
        length = 0
        while i < end and text[i] != 44:
            if length == 16 or i + 1 >= end:
                return -1
            high = nibble[text[i]]
            low = nibble[text[i + 1]]
            if high < 0 or low < 0:
                return -1
            payload[rows, length // 2] = high * 16 + low
            length += 2
            i += 2
        if i >= end:
            return -1
        dlc[rows] = length // 2
        i += 1
        if i >= end or (text[i] != 48 and text[i] != 49):
            return -1
        label[rows] = text[i] - 48
        i += 1
        if i < end and text[i] == 13:
            i += 1
            if i >= end or text[i] != 10:
                return -1
        if i < end:
            if text[i] != 10:
                return -1
            i += 1
        rows += 1
    return rows


def parse_can_4col(path, skip_first_line: bool):
    """``(timestamp, can_id int64, dlc, payload, label)`` of a can_4col file in the default column order whose
    every row is plain (see :func:`_parse_can_4col`), read in one compiled pass; None when numba is missing or
    anything needs pyarrow's reader and the general decoders (the same values where both apply)."""
    if not available():
        return None
    text = np.fromfile(path, dtype=np.uint8)
    begin = 0
    if skip_first_line:
        newlines = np.flatnonzero(text[:4096] == 10)
        if not len(newlines):
            return None
        begin = int(newlines[0]) + 1
    # A row takes at least 7 bytes ("0,0,,0\n"); pages beyond the rows found are never written, so never mapped.
    most = (len(text) - begin) // 7 + 1
    timestamp = np.empty(most, dtype=np.float64)
    can_id = np.empty(most, dtype=np.int64)
    payload = np.zeros((most, 8), dtype=np.uint8)
    dlc = np.empty(most, dtype=np.uint8)
    label = np.empty(most, dtype=np.uint8)
    outputs = (timestamp, can_id, payload, dlc, label)
    rows = _compiled(_parse_can_4col)(text, begin, _HEX_NIBBLE, _POWERS_OF_TEN, *outputs)
    if rows <= 0:
        return None
    timestamp.resize(rows, refcheck=False)
    can_id.resize(rows, refcheck=False)
    payload.resize((rows, 8), refcheck=False)
    dlc.resize(rows, refcheck=False)
    label.resize(rows, refcheck=False)
    return timestamp, can_id, dlc, payload, label


def _build_windows(
    id_index,
    payload_words,
    label,
    num_ids,
    num_windows,
    width,
    stride,
    window_size,
    x,
    edge_attr,
    edge_pairs,
    y,
    node_ptr,
    edge_ptr,
):
    """Fill ``x``/``edge_attr`` (rows from 0), ``edge_pairs`` (sources at ``[0, E)``, targets at
    ``[most_edges, most_edges + E)``), ``y``, ``node_ptr`` and ``edge_ptr``; returns (nodes, edges).
    ``payload_words`` holds each message's 8 payload bytes read as one little-endian int64."""
    most_edges = edge_attr.shape[0]
    local_of_id = np.full(num_ids, -1, np.int64)
    window_ids = np.empty(width + 1, np.int64)
    slots = width + 1
    edge_of_pair = np.full(slots * slots, -1, np.int64)
    # Each edge's (source, target) local node pair, and its slot in edge_of_pair (source * n + target).
    edge_source = np.empty(width, np.int64)
    edge_target = np.empty(width, np.int64)
    pair_key = np.empty(width, np.int64)
    count = np.empty(width, np.int64)
    occurrences = np.empty(slots, np.int64)
    last_position = np.empty(slots, np.int64)
    out_edges = np.empty(slots, np.int64)
    bucket_begin = np.empty(slots, np.int64)
    edge_order = np.empty(width, np.int64)
    # Byte sums of a node in 16-bit lanes of two int64 (even and odd bytes): a lane's sum over at most 257
    # bytes <= 255 cannot carry into the next. Wider windows sum each byte on its own.
    use_lanes = width <= 257
    even_lanes = np.empty(slots, np.int64)
    odd_lanes = np.empty(slots, np.int64)
    byte_sums = np.empty((slots, 8), np.int64)
    lane_mask = np.int64(0x00FF00FF00FF00FF)
    # IDs in index order by scanning the vocabulary when it is small, else by sorting the window's IDs.
    scan_vocabulary = num_ids <= 4 * slots
    position_scale = float(max(window_size - 1, 1))
    nodes = 0
    edges = 0
    node_ptr[0] = 0
    edge_ptr[0] = 0
    for w in range(num_windows):
        start = w * stride
        # Nodes: the sources of the rows plus the target of the last row, ordered by vocabulary index.
        n = 0
        for r in range(start, start + width + 1):
            i = id_index[r]
            if local_of_id[i] < 0:
                local_of_id[i] = 0
                window_ids[n] = i
                n += 1
        if scan_vocabulary:
            k = 0
            for i in range(num_ids):
                if local_of_id[i] >= 0:
                    window_ids[k] = i
                    k += 1
        else:
            window_ids[:n].sort()
        ids = window_ids
        for k in range(n):
            local_of_id[ids[k]] = k
            occurrences[k] = 0
            last_position[k] = 0
            out_edges[k] = 0
            even_lanes[k] = 0
            odd_lanes[k] = 0
            if not use_lanes:
                for b in range(8):
                    byte_sums[k, b] = 0
        # Rows in position order: per edge how many rows it stands for.
        num_edges = 0
        attack = 0
        for p in range(width):
            r = start + p
            s = local_of_id[id_index[r]]
            t = local_of_id[id_index[r + 1]]
            occurrences[s] += 1
            last_position[s] = p
            word = payload_words[r]
            if use_lanes:
                even_lanes[s] += word & lane_mask
                odd_lanes[s] += (word >> 8) & lane_mask
            else:
                for b in range(8):
                    byte_sums[s, b] += (word >> (8 * b)) & 0xFF
            if label[r] > attack:
                attack = label[r]
            key = s * n + t
            e = edge_of_pair[key]
            if e < 0:
                e = num_edges
                num_edges += 1
                edge_of_pair[key] = e
                pair_key[e] = key
                edge_source[e] = s
                edge_target[e] = t
                out_edges[s] += 1
                count[e] = 1
            else:
                count[e] += 1
        y[w] = attack

        lowest = occurrences[0]
        highest = occurrences[0]
        for k in range(1, n):
            lowest = min(lowest, occurrences[k])
            highest = max(highest, occurrences[k])
        spread = float(highest - lowest)
        for k in range(n):
            row = nodes + k
            occurrence = float(occurrences[k])
            divisor = occurrence if occurrences[k] > 0 else 1.0
            x[row, 0] = ids[k]
            for b in range(8):
                if use_lanes:
                    lanes = even_lanes[k] if b % 2 == 0 else odd_lanes[k]
                    byte_sum = (lanes >> (16 * (b // 2))) & 0xFFFF
                else:
                    byte_sum = byte_sums[k, b]
                x[row, 1 + b] = float(byte_sum) / divisor / 255.0
            x[row, 9] = (occurrence - float(lowest)) / spread if spread > 0 else 0.0
            x[row, 10] = float(last_position[k]) / position_scale

        # Edges in (source, target) order: bucketed by source, each (short) bucket insertion-sorted by key.
        bucket_start = 0
        for k in range(n):
            bucket_begin[k] = bucket_start
            bucket_start += out_edges[k]
            out_edges[k] = bucket_begin[k]
        for e in range(num_edges):
            s = edge_source[e]
            slot = out_edges[s]
            target = edge_target[e]
            while slot > bucket_begin[s] and edge_target[edge_order[slot - 1]] > target:
                edge_order[slot] = edge_order[slot - 1]
                slot -= 1
            edge_order[slot] = e
            out_edges[s] += 1
        for j in range(num_edges):
            e = edge_order[j]
            row = edges + j
            edge_attr[row, 0] = float(count[e])
            edge_pairs[row] = edge_source[e]
            edge_pairs[most_edges + row] = edge_target[e]

        for e in range(num_edges):
            edge_of_pair[pair_key[e]] = -1
        for k in range(n):
            local_of_id[ids[k]] = -1
        nodes += n
        edges += num_edges
        node_ptr[w + 1] = nodes
        edge_ptr[w + 1] = edges
    return nodes, edges


def build_windows(id_index, payload_words, label, num_ids, num_windows, width, stride, window_size):
    """``(x, edge_attr, edge_pairs, y, node_ptr, edge_ptr, nodes, edges)`` of :func:`_build_windows`, compiled
    (needs :func:`available`), its outputs sized for the most nodes and edges there can be (a window has at most
    ``width + 1`` nodes and ``width`` edges; pages never written are never mapped)."""
    from kdgat.chain import EDGE_FEATURES, NODE_FEATURES

    most_nodes, most_edges = num_windows * (width + 1), num_windows * width
    outputs = (
        np.empty((most_nodes, NODE_FEATURES), dtype=np.float32),
        np.empty((most_edges, EDGE_FEATURES), dtype=np.float32),
        np.empty(2 * most_edges, dtype=np.int64),
        np.empty(num_windows, dtype=np.int64),
        np.empty(num_windows + 1, dtype=np.int64),
        np.empty(num_windows + 1, dtype=np.int64),
    )
    sizes = (num_ids, num_windows, width, stride, window_size)
    nodes, edges = _compiled(_build_windows)(id_index, payload_words, label, *sizes, *outputs)
    return (*outputs, nodes, edges)
