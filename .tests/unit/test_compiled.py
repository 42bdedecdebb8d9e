"""The compiled preprocessing loops (kdgat.compiled, numba) give the numpy code's bits, and large logs use them."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
import testkit
from test_graphs_reference import random_log

from kdgat import compiled
from kdgat.can import can_4col, reader
from kdgat.can.messages import CanFormatError
from kdgat.can.reader import read_can_file
from kdgat.graphs import build_graphs

FIELDS = ("x", "edge_index", "edge_attr", "y", "node_ptr", "edge_ptr")


@pytest.fixture(autouse=True)
def _numba():
    testkit.require(compiled.available(), "numba", "pip install -e '.[dev]' (pyproject.toml pins it)")


def assert_same_graphs(expected, actual):
    for name in FIELDS:
        a, b = getattr(expected, name), getattr(actual, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        # Bit for bit (a float compare would let 0.0 and -0.0 pass).
        assert a.tobytes() == b.tobytes(), name


@pytest.mark.parametrize("seed", range(12))
def test_compiled_builder_gives_the_numpy_builders_bits(seed):
    ids, payload, labels, num_ids, window_size, stride = random_log(200 + seed)
    numpy_graphs = build_graphs(ids, payload, labels, num_ids, window_size, stride, backend="numpy")
    compiled_graphs = build_graphs(ids, payload, labels, num_ids, window_size, stride, backend="compiled")
    assert_same_graphs(numpy_graphs, compiled_graphs)


@pytest.mark.parametrize(
    ("num_ids", "window_size", "stride"),
    [
        (5000, 50, 50),  # vocabulary far larger than a window: IDs sorted per window instead of scanned
        (30, 300, 120),  # windows over 257 rows: bytes summed one by one instead of in 16-bit lanes
        (3, 1, 1),  # one-row windows
    ],
)
def test_compiled_builder_agrees_on_its_other_paths(num_ids, window_size, stride):
    rng = np.random.default_rng(num_ids + window_size)
    count = 2000
    ids = rng.integers(0, num_ids, count)
    ids[rng.random(count) < 0.3] = ids[0]
    payload = rng.integers(0, 256, (count, 8)).astype(np.uint8)
    labels = (rng.random(count) < 0.05).astype(np.uint8)
    assert_same_graphs(
        build_graphs(ids, payload, labels, num_ids, window_size, stride, backend="numpy"),
        build_graphs(ids, payload, labels, num_ids, window_size, stride, backend="compiled"),
    )


def test_compiled_backend_refuses_inputs_it_cannot_take():
    ids, payload, labels, num_ids, _, _ = random_log(1)
    with pytest.raises(ValueError, match="compiled backend needs .* uint8 payloads"):
        build_graphs(ids, payload.astype(np.int64), labels, num_ids, 10, 10, backend="compiled")
    with pytest.raises(ValueError, match="backend must be one of"):
        build_graphs(ids, payload, labels, num_ids, 10, 10, backend="fast")


def hex_columns(rng, n, id_digits):
    ids = [format(int(v), "x") for v in rng.integers(0, 16**id_digits, n)]
    data = [rng.bytes(int(rng.integers(0, 9))).hex() for _ in range(n)]
    data = [d.upper() if k % 3 == 0 else d for k, d in enumerate(data)]
    return ids, data


@pytest.mark.parametrize("id_digits", [1, 3, 6, 7, 8])
def test_hex_decoder_gives_the_numpy_decoders_values_and_dtypes(id_digits):
    rng = np.random.default_rng(id_digits)
    ids, data = hex_columns(rng, 3000, id_digits)
    # Slices: arrow arrays that start at an offset into their buffers.
    id_strings, data_strings = pa.array(ids)[5:], pa.array(data)[5:]
    can_id, payload, dlc = compiled.decode_hex_columns(id_strings, data_strings)
    expected_id, bad_id, expected_payload, bad_data, expected_dlc = can_4col._decode_id_and_data(
        id_strings, data_strings
    )
    assert not bad_id.any() and not bad_data.any()
    for got, expected in ((can_id, expected_id), (payload, expected_payload), (dlc, expected_dlc)):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)
    # All IDs of exactly 7 digits: the numpy decoder reads them digit by digit into int32.
    seven = pa.array([format(int(v), "07x") for v in rng.integers(16**6, 16**7, 100)])
    assert compiled.decode_hex_columns(seven, pa.array(["00"] * 100))[0].dtype == np.int32


@pytest.mark.parametrize(
    "bad",
    [
        ("0x1a0", "00"),
        ("1a0", "abc"),
        ("1a0", " ab"),
        ("", "00"),
        ("1g0", "00"),
        ("000000123", "00"),  # 9 digits: more than an ID has, even when its value is small
        ("1a0", "00" * 9),  # 9 bytes: more than a CAN frame carries
    ],
)
def test_hex_decoder_leaves_anything_unusual_to_the_numpy_decoder(bad):
    ids, data = hex_columns(np.random.default_rng(0), 100, 3)
    ids[50], data[50] = bad
    assert compiled.decode_hex_columns(pa.array(ids), pa.array(data)) is None


def test_large_log_reads_the_same_through_the_compiled_decoder(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    ids, data = hex_columns(rng, 400, 3)
    path = tmp_path / "log.csv"
    lines = [f"{i * 0.01:.6f},{ids[i]},{data[i]},{i % 2}" for i in range(400)]
    path.write_text("timestamp,arbitration_id,data_field,attack\n" + "\n".join(lines) + "\n")
    calls = []
    decode = compiled.decode_hex_columns
    monkeypatch.setattr(compiled, "decode_hex_columns", lambda *a: calls.append(1) or decode(*a))
    monkeypatch.setattr(compiled, "MIN_MESSAGES", 1)
    fast = read_can_file(path)
    assert calls, "the compiled decoder was not used"
    monkeypatch.setattr(reader, "_fast_parse", lambda *args: None)
    monkeypatch.setattr(compiled, "MIN_MESSAGES", 10**9)
    exact = read_can_file(path)
    for name in ("timestamp", "can_id", "dlc", "payload", "label"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(exact, name), err_msg=name)


def test_small_logs_never_import_numba_and_large_ones_fall_back_without_it(monkeypatch):
    code = (
        "import sys, numpy as np; from kdgat.graphs import build_graphs; "
        "build_graphs(np.arange(500) % 7, np.zeros((500, 8), np.uint8), np.zeros(500, np.uint8), 7); "
        "print('numba' in sys.modules)"
    )
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    )
    ids, payload, labels, num_ids, window_size, stride = random_log(3)
    expected = build_graphs(ids, payload, labels, num_ids, window_size, stride, backend="numpy")
    monkeypatch.setattr(compiled, "MIN_MESSAGES", 1)
    monkeypatch.setattr(compiled, "available", lambda: False)
    monkeypatch.setattr(compiled, "build_windows", lambda *args: pytest.fail("compiled builder used"))
    assert_same_graphs(expected, build_graphs(ids, payload, labels, num_ids, window_size, stride))


@pytest.mark.parametrize("bad_field", [1, 2, 3])
def test_fast_path_still_rejects_text_that_is_not_utf8(tmp_path, monkeypatch, bad_field):
    """The fast path reads without pyarrow's UTF-8 check; columns that are not plain hex and 0/1 flags are
    checked afterwards, so a file with invalid UTF-8 still gets the exact path's error."""
    monkeypatch.setattr(compiled, "MIN_MESSAGES", 1)
    fields = [b"2.0", b"1a0", b"0102", b"1"]
    fields[bad_field] = fields[bad_field][:-1] + b"\xff"
    path = tmp_path / "log.csv"
    path.write_bytes(
        b"timestamp,arbitration_id,data_field,attack\n1.0,1a0,01,0\n" + b",".join(fields) + b"\n"
    )
    with pytest.raises(CanFormatError, match="not a UTF-8 text file"):
        read_can_file(path)


