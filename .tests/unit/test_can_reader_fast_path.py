"""The can_4col fast path (timestamps parsed by pyarrow's CSV reader, one-byte attack flags read from the
character buffer) gives the same messages and the same errors as the exact line-by-line path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from kdgat import compiled
from kdgat.can import can_4col, reader
from kdgat.can.decode import block_size, dlc_values, timestamps
from kdgat.can.messages import CanFormatError
from kdgat.can.reader import read_can_file

HEADER = "timestamp,arbitration_id,data_field,attack\n"


@pytest.mark.parametrize("timestamp", ["nan", "", "NaN", "1.2.3", "inf x", "inf", "-inf", "1e400", "-1e400"])
def test_unparsable_timestamps_name_their_line(tmp_path, timestamp):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "1.0,1a0,01,0\n" + f"{timestamp},1a0,01,0\n")
    with pytest.raises(CanFormatError, match=r"line 3: timestamp is not a finite number"):
        read_can_file(path)
    messages = read_can_file(path, bad_rows="skip")
    assert (messages.timestamp.tolist(), messages.skipped_rows) == ([1.0], 1)


def test_a_text_and_an_overflowing_timestamp_are_both_bad_rows(tmp_path):
    # "noon" sends the column to the regex decoder, which must still catch 1e400 (inf after the cast).
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "1.0,1a0,01,0\nnoon,1a0,01,0\n1e400,1a0,01,0\n2.0,1a0,01,0\n")
    messages = read_can_file(path, bad_rows="skip")
    assert (messages.timestamp.tolist(), messages.skipped_rows) == ([1.0, 2.0], 2)


def test_infinite_timestamps_parsed_by_the_csv_reader_are_bad():
    values, bad = timestamps(pa.array([1.0, float("inf"), float("-inf"), float("nan"), None]))
    assert bad.tolist() == [False, True, True, True, True]
    assert values[bad].tolist() == [0.0] * 4


def test_a_field_that_is_not_a_data_length_code_is_bad_and_gets_0():
    dlc, bad = dlc_values(pa.array(["0", "8", "9", "x", "", None]))
    assert bad.tolist() == [False, False, True, True, True, True]
    assert dlc.tolist() == [0, 8, 0, 0, 0, 0]


def test_the_csv_reader_reads_a_file_of_up_to_256_mb_in_one_block(tmp_path):
    """block_size: the file's size and one byte more (at least 1 MiB), up to 256 MiB: a file of up to 256 MB
    comes as single chunks. Sparse files: nothing is written."""
    path = tmp_path / "log.csv"
    for size, expected in [
        (10, 1 << 20),
        (200 << 20, (200 << 20) + 1),
        ((256 << 20) - 1, 256 << 20),
        (300 << 20, 256 << 20),
    ]:
        with open(path, "wb") as handle:
            handle.truncate(size)
        assert block_size(path) == expected, size


def test_the_fast_path_leaves_an_infinite_timestamp_to_the_exact_path(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "1.0,1a0,01,0\ninf,1a0,01,0\n")
    assert can_4col.fast_parse(path, can_4col.FILE_ORDER) is None


@pytest.fixture(params=["pyarrow", "compiled"])
def can_4col_path(request, monkeypatch):
    """Both fast readers of can_4col files: pyarrow's CSV reader and (where numba is installed) the compiled one."""
    if request.param == "compiled":
        monkeypatch.setattr(can_4col, "_COMPILED_MIN_BYTES", 0)
    return request.param


def test_a_decreasing_timestamp_is_an_error_on_every_path(tmp_path, can_4col_path):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "1.0,1a0,01,0\n1.5,1a0,01,0\n\n1.25,1a0,01,0\n2.0,1a0,01,0\n")
    for bad_rows in ("error", "skip"):
        with pytest.raises(CanFormatError) as error:
            read_can_file(path, bad_rows=bad_rows)
        assert error.value.line == 5
        assert str(path) in str(error.value)
        assert "timestamp 1.25 is lower than 1.5 on line 3" in str(error.value)
        assert "must not decrease" in str(error.value) and "sort" in str(error.value)


