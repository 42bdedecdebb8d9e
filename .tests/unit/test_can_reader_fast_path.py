"""The can_4col fast path (timestamps parsed by pyarrow's CSV reader, one-byte attack flags read from the
character buffer) gives the same messages and the same errors as the exact line-by-line path."""

from __future__ import annotations

import numpy as np
import pytest

from kdgat.can import reader
from kdgat.can.messages import CanFormatError
from kdgat.can.reader import read_can_file

HEADER = "timestamp,arbitration_id,data_field,attack\n"


@pytest.mark.parametrize("timestamp", ["nan", "", "NaN", "1.2.3", "inf x"])
def test_unparsable_timestamps_name_their_line(tmp_path, timestamp):
    path = tmp_path / "log.csv"
    path.write_text(HEADER + "1.0,1a0,01,0\n" + f"{timestamp},1a0,01,0\n")
    with pytest.raises(CanFormatError, match=r"line 3: timestamp is not a number"):
        read_can_file(path)


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
