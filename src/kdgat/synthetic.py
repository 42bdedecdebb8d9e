"""Synthetic CAN traffic with injected attacks, written in a real log format.

A *vehicle* (fixed by the dataset seed) has 25-60 periodic CAN IDs with periods of 10-1000 ms (mostly 10-100 ms);
each ID has a DLC (mostly 8) and payload bytes that are constants, counters, smooth sensor signals or a checksum.
Every file adds mild benign variation: a rate factor, its own jitter, occasional rare diagnostic IDs and short
event-triggered rate increases (1.5 times the rate, live counters and checksums) of one of the vehicle's event-capable IDs,
which include the gear and RPM IDs: benign look-alikes of spoofing, present in every drive, training files too.

Attacks come in bursts (length drawn log-uniformly from ``burst_s``, gaps from ``gap_s``; HCRL used 3-5 s bursts,
tiny datasets scale them down). The HCRL Car-Hacking attacks:

* ``dos``: ID 0x000, all-zero 8-byte payload, every ``dos_interval_ms`` (0.3 ms in HCRL);
* ``fuzzy``: uniformly random 11-bit ID and random 8-byte payload every ``fuzzy_interval_ms`` (0.5 ms);
* ``gear`` / ``rpm`` (spoofing): one existing ID (the vehicle's gear or RPM message) with a fixed, plausible
  payload (a frozen real message of that ID) every ``spoof_interval_ms`` (1 ms in HCRL; a larger interval
  makes the attack subtler: the ID's rate is only moderately raised).

Attacks that the CAN IDs alone cannot reveal (every injected frame carries an ID of the vehicle's own traffic, so
"the window holds an ID never seen in normal traffic" does not find them):

* ``dos_vehicle``: flooding with the highest-priority (lowest) of the vehicle's periodic IDs (a rare diagnostic ID
  may be lower still) and a frozen real payload of it, every
  ``dos_interval_ms`` (the HCRL survival data set floods with the lowest ID);
* ``fuzzy_vehicle``: random payloads on IDs drawn uniformly from the vehicle's own IDs, every
  ``fuzzy_interval_ms`` (can-train-and-test's targeted fuzzing);
* ``masquerade``: the target ID's own frames are suppressed during the burst and replaced, at exactly their
  times (its normal rate), by forged frames whose sensor bytes hold a value outside the signal's normal range
  (like ROAD's max-speedometer masquerade); counters and checksum stay valid, so only the payload values differ;
* ``replay``: the target ID's frames recorded ``replay_delay_s`` earlier are sent again at their recorded
  spacing, on top of the live ones (genuine but stale payloads, the ID's rate doubled).

The target of masquerade and replay is a fast ID (period <= 20 ms) that is neither the gear nor the RPM ID nor
event-capable, so benign rate increases never touch it.

Everything is deterministic for a seed.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import numpy as np

from kdgat.can.messages import CanMessages
from kdgat.can.writer import WRITE_FORMATS, write_can_file
from kdgat.rule_items import is_integer, is_number
from wrapper_rules import InputError

log = logging.getLogger(__name__)

ATTACKS = ("none", "dos", "fuzzy", "gear", "rpm", "dos_vehicle", "fuzzy_vehicle", "masquerade", "replay")
# Attacks whose injected frames all carry IDs of the vehicle's own traffic.
VEHICLE_ID_ATTACKS = ("gear", "rpm", "dos_vehicle", "fuzzy_vehicle", "masquerade", "replay")
EPOCH = 1478198376.0  # a 2016 UNIX time like the HCRL captures; keeps timestamps 10.6 digits wide
PERIODS_MS = np.array([10, 20, 50, 100, 200, 500, 1000])
PERIOD_WEIGHTS = np.array([0.25, 0.25, 0.15, 0.2, 0.07, 0.05, 0.03])

DEFAULTS = {
    "seed": 0,
    "format": "hcrl_csv",
    "num_ids": 30,
    "jitter_ms": 0.05,
    "burst_s": [0.05, 1.0],
    "gap_s": [0.5, 2.0],
    "dos_interval_ms": 0.3,
    "fuzzy_interval_ms": 0.5,
    "spoof_interval_ms": 1.0,
    "rare_ids_per_s": 0.3,
    "benign_events_per_s": 0.2,
    "replay_delay_s": 1.0,
    "files": [],
}


# The keys of an entry of synthetic.files (the generate_can wrapper's params.entry).
ENTRY_KEYS = ("split", "name", "attack", "duration_s")


class SyntheticError(ValueError, InputError):
    """A dataset's ``synthetic:`` block (the generate_can wrapper's params.options, entry and file_index) that
    cannot be generated: an unknown key, a value of the wrong type or out of range; the message names the key."""


# What a message calls the options block: the workflow's config key (synthetic.num_ids) by default, the generate_can
# wrapper's param (params.options.num_ids) where a wrapper user gave it (generate_file's setting_prefix "params").
_OPTIONS_NAME: ContextVar[str] = ContextVar("synthetic_options_name", default="synthetic")


def _key(key: str) -> str:
    """An option (``num_ids``) as the caller names it: ``synthetic.num_ids`` or ``params.options.num_ids``."""
    return f"{_OPTIONS_NAME.get()}.{key}"


def _check_keys(block: Any, known: Iterable[str], where: str) -> None:
    """Refuse a block that is no mapping, or holds a key ``known`` lacks, naming ``where`` and the closest known key:
    the workflow's schema checks the config's blocks, but a wrapper's params reach the library unchecked, where a
    misspelt key (num_id) was silently ignored and its default used."""
    if not isinstance(block, Mapping):
        raise SyntheticError(
            f"{where}: expected a mapping of keys to values, got {type(block).__name__} {block!r}"
        )
    known = list(known)
    for key in block:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            guess = f" (did you mean {close[0]!r}?)" if close else ""
            raise SyntheticError(f"{where}: unknown key {key!r}{guess}; known: {known}")


def _option(options: Mapping, key: str):
    return options.get(key, DEFAULTS[key])


def _whole(options: Mapping, key: str) -> int:
    """An integer option (seed, num_ids), refused naming its key: ``int()`` turned 30.5 into 30 without a word and
    failed on "thirty" naming no key."""
    value = _option(options, key)
    if not is_integer(value):
        raise SyntheticError(f"{_key(key)} must be an integer, got {type(value).__name__} {value!r}")
    return int(value)


# The number options and whether each must be > 0 (else >= 0), as the workflow's config schema bounds them.
NUMBER_OPTIONS = {
    "jitter_ms": False,
    "dos_interval_ms": True,
    "fuzzy_interval_ms": True,
    "spoof_interval_ms": True,
    "rare_ids_per_s": False,
    "benign_events_per_s": False,
    "replay_delay_s": True,
}
RANGE_OPTIONS = ("burst_s", "gap_s")


def _number(options: Mapping, key: str) -> float:
    """A number option of :data:`NUMBER_OPTIONS`, refused naming its key and bound: ``float()`` failed on "fast"
    naming no key, and a 0 interval died as "float division by zero"."""
    value = _option(options, key)
    positive = NUMBER_OPTIONS[key]
    if not is_number(value) or not (value > 0 if positive else value >= 0):
        bound = "> 0" if positive else ">= 0"
        raise SyntheticError(f"{_key(key)} must be a number {bound}, got {type(value).__name__} {value!r}")
    return float(value)


def _range(options: Mapping, key: str) -> tuple[float, float]:
    """A [low, high] option (burst_s, gap_s) of two numbers > 0, low <= high, refused naming its key: a list of three
    died as "too many values to unpack", a bare number as "'float' object is not iterable", a low above high as
    numpy's "high - low < 0" (and passed in a file without an attack)."""
    value = _option(options, key)
    if not (
        isinstance(value, list | tuple) and len(value) == 2 and all(is_number(v) and v > 0 for v in value)
    ):
        raise SyntheticError(
            f"{_key(key)} must be a list of two numbers > 0 (low, high), got {type(value).__name__} {value!r}"
        )
    low, high = float(value[0]), float(value[1])
    if low > high:
        raise SyntheticError(
            f"{_key(key)} must be [low, high] with low <= high, got low {value[0]!r} > high {value[1]!r}"
        )
    return low, high


