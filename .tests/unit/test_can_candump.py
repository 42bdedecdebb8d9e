"""candump logs (can-utils, the ROAD dataset's raw form): parsing, detection, labels from capture_metadata.json,
and a ROAD-shaped dataset folder through the preprocess step."""

from __future__ import annotations

import contextlib
import json
import os

import numpy as np
import pytest

from kdgat.can import candump
from kdgat.can.capture_labels import METADATA_FILE, read_labelled_can_file
from kdgat.can.messages import PROBLEMS, CanFormatError
from kdgat.can.metadata_files import metadata_of_logs, metadata_roles
from kdgat.can.reader import detect_format, read_can_file
from kdgat.preprocess import discover_layout, preprocess_dataset

GOOD = """\
(1602165123.123456) can0 0C1#0102030405060708
(1602165123.123500) can0 1F334455#A0B1
(1602165123.124000) can0 0C1#R
(1602165123.124100) vcan1 7FF#R4
(1602165123.124200) can0 123#
(1602165123.124300) can0 0D0#0102030405060708_9
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_candump_lines_read_with_ids_data_remote_frames_and_no_label(tmp_path):
    messages = read_can_file(write(tmp_path, "capture.log", GOOD))
    assert messages.fmt == "candump"
    assert messages.can_id.tolist() == [0x0C1, 0x1F334455, 0x0C1, 0x7FF, 0x123, 0x0D0]
    assert messages.dlc.tolist() == [8, 2, 0, 4, 0, 8]  # a remote frame's length digit is its DLC
    assert messages.payload[0].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]
    assert messages.payload[1].tolist() == [0xA0, 0xB1, 0, 0, 0, 0, 0, 0]
    assert messages.payload[3].tolist() == [0] * 8
    assert messages.payload[5].tolist() == [1, 2, 3, 4, 5, 6, 7, 8]  # the _9 raw DLC changes nothing
    assert messages.timestamp[0] == pytest.approx(1602165123.123456, abs=1e-7)
    assert messages.label.tolist() == [0] * 6


@pytest.mark.parametrize(
    ("line", "code"),
    [
        ("(1602165124.0) can0", 1),  # no frame
        ("1602165124.0 can0 0C1#01", 14),  # timestamp without parentheses
        ("(1602165124.0) can0 0C1 01", 14),  # more fields, no '#'
        ("(1602165124.0) can0 0C1#01 02", 14),  # data with blanks
        ("(1602165124.0) can0 0C1", 14),  # no '#'
        ("(later) can0 0C1#01", 3),
        ("(1602165124.0) can0 0G1#01", 4),
        ("(1602165124.0) can0 123456789#01", 4),
        ("(1602165124.0) can0 20000004#0000000000000000", 17),  # error frame
        ("(1602165124.0) can0 0C1##10102", 15),  # CAN FD
        ("(1602165124.0) can0 0C1#010", 16),  # half a byte
        ("(1602165124.0) can0 0C1#010203040506070809", 16),  # 9 bytes
        ("(1602165124.0) can0 0C1#0x", 16),
        ("(1602165124.0) can0 0C1#R9", 16),  # remote frame asking for 9 bytes
    ],
)
def test_each_kind_of_bad_candump_line_is_named_with_its_line_number(tmp_path, line, code):
    path = write(tmp_path, "capture.log", f"(1602165123.5) can0 0C1#01\n{line}\n(1602165125.0) can0 0C1#02\n")
    with pytest.raises(CanFormatError) as error:
        read_can_file(path)
    assert error.value.line == 2
    assert str(error.value) == f"{path}, line 2: {PROBLEMS[code]}: {line!r}"
    skipped = read_can_file(path, bad_rows="skip")
    assert skipped.payload[:, 0].tolist() == [1, 2] and skipped.skipped_rows == 1


def test_a_cut_off_last_line_is_read_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, "capture.log", "(1.0) can0 0C1#0102\n(1.1) can0 0C1#0102")
    assert read_can_file(path).dlc.tolist() == [2, 2]
    assert "line 2: the last line has no line end" in caplog.text


# The first lines of the other formats' sample files (test_can_reader.py): none reads as candump.
OTHER_FORMATS = {
    "hcrl_csv": "1478198376.389427,0316,8,05,21,68,09,21,21,00,6f,R\n1478198376.389636,018f,2,fe,5b,T\n",
    "hcrl_txt": "Timestamp: 1479121434.850202        ID: 0350    000    DLC: 8    05 28 84 66 6d 00 00 a2\n",
    "can_4col": "timestamp,arbitration_id,data_field,attack\n1.5,0x1A0,0102030405060708,0\n",
}


def test_detection_picks_candump_and_no_other_format_for_a_candump_log(tmp_path):
    assert detect_format(write(tmp_path, "capture.log", GOOD)) == "candump"
    extended_first = "(1602165123.1) can0 1F334455#01\n"
    assert detect_format(write(tmp_path, "extended.log", extended_first)) == "candump"
    for fmt, text in OTHER_FORMATS.items():
        assert detect_format(write(tmp_path, f"{fmt}.csv", text)) == fmt
        assert not any(candump.sniff(line) for line in text.splitlines())


def test_candumps_screen_output_is_refused_saying_to_record_with_candump_l(tmp_path):
    path = write(tmp_path, "screen.txt", "  can0  0C1   [8]  01 02 03 04 05 06 07 08\n")
    with pytest.raises(CanFormatError, match="unknown CAN log format") as error:
        detect_format(path)
    assert "candump's screen output" in str(error.value) and "candump -l" in str(error.value)
    timed = write(tmp_path, "timed.txt", " (1602165123.123456)  can0  0C1   [2]  01 02\n")
    with pytest.raises(CanFormatError, match="candump's screen output"):
        read_can_file(timed)


# A ROAD-shaped capture: the vehicle's frames every 10 ms; from 1.0 s to 2.0 s after the first frame, an injection.
START = 1602165123.0


def capture(injected: list[tuple[float, int, str]], seconds: float = 3.0) -> str:
    frames = [
        (k * 0.01, (0x0C1, 0x0D0, 0x1F3)[k % 3], f"{k % 256:02X}00000000001122")
        for k in range(int(seconds * 100))
    ]
    frames += injected
    frames.sort(key=lambda frame: frame[0])
    return "".join(f"({START + t:.6f}) can0 {i:03X}#{data}\n" for t, i, data in frames)


TARGETED = [
    (1.0 + k * 0.05 + 0.001, 0x0D0, "0000000000FFFFFF") for k in range(21)
]  # 1.001 .. 2.001: last outside
FUZZING = [(1.0 + k * 0.05 + 0.002, 0x100 + 7 * k, "FFFFFFFFFFFFFFFF") for k in range(20)]
METADATA = {
    "max_speedometer_attack_1": {
        "description": "speedometer set to its maximum",
        "injection_id": "0x0D0",
        "injection_data_str": "XXXXXXXXXXFFFFFF",
        "injection_interval": [1.0, 2.0],
    },
    "fuzzing_attack_1": {
        "injection_id": "XXX",
        "injection_data_str": "FFFFFFFFFFFFFFFF",
        "injection_interval": [1.0, 2.0],
    },
    "ambient_street_1": {"description": "city driving", "on_dyno": False},
}


def road_folder(folder, logs: dict[str, str], metadata=METADATA):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in logs.items():
        (folder / f"{name}.log").write_text(text)
    if metadata is not None:
        (folder / METADATA_FILE).write_text(json.dumps(metadata))
    return folder


def test_frames_in_the_interval_with_the_injected_id_and_pattern_are_the_attacks(tmp_path):
    folder = road_folder(
        tmp_path, {"max_speedometer_attack_1": capture(TARGETED), "fuzzing_attack_1": capture(FUZZING)}
    )
    targeted = read_labelled_can_file(folder / "max_speedometer_attack_1.log")
    injected = (targeted.can_id == 0x0D0) & (targeted.payload[:, 5] == 0xFF)
    elapsed = targeted.timestamp - targeted.timestamp[0]
    # the injected frames inside [1.0, 2.0] s; the one at 2.001 s and the vehicle's own 0x0D0 frames are normal
    assert targeted.label.tolist() == (injected & (elapsed <= 2.0)).astype(np.uint8).tolist()
    assert int(targeted.label.sum()) == 20 and injected.sum() == 21
    fuzzing = read_labelled_can_file(folder / "fuzzing_attack_1.log")
    assert sorted(fuzzing.can_id[fuzzing.label == 1].tolist()) == [0x100 + 7 * k for k in range(20)]
    ambient = read_labelled_can_file(
        road_folder(tmp_path / "a", {"ambient_street_1": capture([])}) / "ambient_street_1.log"
    )
    assert ambient.label.sum() == 0 and len(ambient) == 300


def test_the_metadata_file_in_the_folder_above_is_used(tmp_path):
    road_folder(tmp_path, {}, METADATA)
    folder = road_folder(tmp_path / "test_01_fuzzing", {"fuzzing_attack_1": capture(FUZZING)}, None)
    assert int(read_labelled_can_file(folder / "fuzzing_attack_1.log").label.sum()) == 20


def test_other_formats_keep_their_labels_without_any_metadata(tmp_path):
    path = write(tmp_path, "dos.csv", OTHER_FORMATS["hcrl_csv"])
    assert read_labelled_can_file(path).label.tolist() == [0, 1]


def test_a_candump_log_without_metadata_is_refused_naming_it_and_what_to_add(tmp_path):
    path = (
        road_folder(tmp_path / "train_01", {"ambient_street_1": capture([])}, None) / "ambient_street_1.log"
    )
    with pytest.raises(CanFormatError) as error:
        read_labelled_can_file(path)
    said = str(error.value)
    assert said.startswith(f"{path}: a candump log carries no attack labels, and there is no {METADATA_FILE}")
    assert "'ambient_street_1'" in said and "injection_interval" in said and "XXX" in said


@pytest.mark.parametrize(
    ("name", "entry", "words"),
    [
        ("fuzzing_attack_2", None, "has no entry 'fuzzing_attack_2' for this log"),
        ("fuzzing_attack_1", {"injection_id": "XXX"}, "lacks ['injection_interval', 'injection_data_str']"),
        ("fuzzing_attack_1", {"description": "x"}, "the capture's name says it is an attack"),
        (
            "fuzzing_attack_1",
            {**METADATA["fuzzing_attack_1"], "injection_interval": [30, 40]},
            "no frame lies in",
        ),
        (
            "fuzzing_attack_1",
            {**METADATA["fuzzing_attack_1"], "injection_interval": [2.5, 1]},
            "expected [start_s",
        ),
        (
            "fuzzing_attack_1",
            {**METADATA["fuzzing_attack_1"], "injection_id": "0x7E0"},
            "the entry does not fit",
        ),
        ("fuzzing_attack_1", {**METADATA["fuzzing_attack_1"], "injection_id": 208}, "expected a hex CAN ID"),
        (
            "fuzzing_attack_1",
            {**METADATA["fuzzing_attack_1"], "injection_data_str": "FF"},
            "expected 16 characters",
        ),
    ],
)
def test_missing_or_mismatched_metadata_is_refused_naming_the_entry(tmp_path, name, entry, words):
    metadata = {"fuzzing_attack_1": entry} if entry is not None else METADATA
    folder = road_folder(tmp_path, {name: capture(FUZZING)}, metadata)
    with pytest.raises(CanFormatError) as error:
        read_labelled_can_file(folder / f"{name}.log")
    assert str(error.value).startswith(str(folder / f"{name}.log")) and words in str(error.value)
    if entry is None:
        assert "the closest are ['fuzzing_attack_1'" in str(error.value)


def test_metadata_that_is_not_json_is_named_with_its_line(tmp_path):
    folder = road_folder(tmp_path, {"fuzzing_attack_1": capture(FUZZING)}, None)
    (folder / METADATA_FILE).write_text('{\n  "fuzzing_attack_1": {,\n}')
    with pytest.raises(CanFormatError, match=rf"{METADATA_FILE}, line 2: not valid JSON"):
        read_labelled_can_file(folder / "fuzzing_attack_1.log")


def test_a_road_shaped_folder_goes_through_preprocess_with_labels_from_its_metadata(tmp_path):
    root = tmp_path / "road"
    road_folder(root / "train_01_ambient", {"ambient_street_1": capture([], 4.0)})
    road_folder(root / "test_01_fuzzing", {"fuzzing_attack_1": capture(FUZZING)})
    road_folder(root / "test_02_speedometer", {"max_speedometer_attack_1": capture(TARGETED)})
    train, test = discover_layout(root)  # the metadata files are no logs
    assert [p.name for p in train] == ["ambient_street_1.log"] and sorted(test) == ["fuzzing", "speedometer"]
    meta = preprocess_dataset("road", train, test, tmp_path / "out", window_size=20, stride=20, time_blocks=5)
    assert set(meta["format_read"]["per_file"].values()) == {"candump"}
    assert meta["attack_fraction"]["train"] == 0.0
    # 300 vehicle frames + 20 injected (21 in the speedometer capture): a window of 20 steps needs 21 frames
    assert meta["counts"]["test"] == {"fuzzing": 15, "speedometer": 16}
    assert (
        meta["attack_fraction"]["test"]["fuzzing"] > 0 and meta["attack_fraction"]["test"]["speedometer"] > 0
    )


def test_preprocess_refuses_a_candump_log_without_metadata_in_a_test_folder(tmp_path):
    root = tmp_path / "road"
    road_folder(root / "train_01_ambient", {"ambient_street_1": capture([])})
    road_folder(root / "test_01_fuzzing", {"fuzzing_attack_9": capture(FUZZING)}, {})
    train, test = discover_layout(root)
    with pytest.raises(CanFormatError, match="has no entry 'fuzzing_attack_9' for this log"):
        preprocess_dataset("road", train, test, tmp_path / "out", window_size=20, stride=20, time_blocks=5)


def test_the_metadata_files_that_label_a_datasets_logs_are_found_as_the_logs_are_written(tmp_path):
    """The preprocess module makes these build_graphs' input.capture_metadata (workflow/modules/preprocess/
    common.smk), written as the logs are (relative stays relative, so a storage provider maps both alike), and
    their places relative to the dataset's folder part of its roles_of_logs param."""
    root = tmp_path / "road"
    train = road_folder(root / "train_01_ambient", {"ambient_street_1": capture([])}, None)
    test = road_folder(root / "test_01_fuzzing", {"fuzzing_attack_1": capture(FUZZING)}, None)
    (root / METADATA_FILE).write_text(json.dumps(METADATA))
    (test / METADATA_FILE).write_text(json.dumps(METADATA))
    logs = [train / "ambient_street_1.log", test / "fuzzing_attack_1.log", test / "fuzzing_attack_2.log"]
    assert metadata_of_logs(logs) == [str(root / METADATA_FILE), str(test / METADATA_FILE)]
    assert metadata_roles(logs) == [METADATA_FILE, f"test_01_fuzzing/{METADATA_FILE}"]
    relative = [os.path.relpath(log, tmp_path) for log in logs]
    with contextlib.chdir(tmp_path):
        assert metadata_of_logs(relative) == [
            f"road/{METADATA_FILE}",
            f"road/test_01_fuzzing/{METADATA_FILE}",
        ]
    assert metadata_of_logs([tmp_path / "elsewhere" / "train_01" / "dos.csv"]) == []
    assert metadata_roles([tmp_path / "elsewhere" / "train_01" / "dos.csv"]) == []


