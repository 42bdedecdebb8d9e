"""CAN log readers on small hand-written files: every format, and every kind of bad input."""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import zipfile

import numpy as np
import pytest

from kdgat.can.decode import count_line_ends, line_ends
from kdgat.can.formats import FORMATS
from kdgat.can.messages import CanFormatError
from kdgat.can.reader import detect_format, read_can_file

HCRL_CSV = """\
1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R
1478198376.389636,018f,8,fe,5b,00,00,00,3c,00,00,R
1478198376.390065,0260,2,19,21,T
1478198376.390200,0000,0,T

1478198376.390546,02a0,8,64,00,9a,1d,97,02,bd,00,R
"""

HCRL_TXT = (
    "Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2\r\n"
    "Timestamp: 1479121434.850423        ID: 02c0    000    DLC: 4    14 00 00 01\r\n"
)

CAN_4COL = """\
timestamp,arbitration_id,data_field,attack
1.5,0x1A0,0102030405060708,0
1.6,2c0,0a0b,1
1.7,7ff,,0
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_hcrl_csv_short_dlc_shifts_the_flag(tmp_path):
    messages = read_can_file(write(tmp_path, "dos.csv", HCRL_CSV))
    assert messages.fmt == "hcrl_csv"
    assert messages.can_id.tolist() == [0x316, 0x18F, 0x260, 0x000, 0x2A0]
    assert messages.dlc.tolist() == [8, 8, 2, 0, 8]
    assert messages.payload[0].tolist() == [0x05, 0x21, 0x68, 0x09, 0x21, 0x21, 0x00, 0x6F]
    assert messages.payload[2].tolist() == [0x19, 0x21, 0, 0, 0, 0, 0, 0]
    assert messages.label.tolist() == [0, 0, 1, 1, 0]
    assert messages.timestamp[0] == pytest.approx(1478198376.389427, abs=1e-7)
    assert messages.skipped_rows == 0


def test_hcrl_txt_with_windows_line_ends(tmp_path):
    messages = read_can_file(write(tmp_path, "normal.txt", HCRL_TXT))
    assert messages.fmt == "hcrl_txt"
    assert messages.can_id.tolist() == [0x350, 0x2C0]
    assert messages.dlc.tolist() == [8, 4]
    assert messages.payload[0].tolist() == [0x05, 0x28, 0x84, 0x66, 0x6D, 0x00, 0x00, 0xA2]
    assert messages.payload[1].tolist() == [0x14, 0, 0, 1, 0, 0, 0, 0]
    assert messages.label.tolist() == [0, 0]


def test_can_4col_with_header_prefix_and_empty_payload(tmp_path):
    messages = read_can_file(write(tmp_path, "set.csv", CAN_4COL))
    assert messages.fmt == "can_4col"
    assert messages.can_id.tolist() == [0x1A0, 0x2C0, 0x7FF]
    assert messages.dlc.tolist() == [8, 2, 0]
    assert messages.payload[1].tolist() == [10, 11, 0, 0, 0, 0, 0, 0]
    assert messages.label.tolist() == [0, 1, 0]
    assert messages.timestamp.tolist() == [1.5, 1.6, 1.7]


def test_can_4col_header_in_another_column_order(tmp_path):
    text = "attack,data_field,timestamp,arbitration_id\n1,ff,2.0,123\n"
    messages = read_can_file(write(tmp_path, "reordered.csv", text), fmt="can_4col")
    assert messages.can_id.tolist() == [0x123]
    assert messages.payload[0, 0] == 0xFF
    assert messages.label.tolist() == [1]


def test_detect_format(tmp_path):
    assert detect_format(write(tmp_path, "a.csv", HCRL_CSV)) == "hcrl_csv"
    assert detect_format(write(tmp_path, "b.txt", HCRL_TXT)) == "hcrl_txt"
    assert detect_format(write(tmp_path, "c.csv", CAN_4COL)) == "can_4col"
    assert detect_format(write(tmp_path, "d.csv", "1.0,1a0,0102,1\n")) == "can_4col"


# (file text, format, line number of the first bad row, words the message must contain)
BAD_INPUTS = {
    "bad hex in CAN ID": (
        "1.0,0316,8,05,21,68,09,21,21,00,6f,R\n1.1,03zz,2,01,02,R\n",
        "hcrl_csv",
        2,
        "CAN ID",
    ),
    "bad hex in data byte": ("1.0,0316,2,0g,21,R\n", "hcrl_csv", 1, "data byte"),
    "DLC not matching bytes": (
        "1.0,0316,8,05,21,68,09,21,21,00,6f,R\n1.1,0316,8,05,21,R\n",
        "hcrl_csv",
        2,
        "DLC",
    ),
    "DLC out of range": ("1.0,0316,9,05,21,68,09,21,21,00,6f,aa,R\n", "hcrl_csv", 1, "DLC"),
    "missing fields": ("1.0,0316,8,05,21,68,09,21,21,00,6f,R\n1.1,0316\n", "hcrl_csv", 2, "missing fields"),
    "non-numeric timestamp": ("1.0,0316,1,05,R\nnoon,0316,1,05,R\n", "hcrl_csv", 2, "timestamp"),
    "bad flag": ("1.0,0316,1,05,X\n", "hcrl_csv", 1, "flag"),
    "4col odd payload": (
        "timestamp,arbitration_id,data_field,attack\n1.0,1a0,010,0\n",
        "can_4col",
        2,
        "data_field",
    ),
    "4col bad attack": (
        "timestamp,arbitration_id,data_field,attack\n1.0,1a0,01,2\n",
        "can_4col",
        2,
        "attack",
    ),
    "4col missing field": (
        "timestamp,arbitration_id,data_field,attack\n1.0,1a0,01,0\n\n1.1,1a0\n",
        "can_4col",
        4,
        "missing",
    ),
    "4col bad timestamp": (
        "timestamp,arbitration_id,data_field,attack\n1.0,1a0,01,0\n1.x,1a0,01,0\n",
        "can_4col",
        3,
        "timestamp",
    ),
    "txt broken layout": (
        "Timestamp: 1.0  ID: 0350  000  DLC: 1  05\nTimestamp: 1.1  XX: 0350  000  DLC: 1  05\n",
        "hcrl_txt",
        2,
        "layout",
    ),
    "txt DLC mismatch": ("Timestamp: 1.0  ID: 0350  000  DLC: 3  05\n", "hcrl_txt", 1, "DLC"),
    # inf and 1e400 parse as floats, but are no time.
    "infinite timestamp": ("1.0,0316,1,05,R\ninf,0316,1,05,R\n", "hcrl_csv", 2, "finite number"),
    "txt timestamp beyond the float range": (
        "Timestamp: 1.0  ID: 0350  000  DLC: 1  05\nTimestamp: 1e400  ID: 0350  000  DLC: 1  05\n",
        "hcrl_txt",
        2,
        "finite number",
    ),
    "4col minus infinite timestamp": (
        "timestamp,arbitration_id,data_field,attack\n1.0,1a0,01,0\n-inf,1a0,01,0\n",
        "can_4col",
        3,
        "finite number",
    ),
    # Empty or too long fields are not read as zeros or cut short.
    "empty CAN ID": ("1.0,0316,1,05,R\n1.1,,1,05,R\n", "hcrl_csv", 2, "CAN ID"),
    "4col empty CAN ID": ("1.0,1a0,01,0\n1.1,,01,0\n", "can_4col", 2, "CAN ID"),
    "9-digit CAN ID": ("1.0,000000316,1,05,R\n", "hcrl_csv", 1, "1 to 8 digits"),
    "empty data byte": ("1.0,0316,2,05,,R\n", "hcrl_csv", 1, "data byte"),
    "3-digit data byte": ("1.0,0316,1,005,R\n", "hcrl_csv", 1, "data byte"),
    "txt 3-digit data byte": ("Timestamp: 1.0  ID: 0350  000  DLC: 1  005\n", "hcrl_txt", 1, "data byte"),
    # HCRL text writes every byte as two digits (test_a_capture_cut_off_inside_its_last_byte_is_a_bad_row)
    "txt one-digit data byte": (
        "Timestamp: 1.0  ID: 0350  000  DLC: 2  5 a2\n",
        "hcrl_txt",
        1,
        "2 hexadecimal",
    ),
    # CAN IDs are 11-bit or 29-bit: 8 hex digits can say more.
    "ID above 29 bits": ("1.0,0316,1,05,R\n1.1,20000000,1,05,R\n", "hcrl_csv", 2, "above 0x1FFFFFFF"),
    "4col ID above 29 bits": (
        "timestamp,arbitration_id,data_field,attack\n1.0,1a0,01,0\n1.1,ffffffff,01,0\n",
        "can_4col",
        3,
        "above 0x1FFFFFFF",
    ),
    "txt ID above 29 bits": (
        "Timestamp: 1.0  ID: 3fffffff  000  DLC: 1  05\n",
        "hcrl_txt",
        1,
        "above 0x1FFFFFFF",
    ),
    # More bytes than the DLC says (fewer: "DLC not matching bytes"): the extra byte is not dropped silently.
    "more bytes than the DLC": (
        "1.0,0316,2,05,21,R\n1.1,0316,2,05,21,33,R\n",
        "hcrl_csv",
        2,
        "DLC does not match",
    ),
    "txt more bytes than the DLC": (
        "Timestamp: 1.0  ID: 0350  000  DLC: 2  05 28 33\n",
        "hcrl_txt",
        1,
        "DLC does not match",
    ),
    "4col extra field": (
        "timestamp,arbitration_id,data_field,attack\n1.0,1a0,01,0\n1.1,1a0,01,0,1\n",
        "can_4col",
        3,
        "too many fields",
    ),
}


@pytest.mark.parametrize("fmt", ["auto", "hcrl_txt"])
def test_a_capture_cut_off_inside_its_last_byte_is_a_bad_row(tmp_path, fmt):
    """HCRL text ends each line with a data byte: a capture cut off inside it (``... a2`` cut to ``... a``, no line
    end after it) read as the byte 0x0a without a word. It is a bad row: an error naming the line, or skipped and
    counted."""
    whole = "Timestamp: 1.0  ID: 0350  000  DLC: 2  05 a2\n"
    path = write(tmp_path, "cut.log", whole + whole.replace("1.0", "1.1")[:-2])
    with pytest.raises(CanFormatError, match="line cut off") as error:
        read_can_file(path, fmt=fmt)
    assert error.value.line == 2
    messages = read_can_file(path, fmt=fmt, bad_rows="skip")
    assert (len(messages), messages.skipped_rows) == (1, 1)
    assert messages.payload[0, :2].tolist() == [0x05, 0xA2]


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_rows_name_file_line_and_problem(tmp_path, case):
    text, fmt, line, words = BAD_INPUTS[case]
    path = write(tmp_path, "bad.csv", text)
    with pytest.raises(CanFormatError) as error:
        read_can_file(path, fmt=fmt)
    assert error.value.line == line
    assert str(path) in str(error.value)
    assert f"line {line}" in str(error.value)
    assert words.lower() in str(error.value).lower()


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_skip_mode_drops_and_counts_bad_rows(tmp_path, case):
    text, fmt, _, _ = BAD_INPUTS[case]
    good = {
        "hcrl_csv": "9.0,0123,1,ff,R\n",
        "can_4col": "9.0,123,ff,0\n",
        "hcrl_txt": "Timestamp: 9.0  ID: 0123  000  DLC: 1  ff\n",
    }
    path = write(tmp_path, "bad.csv", text + good[fmt])
    total_rows = len(
        [ln for ln in (text + good[fmt]).splitlines() if ln.strip() and not ln.startswith("timestamp,")]
    )
    messages = read_can_file(path, fmt=fmt, bad_rows="skip")
    assert messages.skipped_rows >= 1
    assert len(messages) + messages.skipped_rows == total_rows
    assert messages.can_id[-1] == 0x123
    assert messages.payload[-1, 0] == 0xFF
    assert all("line" in example for example in messages.skipped_examples)


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ("1.0,1fffffff,1,05,R\n", "hcrl_csv"),
        ("timestamp,arbitration_id,data_field,attack\n1.0,1FFFFFFF,05,0\n", "can_4col"),
        ("Timestamp: 1.0  ID: 1fffffff  000  DLC: 1  05\n", "hcrl_txt"),
    ],
)
def test_the_largest_29_bit_id_is_read(tmp_path, text, fmt):
    messages = read_can_file(write(tmp_path, "extended.log", text))
    assert messages.fmt == fmt and messages.can_id.tolist() == [0x1FFFFFFF]
    # Also on the exact path, which a bad row elsewhere in the file sends it to.
    messages = read_can_file(write(tmp_path, "with_bad_row.log", text + "junk\n"), fmt=fmt, bad_rows="skip")
    assert messages.can_id.tolist() == [0x1FFFFFFF] and messages.skipped_rows == 1


@pytest.mark.parametrize("label", ["True", "true", "1.0", "False", "0.0", "yes"])
def test_can_4col_attack_labels_are_0_or_1_only(tmp_path, label):
    path = write(tmp_path, "labels.csv", f"1.0,1a0,01,1\n1.1,1a0,01,{label}\n")
    with pytest.raises(CanFormatError, match="attack label is not 0 or 1") as error:
        read_can_file(path, fmt="can_4col")
    assert error.value.line == 2
    assert repr(f"1.1,1a0,01,{label}") in str(error.value)


def test_blanks_around_fields_are_allowed(tmp_path):
    hcrl = write(tmp_path, "blanks.csv", "1.0 , 0316 , 2 , 05 , 21 , T\n1.1,\t02a0\t, 1, ff ,R\n")
    messages = read_can_file(hcrl)
    assert messages.can_id.tolist() == [0x316, 0x2A0]
    assert messages.dlc.tolist() == [2, 1]
    assert messages.payload[:, :2].tolist() == [[0x05, 0x21], [0xFF, 0]]
    assert messages.label.tolist() == [1, 0]
    four = write(tmp_path, "blanks4.csv", " 1.0 , 1a0 , 0102 , 1 \n1.5, 0x2b0 ,ff,0\n")
    messages = read_can_file(four, fmt="can_4col")
    assert messages.timestamp.tolist() == [1.0, 1.5]
    assert messages.can_id.tolist() == [0x1A0, 0x2B0]
    assert messages.payload[:, :2].tolist() == [[1, 2], [0xFF, 0]]
    assert messages.label.tolist() == [1, 0]


@pytest.mark.parametrize("prefix", ["0x", "0X"])
def test_a_can_4col_id_may_carry_a_0x_prefix_in_either_case(tmp_path, prefix):
    # can_4col's docstring: a hex ID, "0x" allowed; hex digits are case-blind, and so is the prefix.
    path = write(
        tmp_path, "prefixed.csv", f"{CAN_4COL.splitlines()[0]}\n1.0,{prefix}1A0,01,0\n1.1,{prefix}2b0,02,1\n"
    )
    messages = read_can_file(path)
    assert messages.fmt == "can_4col"
    assert messages.can_id.tolist() == [0x1A0, 0x2B0]
    assert messages.skipped_rows == 0


def test_the_error_counts_the_bad_rows_after_the_first(tmp_path):
    path = write(tmp_path, "bad.csv", "1.0,0316,1,05,R\n1.1,03zz,1,05,R\n1.2,0316,1,05,X\n1.3,0316\n")
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert error.value.line == 2
    assert "(2 more bad rows; set preprocess.bad_rows: skip to drop them)" in str(error.value)


def test_skip_mode_logs_the_file_and_the_count_of_skipped_rows(tmp_path, caplog):
    path = write(tmp_path, "bad.csv", "1.0,0316,1,05,R\n1.1,03zz,1,05,R\n1.2,0316,1,05,X\n1.3,0316,1,05,R\n")
    with caplog.at_level(logging.WARNING, logger="kdgat.can.reader"):
        messages = read_can_file(path, bad_rows="skip")
    assert messages.skipped_rows == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"{path}: skipped 2 bad rows of 4" in warnings[0]
    assert f"{path}, line 2: CAN ID" in warnings[0] and f"{path}, line 3: flag" in warnings[0]


# One log in every format, with its first message at line 1 and a bad row (a decrease in time) at line 4.
DECREASING = {
    "hcrl_csv": "1.0,0316,1,05,R\n2.0,0316,1,05,R\n\n1.5,0316,1,05,R\n",
    "hcrl_txt": (
        "Timestamp: 1.0  ID: 0350  000  DLC: 1  05\nTimestamp: 2.0  ID: 0350  000  DLC: 1  05\n\n"
        "Timestamp: 1.5  ID: 0350  000  DLC: 1  05\n"
    ),
    "can_4col": "1.0,1a0,01,0\n2.0,1a0,01,0\n\n1.5,1a0,01,0\n",
}


@pytest.mark.parametrize("fmt", sorted(DECREASING))
@pytest.mark.parametrize("bad_rows", ["error", "skip"])
def test_a_decreasing_timestamp_is_an_error_naming_both_lines(tmp_path, fmt, bad_rows):
    path = write(tmp_path, "unsorted.log", DECREASING[fmt])
    with pytest.raises(CanFormatError) as error:
        read_can_file(path, bad_rows=bad_rows)
    assert detect_format(path) == fmt
    assert error.value.line == 4
    assert f"{path}, line 4: timestamp 1.5 is lower than 2.0 on line 2" in str(error.value)
    assert "timestamps must not decrease" in str(error.value) and "sort the log" in str(error.value)


@pytest.mark.parametrize("fmt", sorted(DECREASING))
def test_a_capture_whose_clock_went_back_to_0_is_told_to_be_split_there_not_only_sorted(tmp_path, fmt):
    """A logger restarted mid-capture (its timestamps from 0 again, lines in the order recorded): the error said
    only to sort the log by timestamp, which interleaves the two parts into windows no capture held."""
    first, second = DECREASING[fmt].split("\n")[:2]  # the messages at 1.0 and 2.0
    restarted = [first, second, first.replace("1.0", "3.0"), first.replace("1.0", "0.0"), first, second]
    path = write(tmp_path, "restarted.log", "\n".join(restarted) + "\n")
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert error.value.line == 4
    assert f"{path}, line 4: timestamp 0.0 is lower than 3.0 on line 3" in str(error.value)
    assert "split the file before line 4, each part a capture of its own" in str(error.value)


def test_a_log_with_many_decreases_is_told_to_be_sorted(tmp_path):
    """A merged or shuffled log goes back at many lines: splitting it there is no advice."""
    times = [1.0, 3.0, 2.0, 5.0, 4.0, 7.0, 6.0, 9.0, 8.0]
    path = write(tmp_path, "shuffled.csv", "".join(f"{t},0316,1,05,R\n" for t in times))
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert str(error.value).endswith(
        "(3 more decreases after it); timestamps must not decrease (windows follow file order): sort the log by "
        "timestamp first"
    )


def test_a_decrease_is_measured_from_the_last_row_kept(tmp_path):
    # The bad row between them is dropped; 1.5 still follows 2.0.
    path = write(tmp_path, "unsorted.csv", "2.0,0316,1,05,R\n9.0,03zz,1,05,R\n1.5,0316,1,05,R\n")
    with pytest.raises(CanFormatError, match="line 3: timestamp 1.5 is lower than 2.0 on line 1"):
        read_can_file(path, bad_rows="skip")


@pytest.mark.parametrize("fmt", sorted(DECREASING))
def test_equal_timestamps_are_fine(tmp_path, fmt):
    path = write(tmp_path, "ties.log", DECREASING[fmt].replace("2.0", "1.0").replace("1.5", "1.0"))
    assert read_can_file(path).timestamp.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("text", "fmt"), [(HCRL_CSV, "hcrl_csv"), (HCRL_TXT, "hcrl_txt"), (CAN_4COL, "can_4col")]
)
def test_lone_cr_line_ends_read_like_newlines(tmp_path, text, fmt):
    # Old Mac files: pyarrow's reader (the fast path) splits at a lone \r, so the exact path must as well.
    plain = read_can_file(write(tmp_path, "lf.log", text.replace("\r\n", "\n")))
    path = tmp_path / "cr.log"
    path.write_bytes(text.replace("\r\n", "\n").replace("\n", "\r").encode())
    assert detect_format(path) == fmt
    messages = read_can_file(path)
    for name in ("timestamp", "can_id", "dlc", "payload", "label"):
        np.testing.assert_array_equal(getattr(messages, name), getattr(plain, name), err_msg=name)


def test_a_bad_row_in_a_lone_cr_file_is_named_by_its_own_line(tmp_path):
    path = tmp_path / "cr.csv"
    path.write_bytes(b"1.0,0316,1,05,R\r1.1,0316,1,05,R\r\r1.2,03zz,1,05,R\r1.3,0316,1,05,R\r")
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert error.value.line == 4
    assert str(error.value).endswith("CAN ID is not a hexadecimal number of 1 to 8 digits: '1.2,03zz,1,05,R'")
    assert read_can_file(path, bad_rows="skip").can_id.tolist() == [0x316] * 3


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
def test_a_file_that_is_not_utf8_is_named_with_the_line_of_its_first_bad_byte(tmp_path, line_end):
    rows = [b"1.0,0316,1,05,R", b"", b"1.1,0316,1,05,R", "1.2,0316,1,é5,R".encode("latin-1"), b"1.3,0\xff"]
    path = tmp_path / "latin1.csv"
    path.write_bytes(line_end.join(rows) + line_end)
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert error.value.line == 4
    assert str(error.value).startswith(f"{path}, line 4: not a UTF-8 text file: byte 0xe9 in column 12 ")


def test_auto_detection_of_a_utf16_log_says_it_is_not_utf8_not_an_unknown_format(tmp_path):
    # A UTF-16 export (Excel's "Unicode text", PowerShell 5's `>`) was an "unknown CAN log format" whose line was
    # shown as junk under auto detection, the default, while a named format said what is wrong and what to do.
    path = tmp_path / "export.csv"
    path.write_text("timestamp,arbitration_id,data_field,attack\n1.0,1a0,0011,0\n", encoding="utf-16")
    expected = f"{path}, line 1: not a UTF-8 text file: byte 0xff in column 1 is not valid UTF-8 (save the file as UTF-8)"
    for call in (detect_format, read_can_file, lambda p: read_can_file(p, fmt="can_4col")):
        with pytest.raises(CanFormatError) as error:
            call(path)
        assert str(error.value) == expected
        assert error.value.line == 1


def zstd_frame(data: bytes) -> bytes:
    """``data`` as one zstd frame holding a single raw (stored) block: the standard library has no zstd module.
    Frame header: no flags, a 1 KiB window; block header: last block, raw, ``len(data)`` bytes (RFC 8878)."""
    assert len(data) <= 1024
    return b"\x28\xb5\x2f\xfd" + b"\x00\x00" + ((len(data) << 3) | 1).to_bytes(3, "little") + data


@pytest.mark.parametrize(
    ("compress", "kind", "command"),
    [
        (gzip.compress, "gzip", "gunzip"),
        (bz2.compress, "bzip2", "bunzip2"),
        (lzma.compress, "xz", "unxz"),
        (zstd_frame, "zstd", "unzstd"),
        (None, "zip", "unzip"),
    ],
)
def test_a_compressed_log_is_refused_with_what_to_do(tmp_path, compress, kind, command):
    path = tmp_path / f"x.csv.{kind}"
    if compress is None:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("x.csv", HCRL_CSV)
    else:
        path.write_bytes(compress(HCRL_CSV.encode()))
    expected = f"{path}: the file is {kind}-compressed; decompress it first (e.g. {command} {path.name})"
    for call in (detect_format, read_can_file, lambda p: read_can_file(p, fmt="hcrl_csv")):
        with pytest.raises(CanFormatError) as error:
            call(path)
        assert str(error.value).startswith(expected)


@pytest.mark.parametrize("bad_rows", ["error", "skip"])
def test_a_wrong_forced_format_is_named_with_the_detected_one_instead_of_advising_skip(tmp_path, bad_rows):
    # Every row of an HCRL CSV is bad as can_4col: "bad_rows: skip" would drop the whole file.
    path = write(tmp_path, "hcrl.csv", HCRL_CSV)
    with pytest.raises(CanFormatError) as error:
        read_can_file(path, fmt="can_4col", bad_rows=bad_rows)
    wrong = (
        "as can_4col: the format is likely wrong; format detection reads this file as hcrl_csv: set the format to "
        "auto or hcrl_csv (datasets.<name>.format; kdgat preprocess --format))"
    )
    said = {"error": "(4 more bad rows: every one of the first 5 rows is bad ", "skip": "("}[bad_rows]
    assert str(error.value).endswith(said + wrong)
    assert "bad_rows: skip" not in str(error.value)


def test_skipping_the_first_100_rows_of_a_wrong_forced_format_warns_naming_the_detected_one(tmp_path, caplog):
    """Later rows that parse as the forced format made skip drop the first 100 rows (every one bad) with the bare
    count, where the error of a wholly bad file names the format detection picks."""
    rows = [f"{1 + i / 1000:.3f},0316,8,05,21,68,09,21,21,00,6f,R" for i in range(100)]
    path = write(tmp_path, "mixed.csv", "\n".join([*rows, "2.0,1a0,0102,0", "2.1,1a0,0102,0"]) + "\n")
    with caplog.at_level(logging.WARNING, logger="kdgat.can.reader"):
        messages = read_can_file(path, fmt="can_4col", bad_rows="skip")
    assert (len(messages), messages.skipped_rows) == (2, 100)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(
        f"{path}: skipped 100 bad rows of 102 (every one of the first 100 rows is bad as can_4col: the format is "
        "likely wrong; format detection reads this file as hcrl_csv: set the format to auto or hcrl_csv "
        "(datasets.<name>.format; kdgat preprocess --format)); first: "
    )


def test_rows_all_bad_in_an_unrecognised_file_do_not_advise_skipping_them(tmp_path):
    path = write(tmp_path, "all_bad.csv", "x,0316,1,05,R\ny,0316,1,05,R\n")
    with pytest.raises(CanFormatError) as error:
        read_can_file(path, fmt="hcrl_csv")
    assert str(error.value) == (
        f"{path}, line 1: timestamp is not a finite number: 'x,0316,1,05,R' (1 more bad row: every one of the "
        "first 2 rows is bad)"
    )


def test_every_row_bad_is_an_error_even_in_skip_mode(tmp_path):
    path = write(tmp_path, "all_bad.csv", "x,0316,1,05,R\ny,0316,1,05,R\n")
    with pytest.raises(CanFormatError, match="every one of the 2 rows is bad"):
        read_can_file(path, fmt="hcrl_csv", bad_rows="skip")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_file(tmp_path, text):
    path = write(tmp_path, "empty.csv", text)
    with pytest.raises(CanFormatError, match="empty file") as error:
        read_can_file(path)
    assert str(path) in str(error.value)
    with pytest.raises(CanFormatError, match="empty file"):
        read_can_file(path, fmt="can_4col")


def test_header_only_file(tmp_path):
    path = write(tmp_path, "header.csv", "timestamp,arbitration_id,data_field,attack\n")
    with pytest.raises(CanFormatError, match="header only"):
        read_can_file(path)


def test_unknown_format_detected(tmp_path):
    path = write(tmp_path, "weird.csv", "\nhello world\n")
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert error.value.line == 2
    assert "unknown CAN log format" in str(error.value)
    assert str(path) in str(error.value)


def test_a_leading_comment_line_is_named_as_one_and_to_be_removed(tmp_path):
    """An export that starts with '# exported by ...' was an unknown format showing the line, without saying that
    comment lines are not read. The hint is given only where the line starts with '#' (a frame as cansend takes it,
    without candump's time and interface, has one inside it, and is a format not read, not a comment)."""
    path = write(tmp_path, "commented.csv", "# exported by cantools\n" + HCRL_CSV)
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert str(error.value) == (
        f"{path}, line 1: unknown CAN log format (expected one of {', '.join(FORMATS)}); the line starts with "
        "'# exported by cantools'; comment lines are not read: remove the lines that start with '#'"
    )
    for name, text in (("weird.csv", "hello # world\n"), ("cansend.log", "123#DEADBEEF\n")):
        with pytest.raises(CanFormatError, match="unknown CAN log format") as error:
            read_can_file(write(tmp_path, name, text))
        assert "comment lines" not in str(error.value)


REORDERED_4COL = (
    "timestamp,arbitration_id,attack,data_field\n1.0,1a0,0,0011223344556677\n\n2.0,2c0,1,0011223344556677"
)


@pytest.mark.parametrize("bad_row", ["", "2.5,zz,0,00\n"], ids=["fast-path", "exact-path"])
def test_a_last_line_without_a_line_end_whose_last_column_a_cut_leaves_valid_is_named(
    tmp_path, caplog, bad_row
):
    """A capture cut off inside the last field of a can_4col line whose header puts data_field last:
    ``0011223344556677`` cut to ``00112233445566`` read as a valid 7-byte payload without a word. The file is
    still read (a whole line saved without a final newline looks the same), with a warning naming the file, the
    line and the column; on both paths (a bad row sends the file to the exact one)."""
    cut = REORDERED_4COL[:-2]
    path = write(tmp_path, "cut.csv", cut.replace("\n\n", "\n\n" + bad_row))
    with caplog.at_level(logging.WARNING, logger="kdgat.can.reader"):
        messages = read_can_file(path, bad_rows="skip")
    assert list(messages.dlc) == [8, 7]
    warnings = [r.getMessage() for r in caplog.records if "line end" in r.getMessage()]
    assert warnings == [
        f"{path}, line {5 if bad_row else 4}: the last line has no line end, so it may be cut off (a capture's end); "
        "a cut inside its last column, data_field, leaves a shorter value that still reads as valid: "
        "'2.0,2c0,1,00112233445566'. Check it against the source, and end the file with a line end if the line is "
        "whole"
    ]


@pytest.mark.parametrize(
    "text",
    [REORDERED_4COL + "\n", REORDERED_4COL + "\r\n  ", CAN_4COL.rstrip("\n"), HCRL_CSV.rstrip("\n")],
    ids=["ended", "ended-then-blanks", "attack-last", "hcrl-csv-flag-last"],
)
def test_a_file_ended_by_a_line_end_or_whose_last_column_cannot_be_cut_into_a_value_gets_no_warning(
    tmp_path, caplog, text
):
    """Where the last line ends, or where a cut would be a bad row (a label or flag last), no warning."""
    with caplog.at_level(logging.WARNING, logger="kdgat.can.reader"):
        read_can_file(write(tmp_path, "whole.csv", text))
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def test_unknown_format_requested(tmp_path):
    path = write(tmp_path, "a.csv", HCRL_CSV)
    with pytest.raises(CanFormatError, match="unknown format 'parquet'"):
        read_can_file(path, fmt="parquet")
    with pytest.raises(ValueError, match="bad_rows"):
        read_can_file(path, bad_rows="ignore")


def test_missing_file(tmp_path):
    with pytest.raises(CanFormatError, match="file not found"):
        read_can_file(tmp_path / "nope.csv")


def test_a_directory_given_as_a_log_is_called_a_directory_not_a_missing_file(tmp_path):
    # A folder listed in datasets.<name>.files exists: "file not found" sent researchers looking for a typo.
    (tmp_path / "train_01").mkdir()
    with pytest.raises(
        CanFormatError, match=r"train_01: a directory, not a CAN log file .*datasets.<name>.path"
    ):
        read_can_file(tmp_path / "train_01")


def test_large_file_matches_row_by_row_parse(tmp_path):
    """The vectorised parser agrees with a plain Python parse on a few thousand random rows."""
    rng = np.random.default_rng(0)
    rows, expected = [], []
    for i in range(3000):
        dlc = int(rng.integers(0, 9))
        payload = rng.integers(0, 256, dlc).tolist()
        can_id = int(rng.integers(0, 0x800))
        flag = "T" if rng.random() < 0.2 else "R"
        rows.append(
            ",".join(
                [f"{1000 + i / 1000:.6f}", f"{can_id:04x}", str(dlc), *[f"{b:02x}" for b in payload], flag]
            )
        )
        expected.append((can_id, dlc, payload + [0] * (8 - dlc), int(flag == "T")))
    messages = read_can_file(write(tmp_path, "big.csv", "\n".join(rows) + "\n"))
    assert messages.can_id.tolist() == [e[0] for e in expected]
    assert messages.dlc.tolist() == [e[1] for e in expected]
    assert messages.payload.tolist() == [e[2] for e in expected]
    assert messages.label.tolist() == [e[3] for e in expected]


def test_blanks_around_a_can_4col_payload_count_no_bytes(tmp_path):
    # Blanks around fields are allowed; the DLC is the number of hex byte pairs, never counting the blanks, and a
    # payload with an odd number of hex digits stays a bad row however many blanks surround it.
    path = write(
        tmp_path, "blank_payload.csv", "1.0,1a0, 0102,0\n1.1,1a0,  0102 ,1\n1.2,1a0,\t0a0b0c\t\t,0\n"
    )
    messages = read_can_file(path, fmt="can_4col")
    assert messages.dlc.tolist() == [2, 2, 3]
    assert messages.payload[:, :3].tolist() == [[1, 2, 0], [1, 2, 0], [0x0A, 0x0B, 0x0C]]
    assert messages.skipped_rows == 0
    odd = write(tmp_path, "blank_odd_payload.csv", "1.0,1a0,0102,0\n1.1,1a0, 010,0\n")
    with pytest.raises(CanFormatError, match="data_field is not a hex string") as error:
        read_can_file(odd, fmt="can_4col")
    assert error.value.line == 2


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 1 << 24])
def test_count_line_ends_counts_each_line_end_once_across_chunks(tmp_path, chunk_size):
    """The line number of the cut-off warning: a ``\\r\\n`` split between two chunks is one line end."""
    data = b"a\r\nb\rc\n\r\n\rd\r\r\ne"
    path = tmp_path / "ends.txt"
    path.write_bytes(data)
    assert count_line_ends(path, chunk_size) == len(line_ends(np.frombuffer(data, dtype=np.uint8))) == 7