class Vehicle:
    """The normal-traffic profile shared by every file of a dataset (IDs, periods, payload signals)."""

    def __init__(self, seed: int, num_ids: int):
        if not 25 <= num_ids <= 60:
            raise SyntheticError(f"{_key('num_ids')} must be between 25 and 60, got {num_ids}")
        rng = np.random.default_rng([seed, 0xCA17])
        # Distinct IDs in 0x010..0x7EF; 0x000 is reserved for the DoS attack.
        ids = rng.choice(np.arange(0x010, 0x7F0), size=num_ids + 6, replace=False)
        self.ids = np.sort(ids[:num_ids]).astype(np.int32)
        self.rare_ids = ids[num_ids:].astype(np.int32)  # benign diagnostic IDs, seldom sent
        self.periods_ms = rng.choice(PERIODS_MS, size=num_ids, p=PERIOD_WEIGHTS).astype(np.float64)
        fast = np.flatnonzero(self.periods_ms <= 20)
        if len(fast) < 2:
            self.periods_ms[:2] = [10.0, 20.0]
            fast = np.arange(2)
        self.rpm_slot, self.gear_slot = int(fast[0]), int(fast[1])
        self.dlc = np.where(rng.random(num_ids) < 0.85, 8, rng.integers(2, 8, num_ids)).astype(np.uint8)
        # Byte kinds: 0 constant, 1 counter, 2 smooth sensor, 3 checksum (last byte only).
        self.kinds = rng.choice(4, size=(num_ids, 8), p=[0.45, 0.15, 0.4, 0.0])
        has_checksum = rng.random(num_ids) < 0.3
        self.kinds[has_checksum, self.dlc[has_checksum] - 1] = 3
        self.constants = rng.integers(0, 256, size=(num_ids, 8))
        self.signal_period_s = rng.uniform(2.0, 30.0, size=(num_ids, 8))
        self.signal_phase = rng.uniform(0, 2 * np.pi, size=(num_ids, 8))
        self.signal_amplitude = rng.uniform(5, 100, size=(num_ids, 8))
        self.signal_centre = rng.uniform(self.signal_amplitude, 255 - self.signal_amplitude)
        # IDs that a real ECU also sends on events (gear change, throttle step...): the gear and RPM messages and a
        # few others. Benign rate increases hit only these, so every drive (training files included) shows them on
        # the very IDs that spoofing targets, and a model must learn the difference instead of "more of ID x".
        others = np.setdiff1d(np.arange(num_ids), [self.rpm_slot, self.gear_slot])
        self.event_slots = np.concatenate(
            [[self.rpm_slot, self.gear_slot], rng.choice(others, size=3, replace=False)]
        ).astype(np.int64)
        # The masquerade and replay target: a fast ID that benign events never touch, with a sensor byte to forge.
        quiet = np.setdiff1d(np.arange(num_ids), self.event_slots)
        quiet_fast = quiet[self.periods_ms[quiet] <= 20]
        self.target_slot = int(quiet_fast[0] if len(quiet_fast) else quiet[0])
        self.periods_ms[self.target_slot] = min(self.periods_ms[self.target_slot], 20.0)
        if not (self.kinds[self.target_slot, : self.dlc[self.target_slot]] == 2).any():
            self.kinds[self.target_slot, 0] = 2  # byte 0 is never the checksum (DLC >= 2)

    def payload(
        self, slot: int, times: np.ndarray, sequence: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        n = len(times)
        out = np.zeros((n, 8), dtype=np.int64)
        for b in range(int(self.dlc[slot])):
            kind = self.kinds[slot, b]
            if kind == 0:
                out[:, b] = self.constants[slot, b]
            elif kind == 1:
                out[:, b] = (self.constants[slot, b] + sequence) % 256
            elif kind == 2:
                wave = np.sin(2 * np.pi * times / self.signal_period_s[slot, b] + self.signal_phase[slot, b])
                noise = rng.normal(0, 1.0, n)
                value = self.signal_centre[slot, b] + self.signal_amplitude[slot, b] * wave + noise
                out[:, b] = np.clip(np.rint(value), 0, 255)
        return self._with_checksum(slot, out).astype(np.uint8)

    def _with_checksum(self, slot: int, out: np.ndarray) -> np.ndarray:
        for b in np.flatnonzero(self.kinds[slot, : self.dlc[slot]] == 3):
            out[:, b] = (out.sum(axis=1) - out[:, b]) % 256
        return out

    def forge(self, slot: int, payload: np.ndarray) -> np.ndarray:
        """Masquerade frames: ``payload`` (live frames of ``slot``) with every sensor byte at the end of the byte
        range farther from the signal (0 or 255, at least 27 outside its normal range), checksum recomputed."""
        out = payload.astype(np.int64)
        sensor = np.flatnonzero(self.kinds[slot, : self.dlc[slot]] == 2)
        out[:, sensor] = np.where(self.signal_centre[slot, sensor] > 127.5, 0, 255)
        return self._with_checksum(slot, out).astype(np.uint8)


def _bursts(
    duration_s: float, burst_s: tuple[float, float], gap_s: tuple[float, float], rng: np.random.Generator
) -> list[tuple[float, float]]:
    """(start, end) of every burst: lengths log-uniform over ``burst_s``, gaps uniform over ``gap_s`` (both checked
    [low, high] ranges, see :func:`_range`)."""
    (low, high), (gap_low, gap_high) = burst_s, gap_s
    bursts, t = [], rng.uniform(gap_low, gap_high) * 0.5
    while t < duration_s:
        length = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        bursts.append((t, min(t + length, duration_s)))
        t += length + rng.uniform(gap_low, gap_high)
    return bursts


def generate_log(
    vehicle: Vehicle, duration_s: float, attack: str, options: Mapping, seed: int, file_index: int = 0
) -> CanMessages:
    """One capture of ``duration_s`` seconds with ``attack`` (one of :data:`ATTACKS`) injected in bursts."""
    if attack not in ATTACKS:
        raise SyntheticError(f"synthetic attack must be one of {ATTACKS}, got {attack!r}")
    # Every option checked once, before any is used: a file without an attack, or with another one, still refuses a
    # mistake in an option only some attacks read.
    number = {key: _number(options, key) for key in NUMBER_OPTIONS}
    burst_s, gap_s = (_range(options, key) for key in RANGE_OPTIONS)
    rng = np.random.default_rng([seed, file_index, 0xF11E])
    jitter_s = number["jitter_ms"] * rng.uniform(0.5, 1.5) / 1000.0
    rate_factor = rng.uniform(0.97, 1.03)
    times, ids, payloads, labels = [], [], [], []

    def emit(t: np.ndarray, can_id, payload: np.ndarray, label: int) -> None:
        times.append(t)
        ids.append(np.broadcast_to(np.asarray(can_id, dtype=np.int32), t.shape))
        payloads.append(payload)
        labels.append(np.full(len(t), label, dtype=np.uint8))

    # Normal periodic traffic, plus benign event-triggered extra messages of one ID.
    events_per_s = number["benign_events_per_s"]
    num_events = rng.poisson(events_per_s * duration_s)
    event_slots = rng.choice(vehicle.event_slots, size=num_events)
    event_starts = rng.uniform(0, duration_s, num_events)
    event_lengths = rng.uniform(0.05, 0.3, num_events)
    target_part = -1  # index of the masquerade/replay target's live frames in the lists above
    for slot, can_id in enumerate(vehicle.ids):
        period = vehicle.periods_ms[slot] / 1000.0 / rate_factor
        t = rng.uniform(0, period) + np.arange(0, duration_s / period) * period
        # A benign event raises the ID's rate by half (an extra message after every other periodic one); a spoof at
        # ``spoof_interval_ms`` adds more, with a frozen payload instead of the live counters and checksums.
        # Overlapping events of one ID add no more than one event.
        in_event = np.zeros(len(t), dtype=bool)
        for start, length in zip(
            event_starts[event_slots == slot], event_lengths[event_slots == slot], strict=True
        ):
            in_event |= (t >= start) & (t < start + length)
        every_other = np.arange(len(t)) % 2 == 0
        t = np.sort(np.concatenate([t, t[in_event & every_other] + period / 2])) if in_event.any() else t
        t = t + rng.normal(0, jitter_s, len(t))
        t = t[(t >= 0) & (t < duration_s)]
        if slot == vehicle.target_slot:
            target_part = len(times)
        emit(t, can_id, vehicle.payload(slot, t, np.arange(len(t)), rng), 0)

    rare_rate = number["rare_ids_per_s"]
    num_rare = rng.poisson(rare_rate * duration_s)
    if num_rare:
        t = rng.uniform(0, duration_s, num_rare)
        rare_ids = rng.choice(vehicle.rare_ids, size=num_rare)
        emit(t, rare_ids, rng.integers(0, 256, size=(num_rare, 8)).astype(np.uint8), 0)

    if attack != "none":
        dos_step = number["dos_interval_ms"] / 1000.0
        fuzzy_step = number["fuzzy_interval_ms"] / 1000.0
        target_times, target_payload = times[target_part], payloads[target_part].copy()
        replay_delay = number["replay_delay_s"]
        for start, end in _bursts(duration_s, burst_s, gap_s, rng):
            if attack == "dos":
                t = np.arange(start, end, dos_step)
                emit(t, 0, np.zeros((len(t), 8), dtype=np.uint8), 1)
            elif attack == "fuzzy":
                t = np.arange(start, end, fuzzy_step)
                fuzz_ids = rng.integers(0, 0x800, len(t)).astype(np.int32)
                emit(t, fuzz_ids, rng.integers(0, 256, size=(len(t), 8)).astype(np.uint8), 1)
            elif attack == "dos_vehicle":
                t = np.arange(start, end, dos_step)
                frozen = vehicle.payload(0, np.array([start]), np.array([rng.integers(0, 256)]), rng)
                emit(t, vehicle.ids[0], np.repeat(frozen, len(t), axis=0), 1)
            elif attack == "fuzzy_vehicle":
                t = np.arange(start, end, fuzzy_step)
                fuzz_ids = rng.choice(vehicle.ids, len(t)).astype(np.int32)
                emit(t, fuzz_ids, rng.integers(0, 256, size=(len(t), 8)).astype(np.uint8), 1)
            elif attack == "masquerade":
                hit = (target_times >= start) & (target_times < end)
                payloads[target_part][hit] = vehicle.forge(vehicle.target_slot, target_payload[hit])
                labels[target_part][hit] = 1
            elif attack == "replay":
                recorded = (target_times >= start - replay_delay) & (target_times < end - replay_delay)
                emit(
                    target_times[recorded] + replay_delay,
                    vehicle.ids[vehicle.target_slot],
                    target_payload[recorded],
                    1,
                )
            else:
                slot = vehicle.rpm_slot if attack == "rpm" else vehicle.gear_slot
                t = np.arange(start, end, number["spoof_interval_ms"] / 1000.0)
                t = t + rng.normal(0, jitter_s, len(t))
                frozen = vehicle.payload(slot, np.array([start]), np.array([rng.integers(0, 256)]), rng)
                emit(t, vehicle.ids[slot], np.repeat(frozen, len(t), axis=0), 1)

    all_times = np.concatenate(times)
    order = np.argsort(all_times, kind="stable")
    can_id = np.concatenate(ids)[order]
    all_payload = np.concatenate(payloads)[order]
    dlc = np.full(len(order), 8, dtype=np.uint8)
    normal = np.isin(can_id, vehicle.ids)
    dlc[normal] = vehicle.dlc[np.searchsorted(vehicle.ids, can_id[normal])]
    # Bytes beyond the DLC are not on the bus.
    all_payload[np.arange(8)[None, :] >= dlc[:, None]] = 0
    return CanMessages(
        timestamp=EPOCH + np.maximum(all_times[order], 0.0),
        can_id=can_id,
        dlc=dlc,
        payload=all_payload,
        label=np.concatenate(labels)[order],
    )


def file_name(entry: Mapping) -> str:
    """Relative path of one synthetic file: ``<split>/<name>.csv`` (split like ``train_01_attack_free``); ``.csv``
    in every format, since each format with a writer (hcrl_csv, can_4col) is comma-separated text."""
    return f"{entry['split']}/{entry['name']}.csv"


def generate_file(
    options: Mapping,
    file_index: int,
    path: str | Path,
    entry: Mapping | None = None,
    setting_prefix: str = "synthetic",
) -> CanMessages:
    """Write file number ``file_index`` of a dataset's ``synthetic:`` block (``options``) to ``path``.

    The vehicle comes from ``options['seed']`` (the same for every file of the dataset); the file's own traffic
    from the seed and its index, so each file can be generated on its own (one job per file). The file is
    ``options['files'][file_index]``, or ``entry`` when given: the workflow gives each job only its own entry,
    so that adding a file to the list changes no other job's parameters (Snakemake would regenerate them all).
    ``setting_prefix`` is how a message names the options: their config key (``synthetic.num_ids``,
    ``synthetic.files[0]``) by default, or with ``"params"`` the generate_can wrapper's params
    (``params.options.num_ids``, ``params.entry``), which a wrapper user without the workflow's config sets.
    """
    wrapper = setting_prefix == "params"
    token = _OPTIONS_NAME.set("params.options" if wrapper else setting_prefix)
    try:
        return _generate_file(options, file_index, path, entry, wrapper)
    finally:
        _OPTIONS_NAME.reset(token)


def _generate_file(
    options: Mapping, file_index: int, path: str | Path, entry: Mapping | None, wrapper: bool
) -> CanMessages:
    _check_keys(options, DEFAULTS, _OPTIONS_NAME.get())
    if entry is None:
        files = _option(options, "files")
        if not 0 <= file_index < len(files):
            raise SyntheticError(
                f"{_key('files')} has {len(files)} entries, there is no entry {file_index} "
                + (
                    "(params.file_index, counted from 0; or give that file itself as params.entry)"
                    if wrapper
                    else "(the file_index of the file to write, counted from 0; or give that file itself as entry)"
                )
            )
        entry = files[file_index]
        where = f"{_key('files')}[{file_index}]"
    else:
        where = "params.entry" if wrapper else f"{_key('files')}[{file_index}]"
    _check_keys(entry, ENTRY_KEYS, where)
    duration = entry.get("duration_s")
    if not is_number(duration) or not duration > 0:
        raise SyntheticError(f"{where}.duration_s must be a number of seconds > 0, got {duration!r}")
    attack = entry.get("attack", "none")
    if attack not in ATTACKS:
        raise SyntheticError(f"{where}.attack must be one of {ATTACKS}, got {attack!r}")
    seed = _whole(options, "seed")
    fmt = _option(options, "format")
    # checked before any frame is made; the writer's own refusal names the config key for every caller
    if fmt not in WRITE_FORMATS:
        raise SyntheticError(f"{_key('format')} must be one of {WRITE_FORMATS}, got {fmt!r}")
    vehicle = Vehicle(seed, _whole(options, "num_ids"))
    messages = generate_log(
        vehicle, float(entry["duration_s"]), attack, options, seed, file_index=file_index + 1
    )
    if attack != "none" and not messages.label.any():
        # A capture named after an attack that holds none would pass for one in every count and figure.
        raise SyntheticError(
            f"{where} ({entry.get('split')}/{entry.get('name')}): attack {attack!r} injected "
            f"no frame in duration_s={entry['duration_s']} (the first burst starts after up to half of "
            f"{_key('gap_s')}={list(_option(options, 'gap_s'))}"
            + (
                f", and replay resends frames of {_key('replay_delay_s')}={_option(options, 'replay_delay_s')} "
                "earlier"
                if attack == "replay"
                else ""
            )
            + "); make duration_s longer"
        )
    write_can_file(messages, path, fmt)
    log.info(
        "%s: %d messages (%d injected, attack %s) over %.1f s, format %s",
        path,
        len(messages),
        int(messages.label.sum()),
        attack,
        float(entry["duration_s"]),
        fmt,
    )
    return messages


def generate_dataset(options: Mapping, out_dir: str | Path) -> list[Path]:
    """Write every file of a dataset's ``synthetic:`` block under ``out_dir``; returns the paths."""
    written = []
    for index, entry in enumerate(_option(options, "files")):
        path = Path(out_dir) / file_name(entry)
        generate_file(options, index, path)
        written.append(path)
    return written
