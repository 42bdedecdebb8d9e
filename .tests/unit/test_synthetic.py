"""Synthetic CAN traffic: determinism, vehicle realism, attack rates and the written formats."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml
from testkit import REPO

from kdgat.can import writer
from kdgat.can.formats import WRITE_FORMATS
from kdgat.can.reader import read_can_file
from kdgat.can.writer import write_can_file
from kdgat.layout import scenario_name
from kdgat.synthetic import (
    ATTACKS,
    DEFAULTS,
    VEHICLE_ID_ATTACKS,
    SyntheticError,
    Vehicle,
    _bursts,
    _range,
    file_name,
    generate_file,
    generate_log,
)

OPTIONS = {"seed": 4, "num_ids": 30, "burst_s": [0.05, 0.3], "gap_s": [0.2, 0.5], "spoof_interval_ms": 4.0}
# The two datasets of the demo, whose design docs/science.md ("The data, designed first") describes.
SHIPPED = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["datasets"]


def shipped(name: str) -> tuple[dict, Vehicle]:
    options = SHIPPED[name]["synthetic"]
    return options, Vehicle(options["seed"], options["num_ids"])


def bursts(times: np.ndarray, gap: float = 0.05) -> list[np.ndarray]:
    return np.split(times, np.flatnonzero(np.diff(times) > gap) + 1)


def assert_real_frames(vehicle: Vehicle, slot: int, payload: np.ndarray) -> None:
    """Every row of ``payload`` could be a frame the vehicle sends on ``slot``: its constant bytes, sensor bytes
    within the signal's range (plus the noise), a valid checksum and nothing beyond the DLC."""
    dlc = int(vehicle.dlc[slot])
    assert np.all(payload[:, dlc:] == 0)
    for b in range(dlc):
        kind, values = vehicle.kinds[slot, b], payload[:, b].astype(int)
        if kind == 0:
            assert np.all(values == vehicle.constants[slot, b]), (slot, b)
        elif kind == 2:
            centre, amplitude = vehicle.signal_centre[slot, b], vehicle.signal_amplitude[slot, b]
            assert np.all(np.abs(values - centre) <= amplitude + 6), (slot, b)
        elif kind == 3:
            others = payload[:, :dlc].astype(int).sum(axis=1) - values
            assert np.all(values == others % 256), (slot, b)