def test_equal_timestamps_are_kept(tmp_path, can_4col_path):
    # Several frames can carry the same clock tick.
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "1.0,1a0,01,0\n1.0,2b0,02,1\n1.0,3c0,03,0\n")
    messages = read_can_file(path)
    assert messages.timestamp.tolist() == [1.0, 1.0, 1.0]
    assert messages.can_id.tolist() == [0x1A0, 0x2B0, 0x3C0]


def test_a_header_ended_by_a_lone_cr_is_not_skipped_with_the_rows_after_it(tmp_path, can_4col_path):
    # The compiled reader skips the header up to the first \n; here that would drop the row 1.0 as well.
    path = tmp_path / "log.csv"
    path.write_bytes(HEADER.strip().encode() + b"\r1.0,1a0,01,0\r2.0,2b0,02,1\r\n3.0,3c0,03,0\r\n")
    messages = read_can_file(path)
    assert messages.timestamp.tolist() == [1.0, 2.0, 3.0]
    assert messages.label.tolist() == [0, 1, 0]


def test_a_header_in_another_column_order_is_read_by_its_names_on_every_path(tmp_path, can_4col_path):
    # The compiled reader takes the columns in the default order only; these rows would also pass it in file
    # order (the payloads as 2- and 3-byte IDs, the 4-digit IDs as 2-byte payloads), all values wrong.
    path = tmp_path / "log.csv"
    path.write_text("timestamp,data_field,arbitration_id,attack\n1.0,0102,01a0,0\n2.0,0a0b0c,0316,1\n")
    messages = read_can_file(path)
    assert messages.can_id.tolist() == [0x1A0, 0x316]
    assert messages.dlc.tolist() == [2, 3]
    assert messages.payload[:, :3].tolist() == [[1, 2, 0], [10, 11, 12]]
    assert messages.label.tolist() == [0, 1]


def test_fast_and_exact_paths_agree(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    lines = [
        f"{1000 + i * 0.001234:.6f},{rng.integers(0, 0x800):x},{rng.bytes(int(rng.integers(0, 9))).hex()},"
        f"{int(rng.random() < 0.3)}"
        for i in range(500)
    ]
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "\n".join(lines) + "\n")
    fast = read_can_file(path)
    monkeypatch.setattr(reader, "_fast_parse", lambda *args: None)
    exact = read_can_file(path)
    for name in ("timestamp", "can_id", "dlc", "payload", "label"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(exact, name), err_msg=name)
    assert fast.label.sum() == sum(line.endswith(",1") for line in lines)


def test_non_ascii_payload_is_one_bad_row_and_leaves_the_others_intact(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "1.0,1a0,0102,0\n1.1,1a0,é0,0\n1.2,2b0,0a0b0c,1\n", encoding="utf-8")
    messages = read_can_file(path, bad_rows="skip")
    assert messages.skipped_rows == 1
    assert messages.payload[:, :3].tolist() == [[1, 2, 0], [10, 11, 12]]
    assert messages.can_id.tolist() == [0x1A0, 0x2B0] and messages.label.tolist() == [0, 1]