def hcrl_lines(start: float, count: int, step: float = 0.0001) -> list[str]:
    return [f"{start + k * step:.6f},0316,2,05,21,R" for k in range(count)]


@pytest.mark.parametrize("bad_row", [False, True], ids=["fast-path", "exact-path"])
def test_two_captures_joined_with_a_forward_gap_are_warned_of_once_naming_the_line(tmp_path, caplog, bad_row):
    """``cat dos.csv fuzzy.csv``: time jumps 5000 s forward between the captures, and was read without a word,
    though windows count messages, so one window mixes both. One warning per file names the line and the gap (and
    how many more there are); the messages are read as before."""
    lines = hcrl_lines(1.0, 10) + hcrl_lines(5001.0, 10) + hcrl_lines(9001.0, 5)
    if bad_row:
        lines.insert(3, "not,a,row")
    path = write(tmp_path, "joined.csv", "\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="kdgat.can.reader"):
        messages = read_can_file(path, bad_rows="skip")
    assert len(messages) == 25
    warnings = [r.getMessage() for r in caplog.records if "captures joined" in r.getMessage()]
    line = 12 if bad_row else 11
    assert warnings == [
        f"{path}, line {line}: timestamp 5001.0 is 5000 time units (the log's own, seconds or not) after the one on "
        f"line {line - 1}, 5e+07 times the median step between messages (0.0001 units): two captures joined in one "
        "file? (1 more such gaps after it) Windows count messages, not time, so the window across this gap holds "
        "messages of both (and time blocks take them as one capture): give each capture a file of its own if they "
        "are separate"
    ], warnings


def test_the_gap_of_a_log_stamped_in_milliseconds_is_told_in_its_own_units_not_seconds(tmp_path, caplog):
    """A capture stamped in milliseconds (0.1 ms steps; 121000 - 1000.9 = 119999.1 ms between two captures joined) was told
    as "120000 s after ... (0.1 s)": the reader cannot know the unit, so the gap is said in the log's own units."""
    lines = hcrl_lines(1000.0, 10, step=0.1) + hcrl_lines(121000.0, 10, step=0.1)
    path = write(tmp_path, "joined_ms.csv", "\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="kdgat.can.reader"):
        read_can_file(path)
    warnings = [r.getMessage() for r in caplog.records if "captures joined" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"{path}, line 11: timestamp 121000.0 is 119999 time units (the log's own, seconds or not) after the one "
        "on line 10, 1.2e+06 times the median step between messages (0.1 units): two captures joined in one file?"
    ), warnings
    assert " s after" not in warnings[0] and " s)" not in warnings[0] and "seconds," not in warnings[0]


def test_pauses_and_repeated_timestamps_of_one_capture_are_no_gap(tmp_path, caplog):
    """A pause below the factor (0.5 s, 5000 median steps) and timestamps repeated within a clock tick (a median
    of the positive steps only) give no warning."""
    lines = hcrl_lines(1.0, 10) + hcrl_lines(1.5, 10) + [hcrl_lines(1.501, 1)[0]] * 20
    with caplog.at_level(logging.WARNING, logger="kdgat.can.reader"):
        read_can_file(write(tmp_path, "pause.csv", "\n".join(lines) + "\n"))
    assert not caplog.records, [r.getMessage() for r in caplog.records]