def test_kdgat_compiled_0_switches_the_compiled_loops_off():
    code = "from kdgat import compiled; print(compiled.available())"
    environment = {**os.environ, "KDGAT_COMPILED": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    assert result.stdout.strip() == "False", result.stderr


@pytest.mark.parametrize(("threshold", "released"), [(0, True), (10**12, False)])
def test_large_files_give_pyarrows_unused_memory_back(tmp_path, monkeypatch, threshold, released):
    path = tmp_path / "log.csv"
    path.write_text("timestamp,arbitration_id,data_field,attack\n1.0,1a0,01,0\n2.0,1a0,02,1\n")
    calls = []

    class Pool:
        def release_unused(self):
            calls.append(1)

    monkeypatch.setattr(reader, "_RELEASE_AFTER_BYTES", threshold)
    monkeypatch.setattr(reader.pa, "default_memory_pool", Pool)
    assert len(read_can_file(path)) == 2
    assert bool(calls) == released


def read_both_ways(path, monkeypatch):
    """The file through the compiled parser (forced) and through pyarrow's reader and decoders."""
    monkeypatch.setattr(can_4col, "_COMPILED_MIN_BYTES", 0)
    compiled_messages = read_can_file(path)
    monkeypatch.setattr(can_4col, "_COMPILED_MIN_BYTES", 10**15)
    monkeypatch.setattr(compiled, "MIN_MESSAGES", 10**15)
    return compiled_messages, read_can_file(path)


def random_rows(rng, count, base=None):
    """Rows with timestamps that never decrease (the readers refuse a decrease) from ``base`` (random up to 10^9
    when None) in steps below 1000, in 1 to 6 decimals or none."""
    ids, data = hex_columns(rng, count, 3)
    base = int(rng.integers(0, 10**9)) if base is None else base
    stamps = [
        f"{base + 1000 * k + int(rng.integers(0, 1000))}.{int(rng.integers(0, 10**6)):0{int(rng.integers(1, 7))}d}"
        if k % 5
        else str(base + 1000 * k)
        for k in range(count)
    ]
    return [f"{stamps[k]},{ids[k]},{data[k]},{k % 3 == 0:d}" for k in range(count)]


@pytest.mark.parametrize(
    ("header", "line_end", "blank_lines", "final_newline"),
    [(True, "\n", False, True), (False, "\n", True, False), (True, "\r\n", True, True)],
)
def test_compiled_parser_reads_what_pyarrow_reads(
    tmp_path, monkeypatch, header, line_end, blank_lines, final_newline
):
    rows = random_rows(np.random.default_rng(len(line_end)), 3000)
    if blank_lines:
        rows[10:10] = ["", ""]
    text = ("timestamp,arbitration_id,data_field,attack" + line_end if header else "") + line_end.join(rows)
    path = tmp_path / "log.csv"
    path.write_bytes((text + (line_end if final_newline else "")).encode())
    assert compiled.parse_can_4col(path, skip_first_line=header) is not None
    fast, general = read_both_ways(path, monkeypatch)
    for name in ("timestamp", "can_id", "dlc", "payload", "label"):
        a, b = getattr(fast, name), getattr(general, name)
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name


def test_compiled_timestamps_are_pyarrows_doubles():
    """Every plain timestamp parses to the double pyarrow's conversion gives (correctly rounded), down to the last
    bit, including mantissas close to 2^53 and many decimals."""
    rng = np.random.default_rng(9)
    mantissas = np.concatenate(
        [
            rng.integers(0, 1 << 53, 20000),
            (1 << 53) - 1 - rng.integers(0, 1000, 200),
            rng.integers(0, 10**6, 2000),
        ]
    )
    stamps = []
    for mantissa in mantissas.tolist():
        digits = str(mantissa)
        point = int(rng.integers(0, len(digits)))
        stamps.append(digits[:point] + "." + digits[point:] if point else "0." + digits)
    # the most decimals a plain timestamp has: 18 digits, 17 after the point
    stamps += ["0." + "0" * (16 - k) + "1" * (k + 1) for k in range(16)]
    path_text = "".join(f"{stamp},1a0,00,0\n" for stamp in stamps).encode()
    text = np.frombuffer(path_text, dtype=np.uint8)
    timestamp = np.empty(len(stamps))
    n = len(stamps)
    outputs = (
        timestamp,
        np.empty(n, np.int64),
        np.zeros((n, 8), np.uint8),
        np.empty(n, np.uint8),
        np.empty(n, np.uint8),
    )
    rows = compiled._compiled(compiled._parse_can_4col)(
        text, 0, compiled._HEX_NIBBLE, compiled._POWERS_OF_TEN, *outputs
    )
    assert rows == n
    expected = pa.compute.cast(pa.array(stamps), pa.float64()).to_numpy()
    assert timestamp.tobytes() == expected.tobytes()


@pytest.mark.parametrize(
    "row",
    [
        "1.5,0x1a0,00,0",  # 0x prefix
        "1.5, 1a0,00,0",  # blank around a field
        "1e3,1a0,00,0",  # exponent
        "-1.5,1a0,00,0",  # sign
        "1.,1a0,00,0",  # no decimals
        "12345678901234567.5,1a0,00,0",  # mantissa beyond 2^53
        "0.0000000000000000001,1a0,00,0",  # 19 digits
        "1.5,1a0,abc,0",  # odd payload
        "1.5,1a0,000000000000000000,0",  # 9 bytes
        "1.5,123456789,00,0",  # 9-digit ID
        "1.5,1a0,00,2",  # flag
        "1.5,1a0,00,0,extra",  # fifth field
        "1.5,1a0,00",  # three fields
    ],
)
def test_compiled_parser_leaves_anything_unusual_to_pyarrow(tmp_path, monkeypatch, row):
    rows = random_rows(np.random.default_rng(1), 50, base=0)
    # In timestamp order (the readers refuse a decrease): -1.5 first, 1e3 after the first row, and so on.
    stamp = float(row.split(",")[0])
    rows.insert(sum(float(r.split(",")[0]) < stamp for r in rows), row)
    path = tmp_path / "log.csv"
    path.write_text("\n".join(rows) + "\n")
    assert compiled.parse_can_4col(path, skip_first_line=False) is None
    monkeypatch.setattr(can_4col, "_COMPILED_MIN_BYTES", 0)
    with_compiled = [None, None]
    try:
        with_compiled[0] = read_can_file(path, bad_rows="skip")
    except CanFormatError as error:
        with_compiled[1] = str(error)
    monkeypatch.setattr(can_4col, "_COMPILED_MIN_BYTES", 10**15)
    try:
        general = read_can_file(path, bad_rows="skip")
    except CanFormatError as error:
        assert with_compiled[1] == str(error)
        return
    for name in ("timestamp", "can_id", "dlc", "payload", "label"):
        np.testing.assert_array_equal(getattr(with_compiled[0], name), getattr(general, name), err_msg=name)