# Odd and malformed logs of every format: (name, text).
ODD_LOGS = [
    ("4col header in the middle", HEADER + "1.0,1a0,01,0\n" + HEADER + "2.0,2b0,0203,1\n"),
    ("4col mixed line ends", HEADER + "1.0,1a0,01,0\r\n2.0,2b0,0203,1\n3.0,3c0,,0\r\n"),
    ("4col blanks and tabs", HEADER + " 1.0,1a0,01,0\t\n2.0, 2b0 ,02, 1\n   \n3.0,3c0,03,0\n"),
    ("4col signs and 0X", HEADER + "+1.0,0X1a0,01,0\n2.0,2b0,02,1\n"),
    ("4col quotes", HEADER + '1.0,"1a0",01,0\n2.0,2b0,02,1\n'),
    # One oddity per file: the compiled reader hands a whole file back at its first one.
    ("4col empty CAN ID", HEADER + "1.0,,01,0\n2.0,1a0,01,0\n"),
    ("4col 9-digit CAN ID", HEADER + "1.0,000000123,01,0\n2.0,1a0,01,0\n"),
    ("4col 9-byte payload", HEADER + "1.0,1a0,010203040506070809,0\n2.0,1a0,01,0\n"),
    ("4col odd payload", HEADER + "1.0,1a0,010,0\n2.0,1a0,01,0\n"),
    ("4col IDs past 29 bits", HEADER + "1.0,1fffffff,01,0\n2.0,20000000,01,0\n3.0,1a0,01,0\n"),
    ("4col trailing comma and NUL", HEADER + "1.0,1a0,01,0,\n2.0,1a0,01,0\x00\n3.0,1a0,01,1\n"),
    ("4col BOM, no header", "\ufeff1.0,1a0,01,0\n2.0,2b0,02,1\n"),
    ("4col duplicate timestamps", HEADER + "1.0,1a0,01,0\n1.0,1a0,01,0\n1.0,2b0,02,1\n"),
    (
        "4col odd timestamps",
        HEADER + ".5,1a0,01,0\n5.,1a0,01,0\n1e5,1a0,01,0\nInfinity,1a0,01,0\n1_0,1a0,01,0\n",
    ),
    (
        "csv header, then a header again",
        "Timestamp,ID,DLC,D,Flag\n1.0,0316,2,05,21,R\nTimestamp,ID,DLC,D,Flag\n",
    ),
    (
        "csv DLC and bytes disagree",
        "1.0,0316,2,05,21,R\n2.0,0316,2,05,21,33,R\n3.0,0316,3,05,21,R\n4.0,0316,1,ff,T\n",
    ),
    (
        "csv bad fields",
        "1.0,0316,1,05,R\n2.0,0x316,1,05,R\n3.0,0316,1,005,R\n4.0,0316,08,05,R\n5.0,,1,05,R\n",
    ),
    ("csv blanks and CRLF", "1.0, 0316 , 2 , 05 , 21 , R\r\n2.0,0317,1,ff,T \r\n\r\n"),
    (
        "txt DLC and bytes disagree",
        "Timestamp: 1.0  ID: 0350  000  DLC: 2  05 28 33\nTimestamp: 2.0  ID: 0350  000  DLC: 1  05\n",
    ),
    (
        "txt tabs and 0x",
        "Timestamp:\t1.0\tID:\t0350\t000\tDLC:\t1\t05\nTimestamp: 2.0  ID: 0x350  000  DLC: 1  05\n",
    ),
]


@pytest.mark.parametrize("bad_rows", ["error", "skip"])
@pytest.mark.parametrize(("name", "text"), ODD_LOGS, ids=[name for name, _ in ODD_LOGS])
def test_every_path_reads_odd_logs_alike(tmp_path, monkeypatch, name, text, bad_rows):
    """pyarrow's fast path, the compiled one and the exact line-by-line path give the same messages, skipped
    counts and errors (word for word) on odd and malformed logs."""
    path = tmp_path / "log.csv"
    path.write_bytes(text.encode())

    def read():
        try:
            m = read_can_file(path, bad_rows=bad_rows)
        except CanFormatError as error:
            return str(error)
        return [
            getattr(m, field).tolist() for field in ("timestamp", "can_id", "dlc", "payload", "label")
        ] + [
            m.skipped_rows,
            m.skipped_examples,
        ]

    fast = read()
    with monkeypatch.context() as patch:
        patch.setattr(can_4col, "_COMPILED_MIN_BYTES", 0)
        patch.setattr(compiled, "MIN_MESSAGES", 1)
        with_compiled = read()
    monkeypatch.setattr(reader, "_fast_parse", lambda *args: None)
    exact = read()
    assert fast == exact and with_compiled == exact