def test_given_metadata_files_are_the_only_ones_used(tmp_path):
    """What build_graphs hands over (input.capture_metadata, retrieved from remote storage with the logs) is where
    the labels come from: the logs and their metadata staged elsewhere are read, and a file on disk that is not
    among those given is not taken (under remote storage it would not be there)."""
    origin = road_folder(
        tmp_path / "origin" / "test_01_fuzzing", {"fuzzing_attack_1": capture(FUZZING)}, None
    )
    (origin.parent / METADATA_FILE).write_text(json.dumps(METADATA))
    staged = road_folder(
        tmp_path / "staged" / "road" / "test_01_fuzzing", {"fuzzing_attack_1": capture(FUZZING)}
    )
    log = staged / "fuzzing_attack_1.log"
    read = read_labelled_can_file(log, metadata_files=[staged / METADATA_FILE])
    assert int(read.label.sum()) == 20
    # the one in the folder above exists on disk but is not given: refused, naming what was given
    (staged / METADATA_FILE).unlink()
    (staged.parent / METADATA_FILE).write_text(json.dumps(METADATA))
    with pytest.raises(CanFormatError) as error:
        read_labelled_can_file(log, metadata_files=[origin.parent / METADATA_FILE])
    assert "among the metadata files the rule gives" in str(error.value)
    assert str(origin.parent / METADATA_FILE) in str(error.value)
    # through the preprocess step, as the wrapper passes them
    road_folder(tmp_path / "staged" / "road" / "train_01_ambient", {"ambient_street_1": capture([], 4.0)})
    train, test = discover_layout(tmp_path / "staged" / "road")
    meta = preprocess_dataset(
        "road", train, test, tmp_path / "out", window_size=20, stride=20, time_blocks=5,
        metadata_files=[staged.parent / METADATA_FILE],
    )  # fmt: skip
    assert meta["attack_fraction"]["train"] == 0.0 and meta["attack_fraction"]["test"]["fuzzing"] > 0