def test_same_seed_same_bytes_other_seed_other_traffic(tmp_path):
    options = {
        **OPTIONS,
        "files": [{"split": "train_02_with_attacks", "name": "dos", "attack": "dos", "duration_s": 1.0}],
    }
    generate_file(options, 0, tmp_path / "a.csv")
    generate_file(options, 0, tmp_path / "b.csv")
    generate_file({**options, "seed": 5}, 0, tmp_path / "c.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_a_file_given_its_own_entry_is_the_same_file_as_from_the_whole_list(tmp_path):
    """The workflow gives each generate_can job only its own entry (test_adding_a_synthetic_file_generates_only_it):
    the bytes are those of the same entry at the same index of the whole list."""
    files = [
        {"split": "train_01_attack_free", "name": "normal", "attack": "none", "duration_s": 0.5},
        {"split": "test_01_dos", "name": "dos", "attack": "dos", "duration_s": 1.0},
    ]
    generate_file({**OPTIONS, "files": files}, 1, tmp_path / "listed.csv")
    generate_file(OPTIONS, 1, tmp_path / "own.csv", entry=files[1])
    generate_file(OPTIONS, 0, tmp_path / "other_index.csv", entry=files[1])
    assert (tmp_path / "listed.csv").read_bytes() == (tmp_path / "own.csv").read_bytes()
    assert (tmp_path / "own.csv").read_bytes() != (tmp_path / "other_index.csv").read_bytes()  # index counts


def test_vehicle_ids_periods_and_normal_rate():
    vehicle = Vehicle(seed=1, num_ids=40)
    assert len(np.unique(vehicle.ids)) == 40 and 0 not in vehicle.ids
    assert vehicle.periods_ms.min() >= 10 and vehicle.periods_ms.max() <= 1000
    normal = generate_log(vehicle, 5.0, "none", OPTIONS, seed=1)
    assert normal.label.sum() == 0
    rate = len(normal) / 5.0
    assert 500 < rate < 5000
    assert set(np.unique(normal.can_id)) >= set(vehicle.ids[vehicle.periods_ms <= 500].tolist())
    # Slowly varying payloads: consecutive messages of an ID change each byte by a small step, and not every
    # byte is random (constants exist).
    fast = vehicle.ids[np.argmin(vehicle.periods_ms)]
    frames = normal.payload[normal.can_id == fast].astype(int)
    steps = np.abs(np.diff(frames, axis=0))
    assert np.median(steps) <= 3
    assert np.all(steps[:, frames.std(axis=0) == 0] == 0) and (frames.std(axis=0) == 0).any()
    assert np.all(np.diff(normal.timestamp) >= 0)
    with pytest.raises(ValueError, match="between 25 and 60"):
        Vehicle(seed=1, num_ids=10)


def test_dos_is_id_zero_with_zero_payload_every_0_3_ms_in_several_bursts():
    messages = generate_log(Vehicle(2, 30), 3.0, "dos", OPTIONS, seed=2)
    attack = messages.label == 1
    assert np.all(messages.can_id[attack] == 0)
    assert np.all(messages.payload[attack] == 0)
    assert not np.any(messages.can_id[~attack] == 0)
    groups = bursts(messages.timestamp[attack])
    assert len(groups) >= 3
    intervals = np.concatenate([np.diff(g) for g in groups])
    assert np.median(intervals) == pytest.approx(0.0003, abs=2e-5)
    assert all(g[-1] - g[0] <= 0.3 + 1e-3 for g in groups)


def test_fuzzy_is_random_ids_every_0_5_ms():
    vehicle = Vehicle(3, 30)
    messages = generate_log(vehicle, 3.0, "fuzzy", OPTIONS, seed=3)
    attack = messages.label == 1
    intervals = np.concatenate([np.diff(g) for g in bursts(messages.timestamp[attack])])
    assert np.median(intervals) == pytest.approx(0.0005, abs=2e-5)
    fuzz_ids = messages.can_id[attack]
    assert fuzz_ids.max() < 0x800 and len(np.unique(fuzz_ids)) > 0.5 * len(fuzz_ids)
    # Uniform over all 11 bits: each eighth of 0x000..0x7FF gets its share.
    assert np.all(np.bincount(fuzz_ids >> 8, minlength=8) > 0.08 * len(fuzz_ids))
    # So almost every frame carries an ID the vehicle never sends, periodic or diagnostic (docs/science.md).
    assert np.isin(fuzz_ids, np.concatenate([vehicle.ids, vehicle.rare_ids])).mean() < 0.05


@pytest.mark.parametrize("attack", ["gear", "rpm"])
def test_spoofing_repeats_one_existing_id_with_a_fixed_payload(attack):
    vehicle = Vehicle(4, 30)
    messages = generate_log(vehicle, 3.0, attack, OPTIONS, seed=4)
    attack_rows = messages.label == 1
    spoofed = np.unique(messages.can_id[attack_rows])
    assert len(spoofed) == 1 and spoofed[0] in vehicle.ids
    groups = bursts(messages.timestamp[attack_rows])
    assert len(groups) >= 3
    intervals = np.concatenate([np.diff(g) for g in groups])
    assert np.median(intervals) == pytest.approx(0.004, abs=3e-4)
    # Within a burst the payload is frozen, and it is a plausible one (same DLC as the real ID).
    first_burst = (messages.timestamp >= groups[0][0]) & (messages.timestamp <= groups[0][-1]) & attack_rows
    assert len(np.unique(messages.payload[first_burst], axis=0)) == 1
    real_dlc = np.unique(messages.dlc[(messages.can_id == spoofed[0]) & ~attack_rows])
    assert np.unique(messages.dlc[attack_rows]).tolist() == real_dlc.tolist()
    slot = vehicle.gear_slot if attack == "gear" else vehicle.rpm_slot
    assert spoofed[0] == vehicle.ids[slot]
    assert_real_frames(vehicle, slot, messages.payload[attack_rows])
    # Only a moderate share of traffic: subtle, unlike DoS.
    assert 0.02 < attack_rows.mean() < 0.3


def test_files_vary_mildly():
    vehicle = Vehicle(5, 30)
    one = generate_log(vehicle, 2.0, "none", OPTIONS, seed=5, file_index=1)
    two = generate_log(vehicle, 2.0, "none", OPTIONS, seed=5, file_index=2)
    assert len(one) != len(two)
    assert abs(len(one) - len(two)) < 0.1 * len(one)


@pytest.mark.parametrize("fmt", ["hcrl_csv", "can_4col"])
def test_written_files_read_back_exactly(tmp_path, fmt):
    messages = generate_log(Vehicle(6, 30), 1.0, "fuzzy", OPTIONS, seed=6)
    write_can_file(messages, tmp_path / "log.csv", fmt)
    back = read_can_file(tmp_path / "log.csv")
    assert back.fmt == fmt
    np.testing.assert_array_equal(back.can_id, messages.can_id)
    np.testing.assert_array_equal(back.dlc, messages.dlc)
    np.testing.assert_array_equal(back.payload, messages.payload)
    np.testing.assert_array_equal(back.label, messages.label)
    # Microseconds, as the datasets write them. rtol=0: assert_allclose's default rtol (1e-7) alone allows 148 s
    # at Unix times like these, so atol would check nothing.
    np.testing.assert_allclose(back.timestamp, messages.timestamp, rtol=0, atol=1e-6)
    if fmt == "hcrl_csv":  # short DLCs exist, so the flag-shift case is exercised
        assert (messages.dlc < 8).any()


@pytest.mark.parametrize("fmt", ["hcrl_csv", "can_4col"])
def test_a_log_is_rendered_a_chunk_of_messages_at_a_time_into_the_same_file(tmp_path, monkeypatch, fmt):
    """write_can_file rendered a whole log as one text, line by line: about 12 bytes of memory per byte of the file
    (1.7 GB for 2.75 million messages, past the generate_can rule's first mem_mb). It renders CHUNK_MESSAGES
    messages at a time, whatever the log's length, into the file the whole text made."""
    messages = generate_log(Vehicle(6, 30), 1.0, "fuzzy", OPTIONS, seed=6)
    spec = writer.REGISTRY[fmt]
    whole = tmp_path / "whole.csv"
    for path, chunk in ((whole, len(messages)), (tmp_path / "chunks.csv", 300)):
        rendered: list[int] = []

        def counted(part, real=spec.write, rendered=rendered):
            rendered.append(len(part))
            return real(part)

        monkeypatch.setattr(writer, "CHUNK_MESSAGES", chunk, raising=False)
        monkeypatch.setitem(writer.REGISTRY, fmt, dataclasses.replace(spec, write=counted))
        write_can_file(messages, path, fmt)
        assert sum(rendered) == len(messages) and max(rendered) <= chunk
    assert len(messages) > 3 * 300 and len(rendered) == -(-len(messages) // 300)
    assert (tmp_path / "chunks.csv").read_bytes() == whole.read_bytes()
    back = read_can_file(tmp_path / "chunks.csv")
    assert back.fmt == fmt and len(back) == len(messages)
    np.testing.assert_array_equal(back.payload, messages.payload)


def test_a_format_without_a_writer_is_refused_naming_the_setting_and_nothing_is_written(tmp_path):
    # hcrl_txt can be read but not generated.
    messages = generate_log(Vehicle(6, 30), 0.1, "none", OPTIONS, seed=6)
    with pytest.raises(
        ValueError, match=r"^synthetic.format must be one of \('hcrl_csv', 'can_4col'\), got 'hcrl_txt'$"
    ):
        write_can_file(messages, tmp_path / "log.txt", "hcrl_txt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("suffix", "kind"), [(".gz", "gzip"), (".bz2", "bzip2"), (".xz", "xz"), (".zst", "zstd"), (".zip", "zip")])  # fmt: skip
def test_a_compressed_files_name_is_refused_naming_it_and_nothing_is_written(tmp_path, suffix, kind):
    # An output named x.csv.gz got plain text under a gzip name; the readers take plain text only (they refuse
    # compressed logs), so writing gzip would give a log nothing here can read: the name is refused instead.
    messages = generate_log(Vehicle(6, 30), 0.1, "none", OPTIONS, seed=6)
    path = tmp_path / f"x.csv{suffix}"
    with pytest.raises(ValueError) as error:
        write_can_file(messages, path, "hcrl_csv")
    assert str(error.value) == (
        f"{path}: a synthetic CAN log is written as plain text, but the name ends in {suffix!r}, a {kind}-compressed "
        f"file's suffix (the CAN log readers refuse compressed logs): name it {tmp_path / 'x.csv'}"
    )
    assert list(tmp_path.iterdir()) == []


def test_benign_rate_increases_hit_the_event_ids_including_gear_and_rpm_and_keep_live_counters():
    vehicle = Vehicle(4, 30)
    event_ids = vehicle.ids[vehicle.event_slots]
    assert {vehicle.ids[vehicle.rpm_slot], vehicle.ids[vehicle.gear_slot]} <= set(event_ids.tolist())
    options = {**OPTIONS, "benign_events_per_s": 2.0, "rare_ids_per_s": 0.0}
    doubled = set()
    for file_index in range(1, 4):
        messages = generate_log(vehicle, 5.0, "none", options, seed=4, file_index=file_index)
        for slot, can_id in enumerate(vehicle.ids):
            rows = messages.can_id == can_id
            intervals = np.diff(messages.timestamp[rows]) / (vehicle.periods_ms[slot] / 1000.0)
            # At most a doubled rate (spoofing adds more), and only on the event-capable IDs.
            assert intervals.min() > 0.4, (can_id, intervals.min())
            if intervals.min() < 0.6:
                doubled.add(int(can_id))
            # 1.5 times the rate, not twice: an extra message after every other periodic one gives half-period
            # intervals in pairs (0.5, 0.5, 1, 0.5, 0.5, 1...), never three in a row.
            short = np.concatenate(([0], (intervals < 0.75).astype(int), [0]))
            runs = np.diff(np.flatnonzero(np.diff(short)))[::2]
            assert runs.max(initial=0) <= 2, (can_id, runs.max())
            # Extra messages carry the live counter (+1 per message), unlike a spoof's frozen frame.
            counters = np.flatnonzero(vehicle.kinds[slot, : vehicle.dlc[slot]] == 1)
            steps = np.diff(messages.payload[rows][:, counters].astype(int), axis=0) % 256
            assert np.all(steps == 1)
    assert doubled <= set(event_ids.tolist())
    assert {vehicle.ids[vehicle.rpm_slot], vehicle.ids[vehicle.gear_slot]} <= doubled


def test_vehicle_id_attacks_carry_only_the_vehicles_ids():
    vehicle = Vehicle(7, 30)
    for attack in VEHICLE_ID_ATTACKS:
        messages = generate_log(vehicle, 3.0, attack, OPTIONS, seed=7)
        injected = messages.label == 1
        assert injected.any(), attack
        assert np.isin(messages.can_id[injected], vehicle.ids).all(), attack


def test_dos_vehicle_floods_the_highest_priority_id_with_a_real_frozen_payload():
    vehicle = Vehicle(8, 30)
    messages = generate_log(vehicle, 3.0, "dos_vehicle", OPTIONS, seed=8)
    injected = messages.label == 1
    assert set(np.unique(messages.can_id[injected]).tolist()) == {int(vehicle.ids.min())}
    groups = bursts(messages.timestamp[injected])
    assert len(groups) >= 3
    assert np.median(np.concatenate([np.diff(g) for g in groups])) == pytest.approx(0.0003, abs=2e-5)
    first = injected & (messages.timestamp <= groups[0][-1])
    assert len(np.unique(messages.payload[first], axis=0)) == 1
    assert np.unique(messages.dlc[injected]).tolist() == [int(vehicle.dlc[0])]
    assert_real_frames(vehicle, 0, messages.payload[injected])  # a frame of that ID, not zeros or another's


def test_fuzzy_vehicle_spreads_random_payloads_over_the_vehicles_ids():
    vehicle = Vehicle(9, 30)
    messages = generate_log(vehicle, 3.0, "fuzzy_vehicle", OPTIONS, seed=9)
    injected = messages.label == 1
    intervals = np.concatenate([np.diff(g) for g in bursts(messages.timestamp[injected])])
    assert np.median(intervals) == pytest.approx(0.0005, abs=2e-5)
    assert len(np.unique(messages.can_id[injected])) > 0.8 * len(vehicle.ids)
    # Random payloads: the first byte takes most of its 256 values.
    assert len(np.unique(messages.payload[injected, 0])) > 150


def test_masquerade_replaces_the_target_frames_at_their_own_times_with_out_of_range_sensor_values():
    vehicle = Vehicle(10, 30)
    options = {**OPTIONS, "benign_events_per_s": 0.0}
    clean = generate_log(vehicle, 3.0, "none", options, seed=10)
    attacked = generate_log(vehicle, 3.0, "masquerade", options, seed=10)
    target = int(vehicle.ids[vehicle.target_slot])
    assert vehicle.periods_ms[vehicle.target_slot] <= 20 and vehicle.target_slot not in vehicle.event_slots
    forged = attacked.label == 1
    assert set(np.unique(attacked.can_id[forged]).tolist()) == {target}
    # The same frames at the same times (the bus sees the target's normal rate), only payloads differ.
    np.testing.assert_array_equal(attacked.timestamp, clean.timestamp)
    np.testing.assert_array_equal(attacked.can_id, clean.can_id)
    same = ~forged
    np.testing.assert_array_equal(attacked.payload[same], clean.payload[same])
    sensor = np.flatnonzero(vehicle.kinds[vehicle.target_slot, : vehicle.dlc[vehicle.target_slot]] == 2)
    assert len(sensor)
    live = clean.payload[clean.can_id == target][:, sensor].astype(int)
    fake = attacked.payload[forged][:, sensor].astype(int)
    low, high = live.min(axis=0), live.max(axis=0)
    assert np.all((fake < low - 20) | (fake > high + 20))
    counters = np.flatnonzero(vehicle.kinds[vehicle.target_slot, : vehicle.dlc[vehicle.target_slot]] == 1)
    np.testing.assert_array_equal(attacked.payload[forged][:, counters], clean.payload[forged][:, counters])


def test_replay_resends_recorded_frames_of_the_target_on_top_of_the_live_ones():
    vehicle = Vehicle(11, 30)
    options = {**OPTIONS, "benign_events_per_s": 0.0, "replay_delay_s": 0.5}
    clean = generate_log(vehicle, 3.0, "none", options, seed=11)
    attacked = generate_log(vehicle, 3.0, "replay", options, seed=11)
    target = int(vehicle.ids[vehicle.target_slot])
    replayed = attacked.label == 1
    assert set(np.unique(attacked.can_id[replayed]).tolist()) == {target}
    live = clean.can_id == target
    # Every replayed frame is a live frame of 0.5 s earlier: same payload, time shifted by the delay.
    recorded = {
        (round(t + 0.5, 6), bytes(p)) for t, p in zip(clean.timestamp[live], clean.payload[live], strict=True)
    }
    for t, p in zip(attacked.timestamp[replayed], attacked.payload[replayed], strict=True):
        assert (round(t, 6), bytes(p)) in recorded
    # Only during the bursts (at most burst_s long): frames recorded before a burst, not until its end.
    groups = bursts(attacked.timestamp[replayed])
    assert len(groups) >= 3 and all(g[-1] - g[0] <= OPTIONS["burst_s"][1] + 0.03 for g in groups)
    # The live traffic is untouched: the attacked log is the clean one plus the replayed frames.
    assert len(attacked) == len(clean) + replayed.sum()
    # So during a burst the ID's rate is doubled: as many replayed frames as live ones (one either way at the ends).
    for group in groups:
        during = (clean.timestamp >= group[0]) & (clean.timestamp <= group[-1]) & live
        assert abs(len(group) - during.sum()) <= 1, (len(group), during.sum())


@pytest.mark.parametrize(
    ("attack", "duration_s", "words"),
    [("dos", 0.2, "gap_s=[0.5, 2.0]"), ("replay", 0.9, "replay_delay_s=1.0")],
)
def test_an_attack_file_that_would_hold_no_attack_is_an_error(tmp_path, attack, duration_s, words):
    """Too short for its first burst (or, for replay, for a burst after the replay delay): an error naming the
    entry, not a file called after an attack that holds none."""
    entry = {"split": "test_01_x", "name": "x", "attack": attack, "duration_s": duration_s}
    options = {"seed": 4, "num_ids": 30, "burst_s": [0.05, 0.3], "files": [entry]}
    with pytest.raises(ValueError, match="attack") as error:
        generate_file(options, 0, tmp_path / "x.csv")
    assert "synthetic.files[0] (test_01_x/x)" in str(error.value) and words in str(error.value)
    assert "injected no frame" in str(error.value) and not (tmp_path / "x.csv").exists()
    # Long enough, the same entry gives a file with its attack.
    long_enough = {**options, "files": [{**entry, "duration_s": 5.0}]}
    assert generate_file(long_enough, 0, tmp_path / "x.csv").label.any()


def test_masquerade_frames_keep_a_valid_checksum():
    """Only the sensor values are forged: a target whose last byte is a checksum gets it recomputed."""
    vehicle = next(
        v
        for v in (Vehicle(seed, 30) for seed in range(100))
        if (v.kinds[v.target_slot, : v.dlc[v.target_slot]] == 3).any()
    )
    slot, dlc = vehicle.target_slot, int(vehicle.dlc[vehicle.target_slot])
    messages = generate_log(vehicle, 3.0, "masquerade", {**OPTIONS, "benign_events_per_s": 0.0}, seed=12)
    forged = messages.payload[messages.label == 1][:, :dlc].astype(int)
    assert len(forged)
    (checksum,) = np.flatnonzero(vehicle.kinds[slot, :dlc] == 3)
    np.testing.assert_array_equal(forged[:, checksum], (forged.sum(axis=1) - forged[:, checksum]) % 256)


def test_the_shipped_datasets_are_the_vehicles_and_attack_families_docs_science_describes():
    """docs/science.md: synth_hcrl (30 IDs, HCRL CSV) trains on normal + dos, fuzzy, gear, rpm and tests those and
    the held-out family dos_vehicle_unseen; synth_cantt (45 IDs, can-train-and-test CSV) trains on normal +
    dos_vehicle, fuzzy_vehicle, masquerade, rpm and tests those and replay_unseen and fuzzy_unseen; the fusion
    captures are one per training capture, twice as long, with the same attacks; the vehicles have counters,
    checksums and smooth sensor signals, benign rate bursts and rare diagnostic IDs; DoS every 0.3 ms, fuzzing
    every 0.5 ms, replay of frames 1 s old."""
    designed = {
        "synth_hcrl": (
            30,
            "hcrl_csv",
            {"dos", "fuzzy", "gear", "rpm"},
            {"dos_vehicle_unseen": "dos_vehicle"},
        ),
        "synth_cantt": (
            45,
            "can_4col",  # can-train-and-test's column layout (kdgat.can.can_4col)
            {"dos_vehicle", "fuzzy_vehicle", "masquerade", "rpm"},
            {"replay_unseen": "replay", "fuzzy_unseen": "fuzzy"},
        ),
    }
    assert set(SHIPPED) == set(designed)
    for name, (num_ids, fmt, trained, unseen) in designed.items():
        options, vehicle = shipped(name)
        assert options["num_ids"] == num_ids and options["format"] == SHIPPED[name]["format"] == fmt

        def split(prefix: str, files=options["files"]) -> list[dict]:
            return [entry for entry in files if entry["split"].startswith(prefix)]

        assert {entry["attack"] for entry in split("train_")} == {"none"} | trained, name
        scenarios = {scenario_name(entry["split"]): entry["attack"] for entry in split("test_")}
        assert scenarios == {attack: attack for attack in trained} | unseen, name
        assert not set(unseen.values()) & trained  # held out: no training capture shows the family
        doubled = sorted((entry["attack"], 2 * entry["duration_s"]) for entry in split("train_"))
        assert sorted((entry["attack"], entry["duration_s"]) for entry in split("fusion_")) == doubled, name
        assert all((vehicle.kinds == kind).any() for kind in (1, 2, 3)), name  # counter, sensor, checksum
        settings = DEFAULTS | options
        assert settings["benign_events_per_s"] > 0 and settings["rare_ids_per_s"] > 0, name
        assert (settings["dos_interval_ms"], settings["fuzzy_interval_ms"], settings["replay_delay_s"]) == (
            0.3,
            0.5,
            1.0,
        ), name


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_bursts_last_0_15_to_1_s_0_4_to_1_2_s_apart_but_the_capture_end_cuts_the_last(name):
    """docs/science.md: attacks come in bursts of 0.15-1 s, 0.4-1.2 s apart (the first within 0.2-0.6 s of the
    start); the last one of a capture is cut short where the capture ends, down to a few milliseconds."""
    options, _ = shipped(name)
    cut_short = 0
    for draw in range(300):
        found = np.array(
            _bursts(10.0, _range(options, "burst_s"), _range(options, "gap_s"), np.random.default_rng(draw))
        )
        starts, ends = found[:, 0], found[:, 1]
        lengths, gaps = ends - starts, starts[1:] - ends[:-1]
        assert np.all((lengths[:-1] >= 0.15 - 1e-9) & (lengths[:-1] <= 1.0 + 1e-9)), draw
        assert lengths[-1] <= 1.0 + 1e-9 and (lengths[-1] >= 0.15 - 1e-9 or ends[-1] == 10.0), draw
        assert np.all((gaps >= 0.4 - 1e-9) & (gaps <= 1.2 + 1e-9)) and 0.2 <= starts[0] <= 0.6, draw
        cut_short += lengths[-1] < 0.15
    assert cut_short > 0


def test_burst_lengths_are_drawn_log_uniformly_from_burst_s():
    """The module docstring: a burst's length is log-uniform over burst_s (short bursts as likely per decade as
    long ones), so over [0.01, 1] s half of them last under 0.1 s, the geometric mean, not the midpoint."""
    found = np.array(_bursts(3000.0, (0.01, 1.0), (0.5, 0.5), np.random.default_rng(3)))
    lengths = (found[:, 1] - found[:, 0])[:-1]  # the last is cut short by the capture end
    assert len(lengths) > 3000 and lengths.min() >= 0.01 and lengths.max() <= 1.0
    quartiles = np.quantile(np.log10(lengths), [0.25, 0.5, 0.75])
    assert quartiles == pytest.approx([-1.5, -1.0, -0.5], abs=0.06)


@pytest.mark.parametrize(("name", "interval_ms"), [("synth_hcrl", 2.0), ("synth_cantt", 4.0)])
def test_shipped_spoofing_adds_a_frozen_frame_every_2_or_4_ms_to_the_ids_own_10_ms_traffic(name, interval_ms):
    """docs/science.md: gear/rpm spoofing every 2 ms (synth_hcrl) / 4 ms (synth_cantt); docs/models.md: the RPM
    spoof adds its frames to the RPM ID's own 10 ms traffic, which goes on."""
    options, vehicle = shipped(name)
    assert vehicle.periods_ms[vehicle.rpm_slot] == 10.0
    messages = generate_log(vehicle, 3.0, "rpm", options, seed=options["seed"])
    injected = messages.label == 1
    groups = bursts(messages.timestamp[injected])
    assert np.median(np.concatenate([np.diff(g) for g in groups])) == pytest.approx(
        interval_ms / 1000, rel=0.05
    )
    first = injected & (messages.timestamp <= groups[0][-1])
    assert len(np.unique(messages.payload[first], axis=0)) == 1
    live = (messages.can_id == vehicle.ids[vehicle.rpm_slot]) & ~injected
    during = live & (messages.timestamp >= groups[0][0]) & (messages.timestamp <= groups[0][-1])
    expected = (groups[0][-1] - groups[0][0]) / 0.010
    assert during.sum() >= expected - 2  # the live frames go on beside the spoofed ones


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_dos_vehicle_floods_the_lowest_periodic_id_with_a_frozen_payload_where_its_live_frames_vary(
    name,
):
    """docs/science.md: dos_vehicle floods the highest-priority (lowest) of the vehicle's periodic IDs with a frozen
    real payload, so what gives it away besides the rate is that frozen payload: the ID's live frames vary."""
    options, vehicle = shipped(name)
    messages = generate_log(vehicle, 3.0, "dos_vehicle", options, seed=options["seed"])
    injected = messages.label == 1
    flooded = int(vehicle.ids.min())
    assert set(np.unique(messages.can_id[injected]).tolist()) == {flooded}
    first = injected & (messages.timestamp <= bursts(messages.timestamp[injected])[0][-1])
    assert len(np.unique(messages.payload[first], axis=0)) == 1
    live = (messages.can_id == flooded) & ~injected
    assert len(np.unique(messages.payload[live], axis=0)) > 1  # not frozen: a sensor signal or counter moves


@pytest.mark.parametrize(
    "options", [{"seed": 1}, {"seed": 1, "files": [{"name": "normal", "duration_s": 1.0}]}]
)
def test_a_file_index_past_the_list_names_file_index_and_entry_and_writes_nothing(tmp_path, options):
    # generate_can with options lacking files (or file_index past them) and no entry said only "synthetic.files has
    # 0 entries, there is no entry 3", naming neither of the wrapper's params that fix it.
    with pytest.raises(ValueError) as error:
        generate_file(options, 3, tmp_path / "can.csv")
    assert str(error.value) == (
        f"synthetic.files has {len(options.get('files', []))} entries, there is no entry 3 (the file_index of the "
        "file to write, counted from 0; or give that file itself as entry)"
    )
    assert list(tmp_path.iterdir()) == []
    # The generate_can wrapper's user names them params.options, params.file_index and params.entry.
    with pytest.raises(ValueError) as error:
        generate_file(options, 3, tmp_path / "can.csv", setting_prefix="params")
    assert str(error.value) == (
        f"params.options.files has {len(options.get('files', []))} entries, there is no entry 3 (params.file_index, "
        "counted from 0; or give that file itself as params.entry)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("options", "entry", "message"),
    [
        ({**OPTIONS, "num_id": 25}, None, "synthetic: unknown key 'num_id' (did you mean 'num_ids'?); known: "),
        ("seed: 1", None, "synthetic: expected a mapping of keys to values, got str 'seed: 1'"),
        (OPTIONS, {"split": "train_01_attack_free", "name": "n", "duraton_s": 1.0},
         "synthetic.files[0]: unknown key 'duraton_s' (did you mean 'duration_s'?); known: "),
        (OPTIONS, "normal", "synthetic.files[0]: expected a mapping of keys to values, got str 'normal'"),
        (OPTIONS, {"split": "train_01_attack_free", "name": "n"},
         "synthetic.files[0].duration_s must be a number of seconds > 0, got None"),
        (OPTIONS, {"split": "train_01_attack_free", "name": "n", "duration_s": -1},
         "synthetic.files[0].duration_s must be a number of seconds > 0, got -1"),
    ],
)  # fmt: skip
def test_a_misspelt_or_malformed_block_of_the_generate_can_wrapper_is_named_and_writes_nothing(
    tmp_path, options, entry, message
):
    """The generate_can wrapper hands params.options and params.entry to generate_file unchecked (the workflow's
    schema checks only the config): `num_id: 25` was ignored without a word (30 IDs written), `duraton_s` died as
    "KeyError: 'duration_s'", a string as "'str' object has no attribute 'get'", and duration_s -1 as numpy's
    "lam < 0 or lam is NaN"."""
    with pytest.raises(ValueError) as error:
        generate_file(options, 0, tmp_path / "can.csv", entry=entry)
    assert str(error.value).startswith(message)
    assert list(tmp_path.iterdir()) == []


class _Items(dict):
    """snakemake.output/params/log as a wrapper reads them: names as attributes, [0] the first value."""

    def __getattr__(self, name):
        return self[name]

    def __getitem__(self, key):
        return list(self.values())[key] if isinstance(key, int) else super().__getitem__(key)


@pytest.mark.parametrize(
    ("options", "entry", "message"),
    [
        ({"num_ids": 99}, {}, "params.options.num_ids must be between 25 and 60, got 99"),
        ({"num_ids": "thirty"}, {}, "params.options.num_ids must be an integer, got str 'thirty'"),
        ({"seed": 1.5}, {}, "params.options.seed must be an integer, got float 1.5"),
        ({}, {"attack": "dso"}, f"params.entry.attack must be one of {ATTACKS}, got 'dso'"),
        ({}, {"duration_s": -1}, "params.entry.duration_s must be a number of seconds > 0, got -1"),
        ({}, {"attack": "dos", "duration_s": 0.01}, "params.entry (test_01_dos/n): attack 'dos' injected no "),
        # the writer's refusal named synthetic.format for every caller
        ({"format": "hcrl_txt"}, {}, "params.options.format must be one of ('hcrl_csv', 'can_4col'), got 'hcrl_txt'"),
        ({"num_id": 30}, {}, "params.options: unknown key 'num_id' (did you mean 'num_ids'?); known: "),
        # float() failed on these naming no key; a 0 interval as "float division by zero", -1 as numpy's "lam < 0"
        ({"jitter_ms": "fast"}, {}, "params.options.jitter_ms must be a number >= 0, got str 'fast'"),
        ({"rare_ids_per_s": -1}, {}, "params.options.rare_ids_per_s must be a number >= 0, got int -1"),
        ({"replay_delay_s": True}, {"attack": "replay"}, "params.options.replay_delay_s must be a number > 0, got bool True"),
        ({"dos_interval_ms": 0}, {"attack": "dos"}, "params.options.dos_interval_ms must be a number > 0, got int 0"),
        # an option only some attacks read is refused in a file without one too, not silently accepted
        ({"spoof_interval_ms": "1ms"}, {}, "params.options.spoof_interval_ms must be a number > 0, got str '1ms'"),
        # a list of three died as "too many values to unpack", a bare number as "'float' object is not iterable"
        ({"burst_s": [0.1, 0.5, 1.0]}, {"attack": "dos"},
         "params.options.burst_s must be a list of two numbers > 0 (low, high), got list [0.1, 0.5, 1.0]"),
        ({"gap_s": 2.0}, {}, "params.options.gap_s must be a list of two numbers > 0 (low, high), got float 2.0"),
        # low above high died as numpy's "high - low < 0", naming no key (and passed in a file without an attack)
        ({"burst_s": [1.0, 0.05]}, {"attack": "dos"},
         "params.options.burst_s must be [low, high] with low <= high, got low 1.0 > high 0.05"),
        ({"gap_s": [2, 0.5]}, {}, "params.options.gap_s must be [low, high] with low <= high, got low 2 > high 0.5"),
    ],
)  # fmt: skip
def test_a_synthetic_mistake_ends_the_generate_can_wrapper_with_one_line_naming_it(
    tmp_path, options, entry, message, restore_logging
):
    """A synthetic option or entry out of range reached the wrapper's failure_logged as a bare ValueError: a logged
    traceback and Python's again on the terminal, for a message that already names the key. Now the user's mistake
    (SyntheticError, still a ValueError) ends the job with status 1 and one ERROR line. It names the wrapper's params
    (params.options.num_ids, params.entry), not the workflow's config keys (synthetic.num_ids), which a wrapper user
    does not have; the preprocess module's setting_prefix keeps the config keys for the workflow's user."""
    import runpy
    from types import SimpleNamespace

    from wrapper_rules import InputRefused

    snakemake = SimpleNamespace(
        input=_Items(),
        output=_Items(can=str(tmp_path / "can.csv")),
        params=_Items(
            options=options, entry={"split": "test_01_dos", "name": "n", "duration_s": 1.0} | entry
        ),
        log=_Items(log=str(tmp_path / "job.log")),
        threads=1,
        resources=_Items(),
        rule="generate_can",
    )
    with pytest.raises(InputRefused) as ended:
        runpy.run_path(str(REPO / "wrappers/generate_can/wrapper.py"), {"snakemake": snakemake}, "__main__")
    assert ended.value.code == 1 and type(ended.value.error) is SyntheticError
    assert isinstance(ended.value.error, ValueError)  # callers that catch ValueError still catch it
    assert str(ended.value).startswith(message)
    log = (tmp_path / "job.log").read_text()
    assert log.endswith(f" ERROR kdgat: generate_can failed: {ended.value}\n") and "Traceback" not in log
    assert not (tmp_path / "can.csv").exists()
    # The preprocess module calls the same wrapper with setting_prefix "synthetic": its user set config keys.
    snakemake.params["setting_prefix"] = "synthetic"
    with pytest.raises(InputRefused) as ended:
        runpy.run_path(str(REPO / "wrappers/generate_can/wrapper.py"), {"snakemake": snakemake}, "__main__")
    as_config_keys = message.replace("params.entry", "synthetic.files[0]").replace(
        "params.options", "synthetic"
    )
    assert str(ended.value).startswith(as_config_keys)


@pytest.mark.parametrize("attack", ["gear", "replay"])
def test_generate_log_checks_each_synthetic_option_once(monkeypatch, attack):
    """Every option was checked up front and again where it was read (spoof_interval_ms once per burst): one check
    each, up front, so a mistake has one place to be reported from."""
    import kdgat.synthetic as synthetic

    checked = []
    for name in ("_number", "_range"):
        check = getattr(synthetic, name)
        monkeypatch.setattr(
            synthetic, name, lambda options, key, check=check: checked.append(key) or check(options, key)
        )
    generate_log(Vehicle(4, 30), 3.0, attack, OPTIONS, seed=4)
    assert sorted(checked) == sorted([*synthetic.NUMBER_OPTIONS, *synthetic.RANGE_OPTIONS])


def test_a_synthetic_files_name_is_split_and_name_with_csv_in_every_written_format(tmp_path):
    # file_name took the format and ignored it: both formats with a writer are comma-separated text
    assert WRITE_FORMATS == ("hcrl_csv", "can_4col")
    assert file_name({"split": "train_01_attack_free", "name": "drive"}) == "train_01_attack_free/drive.csv"
