"""The simulate and calibrate benchmarks run to the end in their ``--quick`` sizes and print every BENCH line they
promise, well formed; ``make bench`` runs every benchmark even when one fails, names the failures and exits
non-zero."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from testkit import REPO

pytestmark = pytest.mark.integration

NUMBER = r"-?(?:\d+(?:\.\d+)?|inf)"
BENCH_LINE = re.compile(
    rf"^BENCH (?P<name>\S+) value=(?P<value>{NUMBER})(?P<unit>[^\s\d]*) baseline=(?P<baseline>{NUMBER})"
    rf"(?P=unit) ratio=(?P<ratio>{NUMBER}) goal=(?P<goal>info|[<>]=\d+(?:\.\d+)?\S*)$"
)


def bench_lines(script: str) -> dict[str, dict[str, str]]:
    """Run a benchmark in its --quick sizes; it must succeed and every line starting with BENCH be well formed.
    Returns those lines by name. (The two benchmarks run one after the other: side by side they took longer.)"""
    proc = subprocess.run(
        [sys.executable, f"bench/{script}", "--quick"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}"
    lines = {}
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH"):
            match = BENCH_LINE.match(line)
            assert match, f"malformed BENCH line: {line!r}"
            lines[match["name"]] = match.groupdict()
    return lines


def test_bench_simulate_measures_every_part():
    """Overhead (warm and cold), throughput (both models, both baselines) and Snakemake jobs, whose sweep must
    have run on a LocalCluster (the benchmark asserts it from the job's log and progress file)."""
    lines = bench_lines("bench_simulate.py")
    assert list(lines) == [
        "simulate_overhead_warm", "simulate_overhead_warm_vs_bare_dask", "simulate_overhead_cold",
        "simulate_overhead_cold_vs_bare_dask", "simulate_cheap_50_vs_one_task_each",
        "simulate_cheap_100_vs_hand_batched", "simulate_realistic_8_vs_one_task_each",
        "simulate_realistic_8_vs_hand_batched", "simulate_3_one_job_vs_3_jobs",
    ]  # fmt: skip
    assert all(float(line["value"]) > 0 and float(line["baseline"]) > 0 for line in lines.values()), lines
    assert (
        lines["simulate_overhead_warm"]["goal"] == "<=0.2s"
        and lines["simulate_overhead_cold"]["goal"] == "<=2s"
    )


def test_bench_calibrate_compares_with_the_grid_on_the_same_simulations():
    """The grid's losses equal the library's (the benchmark asserts it), and the calibration stays in budget."""
    lines = bench_lines("bench_calibrate.py")
    assert set(lines) == {
        *(f"calibrate_{p}_error_{kind}" for p in ("beta", "gamma") for kind in ("median", "worst")),
        *(f"calibrate_{p}_error_median_mean_field" for p in ("beta", "gamma")),
        "calibrate_simulations_worst",
    }
    # 32 Sobol points and 1 round of 16, 4 replicates each, then the top 8 again with 32 replicates
    assert float(lines["calibrate_simulations_worst"]["value"]) == 32 * 4 + 16 * 4 + 8 * (32 - 4)


def test_make_bench_runs_every_script_and_fails_at_the_end(tmp_path):
    """A failing benchmark neither stops the ones after it nor disappears: it is named and make exits non-zero."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ran = tmp_path / "ran.txt"
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\necho "$1" >> {ran}\ncase "$1" in *bench_calibrate.py) exit 3;; esac\n')
    python.chmod(0o755)
    stamp = tmp_path / "stamp"
    stamp.touch()  # newer than pyproject.toml: make does not rebuild the venv
    os.utime(stamp, (Path(REPO, "pyproject.toml").stat().st_mtime + 60,) * 2)
    proc = subprocess.run(
        ["make", "-s", "bench", f"BIN={bin_dir}", f"STAMP={stamp}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    scripts = sorted(str(p.relative_to(REPO)) for p in Path(REPO, "bench").glob("bench_*.py"))
    assert ran.read_text().split() == scripts
    assert proc.returncode != 0
    assert "bench/bench_calibrate.py FAILED (exit 3)" in proc.stderr
    assert "failed: bench/bench_calibrate.py" in proc.stderr
    # Each script's wall time and the total (RESULTS.md records a timed run against the 15-minute goal).
    timed = re.findall(r"^# (bench/bench_\w+\.py) took (\d+) s$", proc.stdout, re.M)
    assert [script for script, _ in timed] == scripts
    assert re.search(r"^# make bench: all scripts took \d+ s \(goal: 900 s\)$", proc.stdout, re.M)
