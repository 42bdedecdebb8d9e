"""Benchmark: an HCRL-sized capture (>= 16M messages) through the preprocess step: throughput and peak memory.

A generated DoS capture (kdgat.synthetic) is written as can_4col at two sizes (the first 4M and all 16M
messages) by a separate process. Each contender runs in its own fresh process on one core, and the process's peak
resident memory comes from the kernel (``os.wait4``'s ``ru_maxrss``). (A child starts as a copy of this process and
its peak counts that copy, so this process never holds the data.) Its CPU time is that of the contender's statement
alone, taken in the process (``getrusage`` after its imports and after the statement): subtracting an idle
process's CPU time instead, as before, left the imports' noise (0.1-0.3 s) in every figure, more than a small
file's raw read (which then read as negative).

* ours: ``kdgat.preprocess.preprocess_dataset`` on the file (read + validate, vocabulary, window graphs, split,
  save), the step the workflow's preprocess rule runs;
* baseline: pyarrow's raw ``read_csv`` of the same file (the floor: parsing it at all);
* idle: a process that imports the same modules and does nothing (the memory every process holds before any
  data);
* ours without numba (``KDGAT_COMPILED=0``) on the large file: the compiled loops must pay for their start-up
  (importing numba, loading the cached machine code) at this size.

Memory must grow at most linearly: the peak above the idle process, per message, may not be larger at 16M than
at 4M (10% allowance for allocator noise), and the peak must stay under 4 GB. Each run of ours prints what it
made (from its metadata.json: messages read, windows, graphs per split, windows purged between the splits); the
run without numba must make the same.

    .venv/bin/python bench/bench_preprocess_scale.py [--messages 16000000] [--small 4000000]

Smaller sizes (``--messages 200000 --small 50000``, what .tests/integration/test_benchmarks.py runs) try the
script in seconds; their figures measure nothing at scale.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from kdgat.files import write_bytes
from kdgat.synthetic import Vehicle, generate_log

PEAK_GOAL_MB = 4096
GROWTH_ALLOWANCE = 1.1
ONE_CORE = textwrap.dedent(
    """
    import pyarrow as pa, torch
    pa.set_cpu_count(1); pa.set_io_thread_count(1); torch.set_num_threads(1)
    import pyarrow.csv as pcsv
    from kdgat.preprocess import preprocess_dataset
    """
)
CONTENDERS = {
    "idle": "",
    "raw": "pcsv.read_csv(path, read_options=pcsv.ReadOptions(use_threads=False))",
    "ours": "preprocess_dataset('scale', [path], {}, out, window_size=100, stride=100)",
}
CONTENDERS["ours_numpy"] = CONTENDERS["ours"]  # the same with KDGAT_COMPILED=0: no numba


def can_4col_bytes(
    timestamp: np.ndarray, can_id: np.ndarray, payload: np.ndarray, dlc: np.ndarray, label
) -> bytes:
    """The messages as can_4col text, rendered with numpy (the library's writer formats line by line, ~8 s per
    million messages): timestamps rounded to whole microseconds, 3-digit hex IDs, 2 hex digits per payload
    byte."""
    n = len(timestamp)
    hex_digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    micros = np.rint(timestamp * 1e6).astype(np.int64)
    int_digits = max(len(str(int(micros.max() // 1_000_000))), 1)
    # Fixed-width rows; bytes 0 mark the unused payload columns of short messages and are dropped at the end.
    width = int_digits + 1 + 6 + 1 + 3 + 1 + 16 + 1 + 1 + 1
    rows = np.zeros((n, width), dtype=np.uint8)
    column = 0
    whole, fraction = micros // 1_000_000, micros % 1_000_000
    for k in range(int_digits):
        rows[:, column + int_digits - 1 - k] = 48 + (whole // 10**k) % 10
    column += int_digits
    rows[:, column] = ord(".")
    for k in range(6):
        rows[:, column + 6 - k] = 48 + (fraction // 10**k) % 10
    column += 7
    rows[:, column] = ord(",")
    for k in range(3):
        rows[:, column + 3 - k] = hex_digits[(can_id >> (4 * k)) & 0xF]
    column += 4
    rows[:, column] = ord(",")
    column += 1
    for b in range(8):
        present = b < dlc
        rows[:, column + 2 * b] = np.where(present, hex_digits[payload[:, b] >> 4], 0)
        rows[:, column + 2 * b + 1] = np.where(present, hex_digits[payload[:, b] & 0xF], 0)
    column += 16
    rows[:, column] = ord(",")
    rows[:, column + 1] = 48 + label
    rows[:, column + 2] = ord("\n")
    return b"timestamp,arbitration_id,data_field,attack\n" + rows[rows != 0].tobytes()


TIMED = textwrap.dedent(
    """
    import resource
    def cpu_seconds():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    began = cpu_seconds()
    {statement}
    with open({cpu_file!r}, "w") as cpu_file:
        cpu_file.write(str(cpu_seconds() - began))
    """
)


def measure(contender: str, path: Path, out: Path) -> tuple[float, float]:
    """CPU seconds of ``contender``'s statement on ``path`` (after the imports) and peak RSS (MB) of the fresh
    process running it."""
    cpu_file = out.parent / "cpu_seconds.txt"
    timed = TIMED.format(statement=CONTENDERS[contender], cpu_file=str(cpu_file))
    code = f"{ONE_CORE}\npath, out = {str(path)!r}, {str(out)!r}\n{timed}"
    environment = {**os.environ, "KDGAT_COMPILED": "0" if contender == "ours_numpy" else "1"}
    process = subprocess.Popen([sys.executable, "-c", code], env=environment)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{contender} on {path} failed (exit status {os.waitstatus_to_exitcode(status)})")
    return float(cpu_file.read_text()), usage.ru_maxrss / 1024


def what_ours_made(out: Path) -> str:
    """What the last run of ours wrote, from its metadata.json: messages, windows, graphs per split, purged
    windows."""
    metadata = json.loads((out / "metadata.json").read_text())
    (split,) = metadata["split"]["per_file"].values()
    counts = metadata["counts"]
    return (
        f"{metadata['messages']['total']} messages read, {split['windows']} windows: {counts['train']} train "
        f"+ {counts['val']} val graphs, {split['purged_windows']} windows purged"
    )


def write_captures(messages_wanted: int, small: int, folder: Path) -> None:
    """``dos_<count>.csv`` in ``folder``: the first ``small`` and the first ``messages_wanted`` messages of one
    capture."""
    vehicle = Vehicle(seed=7, num_ids=40)
    options = {"burst_s": [0.5, 4.0], "gap_s": [1.0, 4.0]}
    duration = messages_wanted / 2600.0  # about 2,000 normal + bursts of 3,333 attack messages per second
    messages = generate_log(vehicle, duration, "dos", options, seed=11)
    while len(messages) < messages_wanted:
        duration *= 1.05
        messages = generate_log(vehicle, duration, "dos", options, seed=11)
    for count in (small, messages_wanted):
        part = slice(0, count)
        text = can_4col_bytes(
            messages.timestamp[part],
            messages.can_id[part],
            messages.payload[part],
            messages.dlc[part],
            messages.label[part],
        )
        write_bytes(text, folder / f"dos_{count}.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=16_000_000, help="messages of the larger file")
    parser.add_argument("--small", type=int, default=4_000_000, help="messages of the smaller file")
    parser.add_argument("--write-to", type=Path, help=argparse.SUPPRESS)  # the generator process
    args = parser.parse_args()
    if args.write_to:
        write_captures(args.messages, args.small, args.write_to)
        return

    with tempfile.TemporaryDirectory(prefix="bench_preprocess_scale_") as tmp:
        tmp = Path(tmp)
        subprocess.run(
            [
                sys.executable,
                __file__,
                f"--messages={args.messages}",
                f"--small={args.small}",
                f"--write-to={tmp}",
            ],
            check=True,
        )
        sizes = {int(path.stem.split("_")[1]): path for path in tmp.glob("dos_*.csv")}
        small, large = min(sizes), max(sizes)
        out = tmp / "out"
        _, idle_mb = measure("idle", sizes[small], out)
        results = {}
        for count, path in sorted(sizes.items()):
            raw_cpu, raw_mb = measure("raw", path, out)
            ours_cpu, ours_mb = measure("ours", path, out)
            made = what_ours_made(out)
            results[count] = (raw_cpu, raw_mb, ours_cpu, ours_mb)
            print(
                f"# {count} messages ({path.stat().st_size / 1e6:.0f} MB): ours {ours_cpu:.2f} s CPU, "
                f"peak {ours_mb:.0f} MB ({made}); pyarrow raw read {raw_cpu:.2f} s CPU, peak {raw_mb:.0f} MB; "
                f"above the idle process ({idle_mb:.0f} MB): ours {(ours_mb - idle_mb) * 1e6 / count:.0f} "
                "bytes/message"
            )
        numpy_cpu, numpy_mb = measure("ours_numpy", sizes[large], out)
        if what_ours_made(out) != made:  # the same step: only the loops that run it differ
            raise SystemExit(f"without numba: {what_ours_made(out)}; with: {made}")
        print(
            f"# {large} messages without numba (KDGAT_COMPILED=0): {numpy_cpu:.2f} s CPU, peak {numpy_mb:.0f} MB "
            f"({what_ours_made(out)})"
        )
    raw_cpu, raw_mb, ours_cpu, ours_mb = results[large]
    per_message = {count: (results[count][3] - idle_mb) * 1e6 / count for count in results}
    print("# CPU seconds of the step alone, in its process after the imports; one core each")
    print(
        f"BENCH preprocess_scale_throughput value={large / ours_cpu:.0f}msg/s baseline={large / raw_cpu:.0f}msg/s "
        f"ratio={raw_cpu / ours_cpu:.3f} goal=info"
    )
    print(
        f"BENCH preprocess_scale_compiled_vs_numpy value={ours_cpu:.2f}s baseline={numpy_cpu:.2f}s "
        f"ratio={ours_cpu / numpy_cpu:.3f} goal=<=1"
    )
    print(
        f"BENCH preprocess_scale_peak_memory value={ours_mb:.0f}MB baseline={raw_mb:.0f}MB "
        f"ratio={ours_mb / raw_mb:.2f} goal=<={PEAK_GOAL_MB}MB"
    )
    print(
        f"BENCH preprocess_scale_memory_growth value={per_message[large]:.0f}B/msg "
        f"baseline={per_message[small]:.0f}B/msg ratio={per_message[large] / per_message[small]:.3f} "
        f"goal=<={GROWTH_ALLOWANCE}"
    )


if __name__ == "__main__":
    main()