def test_the_interval_is_measured_from_the_first_time_stamp_even_of_a_skipped_bad_row(tmp_path):
    """With bad_rows skip, a capture whose first lines are bad rows (a time that does not read, then a CAN FD frame
    0.2 s before the vehicle's traffic) keeps its origin: the first time stamp that reads, not the first frame kept,
    or every frame of the interval shifts by the skipped line's gap."""
    first = START - 0.2
    bad = f"(later) can0 0C1#01\n({first:.6f}) can0 0C1##10102\n"
    folder = road_folder(tmp_path, {"fuzzing_attack_1": bad + capture(FUZZING)})
    read = read_labelled_can_file(folder / "fuzzing_attack_1.log", fmt="candump", bad_rows="skip")
    assert read.skipped_rows == 2 and read.timestamp[0] == pytest.approx(START)
    elapsed = np.round(read.timestamp - first, 6)
    injected = (read.payload == 0xFF).all(axis=1)
    expected = injected & (elapsed >= 1.0) & (elapsed <= 2.0)
    assert read.label.tolist() == expected.astype(np.uint8).tolist()
    # the injected frames at 1.002 .. 1.952 s after the first frame are 1.202 .. 2.152 s after the first time stamp
    assert 0 < int(read.label.sum()) < int(injected.sum()) == 20
    # without a bad row the origin is the first frame, as before
    clean = road_folder(tmp_path / "clean", {"fuzzing_attack_1": capture(FUZZING)})
    assert int(read_labelled_can_file(clean / "fuzzing_attack_1.log", bad_rows="skip").label.sum()) == 20
